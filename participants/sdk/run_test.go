package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

func TestRun(t *testing.T) { onBothBackends(t, runEndToEnd) }

// onBothBackends runs run as two subtests: over PostgreSQL and the test
// Kafka broker, and over SQLite and the embedded broker.
func onBothBackends(t *testing.T, run func(t *testing.T, db *sqlx.DB, brokers []string)) {
	t.Run("postgres+kafka", func(t *testing.T) {
		db, err := sqlx.Open("postgres", testenv.Postgres(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		run(t, db, testenv.KafkaBrokers(t))
	})
	t.Run("sqlite+embedded", func(t *testing.T) {
		b, err := embedded.Start(embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		run(t, openSQLite(t), b.Addrs())
	})
}

func openSQLite(tb testing.TB) *sqlx.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "p.db")
	db, err := sqlx.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// command builds a command envelope for the profile participant.
func command(tb testing.TB, name, sagaID string, payload any) (envelope.Message, sdk.Record) {
	tb.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		tb.Fatal(err)
	}
	m := envelope.Message{
		V: envelope.Version, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1,
		Kind: envelope.KindCommand, Name: name, Participant: "profile", OccurredAt: time.Now().UTC(), Attempt: 1, Payload: raw,
	}
	body, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return m, sdk.Record{Key: sagaID, Value: body, Headers: map[string]string{envelope.HeaderKind: "command", envelope.HeaderName: name, envelope.HeaderTraceparent: "00-" + sagaID[:8] + "-01"}}
}

// runEndToEnd runs a participant over a real broker and database: commands
// (one of them twice, one unknown, one malformed) go to the command topic;
// the replies must arrive on the event topic and the effects be in the
// database exactly once.
func runEndToEnd(t *testing.T, db *sqlx.DB, brokers []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i := range 2 { // twice: Migrate is idempotent
		if err := sdk.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE approved (deal_id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	cmdTopic, evTopic := testenv.Name(t, "PROFILE_TOPIC"), testenv.Name(t, "SAGA_SERVER_TOPIC")
	kcfg := kafka.Config{Brokers: brokers, SASL: testenv.KafkaSASLFor(brokers)}
	if err := kafka.EnsureTopics(ctx, kcfg, 3, cmdTopic, evTopic); err != nil {
		t.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{
		Name: "profile", DB: db, Brokers: brokers, KafkaSASL: kcfg.SASL, CommandTopic: cmdTopic, EventTopic: evTopic,
		Group: testenv.Name(t, "profile"), MaxAttempts: 2, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		runs.Add(1)
		d := cmd.Payload.DealContext
		if d.Amount < 0 {
			return sdk.Reject("ORDER_REJECTED", fmt.Sprintf("negative amount %d", d.Amount), nil), nil
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO approved (deal_id, amount) VALUES (?, ?)`), d.DealID, d.Amount); err != nil {
			return sdk.Result{}, fmt.Errorf("record approval of %s: %w", d.DealID, err)
		}
		return sdk.Reply("ORDER_APPROVED", map[string]any{"approved": d.DealID}), nil
	})

	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-runErr
		}
	}()

	const n = 12
	var cmds []envelope.Message
	var recs []sdk.Record
	for i := range n {
		amount := 10 + i
		if i%4 == 3 {
			amount = -1 // rejected
		}
		m, r := command(t, "APPROVE_ORDER", uuid.NewString(), orderPayload(fmt.Sprintf("deal-%02d", i), amount))
		cmds = append(cmds, m)
		recs = append(recs, r)
	}
	dup := recs[0]
	_, unknown := command(t, "LAUNCH_ROCKET", uuid.NewString(), map[string]any{})
	malformed := sdk.Record{Key: "x", Value: []byte("{not json")}
	all := append(append([]sdk.Record{}, recs...), dup, unknown, malformed)
	for i := range all {
		all[i].Topic = cmdTopic
	}
	prod, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, toKafka(all)); err != nil {
		t.Fatal(err)
	}

	// Every command answered once, plus the duplicate's re-sent reply.
	cons, err := kafka.NewConsumer(kcfg, testenv.Name(t, "reader"), evTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var replies []envelope.Message
	for len(replies) < n+1 {
		got, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("read replies (have %d of %d): %v", len(replies), n+1, err)
		}
		for _, r := range got {
			var m envelope.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("reply is not an envelope: %v: %s", err, r.Value)
			}
			if r.Key != m.SagaID || r.Headers[envelope.HeaderKind] != "event" || r.Headers[envelope.HeaderName] != m.Name {
				t.Errorf("reply record key %q headers %v, want key %s, kind event, name %s", r.Key, r.Headers, m.SagaID, m.Name)
			}
			if got, want := r.Headers[envelope.HeaderTraceparent], "00-"+m.SagaID[:8]+"-01"; got != want {
				t.Errorf("reply traceparent = %q, want the command's %q", got, want)
			}
			replies = append(replies, m)
		}
		if err := cons.Commit(ctx, got); err != nil {
			t.Fatal(err)
		}
	}

	byCause := map[string][]envelope.Message{}
	for _, m := range replies {
		byCause[m.CausationID] = append(byCause[m.CausationID], m)
	}
	for i, c := range cmds {
		rs := byCause[c.ID]
		wantCount := 1
		if i == 0 {
			wantCount = 2
		}
		if len(rs) != wantCount {
			t.Errorf("command %d: %d replies, want %d", i, len(rs), wantCount)
			continue
		}
		want := "ORDER_APPROVED"
		if i%4 == 3 {
			want = "ORDER_REJECTED"
		}
		r := rs[0]
		if r.Name != want || r.SagaID != c.SagaID || r.Participant != "profile" || r.Kind != envelope.KindEvent || r.Saga != c.Saga || r.SagaVersion != c.SagaVersion {
			t.Errorf("command %d: reply %+v, want %s for saga %s by profile", i, r, want, c.SagaID)
		}
		if wantCount == 2 && rs[1].ID != rs[0].ID {
			t.Errorf("duplicate's reply id = %s, want the first reply's %s", rs[1].ID, rs[0].ID)
		}
	}
	// A handler may run again after a rolled-back batch (e.g. SQLite busy,
	// then the slow path), as documented; what must hold exactly is the
	// effect (the approved rows below) and one reply per command (above).
	// The duplicate never runs the handler, so fewer than n runs is a bug.
	if got, want := runs.Load(), int64(n); got < want {
		t.Errorf("handler runs = %d, want at least %d (one per distinct command)", got, want)
	} else if got > want {
		t.Logf("handler runs = %d for %d commands: %d re-run(s) after a rolled-back batch", got, want, got-want)
	}
	var approved int
	if err := db.GetContext(ctx, &approved, `SELECT COUNT(*) FROM approved`); err != nil {
		t.Fatal(err)
	}
	if got, want := approved, n-n/4; got != want {
		t.Errorf("approved rows = %d, want %d", got, want)
	}

	// The unknown and malformed commands were parked; they are behind the
	// duplicate on their partitions or elsewhere, so wait for them.
	var dls []sdk.DeadLetter
	waitFor(ctx, t, "2 dead letters", func() (bool, error) {
		var err error
		dls, err = p.DeadLetters(ctx)
		return len(dls) == 2, err
	})
	parked := map[string]sdk.DeadLetter{}
	for _, dl := range dls {
		parked[string(dl.Body)] = dl
	}
	if dl, ok := parked[string(unknown.Value)]; !ok || dl.Command != "LAUNCH_ROCKET" || dl.Topic != cmdTopic {
		t.Errorf("dead letters %+v: want the unknown LAUNCH_ROCKET command from %s", dls, cmdTopic)
	}
	if dl, ok := parked[string(malformed.Value)]; !ok || dl.SagaID != malformed.Key || dl.Topic != cmdTopic || !strings.Contains(dl.Reason, "malformed envelope") {
		t.Errorf("dead letters %+v: want the malformed record (key %q) from %s", dls, malformed.Key, cmdTopic)
	}
	waitFor(ctx, t, "empty outbox", func() (bool, error) {
		var rows int
		err := db.GetContext(ctx, &rows, `SELECT COUNT(*) FROM sdk_outbox`)
		return rows == 0, err
	})
	var inbox int
	if err := db.GetContext(ctx, &inbox, `SELECT COUNT(*) FROM sdk_inbox`); err != nil {
		t.Fatal(err)
	}
	if got, want := inbox, n; got != want {
		t.Errorf("inbox rows = %d, want %d", got, want)
	}

	stop()
	stopped = true
	if err := <-runErr; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// waitFor polls cond until it holds or ctx ends (then the test fails).
func waitFor(ctx context.Context, tb testing.TB, what string, cond func() (bool, error)) bool {
	tb.Helper()
	for {
		ok, err := cond()
		if err != nil {
			tb.Fatalf("wait for %s: %v", what, err)
		}
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("wait for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Log(string(b))
	return len(b), nil
}

// toKafka turns records into Kafka records for a producer.
func toKafka(recs []sdk.Record) []kafka.Record {
	out := make([]kafka.Record, len(recs))
	for i, r := range recs {
		out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return out
}
