package delivery_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// The conformance suite of the delivery core: every test runs on SQLite
// and PostgreSQL, for saga-machine's tables and for the SDK's, on the
// tables their real migrations create.

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is one layout on one database.
type fixture struct {
	name   string
	db     *sqlx.DB
	tables *delivery.Tables
	clock  *clock
}

// forEach runs test once per database and layout.
func forEach(t *testing.T, test func(t *testing.T, f *fixture)) {
	t.Helper()
	for _, dialect := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		for _, l := range []delivery.Layout{delivery.EngineTables, delivery.ParticipantTables} {
			t.Run(string(dialect)+"/"+l.Name, func(t *testing.T) {
				test(t, open(t, dialect, l))
			})
		}
	}
}

func open(t *testing.T, dialect sqldb.Dialect, l delivery.Layout) *fixture {
	t.Helper()
	ctx := context.Background()
	url := filepath.Join(t.TempDir(), "delivery.db")
	if dialect == sqldb.Postgres {
		url = testenv.Postgres(t)
	}
	db, err := sqldb.Open(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := sqldb.Migrations{Component: "engine"}
	if l.Name == "sdk" {
		m = sqldb.Migrations{Component: "sdk", Table: "sdk_goose_db_version"}
	}
	if err := sqldb.Migrate(ctx, db, m); err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	stmts := sqldb.NewStatements(db)
	t.Cleanup(func() { stmts.Close() })
	tables, err := delivery.New(db, l, delivery.Options{Statements: stmts, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{name: string(dialect) + "/" + l.Name, db: db, tables: tables, clock: c}
}

// inTx runs fn in a transaction and commits it.
func (f *fixture) inTx(t *testing.T, fn func(tx *sqlx.Tx) error) {
	t.Helper()
	tx, err := f.db.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback() //nolint:errcheck
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) claim(t *testing.T, ids ...string) []string {
	t.Helper()
	var fresh map[string]bool
	f.inTx(t, func(tx *sqlx.Tx) error {
		var err error
		fresh, err = f.tables.ClaimIDs(context.Background(), tx, ids)
		return err
	})
	return slices.Sorted(maps.Keys(fresh))
}

// row is an outbox row of test message i.
func row(i int) delivery.Row {
	id := fmt.Sprintf("m-%02d", i)
	return delivery.Row{
		ID: id, Name: "APPROVE_ORDER", Topic: "PROFILE_TOPIC", Key: fmt.Sprintf("saga-%d", i%3),
		Value: fmt.Appendf(nil, `{"v":1,"id":%q,"kind":"command","name":"APPROVE_ORDER","payload":{"n":%d,"s":"q\"uote"}}`, id, i),
		Headers: map[string]string{
			envelope.HeaderKind: "command", envelope.HeaderName: "APPROVE_ORDER",
			envelope.HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		},
	}
}

func (f *fixture) write(t *testing.T, rows ...delivery.Row) {
	t.Helper()
	f.inTx(t, func(tx *sqlx.Tx) error { return f.tables.Write(context.Background(), tx, rows) })
}

// want is what the outbox gives back of r: the layout without Headers
// keeps only the traceparent (and no id and name).
func (f *fixture) want(r delivery.Row) delivery.Row {
	if !f.tables.Layout().Headers {
		r.ID, r.Name = "", ""
		r.Headers = map[string]string{envelope.HeaderTraceparent: r.Headers[envelope.HeaderTraceparent]}
	}
	return r
}

func checkRows(t *testing.T, f *fixture, got []delivery.Row, want ...delivery.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d rows %v, want %d", len(got), ids(got), len(want))
	}
	for i := range got {
		w := f.want(want[i])
		g := got[i]
		if g.Seq == 0 || (i > 0 && g.Seq <= got[i-1].Seq) {
			t.Errorf("row %d: seq %d not ascending", i, g.Seq)
		}
		if g.ID != w.ID || g.Name != w.Name || g.Topic != w.Topic || g.Key != w.Key || string(g.Value) != string(w.Value) || !maps.Equal(g.Headers, w.Headers) {
			t.Errorf("row %d = %+v (value %s), want %+v (value %s)", i, g, g.Value, w, w.Value)
		}
	}
}

func ids(rows []delivery.Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		var m envelope.Message
		_ = envelope.UnmarshalMessage(r.Value, &m)
		out[i] = m.ID
	}
	return out
}

func backlog(t *testing.T, f *fixture) int64 {
	t.Helper()
	n, err := f.tables.Backlog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// publishAll publishes with owner and returns what publish saw.
func publishAll(t *testing.T, f *fixture, owner string, limit int) []delivery.Row {
	t.Helper()
	var got []delivery.Row
	n, err := f.tables.Publish(context.Background(), owner, limit, time.Minute, func(_ context.Context, rows []delivery.Row) error {
		got = append(got, rows...)
		return nil
	})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if n != len(got) {
		t.Errorf("Publish = %d, publish saw %d", n, len(got))
	}
	return got
}

// A message id is fresh once; a duplicate (later, or in the same batch)
// changes nothing; a rolled-back claim is forgotten; an empty id is refused.
func TestClaim(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		if got, want := f.claim(t, "b", "a", "b"), []string{"a", "b"}; !slices.Equal(got, want) {
			t.Errorf("first claim fresh = %v, want %v", got, want)
		}
		if got, want := f.claim(t, "a", "c", "b"), []string{"c"}; !slices.Equal(got, want) {
			t.Errorf("second claim fresh = %v, want %v (a and b are duplicates)", got, want)
		}
		tx, err := f.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fresh, err := f.tables.ClaimIDs(ctx, tx, []string{"d"}); err != nil || !fresh["d"] {
			t.Fatalf("claim d = %v, %v", fresh, err)
		}
		tx.Rollback() //nolint:errcheck
		if got, want := f.claim(t, "d"), []string{"d"}; !slices.Equal(got, want) {
			t.Errorf("after a rollback fresh = %v, want %v", got, want)
		}
		f.inTx(t, func(tx *sqlx.Tx) error {
			if _, err := f.tables.ClaimIDs(ctx, tx, []string{"e", ""}); err == nil {
				t.Error("claim of an empty id: no error")
			}
			return nil
		})
		if got, want := f.claim(t, "e"), []string{"e"}; !slices.Equal(got, want) {
			t.Errorf("after the refused claim fresh = %v, want %v (nothing was recorded)", got, want)
		}
		f.inTx(t, func(tx *sqlx.Tx) error { return f.tables.Forget(ctx, tx, "a") })
		if got, want := f.claim(t, "a", "b"), []string{"a"}; !slices.Equal(got, want) {
			t.Errorf("after Forget(a) fresh = %v, want %v", got, want)
		}
		// More ids than one SQLite statement takes.
		many := make([]string, 1234)
		for i := range many {
			many[i] = fmt.Sprintf("id-%04d", i)
		}
		if got := f.claim(t, many...); len(got) != len(many) {
			t.Errorf("claim of %d ids: %d fresh", len(many), len(got))
		}
		if got := f.claim(t, many...); len(got) != 0 {
			t.Errorf("second claim of %d ids: %d fresh, want none", len(many), len(got))
		}
	})
}

