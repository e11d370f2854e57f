package chaos

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestLockWaits: a session holding a row lock in an open transaction (as a
// paused process does) and another waiting for that row: lockWaits names
// the database, one waiting session and a blocker idle in transaction with
// its last statement; once the lock is released it lists nothing for that
// database.
func TestLockWaits(t *testing.T) {
	url := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	if err := db.GetContext(ctx, &name, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE portfolios (id int PRIMARY KEY, cash numeric); INSERT INTO portfolios VALUES (1, 100)`); err != nil {
		t.Fatal(err)
	}
	holder, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // released below
	if _, err := holder.ExecContext(ctx, `SELECT cash FROM portfolios WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := db.ExecContext(ctx, `UPDATE portfolios SET cash = cash - 1 WHERE id = 1`)
		waited <- err
	}()

	ours := func() []string {
		t.Helper()
		all, err := lockWaits(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range all {
			if strings.HasPrefix(l, name+":") {
				out = append(out, l)
			}
		}
		return out
	}
	var got []string
	for len(got) == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no lock wait listed for database %s while an UPDATE waits for a row locked by an open transaction", name)
		case err := <-waited:
			t.Fatalf("the UPDATE did not wait for the row lock (err %v)", err)
		case <-time.After(100 * time.Millisecond):
		}
		got = ours()
	}
	if len(got) != 1 {
		t.Fatalf("lock waits of %s = %q, want one line", name, got)
	}
	for _, want := range []string{"1 sessions wait", "idle in transaction", "FOR UPDATE"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("lock wait %q lacks %q", got[0], want)
		}
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the waiting UPDATE after the release: %v", err)
	}
	if got := ours(); len(got) != 0 {
		t.Errorf("lock waits of %s after the release = %q, want none", name, got)
	}
}
