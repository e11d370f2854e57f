package deals_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Example wires the deals service in-process, as the one-command dev run
// does: a database with the SDK's and the service's migrations, an SDK
// participant, the command handlers and the HTTP router. (p.Run(ctx) would
// then consume DEALS_TOPIC and relay the outbox; http.Server serves the router.)
func Example() {
	dir, _ := os.MkdirTemp("", "deals-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(dir, "deals.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := sdk.Migrate(ctx, db); err != nil {
		panic(err)
	}
	if err := deals.Migrate(ctx, db); err != nil {
		panic(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := sdk.New(sdk.Config{Name: deals.Name, DB: db, Brokers: []string{"127.0.0.1:9092"}, Logger: quiet})
	if err != nil {
		panic(err)
	}
	a, err := auth.New(ctx, auth.Config{DevHeader: true, Logger: quiet}) // dev only; use Issuer+Audience in deployments
	if err != nil {
		panic(err)
	}
	svc, err := deals.New(deals.Config{DB: db, Participant: p, Auth: a, Logger: quiet})
	if err != nil {
		panic(err)
	}
	svc.RegisterHandlers(p)
	names := p.Commands()
	slices.Sort(names)
	fmt.Println("commands:", names)

	for _, path := range []string{"/readyz", "/deals"} {
		rec := httptest.NewRecorder()
		svc.Router().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code)
	}
	// Output:
	// commands: [APPROVE_DEAL EXECUTE_BASKET FAIL_BASKET FAIL_DEAL REJECT_BASKET REJECT_DEAL]
	// /readyz 200
	// /deals 401
}
