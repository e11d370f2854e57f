package profile

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// TestApproveBatchThroughRun sends one partition a run of APPROVE_ORDER
// commands through Kafka to the running service (PostgreSQL): four buys
// of alice's portfolio of which the cash covers three, a redelivered
// command, and a forged one naming bob's portfolio under mallory's user.
// Alice's first three are approved and the fourth rejected, each once
// (the redelivery answered with the same reply); the forged one is
// rejected and bob's portfolio does not move. The commands were decided
// as a group: their decisions share one decided_at.
func TestApproveBatchThroughRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := servicetest.Postgres(t, Migrate)
	bus := servicetest.NewKafkaBus(ctx, t, "profile", "PROFILE_TOPIC", 1)
	cfg := bus.Config(Name, db, quiet)
	cfg.MaxAttempts, cfg.Backoff = 2, time.Millisecond
	p, err := sdk.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)
	alice, err := fundedPortfolio(ctx, s, "alice", dec("1000"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := fundedPortfolio(ctx, s, "bob", dec("1000"))
	if err != nil {
		t.Fatal(err)
	}
	bobBefore := mustPortfolio(t, s, "bob", bob.ID)
	record := func(id string, dc dealctx.DealContext) kafka.Record {
		m := envelope.Message{V: envelope.Version, ID: id, SagaID: uuid.NewString(), Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
			Kind: envelope.KindCommand, Name: CommandApproveOrder, Participant: Name, OccurredAt: time.Now().UTC(), Payload: mustJSON(t, dealctx.Wrap(dc))}
		return kafka.Record{Topic: bus.CommandTopic, Key: "one-key", Value: mustJSON(t, m),
			Headers: map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}}
	}
	ids := make([]string, 4)
	var recs []kafka.Record
	for i := range ids {
		ids[i] = uuid.NewString()
		dc := deal("alice", alice.ID, "buy", "1", "300")
		recs = append(recs, record(ids[i], dc))
		if i == 1 {
			recs = append(recs, recs[0]) // redelivered
		}
		if i == 2 {
			recs = append(recs, record(uuid.NewString(), deal("mallory", bob.ID, "buy", "1", "300"))) // forged
		}
	}
	bus.Publish(ctx, t, recs)
	cons := bus.Replies(t)
	servicetest.Run(ctx, t, p)

	type answer struct{ id, event string }
	replies := map[string][]answer{} // command id -> replies
	var forged []string
	for n := 0; n < len(recs); {
		rs, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("waiting for %d replies, got %d: %v", len(recs), n, err)
		}
		for _, r := range rs {
			var m envelope.Message
			if err := envelope.UnmarshalMessage(r.Value, &m); err != nil {
				t.Fatal(err)
			}
			if m.Name != EventOrderApproved && m.Name != EventOrderRejected {
				continue // the deposits' events, if any
			}
			replies[m.CausationID] = append(replies[m.CausationID], answer{m.ID, m.Name})
			if m.Name == EventOrderRejected && m.Reason == "portfolio "+bob.ID+" not found for user mallory" {
				forged = append(forged, m.CausationID)
			}
			n++
		}
	}
	for i, id := range ids {
		want, n := EventOrderApproved, 1
		if i == 3 {
			want = EventOrderRejected
		}
		if i == 0 {
			n = 2
		}
		got := replies[id]
		if len(got) != n || got[0].event != want || (n == 2 && got[1] != got[0]) {
			t.Errorf("replies to alice's command %d: %+v, want %d %s with one id", i, got, n, want)
		}
	}
	if len(forged) != 1 {
		t.Errorf("rejections of the forged command: %d, want 1", len(forged))
	}
	if got := mustPortfolio(t, s, "alice", alice.ID); !got.Cash.Equal(dec("100")) || positionsString(got.Positions) != `{"AAPL":"3"}` {
		t.Errorf("alice's portfolio: %s %s, want 100 {\"AAPL\":\"3\"}", got.Cash, positionsString(got.Positions))
	}
	if got := mustPortfolio(t, s, "bob", bob.ID); !got.Cash.Equal(dec("1000")) || len(got.Positions) != 0 || !got.UpdatedAt.Equal(bobBefore.UpdatedAt) {
		t.Errorf("bob's portfolio: %s %s updated %v, want untouched 1000 {} updated %v", got.Cash, positionsString(got.Positions), got.UpdatedAt, bobBefore.UpdatedAt)
	}
	var decisions, times int
	if err := db.GetContext(ctx, &decisions, `SELECT COUNT(*) FROM order_decisions`); err != nil {
		t.Fatal(err)
	}
	if err := db.GetContext(ctx, &times, `SELECT COUNT(DISTINCT decided_at) FROM order_decisions`); err != nil {
		t.Fatal(err)
	}
	if decisions != 5 || times >= decisions {
		t.Errorf("decisions = %d with %d distinct decided_at, want 5 taken in at least one group (fewer times)", decisions, times)
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