// Concurrent claims of overlapping ids: each id is fresh for exactly one.
func TestClaimConcurrent(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		const workers, n = 4, 60
		var mu sync.Mutex
		count := map[string]int{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				ids := make([]string, 0, n)
				for i := range n {
					ids = append(ids, fmt.Sprintf("id-%d", (i+w*n/workers)%n))
				}
				for try := 0; ; try++ {
					tx, err := f.db.BeginTxx(context.Background(), nil)
					if err != nil {
						t.Error(err)
						return
					}
					fresh, err := f.tables.ClaimIDs(context.Background(), tx, ids)
					if err == nil {
						err = tx.Commit()
					} else {
						tx.Rollback() //nolint:errcheck
					}
					if err != nil {
						if try < 20 { // SQLite busy, PostgreSQL deadlock: the caller retries
							continue
						}
						t.Error(err)
						return
					}
					mu.Lock()
					for id := range fresh {
						count[id]++
					}
					mu.Unlock()
					return
				}
			})
		}
		wg.Wait()
		if len(count) != n {
			t.Errorf("%d ids fresh somewhere, want %d", len(count), n)
		}
		for id, c := range count {
			if c != 1 {
				t.Errorf("%s fresh %d times", id, c)
			}
		}
	})
}

// The SDK's inbox keeps each command's reply; saga-machine's keeps none.
func TestReplies(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		if !f.tables.Layout().Replies {
			f.inTx(t, func(tx *sqlx.Tx) error {
				if _, err := f.tables.Replies(ctx, tx, []string{"a"}); err == nil {
					t.Error("Replies on an inbox without replies: no error")
				}
				if err := f.tables.SetReply(ctx, tx, "a", "r", nil); err == nil {
					t.Error("SetReply on an inbox without replies: no error")
				}
				return nil
			})
			return
		}
		f.inTx(t, func(tx *sqlx.Tx) error {
			fresh, err := f.tables.Claim(ctx, tx, []delivery.InboxRow{
				{ID: "c-1", SagaID: "s-1", Command: "APPROVE_ORDER", ReplyID: "r-1", Reply: []byte(`{"id":"r-1"}`)},
				{ID: "c-2", SagaID: "s-2", Command: "NOTIFY"},
				{ID: "c-3", SagaID: "s-3", Command: "APPROVE_ORDER", Reply: []byte(`ignored without a reply id`)},
			})
			if err != nil || len(fresh) != 3 {
				return fmt.Errorf("claim = %v, %v", fresh, err)
			}
			return f.tables.SetReply(ctx, tx, "c-2", "r-2", []byte(`{"id":"r-2"}`))
		})
		var got map[string]delivery.Reply
		f.inTx(t, func(tx *sqlx.Tx) error {
			var err error
			got, err = f.tables.Replies(ctx, tx, []string{"c-1", "c-2", "c-3", "c-4"})
			return err
		})
		want := map[string]delivery.Reply{
			"c-1": {ID: "r-1", Body: []byte(`{"id":"r-1"}`)}, "c-2": {ID: "r-2", Body: []byte(`{"id":"r-2"}`)}, "c-3": {},
		}
		if len(got) != len(want) {
			t.Fatalf("Replies = %v, want %v", got, want)
		}
		for id, w := range want {
			if g := got[id]; g.ID != w.ID || string(g.Body) != string(w.Body) {
				t.Errorf("reply of %s = %+v, want %+v", id, g, w)
			}
		}
	})
}

