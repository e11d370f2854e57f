package main

import "github.com/portfolio-counselor/sagamachine/internal/program"

func main() { program.Main("bench", run) }
