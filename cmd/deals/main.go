package main

import (
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

func main() { program.Main("deals", deals.Main) }