// Rows come out in the order they were written (across transactions),
// with their fields; published rows are gone.
func TestWriteAndPublish(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		f.write(t, row(1), row(2), row(3))
		f.write(t, row(4), row(5))
		if n := backlog(t, f); n != 5 {
			t.Errorf("Backlog = %d, want 5", n)
		}
		got := publishAll(t, f, "relay-a", 3)
		checkRows(t, f, got, row(1), row(2), row(3))
		got = publishAll(t, f, "relay-a", 10)
		checkRows(t, f, got, row(4), row(5))
		if n := backlog(t, f); n != 0 {
			t.Errorf("Backlog after publishing everything = %d, want 0", n)
		}
		if got := publishAll(t, f, "relay-a", 10); len(got) != 0 {
			t.Errorf("Publish of an empty outbox saw %v", ids(got))
		}
		// Many rows in one statement.
		many := make([]delivery.Row, 700)
		for i := range many {
			many[i] = row(i)
		}
		f.write(t, many...)
		got = publishAll(t, f, "relay-a", 1000)
		checkRows(t, f, got, many...)
	})
}

// What Write and Publish refuse changes nothing.
func TestOutboxRefusals(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		f.write(t, row(1))
		f.inTx(t, func(tx *sqlx.Tx) error {
			bad := row(2)
			bad.Topic = ""
			if err := f.tables.Write(ctx, tx, []delivery.Row{row(3), bad}); err == nil {
				t.Error("Write of a row without a topic: no error")
			}
			return nil
		})
		for _, c := range []struct {
			owner string
			limit int
			lease time.Duration
		}{{"", 1, time.Minute}, {"o", 0, time.Minute}, {"o", 1, 0}} {
			if _, err := f.tables.Publish(ctx, c.owner, c.limit, c.lease, func(context.Context, []delivery.Row) error { return nil }); err == nil {
				t.Errorf("Publish(%q, %d, %v): no error", c.owner, c.limit, c.lease)
			}
			if _, err := f.tables.Lease(ctx, c.owner, c.limit, c.lease); err == nil {
				t.Errorf("Lease(%q, %d, %v): no error", c.owner, c.limit, c.lease)
			}
		}
		if _, err := f.tables.Publish(ctx, "o", 1, time.Minute, nil); err == nil {
			t.Error("Publish without a publish function: no error")
		}
		checkRows(t, f, publishAll(t, f, "o", 10), row(1))
	})
}

