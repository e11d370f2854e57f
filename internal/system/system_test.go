package system_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// guard bounds every wait so a broken run fails instead of hanging; it is a
// liveness bound, never a performance assertion.
const guard = 60 * time.Second

// syncBuf is a log sink for tests (written from many goroutines).
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// testLogger keeps warnings and errors and prints them if the test fails.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	buf := &syncBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("system logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func start(t *testing.T, cfg system.Config) *system.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	cfg.EphemeralPorts = true
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("system.Start: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// The one-command run, in-process: on SQLite files and the embedded broker
// the demo's two sagas finish (one approved, one rejected) and the API
// lists them; a second run on the same data creates nothing new.
func TestDemoOnEmbeddedDefaults(t *testing.T) {
	dir := t.TempDir()
	sys := start(t, system.Config{DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	first, err := sys.RunDemo(ctx)
	if err != nil {
		t.Fatalf("RunDemo: %v", err)
	}
	if !first.Created {
		t.Errorf("first run: portfolio Created = false, want true")
	}
	want := map[string]string{"approved": "executed", "rejected": "rejected"}
	if len(first.Orders) != 2 {
		t.Fatalf("got %d orders, want 2", len(first.Orders))
	}
	for _, o := range first.Orders {
		if o.State != "NOTIFICATION" || o.Status != engine.StatusCompleted {
			t.Errorf("%s order: saga %s state %s status %s, want NOTIFICATION completed", o.Label, o.SagaID, o.State, o.Status)
		}
		if o.DealStatus != want[o.Label] {
			t.Errorf("%s order: deal status %q, want %q", o.Label, o.DealStatus, want[o.Label])
		}
		if o.Label == "rejected" && o.Reason == "" {
			t.Errorf("rejected order: empty reason")
		}
	}

	// The basket: a buy and a sell of what the approved order bought.
	if b := first.Basket; b.State != "EXECUTED" || b.Status != engine.StatusCompleted || b.BasketStatus != "executed" || b.Replayed {
		t.Errorf("demo basket: saga %s %s %s, basket %s (replayed %v), want EXECUTED completed, executed, new", b.SagaID, b.State, b.Status, b.BasketStatus, b.Replayed)
	}

	// GET /api/v1/sagas with the demo token lists both.
	c := system.NewClient(sys.URLs, first.Token, nil)
	page, err := c.Sagas(ctx, engine.SagaFilter{Saga: "MANUAL_CREATE_ORDER"})
	if err != nil {
		t.Fatalf("GET /api/v1/sagas: %v", err)
	}
	listed := map[string]bool{}
	for _, s := range page.Sagas {
		listed[s.ID] = true
	}
	for _, o := range first.Orders {
		if !listed[o.SagaID] {
			t.Errorf("GET /api/v1/sagas does not list saga %s (got %d sagas)", o.SagaID, len(page.Sagas))
		}
	}
	if err := sys.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Re-run on the same data: same portfolio, same deals and sagas.
	again := start(t, system.Config{DataDir: dir})
	second, err := again.RunDemo(ctx)
	if err != nil {
		t.Fatalf("second RunDemo: %v", err)
	}
	if second.Created || second.PortfolioID != first.PortfolioID {
		t.Errorf("second run: portfolio %s created %v, want %s reused", second.PortfolioID, second.Created, first.PortfolioID)
	}
	for i, o := range second.Orders {
		if !o.Replayed || o.SagaID != first.Orders[i].SagaID || o.DealStatus != first.Orders[i].DealStatus {
			t.Errorf("second run %s order: saga %s replayed %v status %s, want saga %s replayed, status %s",
				o.Label, o.SagaID, o.Replayed, o.DealStatus, first.Orders[i].SagaID, first.Orders[i].DealStatus)
		}
	}
	if b := second.Basket; !b.Replayed || b.SagaID != first.Basket.SagaID || b.BasketStatus != "executed" {
		t.Errorf("second run basket: saga %s replayed %v status %s, want saga %s replayed, executed", b.SagaID, b.Replayed, b.BasketStatus, first.Basket.SagaID)
	}
	pfs, err := system.NewClient(again.URLs, second.Token, nil).Portfolios(ctx)
	if err != nil {
		t.Fatalf("list portfolios: %v", err)
	}
	if len(pfs) != 1 {
		t.Errorf("demo user has %d portfolios after two runs, want 1", len(pfs))
	}
}

// Tokens are verified: no token, or one from another issuer, is refused.
func TestServicesVerifyIssuerTokens(t *testing.T) {
	sys := start(t, system.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"no token", ""},
		{"garbage", "not-a-jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := system.NewClient(sys.URLs, tc.token, nil)
			_, err := c.Portfolios(ctx)
			var se *system.StatusError
			if !errors.As(err, &se) || se.Status != 401 {
				t.Errorf("GET /portfolios with %s: err %v, want 401", tc.name, err)
			}
			_, err = c.Sagas(ctx, engine.SagaFilter{})
			if !errors.As(err, &se) || se.Status != 401 {
				t.Errorf("GET /api/v1/sagas with %s: err %v, want 401", tc.name, err)
			}
		})
	}
	c, err := sys.Client("someone", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Portfolios(ctx); err != nil {
		t.Errorf("GET /portfolios with an issuer token: %v", err)
	}
}
