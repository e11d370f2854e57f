package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// Every event is delivered twice (the starting event by the test, the
// replies by the participant): each transition is applied once and each
// command is created once.
func TestDuplicateDeliveryChangesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be)
		p := e.participant(t, func(c *scripted.Config) { c.Duplicate = true })
		_, st := e.runOrchestrator(t, testenv.Name(t, "sm"), engine.Config{})
		var ids []string
		var msgs []engine.Message
		for i := 0; i < 20; i++ {
			id := uuid.NewString()
			ids = append(ids, id)
			m := register(id, i%4 == 0)
			msgs = append(msgs, m, m)
		}
		e.publish(t, msgs...)
		waitFor(t, "all sagas finished", func() (bool, string) { return allFinished(st, ids) })
		// Wait until every NOTIFY reached the participant, then check.
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return count(ms, "NOTIFY") >= len(ids) }); err != nil {
			t.Fatal(err)
		}
		cmdIDs := map[string]map[string]bool{} // saga → command name → ids
		for _, m := range p.Received() {
			if cmdIDs[m.SagaID] == nil {
				cmdIDs[m.SagaID] = map[string]bool{}
			}
			cmdIDs[m.SagaID][m.Name+"/"+m.ID] = true
		}
		for i, id := range ids {
			got := accepted(t, st, id)
			second := "ORDER_APPROVED"
			if i%4 == 0 {
				second = "ORDER_REJECTED"
			}
			if got["REGISTER"] != 1 || got[second] != 1 || got["DEAL_UPDATED"] != 1 || len(got) != 3 {
				t.Errorf("saga %s accepted %v, want REGISTER, %s and DEAL_UPDATED once each", id, got, second)
			}
			if n := len(cmdIDs[id]); n != 3 {
				t.Errorf("saga %s: %d distinct commands reached the participant (%v), want 3", id, n, cmdIDs[id])
			}
		}
		dls, err := st.DeadLetters(context.Background(), 100, true)
		if err != nil || len(dls) != 0 {
			t.Errorf("dead letters = %+v, %v; want none (duplicates are dropped, not refused)", dls, err)
		}
	})
}

func count(ms []engine.Message, name string) int {
	n := 0
	for _, m := range ms {
		if m.Name == name {
			n++
		}
	}
	return n
}

// Illegal, unknown-saga, unknown-instance and malformed events are parked
// with their reasons while the consumer goes on; a replay applies a parked
// event once it fits.
func TestRefusedEventsAreDeadLetteredAndReplayable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be)
		o, st := e.runOrchestrator(t, testenv.Name(t, "sm"), engine.Config{})
		early, good := uuid.NewString(), uuid.NewString()
		approvedEarly := scripted.NewEvent("MANUAL_CREATE_ORDER", early, "ORDER_APPROVED", "profile", nil)
		illegal := scripted.NewEvent("MANUAL_CREATE_ORDER", good, "DEAL_UPDATED", "deals", nil)
		unknownSaga := scripted.NewEvent("NO_SUCH_SAGA", uuid.NewString(), "REGISTER", "deals", nil)
		malformed := kafka.Record{Topic: e.eventTopic, Key: "x", Value: []byte(`{"v":1,"kind":"event"`)}
		e.publishRaw(t, malformed)
		e.publish(t, approvedEarly, unknownSaga, register(good, false), illegal)
		waitFor(t, "good saga registered and four dead letters", func() (bool, string) {
			dls, _ := st.DeadLetters(context.Background(), 10, false)
			in, err := st.GetInstance(context.Background(), good)
			return len(dls) == 4 && err == nil && in.State == "DRAFT", "dead letters so far: " + codes(dls)
		})
		dls, _ := st.DeadLetters(context.Background(), 10, false)
		byCode := map[engine.Code]engine.DeadLetter{}
		for _, d := range dls {
			byCode[d.Code] = d
			if d.Reason == "" || len(d.Raw) == 0 || d.Topic != e.eventTopic {
				t.Errorf("dead letter %+v lacks reason, raw bytes or topic", d)
			}
		}
		for _, c := range []engine.Code{engine.CodeInvalid, engine.CodeUnknownSaga, engine.CodeNotFound, engine.CodeIllegal} {
			if _, ok := byCode[c]; !ok {
				t.Errorf("no dead letter with code %s; got %s", c, codes(dls))
			}
		}
		if string(byCode[engine.CodeInvalid].Raw) != string(malformed.Value) {
			t.Errorf("malformed dead letter raw = %q, want the record bytes %q", byCode[engine.CodeInvalid].Raw, malformed.Value)
		}
		hist, _ := st.History(context.Background(), good)
		if last := hist[len(hist)-1]; last.Kind != engine.EntryRefused || last.Code != engine.CodeIllegal {
			t.Errorf("good saga's last entry = %+v, want the refused DEAL_UPDATED", last)
		}

		// The early ORDER_APPROVED fits once its saga exists.
		ctx := context.Background()
		if err := o.Replay(ctx, byCode[engine.CodeNotFound].ID, "ops"); engine.ErrorCode(err) != engine.CodeNotFound {
			t.Fatalf("replay before the saga exists: err %v, want not-found", err)
		}
		e.publish(t, register(early, false))
		waitFor(t, "early saga registered", func() (bool, string) {
			_, err := st.GetInstance(ctx, early)
			return err == nil, "not yet"
		})
		if err := o.Replay(ctx, byCode[engine.CodeNotFound].ID, "ops"); err != nil {
			t.Fatalf("Replay: %v", err)
		}
		in, err := st.GetInstance(ctx, early)
		if err != nil || in.State != "APPROVED" {
			t.Errorf("after replay: %s, %v; want APPROVED", in.State, err)
		}
		left, _ := st.DeadLetters(ctx, 10, false)
		if len(left) != 3 {
			t.Errorf("unreplayed dead letters = %s, want 3 left", codes(left))
		}
	})
}

