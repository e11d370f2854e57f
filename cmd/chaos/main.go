package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the program: 0 when the run found nothing wrong, 1 when it did, 2
// when it could not run.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Bool("short", false, "make test's run: 1,000 sagas at 8/s from 50 users, each kind of fault once")
	cfg := chaos.Long()
	fs.IntVar(&cfg.Sagas, "sagas", cfg.Sagas, "sagas to offer")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "sagas offered per second (open loop)")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "users, each with a funded portfolio")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the deals and of the faults' order, targets and moments (0: from the clock, printed)")
	fs.DurationVar(&cfg.KillEvery, "kill-every", cfg.KillEvery, "mean gap between two kill -9 (0: each kind of fault once)")
	fs.IntVar(&cfg.Aborts, "aborts", 0, "per cent of the accepted deals (and of the baskets) an operator aborts (default 3; -1: none)")
	fs.IntVar(&cfg.Cancels, "cancels", 0, "per cent of the accepted deals (and of the baskets) their client cancels, and racer of one abort in four (default 3; -1: none)")
	fs.IntVar(&cfg.Baskets, "baskets", 0, "per cent of the offers that are baskets of two or three buys (BASKET_ORDER; default 5; -1: none)")
	fs.DurationVar(&cfg.Pause, "pause", 0, "how long the profile replica stays paused (default: the session timeout + 5s)")
	fs.DurationVar(&cfg.Quiesce, "quiesce", 0, "bound of the wait for the system to come to rest after the traffic (default 3m)")
	fs.StringVar(&cfg.Dir, "dir", "", "work directory (default: a new one under /var/tmp, removed at the end unless -keep)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work directory (services' logs, the private servers' data)")
	verbose := fs.Bool("v", false, "print progress while the run goes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		s := chaos.Short()
		if !set["sagas"] {
			cfg.Sagas = s.Sagas
		}
		if !set["rate"] {
			cfg.Rate = s.Rate
		}
		if !set["users"] {
			cfg.Users = s.Users
		}
		if !set["kill-every"] {
			cfg.KillEvery = s.KillEvery
		}
	}
	if *verbose {
		cfg.Log = stderr
	}
	began := time.Now()
	rep, err := chaos.Run(ctx, cfg)
	if rep != nil {
		rep.Format(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "chaos: %v (after %s)\n", err, time.Since(began).Round(time.Second))
		return 2
	}
	if rep.Err() != nil {
		return 1
	}
	return 0
}