// A failed publish gives the rows back at once, to any relay.
func TestPublishFailureReleases(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		f.write(t, row(1), row(2))
		broker := errors.New("broker down")
		n, err := f.tables.Publish(context.Background(), "relay-a", 10, time.Minute, func(context.Context, []delivery.Row) error { return broker })
		if !errors.Is(err, broker) || n != 0 {
			t.Fatalf("Publish with a failing publish = %d, %v; want 0 and the failure", n, err)
		}
		if n := backlog(t, f); n != 2 {
			t.Errorf("Backlog after the failure = %d, want 2", n)
		}
		checkRows(t, f, publishAll(t, f, "relay-b", 10), row(1), row(2))
	})
}

// Leased rows are skipped by other relays until the lease runs out, and
// leased again to their owner at once.
func TestLeases(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		f.write(t, row(1), row(2), row(3))
		leased, err := f.tables.Lease(ctx, "relay-a", 2, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		checkRows(t, f, leased, row(1), row(2))
		checkRows(t, f, publishAll(t, f, "relay-b", 10), row(3))
		again, err := f.tables.Lease(ctx, "relay-a", 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		checkRows(t, f, again, row(1), row(2))
		if got := publishAll(t, f, "relay-b", 10); len(got) != 0 {
			t.Errorf("relay-b published %v leased to relay-a", ids(got))
		}
		f.clock.Add(time.Minute + time.Second)
		checkRows(t, f, publishAll(t, f, "relay-b", 10), row(1), row(2))
		// Release and Delete.
		f.write(t, row(4), row(5))
		leased, err = f.tables.Lease(ctx, "relay-a", 10, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.tables.Release(ctx, "relay-b", []int64{leased[0].Seq}); err != nil {
			t.Fatal(err)
		}
		if got := publishAll(t, f, "relay-b", 10); len(got) != 0 {
			t.Errorf("relay-b released relay-a's lease and published %v", ids(got))
		}
		if err := f.tables.Release(ctx, "relay-a", []int64{leased[0].Seq}); err != nil {
			t.Fatal(err)
		}
		if err := f.tables.Delete(ctx, []int64{leased[1].Seq}); err != nil {
			t.Fatal(err)
		}
		checkRows(t, f, publishAll(t, f, "relay-b", 10), row(4))
	})
}

// While one relay publishes, another gets the other rows, never the same.
func TestPublishExcludesOthers(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		f.write(t, row(1), row(2), row(3), row(4))
		var other []delivery.Row
		first := publishAllWith(t, f, "relay-a", 2, func(rows []delivery.Row) error {
			other = publishAll(t, f, "relay-b", 10)
			return nil
		})
		checkRows(t, f, first, row(1), row(2))
		checkRows(t, f, other, row(3), row(4))
		if n := backlog(t, f); n != 0 {
			t.Errorf("Backlog = %d, want 0", n)
		}
	})
}

