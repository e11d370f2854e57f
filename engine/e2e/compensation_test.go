package e2e

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// compSaga debits (compensable: CREDIT), then executes; a failure undoes
// the debit and the opening, newest first, before telling the client.
// EXECUTE's retry budget is short so that failures come in a test's time;
// DEBIT's is long enough (15s) that profile's answer always comes first.
const compSaga = `
saga: COMP_E2E
version: 1
participants:
  deals: { topic: DEALS_TOPIC }
  profile: { topic: PROFILE_TOPIC }
  notification: { topic: NOTIFICATION_TOPIC }
transitions:
  - on: OPEN
    by: deals
    from: []
    to: DRAFT
    compensate: { command: CLOSE_DEAL, done: DEAL_CLOSED, retry: { attempts: 30, backoff: 200ms, max_backoff: 400ms } }
    send:
      to: profile
      command: DEBIT
      retry: { attempts: 3, backoff: 5s, exhausted: PROFILE_DOWN }
      compensate: { command: CREDIT, done: CREDITED, retry: { attempts: 30, backoff: 200ms, max_backoff: 400ms } }
  - on: DEBITED
    by: profile
    from: [DRAFT]
    to: DEBITED
    send: { to: deals, command: EXECUTE, retry: { attempts: 2, backoff: 200ms, exhausted: DEALS_DOWN } }
  - { on: EXECUTED, by: deals, from: [DEBITED], to: DONE, send: { to: notification, command: TELL_OK } }
  - { on: PROFILE_DOWN, by: engine, from: [DRAFT], to: FAILED, send: { to: notification, command: TELL_FAILED } }
  - { on: DEALS_DOWN, by: engine, from: [DEBITED], to: FAILED, send: { to: notification, command: TELL_FAILED } }
final: [DONE]
failed: [FAILED]
`

// compRules: profile debits (or refuses for the deadline when the payload
// says expire), deals never executes, both undo when asked.
func compRules() map[string]scripted.Rule {
	reply := func(ev string) scripted.Rule {
		return func(engine.Message) []scripted.Reply { return []scripted.Reply{{Event: ev}} }
	}
	return map[string]scripted.Rule{
		"DEBIT": func(cmd engine.Message) []scripted.Reply {
			if strings.Contains(string(cmd.Payload), `"expire":true`) {
				return []scripted.Reply{{Event: engine.EventCommandExpired, Reason: "deadline passed (scripted)"}}
			}
			return []scripted.Reply{{Event: "DEBITED", Payload: []byte(`{"debited":true}`)}}
		},
		"CREDIT":     reply("CREDITED"),
		"CLOSE_DEAL": reply("DEAL_CLOSED"),
	}
}

func openSaga(id string, expire bool) engine.Message {
	p := `{"deal":"` + id[:8] + `"}`
	if expire {
		p = `{"deal":"` + id[:8] + `","expire":true}`
	}
	return scripted.NewEvent("COMP_E2E", id, "OPEN", "deals", []byte(p))
}

// compensationDone counts a saga's accepted done events by name.
func compensationDone(t *testing.T, st engine.Queries, id string) map[string]int {
	t.Helper()
	hist, err := st.History(context.Background(), id)
	if err != nil {
		t.Fatalf("History(%s): %v", id, err)
	}
	out := map[string]int{}
	for _, h := range hist {
		if h.Kind == engine.EntryCompensation && h.Event != "" {
			out[h.Event]++
		}
	}
	return out
}

// sentRefs counts how often a saga's timeline says it sent each command
// for the first time (attempt 1) or at all.
func sentRefs(t *testing.T, st engine.Queries, id string) (first, all map[string]int) {
	t.Helper()
	hist, err := st.History(context.Background(), id)
	if err != nil {
		t.Fatalf("History(%s): %v", id, err)
	}
	first, all = map[string]int{}, map[string]int{}
	for _, h := range hist {
		for _, c := range h.Commands {
			all[c.Name]++
			if c.Attempt == 1 {
				first[c.Name]++
			}
		}
	}
	return first, all
}

// allDone reports whether every saga is completed or failed (every
// compensation done).
func allDone(st engine.Queries, ids []string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		in, err := st.GetInstance(ctx, id)
		if err != nil || !in.Status.Done() {
			return false, id + ": " + string(in.Status) + " in " + in.State
		}
	}
	return true, ""
}

// firstIndex is the index of the first command named name for sagaID in
// ms, or -1.
func firstIndex(ms []engine.Message, sagaID, name string) int {
	return slices.IndexFunc(ms, func(m engine.Message) bool { return m.SagaID == sagaID && m.Name == name })
}

