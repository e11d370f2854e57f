package sdk_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// TestStats: the counts behind the services' metrics follow what happens
// (a malformed command parked, a failing one parked then replayed, a saga
// start and a reply waiting in the outbox, then published), on SQLite and
// PostgreSQL.
func TestStats(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *sqlx.DB
	}{
		{"sqlite", func(t *testing.T) *sqlx.DB {
			db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(t.TempDir(), "p.db"), sqldb.SQLiteOptions{}))
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
		{"postgres", func(t *testing.T) *sqlx.DB {
			db, err := sqlx.Open("postgres", testenv.Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.open(t)
			defer db.Close()
			testStats(t, db)
		})
	}
}

func testStats(t *testing.T, db *sqlx.DB) {
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{Name: "worker", DB: db, MaxAttempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	failing := true
	sdk.Handle(p, "DO", func(context.Context, *sqlx.Tx, sdk.Command[map[string]any]) (sdk.Result, error) {
		if failing {
			return sdk.Result{}, errors.New("the business database is down")
		}
		return sdk.Reply("DONE", nil), nil
	})
	want := func(what string, parked, handled, backlog int64) sdk.Stats {
		t.Helper()
		st, err := p.Stats(ctx)
		if err != nil {
			t.Fatalf("%s: Stats: %v", what, err)
		}
		if st.DeadLettersParked != parked || st.DeadLettersHandled != handled || st.OutboxBacklog != backlog {
			t.Errorf("%s: got parked %d, handled %d, backlog %d; want %d, %d, %d", what,
				st.DeadLettersParked, st.DeadLettersHandled, st.OutboxBacklog, parked, handled, backlog)
		}
		if (backlog == 0) != st.OldestOutbox.IsZero() {
			t.Errorf("%s: oldest outbox record %v with a backlog of %d", what, st.OldestOutbox, backlog)
		}
		return st
	}
	var offset int64
	send := func(value []byte) sdk.Outcome {
		t.Helper()
		offset++
		out, err := p.Dispatch(ctx, sdk.Record{Topic: p.Config().CommandTopic, Key: "saga-1", Value: value, Offset: offset,
			Headers: map[string]string{envelope.HeaderKind: string(envelope.KindCommand)}})
		if err != nil {
			t.Fatalf("dispatch: %v", err)
		}
		return out
	}
	publish := func() {
		t.Helper()
		if _, err := p.Flush(ctx, func(context.Context, []sdk.Record) error { return nil }); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}

	want("empty", 0, 0, 0)
	if out := send([]byte("not an envelope")); out.DeadLetter == nil {
		t.Fatal("a malformed command was not parked")
	}
	want("a malformed command parked", 1, 0, 0)

	cmd := envelope.AppendMessage(nil, &envelope.Message{V: envelope.Version, ID: "cmd-1", SagaID: "saga-1", Saga: "S", SagaVersion: 1,
		Kind: envelope.KindCommand, Name: "DO", Participant: "worker", OccurredAt: time.Now().UTC(), Attempt: 1})
	out := send(cmd)
	if out.DeadLetter == nil {
		t.Fatal("a command failing past MaxAttempts was not parked")
	}
	want("a failing command parked", 2, 0, 0)

	before := time.Now().Add(-time.Second)
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.StartSaga(ctx, tx, "S", "STARTED", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	first := want("a saga start waiting", 2, 0, 1)
	if first.OldestOutbox.Before(before) || first.OldestOutbox.After(time.Now().Add(time.Second)) {
		t.Errorf("oldest outbox record stored at %v, want about now", first.OldestOutbox)
	}

	failing = false
	if _, err := p.Replay(ctx, out.DeadLetter.ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if st := want("replayed: handled, its reply waiting", 1, 1, 2); !st.OldestOutbox.Equal(first.OldestOutbox) {
		t.Errorf("oldest outbox record after a later one: got %v, want %v", st.OldestOutbox, first.OldestOutbox)
	}
	publish()
	want("published", 1, 1, 0)
}