func publishAllWith(t *testing.T, f *fixture, owner string, limit int, during func(rows []delivery.Row) error) []delivery.Row {
	t.Helper()
	var got []delivery.Row
	_, err := f.tables.Publish(context.Background(), owner, limit, time.Minute, func(_ context.Context, rows []delivery.Row) error {
		got = rows
		return during(rows)
	})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return got
}

// On PostgreSQL a relay that hangs while it holds rows loses its session
// after the lease (idle_in_transaction_session_timeout), and the rows go
// to another relay; its own commit (of their deletion) then fails, so it
// never reports them as published.
func TestStalledRelayLosesRows(t *testing.T) {
	f := open(t, sqldb.Postgres, delivery.ParticipantTables)
	f.write(t, row(1))
	var taken []delivery.Row
	_, err := f.tables.Publish(context.Background(), "stalled", 10, 300*time.Millisecond, func(_ context.Context, rows []delivery.Row) error {
		deadline := time.Now().Add(30 * time.Second)
		for len(taken) == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			taken = publishAll(t, f, "healthy", 10)
		}
		return nil
	})
	if err == nil {
		t.Error("the stalled relay's Publish succeeded after its session was ended")
	}
	checkRows(t, f, taken, row(1))
	if n := backlog(t, f); n != 0 {
		t.Errorf("Backlog = %d, want 0", n)
	}
}

// ClaimAndWrite records commands and writes their replies together.
func TestClaimAndWrite(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		f.claim(t, "c-2")
		var fresh map[string]bool
		f.inTx(t, func(tx *sqlx.Tx) error {
			var err error
			fresh, err = f.tables.ClaimAndWrite(ctx, tx,
				[]delivery.InboxRow{{ID: "c-1", SagaID: "s", Command: "X", ReplyID: "r-1", Reply: row(1).Value}, {ID: "c-2", SagaID: "s", Command: "X"}},
				[]delivery.Row{row(1), row(2)})
			return err
		})
		if got, want := slices.Sorted(maps.Keys(fresh)), []string{"c-1"}; !slices.Equal(got, want) {
			t.Errorf("fresh = %v, want %v", got, want)
		}
		checkRows(t, f, publishAll(t, f, "o", 10), row(1), row(2))
	})
}

// Purge deletes what was processed before the cut-off, in chunks, and
// keeps what the layout keeps (the SDK: commands compensated since).
func TestPurge(t *testing.T) {
	forEach(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		defer delivery.SetPurgeChunk(delivery.SetPurgeChunk(2))
		if _, err := f.tables.Purge(ctx, time.Time{}); err == nil {
			t.Error("Purge without a cut-off: no error")
		}
		f.claim(t, "old-1", "old-2", "old-3", "old-4", "old-5")
		f.clock.Add(time.Hour)
		cut := f.clock.Now()
		f.clock.Add(time.Hour)
		f.claim(t, "new-1", "new-2")
		want := int64(5)
		if f.tables.Layout().KeepInbox != "" {
			if _, err := f.db.ExecContext(ctx, f.db.Rebind(`INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at) VALUES (?, ?, ?, ?)`),
				"old-2", "s", "comp-1", f.clock.Now()); err != nil {
				t.Fatal(err)
			}
			want = 4
		}
		n, err := f.tables.Purge(ctx, cut.Add(-2*time.Hour))
		if err != nil || n != 0 {
			t.Fatalf("Purge before everything = %d, %v; want 0", n, err)
		}
		if n, err = f.tables.Purge(ctx, cut); err != nil || n != want {
			t.Fatalf("Purge = %d, %v; want %d", n, err, want)
		}
		got := f.claim(t, "old-1", "old-2", "old-3", "old-4", "old-5", "new-1", "new-2")
		wantFresh := []string{"old-1", "old-2", "old-3", "old-4", "old-5"}
		if want == 4 {
			wantFresh = []string{"old-1", "old-3", "old-4", "old-5"}
		}
		if !slices.Equal(got, wantFresh) {
			t.Errorf("after the purge fresh = %v, want %v", got, wantFresh)
		}
	})
}

