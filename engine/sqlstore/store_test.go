package sqlstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name, url string
		want      engine.Code
	}{
		{"unknown scheme", "mysql://localhost/db", engine.CodeInvalid},
		{"empty", "", engine.CodeInvalid},
		{"nobody listening", "postgres://postgres@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", engine.CodeUnavailable},
		{"directory missing", "sqlite:" + filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"), engine.CodeUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlstore.Open(ctx, tc.url)
			if err == nil {
				s.Close()
			}
			if got := engine.ErrorCode(err); got != tc.want {
				t.Errorf("Open(%q): got %v (code %q), want code %q", tc.url, err, got, tc.want)
			}
		})
	}
}

func TestMigrateOnlyThenOpen(t *testing.T) {
	ctx := context.Background()
	url := "sqlite:" + filepath.Join(t.TempDir(), "saga.db")
	if err := sqlstore.MigrateOnly(ctx, url); err != nil {
		t.Fatalf("MigrateOnly: %v", err)
	}
	if err := sqlstore.MigrateOnly(ctx, url); err != nil {
		t.Fatalf("MigrateOnly again: %v", err)
	}
	s, err := sqlstore.Open(ctx, url, sqlstore.WithoutMigrations())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 0 {
		t.Errorf("OutboxBacklog on a migrated database: got %d, %v; want 0", n, err)
	}
	if got, want := s.Dialect(), "sqlite"; got != want {
		t.Errorf("Dialect: got %q, want %q", got, want)
	}
}

func TestPostgresConcurrentMigrations(t *testing.T) {
	url := testenv.Postgres(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := sqlstore.Open(context.Background(), url, sqlstore.WithMaxConns(2))
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Open of one database: %v", err)
	}
}

// A read on the store while a transaction is open must not wait for it:
// SQLite has one writer connection and separate readers.
func TestSQLiteReadDuringTransaction(t *testing.T) {
	for _, url := range []string{"sqlite:" + filepath.Join(t.TempDir(), "saga.db"), "sqlite::memory:"} {
		t.Run(url, func(t *testing.T) {
			ctx := context.Background()
			s, err := sqlstore.Open(ctx, url)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			now := time.Now()
			in := &engine.Instance{ID: "r1", Saga: "S", SagaVersion: 1, State: "A", Status: engine.StatusRunning,
				CreatedAt: now, UpdatedAt: now, EnteredAt: now}
			err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, []*engine.Instance{in}) })
			if err != nil {
				t.Fatalf("Insert: %v", err)
			}
			err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
				upd := *in
				upd.State = "B"
				if err := tx.Update(ctx, []*engine.Instance{&upd}); err != nil {
					return err
				}
				got, err := s.GetInstance(ctx, "r1")
				if err != nil {
					return err
				}
				if got.State != "A" {
					t.Errorf("read outside the transaction saw uncommitted state %q, want A", got.State)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("InTx: %v", err)
			}
		})
	}
}