func codes(dls []engine.DeadLetter) string {
	s := ""
	for _, d := range dls {
		s += string(d.Code) + " "
	}
	return s
}

// A command reaches the bus only after the transaction that created it
// committed: when the participant sees it, the saga is already in the state
// the command belongs to, and its pending command is that very message.
func TestOutboxRelayPublishesAfterCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be)
		p := e.participant(t, func(c *scripted.Config) { c.Silent = map[string]bool{"APPROVE_ORDER": true} })
		_, st := e.runOrchestrator(t, testenv.Name(t, "sm"), engine.Config{})
		id := uuid.NewString()
		e.publish(t, register(id, false))
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return count(ms, "APPROVE_ORDER") > 0 }); err != nil {
			t.Fatal(err)
		}
		cmd := p.Received()[0]
		in, err := st.GetInstance(ctx, id)
		if err != nil {
			t.Fatalf("GetInstance: %v", err)
		}
		if in.State != "DRAFT" || in.Pending == nil || in.Pending.ID != cmd.ID {
			t.Errorf("saga %s pending %+v, want DRAFT with pending %s", in.State, in.Pending, cmd.ID)
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(cmd.Payload, &doc); err != nil || doc["deal_context"] == nil {
			t.Errorf("command payload %s, want the saga context with deal_context", cmd.Payload)
		}
		if cmd.Attempt != 1 || cmd.Participant != "profile" || cmd.CausationID == "" {
			t.Errorf("command = %+v, want attempt 1 to profile caused by REGISTER", cmd)
		}
		waitFor(t, "outbox drained", func() (bool, string) {
			n, err := st.OutboxBacklog(ctx)
			return err == nil && n == 0, "backlog not empty"
		})
	})
}

// Two replicas in one consumer group share the partitions (and the timers
// and the outbox): no transition is applied twice.
func TestTwoReplicasApplyEachTransitionOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be)
		e.participant(t, nil)
		group := testenv.Name(t, "sm")
		_, st := e.runOrchestrator(t, group, engine.Config{Owner: "replica-a"})
		e.runOrchestrator(t, group, engine.Config{Owner: "replica-b"})
		var ids []string
		for round := 0; round < 3; round++ {
			var msgs []engine.Message
			for i := 0; i < 20; i++ {
				id := uuid.NewString()
				ids = append(ids, id)
				msgs = append(msgs, register(id, false))
			}
			e.publish(t, msgs...)
			time.Sleep(100 * time.Millisecond) // spread the load over the group's life
		}
		waitFor(t, "all sagas finished", func() (bool, string) { return allFinished(st, ids) })
		for _, id := range ids {
			got := accepted(t, st, id)
			if got["REGISTER"] != 1 || got["ORDER_APPROVED"] != 1 || got["DEAL_UPDATED"] != 1 || len(got) != 3 {
				t.Errorf("saga %s accepted %v, want each of its three events once", id, got)
			}
		}
		if dls, _ := st.DeadLetters(context.Background(), 10, true); len(dls) != 0 {
			t.Errorf("dead letters: %s, want none", codes(dls))
		}
	})
}
