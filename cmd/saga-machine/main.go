package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/portfolio-counselor/sagamachine/internal/program"
)

func main() {
	program.TuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		var pe problemsError
		if !errors.As(err, &pe) { // problems are already printed, one per line
			fmt.Fprintln(os.Stderr, "saga-machine:", err)
		}
		os.Exit(1)
	}
}
