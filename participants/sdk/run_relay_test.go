package sdk_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// TestRunRelayRoundsOfSagaStarts: a saga start written in a transaction
// that takes a while to commit, then Wake, costs the relay one round and no
// empty one: StartSaga does not wake the relay before the commit (on
// PostgreSQL it would look before the row is visible and find nothing); the
// commit's Wake does. A start whose committer does not call Wake waits in
// the outbox for the relay's next poll (an hour here) or the next Wake.
// Over a real broker and database.
func TestRunRelayRoundsOfSagaStarts(t *testing.T) { onBothBackends(t, runRelayRounds) }

func runRelayRounds(t *testing.T, db *sqlx.DB, brokers []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sdk.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE deals (id TEXT PRIMARY KEY, saga_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	cmdTopic, evTopic := testenv.Name(t, "DEALS_TOPIC"), testenv.Name(t, "SAGA_SERVER_TOPIC")
	kcfg := kafka.Config{Brokers: brokers, SASL: testenv.KafkaSASLFor(brokers)}
	if err := kafka.EnsureTopics(ctx, kcfg, 1, cmdTopic, evTopic); err != nil {
		t.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{
		Name: "deals", DB: db, Brokers: brokers, KafkaSASL: kcfg.SASL, CommandTopic: cmdTopic, EventTopic: evTopic,
		Group: testenv.Name(t, "deals"), RelayPoll: time.Hour, // only wake-ups and hints move the relay
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	sdk.Handle(p, "APPROVE_DEAL", func(context.Context, *sqlx.Tx, sdk.Command[map[string]any]) (sdk.Result, error) {
		return sdk.NoReply(), nil
	})
	cons, err := kafka.NewConsumer(kcfg, testenv.Name(t, "reader"), evTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	stats := func() sdk.Stats {
		t.Helper()
		st, err := p.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(ctx, t, "the relay's first round", func() (bool, error) { return stats().RelayRounds >= 1, nil })
	before := stats()

	// start writes a saga start for deal id, holds the transaction for
	// hold, commits, and calls Wake if wake.
	start := func(id string, hold time.Duration, wake bool) string {
		t.Helper()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
		sagaID, err := p.StartSaga(ctx, tx, "MANUAL_CREATE_ORDER", "REGISTER", orderPayload(id, 10))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO deals (id, saga_id) VALUES (?, ?)`), id, sagaID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(hold) // the rest of a business transaction
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if wake {
			p.Wake()
		}
		return sagaID
	}
	published := func(sagaID string) {
		t.Helper()
		for {
			recs, err := cons.Fetch(ctx, 10)
			if err != nil {
				t.Fatalf("waiting for the start of saga %s: %v", sagaID, err)
			}
			for _, r := range recs {
				var m envelope.Message
				if err := json.Unmarshal(r.Value, &m); err != nil {
					t.Fatal(err)
				}
				if m.SagaID == sagaID && m.Name == "REGISTER" {
					return
				}
			}
		}
	}

	const starts = 3
	for i := range starts {
		published(start("held-"+string(rune('a'+i)), 50*time.Millisecond, true))
	}
	// The counts are taken after the rows' deletion, which follows the
	// publication that published saw.
	var after sdk.Stats
	waitFor(ctx, t, "the relay's counts", func() (bool, error) {
		after = stats()
		return after.RelayPublished-before.RelayPublished >= starts, nil
	})
	if got := after.RelayEmptyRounds - before.RelayEmptyRounds; got != 0 {
		t.Errorf("%d empty relay rounds for %d saga starts, want 0 (the relay looked before a commit)", got, starts)
	}
	if got := after.RelayPublished - before.RelayPublished; got != starts {
		t.Errorf("relay published %d rows, want %d", got, starts)
	}
	if got := after.RelayRounds - before.RelayRounds; got != starts {
		t.Errorf("%d relay rounds for %d saga starts committed one after the other, want one each", got, starts)
	}

	// No Wake: the start waits in the outbox, not published and not lost,
	// until a wake-up (or the next poll).
	sagaID := start("no-wake", 0, false)
	time.Sleep(100 * time.Millisecond)
	if st := stats(); st.OutboxBacklog != 1 || st.RelayRounds != after.RelayRounds {
		t.Errorf("after a start without Wake: backlog %d, %d more relay rounds; want it waiting, no round", st.OutboxBacklog, st.RelayRounds-after.RelayRounds)
	}
	p.Wake()
	published(sagaID)
}
