package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

type doPayload struct {
	Fail int  `json:"fail"` // fail this many runs
	Perm bool `json:"perm"` // fail permanently
	// Steal makes the handler commit the command's inbox row from another
	// connection before the SDK records it (a concurrent consumer).
	Steal bool `json:"steal"`
}

type batchFixture struct {
	p    *Participant
	mu   sync.Mutex
	runs map[string]int
}

func newBatchFixture(t *testing.T, db *sqlx.DB) *batchFixture {
	t.Helper()
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE effects (command_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Name: "worker", DB: db, MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := &batchFixture{p: p, runs: map[string]int{}}
	Handle(p, "DO", func(ctx context.Context, tx *sqlx.Tx, cmd Command[doPayload]) (Result, error) {
		f.mu.Lock()
		f.runs[cmd.ID]++
		n := f.runs[cmd.ID]
		f.mu.Unlock()
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (command_id) VALUES (?)`), cmd.ID); err != nil {
			return Result{}, err
		}
		switch {
		case cmd.Payload.Perm:
			return Result{}, Permanent(fmt.Errorf("bad command %s", cmd.ID))
		case n <= cmd.Payload.Fail:
			return Result{}, fmt.Errorf("run %d fails", n)
		case cmd.Payload.Steal && n == 1:
			stolen, _ := json.Marshal(envelope.Message{V: 1, ID: "stolen-" + cmd.ID, SagaID: cmd.SagaID, Kind: envelope.KindEvent, Name: "STOLEN"})
			q := db.Rebind(`INSERT INTO sdk_inbox (message_id, saga_id, command, reply_id, reply, processed_at) VALUES (?, ?, ?, ?, ?, ?)`)
			if _, err := db.ExecContext(ctx, q, cmd.ID, cmd.SagaID, cmd.Name, "stolen-"+cmd.ID, stolen, time.Now().UTC()); err != nil {
				return Result{}, fmt.Errorf("steal: %w", err)
			}
		}
		return Reply("DONE", map[string]any{"by": cmd.ID}), nil
	})
	return f
}

func doRecord(t *testing.T, pl doPayload) (envelope.Message, kafka.Record) {
	t.Helper()
	raw, _ := json.Marshal(pl)
	m := envelope.Message{V: 1, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "S", SagaVersion: 1, Kind: envelope.KindCommand,
		Name: "DO", Participant: "worker", OccurredAt: time.Now().UTC(), Payload: raw}
	b, _ := json.Marshal(m)
	return m, kafka.Record{Topic: "WORKER_TOPIC", Key: m.SagaID, Value: b}
}

func batchDBs(t *testing.T) map[string]func(t *testing.T) *sqlx.DB {
	return map[string]func(t *testing.T) *sqlx.DB{
		"sqlite": func(t *testing.T) *sqlx.DB {
			db, err := sqlx.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "b.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func(t *testing.T) *sqlx.DB {
			db, err := sqlx.Open("postgres", testenv.Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
}

// TestProcessBatchMixed runs one fetched batch mixing good commands, a
// failing one, a duplicate, a malformed record and a permanent failure: the
// transaction batching must give every record the outcome it would get
// alone.
func TestProcessBatchMixed(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newBatchFixture(t, open(t))
			ctx := context.Background()
			ok1, r1 := doRecord(t, doPayload{})
			flaky, r2 := doRecord(t, doPayload{Fail: 1})
			ok2, r3 := doRecord(t, doPayload{})
			malformed := kafka.Record{Topic: "WORKER_TOPIC", Key: "k", Value: []byte("nope")}
			ok3, r6 := doRecord(t, doPayload{})
			perm, r7 := doRecord(t, doPayload{Perm: true})
			recs := []kafka.Record{r1, r2, r3, r1, malformed, r6, r7}

			outs, err := f.p.process(ctx, nil, recs)
			if err != nil {
				t.Fatalf("process: %v", err)
			}
			if got, want := len(outs), len(recs); got != want {
				t.Fatalf("outcomes = %d, want %d", got, want)
			}
			type want struct {
				id        string
				reply     bool
				duplicate bool
				dead      bool
				attempts  int
			}
			wants := []want{
				{ok1.ID, true, false, false, 1},
				{flaky.ID, true, false, false, 2},
				{ok2.ID, true, false, false, 1},
				{ok1.ID, true, true, false, 0},
				{"", false, false, true, 0},
				{ok3.ID, true, false, false, 1},
				{perm.ID, false, false, true, 1},
			}
			for i, w := range wants {
				o := outs[i]
				if o.Command.ID != w.id || (o.Reply != nil) != w.reply || o.Duplicate != w.duplicate || (o.DeadLetter != nil) != w.dead || o.Attempts != w.attempts {
					t.Errorf("record %d: id %q reply %v duplicate %v dead %v attempts %d; want %+v (err %v)",
						i, o.Command.ID, o.Reply != nil, o.Duplicate, o.DeadLetter != nil, o.Attempts, w, o.Err)
				}
			}
			if outs[3].Reply != nil && outs[0].Reply != nil && outs[3].Reply.ID != outs[0].Reply.ID {
				t.Errorf("duplicate reply id = %s, want the first reply's %s", outs[3].Reply.ID, outs[0].Reply.ID)
			}
			var effects []string
			if err := f.p.db.Select(&effects, `SELECT command_id FROM effects ORDER BY command_id`); err != nil {
				t.Fatal(err)
			}
			if got, want := len(effects), 4; got != want {
				t.Errorf("effects = %d %v, want %d (ok1, flaky, ok2, ok3 once each)", got, effects, want)
			}
			var outbox []string
			if err := f.p.db.Select(&outbox, `SELECT name FROM sdk_outbox ORDER BY seq`); err != nil {
				t.Fatal(err)
			}
			if got, want := len(outbox), 5; got != want {
				t.Errorf("outbox rows = %d, want %d (4 replies and the duplicate's re-send)", got, want)
			}
			// ok1 shares a transaction with flaky: flaky's failure rolls it
			// back and it runs once more (its effects commit once, above).
			if got, want := f.runs[ok1.ID], 2; got != want {
				t.Errorf("ok1 handler runs = %d, want %d", got, want)
			}
		})
	}
}

// TestBatchStats: Stats counts the fetched batches that committed, their
// commands and their time; a batch rolled back (a failing command) is not
// counted, the batches it is then split into are.
func TestBatchStats(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newBatchFixture(t, open(t))
			ctx := context.Background()
			var recs []kafka.Record
			for range 3 {
				_, r := doRecord(t, doPayload{})
				recs = append(recs, r)
			}
			if _, err := f.p.process(ctx, nil, recs); err != nil {
				t.Fatalf("process: %v", err)
			}
			st, err := f.p.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Batches != 1 || st.BatchCommands != 3 || st.BatchTime <= 0 {
				t.Fatalf("after one batch of 3: Batches %d, BatchCommands %d, BatchTime %v; want 1, 3, > 0", st.Batches, st.BatchCommands, st.BatchTime)
			}
			// ok, flaky, ok: the first transaction rolls back at flaky.
			_, a := doRecord(t, doPayload{})
			_, b := doRecord(t, doPayload{Fail: 1})
			_, c := doRecord(t, doPayload{})
			if _, err := f.p.process(ctx, nil, []kafka.Record{a, b, c}); err != nil {
				t.Fatalf("process: %v", err)
			}
			st2, err := f.p.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st2.BatchCommands-st.BatchCommands > 3 || st2.BatchTime <= st.BatchTime {
				t.Errorf("after the second fetch: %d more commands counted (at most 3: the rolled-back batch is not), BatchTime %v after %v",
					st2.BatchCommands-st.BatchCommands, st2.BatchTime, st.BatchTime)
			}
		})
	}
}

// TestProcessConcurrentDuplicate: another consumer records the command
// while our handler runs; ours must roll back and re-send the winner's
// reply, alone and inside a batch.
func TestProcessConcurrentDuplicate(t *testing.T) {
	open := batchDBs(t)["postgres"] // SQLite has one writer: no such race
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			f := newBatchFixture(t, open(t))
			stolen, rs := doRecord(t, doPayload{Steal: true})
			recs := []kafka.Record{rs}
			if batched {
				_, r0 := doRecord(t, doPayload{})
				recs = []kafka.Record{r0, rs}
			}
			outs, err := f.p.process(context.Background(), nil, recs)
			if err != nil {
				t.Fatalf("process: %v", err)
			}
			o := outs[len(outs)-1]
			if !o.Duplicate || o.Reply == nil || o.Reply.ID != "stolen-"+stolen.ID {
				t.Errorf("outcome: duplicate %v reply %+v, want the stolen reply re-sent", o.Duplicate, o.Reply)
			}
			var n int
			if err := f.p.db.Get(&n, f.p.db.Rebind(`SELECT COUNT(*) FROM effects WHERE command_id = ?`), stolen.ID); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("effects of the stolen command = %d, want 0 (rolled back)", n)
			}
		})
	}
}

// TestBatchTxSettings: a batch's transaction on PostgreSQL has its idle
// bound in force for every handler of the batch (set by the batch's first
// statement, the inbox look-up), also when a command of the batch is a
// duplicate found in the inbox; and it does not outlive the transaction.
func TestBatchTxSettings(t *testing.T) {
	db := batchDBs(t)["postgres"](t)
	f := newBatchFixture(t, db)
	var seen []string
	Handle(f.p, "LOOK", func(ctx context.Context, tx *sqlx.Tx, cmd Command[doPayload]) (Result, error) {
		var idle string
		err := tx.QueryRowContext(ctx, `SELECT current_setting('idle_in_transaction_session_timeout')`).Scan(&idle)
		seen = append(seen, idle)
		return NoReply(), err
	})
	look := func() kafka.Record {
		_, r := doRecord(t, doPayload{})
		var m envelope.Message
		if err := json.Unmarshal(r.Value, &m); err != nil {
			t.Fatal(err)
		}
		m.Name = "LOOK"
		r.Value, _ = json.Marshal(m)
		return r
	}
	ctx := context.Background()
	_, done := doRecord(t, doPayload{})
	if _, err := f.p.process(ctx, nil, []kafka.Record{done}); err != nil {
		t.Fatal(err)
	}
	outs, err := f.p.process(ctx, nil, []kafka.Record{done, look(), look()}) // a duplicate first
	if err != nil {
		t.Fatal(err)
	}
	if !outs[0].Duplicate {
		t.Errorf("the redelivered command: outcome %+v, want a duplicate", outs[0])
	}
	want := []string{"15s", "15s"}
	if !slices.Equal(seen, want) {
		t.Errorf("settings seen by the batch's handlers = %q, want %q", seen, want)
	}
	var idle string
	if err := db.QueryRowContext(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&idle); err != nil || idle != "0" {
		t.Errorf("after the batch: idle_in_transaction_session_timeout %q (err %v), want the server's 0", idle, err)
	}
}

// TestHandleBatchAcrossPartitions: on PostgreSQL (Concurrency 4), a fetched
// batch that fits in one transaction is handled in one, whatever its
// partitions; a larger one gives each partition its own transactions, run
// at the same time. Either way every record is done, and the commands of a
// partition run in their order.
func TestHandleBatchAcrossPartitions(t *testing.T) {
	f := newBatchFixture(t, batchDBs(t)["postgres"](t))
	if f.p.cfg.Concurrency < 2 {
		t.Fatalf("Concurrency = %d on PostgreSQL, want the parallel default", f.p.cfg.Concurrency)
	}
	var (
		mu   sync.Mutex
		txOf = map[string]string{} // command id -> PostgreSQL transaction id
		ran  []string              // command ids in the order their handlers ran
	)
	Handle(f.p, "TX", func(ctx context.Context, tx *sqlx.Tx, cmd Command[doPayload]) (Result, error) {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT txid_current()::text`).Scan(&id)
		mu.Lock()
		txOf[cmd.ID], ran = id, append(ran, cmd.ID)
		mu.Unlock()
		return NoReply(), err
	})
	for _, tc := range []struct {
		name         string
		perPartition int
		wantTxs      int
	}{
		{"fits one transaction", 8, 1},         // 24 records
		{"larger than one transaction", 20, 3}, // 60 records: one transaction per partition
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			clear(txOf)
			ran = nil
			mu.Unlock()
			partOf := map[string]int32{}
			var recs []kafka.Record
			for p := range int32(3) {
				for i := range tc.perPartition {
					m, r := doRecord(t, doPayload{})
					m.Name = "TX"
					r.Value, _ = json.Marshal(m)
					r.Partition, r.Offset = p, int64(i)
					partOf[m.ID] = p
					recs = append(recs, r)
				}
			}
			done := f.p.handleBatch(context.Background(), nil, recs)
			if len(done) != len(recs) {
				t.Fatalf("handleBatch did %d of %d records", len(done), len(recs))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(txOf) != len(recs) {
				t.Fatalf("handlers ran for %d commands, want %d", len(txOf), len(recs))
			}
			partsOfTx := map[string]map[int32]bool{}
			for id, tx := range txOf {
				if partsOfTx[tx] == nil {
					partsOfTx[tx] = map[int32]bool{}
				}
				partsOfTx[tx][partOf[id]] = true
			}
			if len(partsOfTx) != tc.wantTxs {
				t.Errorf("%d records in %d transactions, want %d", len(recs), len(partsOfTx), tc.wantTxs)
			}
			if tc.wantTxs > 1 {
				for tx, parts := range partsOfTx {
					if len(parts) != 1 {
						t.Errorf("transaction %s spans partitions %v, want one", tx, parts)
					}
				}
			}
			for p := range int32(3) {
				var want, got []string
				for _, r := range recs {
					var m envelope.Message
					if err := json.Unmarshal(r.Value, &m); err != nil {
						t.Fatal(err)
					}
					if r.Partition == p {
						want = append(want, m.ID)
					}
				}
				for _, id := range ran {
					if partOf[id] == p {
						got = append(got, id)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("partition %d: commands ran in order %v, want %v", p, got, want)
				}
			}
		})
	}
}
