package program

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Func is a command's whole program: args exclude the program name; env is
// like os.Getenv. It returns when done or, for servers, after a graceful
// stop once ctx ends.
type Func func(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error

// Main runs run with the process's arguments, environment and standard
// streams under a context that ends on SIGTERM or interrupt, after TuneGC.
// On an error it prints "name: error" to stderr and exits with status 1.
func Main(name string, run Func) {
	TuneGC(os.Getenv)
	if err := Run(name, run, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		os.Exit(1)
	}
}

// Run is Main without the exit: it runs run under a context that ends on
// SIGTERM or interrupt and, on an error, prints "name: error" to stderr and
// returns the error.
func Run(name string, run Func, args []string, env func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, args, env, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
	}
	return err
}