// On PostgreSQL+Kafka and SQLite+embedded broker: sagas that fail after
// the debit undo it and then the opening, each after the other's done
// event, and only then tell the client; commands carry their step's
// deadline; a debit refused for its deadline fails the saga at once
// without a CREDIT; an approval arriving after the saga failed is a late
// reply, not a dead letter.
func TestCompensationOverKafka(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be, compSaga)
		p := e.participant(t, func(c *scripted.Config) { c.Rules = compRules() })
		_, st := e.runOrchestrator(t, testenv.Name(t, "sm"), engine.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()

		failing, expiring := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}, uuid.NewString()
		var msgs []engine.Message
		for _, id := range failing {
			msgs = append(msgs, openSaga(id, false))
		}
		msgs = append(msgs, openSaga(expiring, true))
		e.publish(t, msgs...)
		all := append(slices.Clone(failing), expiring)
		waitFor(t, "every saga failed and compensated", func() (bool, string) { return allDone(st, all) })
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return count(ms, "TELL_FAILED") >= len(all) }); err != nil {
			t.Fatalf("TELL_FAILED for every saga: %v", err)
		}
		got := p.Received()
		for _, id := range failing {
			in, err := st.GetInstance(ctx, id)
			if err != nil || in.State != "FAILED" || in.Status != engine.StatusFailed {
				t.Fatalf("saga %s: %s %s %v, want FAILED failed", id, in.State, in.Status, err)
			}
			for _, u := range in.Undo {
				if u.Status != engine.UndoCompensated {
					t.Errorf("saga %s: %s is %s, want compensated", id, u.Command, u.Status)
				}
			}
			credit, closeDeal, tell := firstIndex(got, id, "CREDIT"), firstIndex(got, id, "CLOSE_DEAL"), firstIndex(got, id, "TELL_FAILED")
			if credit < 0 || closeDeal < credit || tell < closeDeal {
				t.Errorf("saga %s: CREDIT at %d, CLOSE_DEAL at %d, TELL_FAILED at %d; want that order", id, credit, closeDeal, tell)
			}
			if done := compensationDone(t, st, id); done["CREDITED"] != 1 || done["DEAL_CLOSED"] != 1 {
				t.Errorf("saga %s: done events accepted %v, want CREDITED and DEAL_CLOSED once", id, done)
			}
			debit := got[firstIndex(got, id, "DEBIT")]
			if want := debit.OccurredAt.Add(15 * time.Second); !debit.Deadline.Equal(want) { // 3 × 5s (max_backoff = backoff)
				t.Errorf("saga %s: DEBIT deadline %v, want %v (first send + retry budget)", id, debit.Deadline, want)
			}
			cr := got[credit]
			if cr.Compensates != debit.ID || !cr.Deadline.IsZero() {
				t.Errorf("saga %s: CREDIT compensates %q deadline %v, want %s and none", id, cr.Compensates, cr.Deadline, debit.ID)
			}
		}
		// The expired debit: no CREDIT, the opening undone, the client told.
		in, err := st.GetInstance(ctx, expiring)
		if err != nil || in.Status != engine.StatusFailed {
			t.Fatalf("expired saga: %s %v", in.Status, err)
		}
		if firstIndex(got, expiring, "CREDIT") >= 0 {
			t.Error("CREDIT sent for a debit refused for its deadline")
		}
		if s := undoStatuses(in); s != "CLOSE_DEAL=compensated CREDIT=expired" {
			hist, _ := st.History(ctx, expiring)
			for _, h := range hist {
				t.Logf("%s %s %s by %s %s→%s %v %s", h.At.Format("15:04:05.000"), h.Kind, h.Event, h.By, h.FromState, h.ToState, h.Commands, h.Reason)
			}
			t.Errorf("expired saga undo = %s", s)
		}
		if acc := accepted(t, st, expiring); acc["PROFILE_DOWN"] != 1 {
			t.Errorf("expired saga accepted %v, want PROFILE_DOWN raised", acc)
		}
		hist, _ := st.History(ctx, expiring)
		if got := kindsOf(hist); !strings.HasPrefix(got, "event:OPEN expired:COMMAND_EXPIRED timer:PROFILE_DOWN compensation:") {
			t.Errorf("expired saga timeline = %s, want OPEN, COMMAND_EXPIRED, PROFILE_DOWN at once, then compensation", got)
		}
		// A late DEBITED for a failed saga: recorded, not dead-lettered.
		late := scripted.NewEvent("COMP_E2E", failing[0], "DEBITED", "profile", nil)
		late.CausationID = got[firstIndex(got, failing[0], "DEBIT")].ID
		e.publish(t, late)
		waitFor(t, "late entry", func() (bool, string) {
			hist, _ := st.History(ctx, failing[0])
			last := hist[len(hist)-1]
			return last.Kind == engine.EntryLate && last.MessageID == late.ID, string(last.Kind) + " " + last.Event
		})
		if dls, err := st.DeadLetters(ctx, 100, true); err != nil || len(dls) != 0 {
			t.Errorf("dead letters = %s, %v; want none", codes(dls), err)
		}
	})
}

func kindsOf(hist []engine.HistoryEntry) string {
	var out []string
	for _, h := range hist {
		out = append(out, string(h.Kind)+":"+h.Event)
	}
	return strings.Join(out, " ")
}

