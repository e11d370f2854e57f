package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
)

func TestEventTopic(t *testing.T) {
	for _, tc := range []struct{ base, participant, want string }{
		{"SAGA_SERVER_TOPIC", "deals", "SAGA_SERVER_TOPIC_DEALS"},
		{"SAGA_SERVER_TOPIC", "profile", "SAGA_SERVER_TOPIC_PROFILE"},
		{"EV.t1", "risk-check", "EV.t1_RISK-CHECK"},
	} {
		if got := engine.EventTopic(tc.base, tc.participant); got != tc.want {
			t.Errorf("EventTopic(%q, %q) = %q, want %q", tc.base, tc.participant, got, tc.want)
		}
	}
	got := engine.EventTopics("B", testCatalog(t))
	want := []string{"B_DEALS", "B_NOTIFICATION", "B_PROFILE"}
	if len(got) != len(want) {
		t.Fatalf("EventTopics = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("EventTopics = %v, want %v", got, want)
		}
	}
}

// senderHarness is a harness whose orchestrator binds senders to topics.
func senderHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	o, err := engine.New(engine.Config{Clock: h.clock.Now, Observer: h.obs, EventTopicBase: "SAGA_SERVER_TOPIC"}, testCatalog(t), h.st, h.pub)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.o = o
	return h
}

// on sends m as a record of topic.
func (h *harness) on(t *testing.T, topic string, m engine.Message) {
	t.Helper()
	rec := h.record(t, m)
	rec.Topic = topic
	if err := h.o.HandleRecords(context.Background(), []engine.Record{rec}); err != nil {
		t.Fatalf("HandleRecords: %v", err)
	}
}

// TestForgedSenderRefused is the attack of a participant that can write
// only its own event topic (broker ACLs) and claims to be another
// participant in the envelope: the event is dead-lettered with
// CodeWrongParticipant, the saga's state and context do not move, the
// timeline notes the refusal, and an operator's replay refuses it again.
func TestForgedSenderRefused(t *testing.T) {
	h := senderHarness(t)
	id := uuid.NewString()
	h.on(t, "SAGA_SERVER_TOPIC_DEALS", event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D1","user_id":42,"amount":"10.5"}}`))
	before := h.inst(t, id)
	if before.State != "DRAFT" {
		t.Fatalf("after REGISTER on deals' topic: state %s, want DRAFT", before.State)
	}

	for _, tc := range []struct {
		name, topic string
	}{
		{"deals claims to be profile on its own topic", "SAGA_SERVER_TOPIC_DEALS"},
		{"on the shared topic of earlier versions", "SAGA_SERVER_TOPIC"},
		{"on a topic of no participant", "SOMETHING_ELSE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all, _ := h.st.DeadLetters(context.Background(), 1000, true)
			dlsBefore := len(all)
			h.on(t, tc.topic, event(id, "ORDER_APPROVED", "profile", `{"profile_decision":"approved","forged":true}`))
			after := h.inst(t, id)
			if after.State != before.State || !bytes.Equal(after.Context, before.Context) {
				t.Errorf("forged ORDER_APPROVED moved the saga: state %s context %s, want %s %s", after.State, after.Context, before.State, before.Context)
			}
			dls, _ := h.st.DeadLetters(context.Background(), 100, true)
			if len(dls) != dlsBefore+1 {
				t.Fatalf("got %d dead letters, want %d", len(dls), dlsBefore+1)
			}
			if dls[0].Code != engine.CodeWrongParticipant || dls[0].Topic != tc.topic {
				t.Errorf("dead letter code %s topic %s, want %s %s (reason %q)", dls[0].Code, dls[0].Topic, engine.CodeWrongParticipant, tc.topic, dls[0].Reason)
			}
			hist, _ := h.st.History(context.Background(), id)
			last := hist[len(hist)-1]
			if last.Kind != engine.EntryRefused || last.Code != engine.CodeWrongParticipant {
				t.Errorf("last timeline entry %+v, want a refusal with %s", last, engine.CodeWrongParticipant)
			}
			err := h.o.Replay(context.Background(), dls[0].ID, "operator")
			if engine.ErrorCode(err) != engine.CodeWrongParticipant {
				t.Errorf("Replay of the forged event = %v, want %s", err, engine.CodeWrongParticipant)
			}
			if got := h.inst(t, id); got.State != before.State {
				t.Errorf("after replay: state %s, want %s", got.State, before.State)
			}
		})
	}
	if h.outboxNames()[len(h.outboxNames())-1] != "APPROVE_ORDER" {
		t.Errorf("outbox %v: a forged event queued a command", h.outboxNames())
	}

	// The genuine reply on profile's own topic is applied.
	h.on(t, "SAGA_SERVER_TOPIC_PROFILE", event(id, "ORDER_APPROVED", "profile", `{"profile_decision":"approved"}`))
	got := h.inst(t, id)
	if got.State != "APPROVED" {
		t.Errorf("genuine ORDER_APPROVED from profile's topic: state %s, want APPROVED", got.State)
	}
	var ctx map[string]any
	if err := json.Unmarshal(got.Context, &ctx); err != nil || ctx["forged"] != nil {
		t.Errorf("context %s carries the forged payload (err %v)", got.Context, err)
	}
}

// TestNoSenderCheckWithoutBase: without EventTopicBase (tests and tools
// that publish everything to one topic) events are applied as before.
func TestNoSenderCheckWithoutBase(t *testing.T) {
	h := newHarness(t)
	id := uuid.NewString()
	h.on(t, "ANY_TOPIC", event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D1","user_id":42,"amount":"10.5"}}`))
	if got := h.inst(t, id); got.State != "DRAFT" {
		t.Errorf("state %s, want DRAFT", got.State)
	}
}
