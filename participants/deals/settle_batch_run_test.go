package deals

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// TestSettleBatchThroughRun sends one partition a run of APPROVE_DEAL
// commands through Kafka to the running service (PostgreSQL): alice's
// drafts, a redelivered command, and a forged one naming bob's deal with
// alice's saga context. Each of alice's deals is executed once and
// answered (the redelivery with the same reply); the forged command is
// parked as a dead letter with its own reason and bob's deal does not
// move.
func TestSettleBatchThroughRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := servicetest.Postgres(t, Migrate)
	bus := servicetest.NewKafkaBus(ctx, t, "deals", "DEALS_TOPIC", 1)
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
	create := func(user string) Deal {
		d, _, err := s.Create(ctx, user, buyRequest(), "")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var alice []Deal
	for range 6 {
		alice = append(alice, create("alice"))
	}
	bob := create("bob")
	if _, err := db.ExecContext(ctx, `DELETE FROM sdk_outbox`); err != nil { // the REGISTER events
		t.Fatal(err)
	}
	record := func(id string, d Deal, user string) kafka.Record {
		dc := d.context()
		dc.UserID, dc.Status = user, dealctx.StatusApproved
		payload, _ := json.Marshal(dealctx.Wrap(dc))
		m := envelope.Message{V: envelope.Version, ID: id, SagaID: d.SagaID, Saga: SagaName, SagaVersion: 1,
			Kind: envelope.KindCommand, Name: CommandApprove, Participant: Name, OccurredAt: time.Now().UTC(), Payload: payload}
		body, _ := json.Marshal(m)
		return kafka.Record{Topic: bus.CommandTopic, Key: "one-key", Value: body,
			Headers: map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}}
	}
	ids := make([]string, len(alice))
	var recs []kafka.Record
	for i, d := range alice {
		ids[i] = uuid.NewString()
		recs = append(recs, record(ids[i], d, "alice"))
		if i == 1 {
			recs = append(recs, record(ids[0], alice[0], "alice")) // redelivered
		}
		if i == 2 {
			forged := record(uuid.NewString(), bob, "alice")
			recs = append(recs, forged)
		}
	}
	bus.Publish(ctx, t, recs)
	cons := bus.Replies(t)
	servicetest.Run(ctx, t, p)

	replies := map[string][]string{} // command id -> reply ids
	for n := 0; n < len(alice)+1; {
		rs, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("waiting for %d replies, got %d: %v", len(alice)+1, n, err)
		}
		for _, r := range rs {
			var m envelope.Message
			if err := envelope.UnmarshalMessage(r.Value, &m); err != nil {
				t.Fatal(err)
			}
			if m.Name != EventUpdated {
				t.Errorf("reply %s to %s, want %s", m.Name, m.CausationID, EventUpdated)
			}
			replies[m.CausationID] = append(replies[m.CausationID], m.ID)
			n++
		}
	}
	for i, id := range ids {
		want := 1
		if i == 0 {
			want = 2
		}
		if got := replies[id]; len(got) != want || (want == 2 && got[0] != got[1]) {
			t.Errorf("replies to alice's command %d: %v, want %d with one id", i, got, want)
		}
	}
	// The dead letter is written before the commands after it are handled.
	dls, err := p.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].SagaID != bob.SagaID || !strings.Contains(dls[0].Reason, `belongs to user "bob"`) || dls[0].Attempts != 1 {
		t.Errorf("dead letters = %+v, want the forged command, parked at once for bob's deal", dls)
	}
	for _, d := range alice {
		if got, err := s.Get(ctx, "alice", d.ID); err != nil || got.Status != StatusExecuted {
			t.Errorf("alice's deal %s: %s (err %v), want executed", d.ID, got.Status, err)
		}
	}
	if got, err := s.Get(ctx, "bob", bob.ID); err != nil || got.Status != StatusDraft || !got.UpdatedAt.Equal(bob.UpdatedAt) {
		t.Errorf("bob's deal: %s updated %v (err %v), want the untouched draft", got.Status, got.UpdatedAt, err)
	}
}
