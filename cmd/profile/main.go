package main

import (
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
)

func main() { program.Main("profile", profile.Main) }
