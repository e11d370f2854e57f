package notification

import (
	"context"
	"io"

	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// DefaultListen is the default HTTP address of the service as its own process.
const DefaultListen = "127.0.0.1:8083"

// Main is the program of cmd/notification (see there for the flags): the service
// as its own process (HTTP and command consumer, or the migrate
// subcommand). args exclude the program name; env is like os.Getenv. It
// returns after a graceful stop when ctx ends.
func Main(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	return service.Run(ctx, service.App{Name: Name, DefaultListen: DefaultListen, Migrate: Migrate, Build: build}, args, env, stdout, stderr)
}

func build(d service.Deps) (service.Participant, error) {
	return New(Config{DB: d.DB, Participant: d.Participant, Auth: d.Auth, Logger: d.Logger})
}