// TestRelayTxSettings: on PostgreSQL the statement that takes the rows sets,
// for its transaction only, the idle bound (the lease) and
// synchronous_commit off (a lost deletion only publishes rows again); the
// connection keeps its own settings after the commit.
func TestRelayTxSettings(t *testing.T) {
	f := open(t, sqldb.Postgres, delivery.ParticipantTables)
	f.write(t, row(1), row(2))
	ctx := context.Background()
	conn, err := f.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	setting := func(q interface {
		QueryRowxContext(context.Context, string, ...any) *sqlx.Row
	}, name string) string {
		t.Helper()
		var v string
		if err := q.QueryRowxContext(ctx, `SELECT current_setting($1)`, name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := map[string]string{}
	for _, name := range []string{"synchronous_commit", "idle_in_transaction_session_timeout"} {
		before[name] = setting(conn, name)
	}
	if before["synchronous_commit"] == "off" {
		t.Fatal("the server's synchronous_commit is off already: the test cannot tell")
	}
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	rows, err := delivery.TakeFree(ctx, f.tables, tx, "relay", 10, 1500*time.Millisecond)
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	if len(rows) != 2 {
		t.Fatalf("took %d rows, want 2", len(rows))
	}
	for name, want := range map[string]string{"synchronous_commit": "off", "idle_in_transaction_session_timeout": "1500ms"} {
		if got := setting(tx, name); got != want {
			t.Errorf("in the relay's transaction %s = %q, want %q", name, got, want)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, want := range before {
		if got := setting(conn, name); got != want {
			t.Errorf("after the relay's transaction %s = %q, want the connection's %q", name, got, want)
		}
	}
	if n := backlog(t, f); n != 0 {
		t.Errorf("Backlog = %d after the commit, want 0", n)
	}
}

// TestRelayUnsyncedSQLite: on SQLite the relay's lease and deletion run at
// synchronous NORMAL (no fsync: losing either only publishes rows again),
// and the connection has its own level back afterwards, so no other
// transaction commits without its fsync. A level already at NORMAL or
// below is left alone.
func TestRelayUnsyncedSQLite(t *testing.T) {
	f := open(t, sqldb.SQLite, delivery.ParticipantTables)
	ctx := context.Background()
	level := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) int {
		t.Helper()
		var n int
		if err := q.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const off, normal, full = 0, 1, 2
	if got := level(f.db); got != full {
		t.Fatalf("the database's synchronous level is %d, want FULL (%d): the test cannot tell", got, full)
	}
	for _, start := range []int{full, off} {
		if _, err := f.db.ExecContext(ctx, fmt.Sprintf("PRAGMA synchronous = %d", start)); err != nil {
			t.Fatal(err)
		}
		want := min(start, normal)
		var inside int
		if err := delivery.Unsynced(ctx, f.tables, func(c *sql.Conn) error { inside = level(c); return nil }); err != nil {
			t.Fatal(err)
		}
		if inside != want {
			t.Errorf("from %d: synchronous inside = %d, want %d", start, inside, want)
		}
		if got := level(f.db); got != start {
			t.Errorf("from %d: synchronous after = %d, want the connection's own %d", start, got, start)
		}
	}
	if _, err := f.db.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		t.Fatal(err)
	}
	// Publish end to end: between the lease and the deletion (the publish)
	// and after it, the connection is at FULL; the rows are gone.
	f.write(t, row(1), row(2), row(3))
	var during []int
	n, err := f.tables.Publish(ctx, "relay", 10, time.Minute, func(context.Context, []delivery.Row) error {
		during = append(during, level(f.db))
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Publish = %d, %v; want 3 rows", n, err)
	}
	if !slices.Equal(during, []int{full}) {
		t.Errorf("synchronous while publishing = %v, want [%d]", during, full)
	}
	if got := level(f.db); got != full {
		t.Errorf("synchronous after Publish = %d, want FULL", got)
	}
	if b := backlog(t, f); b != 0 {
		t.Errorf("Backlog = %d after Publish, want 0", b)
	}
}