func undoStatuses(in engine.Instance) string {
	var out []string
	for _, e := range in.Undo {
		out = append(out, e.Command+"="+string(e.Status))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// saga-machine is killed with SIGKILL while sagas compensate (the
// participant drops the first two CREDITs, so compensations are re-sent
// by durable timers) and restarted: every saga ends failed with each
// compensation accepted exactly once, in order, the client told once,
// nothing dead-lettered. Real Kafka only (see TestKill9WhileSagasRun).
func TestKill9WhileCompensating(t *testing.T) {
	kafkaBackends := []backend{
		backends[0],
		{"sqlite+kafka", sqliteURL, func(t *testing.T) []string { return testenv.KafkaBrokers(t) }},
	}
	for _, be := range kafkaBackends {
		t.Run(be.name, func(t *testing.T) { testKill9Compensating(t, be) })
	}
}

func testKill9Compensating(t *testing.T, be backend) {
	e := newEnv(t, be, compSaga)
	st := e.openStore(t)
	p := e.participant(t, func(c *scripted.Config) {
		c.Rules = compRules()
		c.DropFirst = map[string]int{"CREDIT": 2}
		c.EventTopicBase = e.eventTopic
	})
	d := e.daemon(t, testenv.Name(t, "sm"))
	d.start()
	const n = 16
	var ids []string
	var msgs []engine.Message
	for range n {
		id := uuid.NewString()
		ids = append(ids, id)
		msgs = append(msgs, openSaga(id, false))
	}
	e.publishOwn(t, msgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	// Kill it twice while CREDITs are going out, and check from the
	// database that it died with compensations in flight.
	inFlight := 0
	for _, credits := range []int{1, n} {
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return count(ms, "CREDIT") >= credits }); err != nil {
			t.Fatalf("waiting for %d CREDITs: %v", credits, err)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		d.stop(syscall.SIGKILL)
		page, err := st.ListInstances(ctx, engine.SagaFilter{Status: engine.StatusCompensating, Limit: 500})
		if err != nil {
			t.Fatalf("list compensating sagas: %v", err)
		}
		inFlight += len(page.Sagas)
		d.start()
	}
	if inFlight == 0 {
		t.Fatal("no saga was compensating when saga-machine was killed: the test did not test a crash mid-compensation")
	}
	t.Logf("sagas compensating at the kills: %d", inFlight)
	waitFor(t, "every saga compensated", func() (bool, string) { return allDone(st, ids) })
	if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return distinct(ms, "TELL_FAILED") >= n }); err != nil {
		t.Fatalf("TELL_FAILED for every saga: %v", err)
	}
	got := p.Received()
	for _, id := range ids {
		in, err := st.GetInstance(ctx, id)
		if err != nil || in.State != "FAILED" || in.Status != engine.StatusFailed || in.TimerAt != nil || in.Deferred != nil {
			t.Errorf("saga %s: %s %s timer %v deferred %v err %v, want FAILED failed, nothing armed", id, in.State, in.Status, in.TimerAt, in.Deferred, err)
			continue
		}
		if s := undoStatuses(in); s != "CLOSE_DEAL=compensated CREDIT=compensated" {
			t.Errorf("saga %s: undo %s", id, s)
		}
		if done := compensationDone(t, st, id); done["CREDITED"] != 1 || done["DEAL_CLOSED"] != 1 || len(done) != 2 {
			t.Errorf("saga %s: done events accepted %v, want CREDITED and DEAL_CLOSED exactly once", id, done)
		}
		if acc := accepted(t, st, id); acc["OPEN"] != 1 || acc["DEBITED"] != 1 || acc["DEALS_DOWN"] != 1 {
			t.Errorf("saga %s: accepted %v, want OPEN, DEBITED, DEALS_DOWN once each", id, acc)
		}
		first, _ := sentRefs(t, st, id)
		for _, c := range []string{"CREDIT", "CLOSE_DEAL", "TELL_FAILED"} {
			if first[c] != 1 {
				t.Errorf("saga %s: %s first sent %d times, want once", id, c, first[c])
			}
		}
		// Every send of a compensation has the same id (the participant's
		// inbox and barrier key on it).
		cmdIDs := map[string]map[string]bool{}
		for _, m := range got {
			if m.SagaID == id {
				if cmdIDs[m.Name] == nil {
					cmdIDs[m.Name] = map[string]bool{}
				}
				cmdIDs[m.Name][m.ID] = true
			}
		}
		for _, c := range []string{"CREDIT", "CLOSE_DEAL", "TELL_FAILED"} {
			if len(cmdIDs[c]) != 1 {
				t.Errorf("saga %s: %s reached the participant with %d ids, want 1", id, c, len(cmdIDs[c]))
			}
		}
		credit, closeDeal := firstIndex(got, id, "CREDIT"), firstIndex(got, id, "CLOSE_DEAL")
		if credit < 0 || closeDeal < credit {
			t.Errorf("saga %s: CREDIT at %d, CLOSE_DEAL at %d; want CREDIT first", id, credit, closeDeal)
		}
	}
	if dls, _ := st.DeadLetters(ctx, 10, true); len(dls) != 0 {
		t.Errorf("dead letters: %s, want none", codes(dls))
	}
}
