package main

import (
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
)

func main() { program.Main("notification", notification.Main) }
