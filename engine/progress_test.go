package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// A command that is not answered yet while its participant is busy
// answering older ones is not re-sent (it is still queued behind them): the
// attempt counts, the timeline says why, the budget ends on time. Once the
// participant has answered nothing during a whole wait, it is re-sent.
func TestRetryHeldBackWhileParticipantIsBehind(t *testing.T) {
	h := newHarness(t, fast)
	ctx := context.Background()
	a, b := uuid.NewString(), uuid.NewString()
	h.handle(t, fastEvent(a, "GO")) // DO for a, sent at t0
	h.clock.Advance(600 * time.Millisecond)
	h.handle(t, fastEvent(b, "GO")) // DO for b, sent at t0+600ms
	h.clock.Advance(200 * time.Millisecond)
	h.handle(t, fastEvent(a, "DONE")) // p answers a's DO (sent 600ms before b's) at t0+800ms
	sent := len(h.st.outbox(t))

	// b's first retry is due at t0+1.6s: during the 1s wait p answered a
	// command sent more than a quarter of the wait before b's: held back.
	h.clock.Advance(h.inst(t, b).TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers: %v", err)
	}
	got := h.inst(t, b)
	if got.Attempts != 2 || got.Pending == nil || got.Pending.Attempt != 1 {
		t.Fatalf("after the held-back attempt: attempts %d pending %+v, want 2 attempts, the command sent once", got.Attempts, got.Pending)
	}
	if n := len(h.st.outbox(t)); n != sent {
		t.Errorf("outbox grew from %d to %d: the held-back attempt was sent", sent, n)
	}
	if want := h.clock.Now().Add(2 * time.Second); got.TimerAt == nil || !got.TimerAt.Equal(want) {
		t.Errorf("timer = %v, want %v (the schedule of the re-sends)", got.TimerAt, want)
	}
	hist, err := h.st.History(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if last.Kind != engine.EntryRetry || len(last.Commands) != 0 || !strings.Contains(last.Reason, "attempt 2 of 3 not re-sent: p is still answering older commands") {
		t.Errorf("timeline's last entry = %s %q commands %v, want a retry held back", last.Kind, last.Reason, last.Commands)
	}
	if h.obs.retried != 0 || h.obs.heldBack != 1 {
		t.Errorf("observer counted %d re-sends and %d held back, want 0 and 1", h.obs.retried, h.obs.heldBack)
	}

	// p answers nothing during the next wait (it may be down): re-sent.
	h.clock.Advance(got.TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers: %v", err)
	}
	got = h.inst(t, b)
	out := h.st.outbox(t)
	if got.Attempts != 3 || len(out) != sent+1 || out[len(out)-1].Message.ID != got.Pending.ID || got.Pending.Attempt != 3 {
		t.Fatalf("after the next wait: attempts %d, outbox %d (was %d), want the command re-sent as attempt 3", got.Attempts, len(out), sent)
	}
	// The budget ends when it would have: exhausted after the last wait.
	h.clock.Advance(got.TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers: %v", err)
	}
	if got := h.inst(t, b); got.State != "BROKEN" {
		t.Errorf("state after the budget = %s, want BROKEN (GAVE_UP)", got.State)
	}
}

// The last attempt is sent whatever the evidence: a command lost or parked
// on a partition that is not the slow one gets one more chance.
func TestLastAttemptIsNeverHeldBack(t *testing.T) {
	h := newHarness(t, fast) // DO: 3 attempts, waits 1s then 2s
	ctx := context.Background()
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	h.handle(t, fastEvent(a, "GO"), fastEvent(c, "GO")) // sent at t0
	h.clock.Advance(600 * time.Millisecond)
	h.handle(t, fastEvent(b, "GO")) // sent at t0+600ms
	h.clock.Advance(200 * time.Millisecond)
	h.handle(t, fastEvent(a, "DONE")) // an older command answered during b's first wait
	h.clock.Advance(h.inst(t, b).TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatal(err)
	}
	if h.obs.heldBack != 1 {
		t.Fatalf("held back %d, want the first re-send of b held back", h.obs.heldBack)
	}
	// During b's second (last) wait p again answers only an older command.
	h.clock.Advance(500 * time.Millisecond)
	h.handle(t, fastEvent(c, "DONE"))
	sent, resent := len(h.st.outbox(t)), h.obs.retried
	h.clock.Advance(h.inst(t, b).TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.inst(t, b)
	out := h.st.outbox(t)
	if got.Attempts != 3 || len(out) != sent+1 || out[len(out)-1].Message.ID != got.Pending.ID || h.obs.heldBack != 1 || h.obs.retried != resent+1 {
		t.Errorf("last attempt: attempts %d, outbox %d (was %d), held back %d, re-sent %d (was %d); want attempt 3 sent",
			got.Attempts, len(out), sent, h.obs.heldBack, h.obs.retried, resent)
	}
}

// A command still in the outbox behind older ones is not queued twice.
func TestRetryHeldBackWhileOutboxBehind(t *testing.T) {
	h := newHarness(t, fast)
	h.reconfigure(func(c *engine.Config) { c.RelayBatch = 1 })
	ctx := context.Background()
	a, b := uuid.NewString(), uuid.NewString()
	h.handle(t, fastEvent(a, "GO")) // enqueued at t0
	h.clock.Advance(600 * time.Millisecond)
	h.handle(t, fastEvent(b, "GO")) // enqueued at t0+600ms
	h.clock.Advance(200 * time.Millisecond)
	if n, err := h.o.RelayOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RelayOnce = %d, %v; want a's command alone published", n, err)
	}
	h.clock.Advance(h.inst(t, b).TimerAt.Sub(h.clock.Now()))
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatal(err)
	}
	hist, err := h.st.History(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if h.obs.heldBack != 1 || !strings.Contains(last.Reason, "not re-sent: it is most likely still in the outbox") {
		t.Errorf("held back %d, timeline %q: want b's re-send held back, the outbox behind", h.obs.heldBack, last.Reason)
	}
}

// A replica that has not loaded a saga's definition (an older one during a
// rolling deploy) postpones its timer instead of disarming it: a replica
// that has it fires it later, so the retries and timeouts are not lost.
func TestTimerOfUnknownDefinitionIsPostponed(t *testing.T) {
	h := newHarness(t, fast)
	ctx := context.Background()
	id := uuid.NewString()
	h.handle(t, fastEvent(id, "GO"))
	old, err := engine.New(h.cfg, testCatalog(t), h.st, h.pub) // without FAST
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	if _, err := old.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers on the replica without FAST: %v", err)
	}
	got := h.inst(t, id)
	if want := h.clock.Now().Add(time.Minute); got.TimerAt == nil || !got.TimerAt.Equal(want) || got.Attempts != 1 || got.State != "WAIT" {
		t.Fatalf("after the replica without FAST: timer %v attempts %d state %s, want the timer postponed to %v, nothing else changed", got.TimerAt, got.Attempts, got.State, want)
	}
	h.clock.Advance(time.Minute)
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.inst(t, id); got.Attempts < 2 && got.State == "WAIT" {
		t.Errorf("the replica with FAST did not fire the postponed timer: attempts %d state %s", got.Attempts, got.State)
	}
}

// Timers due together are fired in one transaction; when it fails, each
// saga gets its own, and every one is fired once.
func TestTimersFiredTogether(t *testing.T) {
	h := newHarness(t, fast)
	ctx := context.Background()
	ids := make([]string, 5)
	for i := range ids {
		ids[i] = uuid.NewString()
		h.handle(t, fastEvent(ids[i], "GO"))
	}
	sent := len(h.st.outbox(t))
	h.clock.Advance(time.Second)
	before, _ := h.st.counts()
	if n, err := h.o.FireTimers(ctx); err != nil || n != 5 {
		t.Fatalf("FireTimers = %d, %v; want 5", n, err)
	}
	if after, _ := h.st.counts(); after-before != 1 {
		t.Errorf("%d transactions for 5 due timers, want 1", after-before)
	}
	for _, id := range ids {
		if got := h.inst(t, id); got.Attempts != 2 || got.Pending.Attempt != 2 {
			t.Errorf("saga %s: attempts %d, want the command re-sent once", id, got.Attempts)
		}
	}
	if n := len(h.st.outbox(t)); n != sent+5 {
		t.Errorf("outbox %d, want %d (5 re-sends)", n, sent+5)
	}

	// The shared transaction fails: one transaction per saga, each fired once.
	h.clock.Advance(2 * time.Second)
	h.st.fail(errors.New("injected: the shared transaction fails"))
	before, _ = h.st.counts()
	if n, err := h.o.FireTimers(ctx); err != nil || n != 5 {
		t.Fatalf("FireTimers after a failed shared transaction = %d, %v; want 5", n, err)
	}
	if after, _ := h.st.counts(); after-before != 1+5 {
		t.Errorf("%d transactions, want the failed shared one and 5 of their own", after-before)
	}
	for _, id := range ids {
		if got := h.inst(t, id); got.Attempts != 3 {
			t.Errorf("saga %s: attempts %d, want 3 (re-sent once more)", id, got.Attempts)
		}
	}
	if n := len(h.st.outbox(t)); n != sent+10 {
		t.Errorf("outbox %d, want %d (5 more re-sends, none twice)", n, sent+10)
	}
}

// heldSends has a step of two branches to q and, for what p did before it
// started the saga, a compensation UNDO sent to p when the saga fails:
// both with three attempts, waits of 1s then 2s.
const heldSends = `
saga: HELD_SENDS
version: 1
participants:
  p: { topic: P_TOPIC }
  q: { topic: Q_TOPIC }
states:
  FAN:
    timeout: { after: 1h, event: TIMED_OUT }
transitions:
  - on: GO
    by: p
    from: []
    to: FAN
    compensate: { command: UNDO, done: UNDONE, retry: { attempts: 3, backoff: 1s, max_backoff: 3s } }
    send:
      - { to: q, command: DO_A, ok: A_OK, fail: A_NO, retry: { attempts: 3, backoff: 1s, max_backoff: 3s } }
      - { to: q, command: DO_B, ok: B_OK, fail: B_NO, retry: { attempts: 3, backoff: 1s, max_backoff: 3s } }
    join: { policy: all, then: ALL_OK, else: SOME_NO }
  - { on: ALL_OK, by: engine, from: [FAN], to: OK }
  - { on: SOME_NO, by: engine, from: [FAN], to: BROKEN }
  - { on: STOP, by: p, from: [FAN], to: BROKEN }
  - { on: TIMED_OUT, by: engine, from: [FAN], to: BROKEN }
final: [OK]
failed: [BROKEN]
`

// Branch commands and compensations are held back like a step's command
// while their participant is answering older commands: the attempt counts
// and the timeline says so, nothing is sent; once the participant answered
// nothing during a whole wait, the last attempt goes out.
func TestBranchAndCompensationResendsHeldBack(t *testing.T) {
	t.Run("branch", func(t *testing.T) {
		h := newHarness(t, heldSends)
		a, b := uuid.NewString(), uuid.NewString()
		h.handle(t, ev("HELD_SENDS", a, "GO", "p", "")) // a's branches sent at t0
		h.clock.Advance(600 * time.Millisecond)
		h.handle(t, ev("HELD_SENDS", b, "GO", "p", "")) // b's at t0+600ms
		h.clock.Advance(200 * time.Millisecond)
		// q answers a's branches (sent 600ms before b's) at t0+800ms; a
		// completes, so that only b's timers are left.
		ac := h.inst(t, a).Join.Commands
		h.handle(t, ev("HELD_SENDS", a, "A_OK", "q", ac[0].ID), ev("HELD_SENDS", a, "B_OK", "q", ac[1].ID))
		if got := h.inst(t, a); got.State != "OK" {
			t.Fatalf("saga a: %s, want OK", got.State)
		}
		sent := len(h.st.outbox(t))

		got := h.inst(t, b)
		h.fireAt(t, b) // its branches' re-sends, due at t0+1.6s
		got = h.inst(t, b)
		for _, c := range got.Join.Commands {
			if c.Attempts != 2 || c.Status != engine.BranchPending {
				t.Errorf("branch %s after the held-back attempt: %d attempts, %s; want 2, pending", c.Label(), c.Attempts, c.Status)
			}
			if want := h.clock.Now().Add(2 * time.Second); c.NextAt == nil || !c.NextAt.Equal(want) {
				t.Errorf("branch %s: next at %v, want %v (the schedule of the re-sends)", c.Label(), c.NextAt, want)
			}
		}
		if n := len(h.st.outbox(t)); n != sent {
			t.Errorf("outbox grew from %d to %d: a held-back attempt was sent", sent, n)
		}
		hist := h.history(t, b)
		held := 0
		for _, e := range hist {
			if e.Kind == engine.EntryRetry && strings.Contains(e.Reason, "attempt 2 of 3 not re-sent: q is still answering older commands") {
				held++
			}
		}
		if held != 2 || h.obs.retried != 0 || h.obs.heldBack != 2 {
			t.Errorf("%d held-back entries, observer %d re-sent %d held back; want 2, 0, 2", held, h.obs.retried, h.obs.heldBack)
		}

		// q answers nothing during the next wait: the last attempts go out.
		h.fireAt(t, b)
		got = h.inst(t, b)
		out := h.st.outbox(t)
		if len(out) != sent+2 || got.Join.Commands[0].Attempts != 3 || out[len(out)-1].Message.Attempt != 3 {
			t.Fatalf("after the next wait: outbox %d (was %d), attempts %d; want both branches re-sent as attempt 3", len(out), sent, got.Join.Commands[0].Attempts)
		}
	})

	t.Run("compensation", func(t *testing.T) {
		h := newHarness(t, heldSends)
		a, b := uuid.NewString(), uuid.NewString()
		h.handle(t, ev("HELD_SENDS", a, "GO", "p", ""), ev("HELD_SENDS", b, "GO", "p", ""))
		h.handle(t, ev("HELD_SENDS", a, "STOP", "p", "")) // a's UNDO sent at t0
		h.clock.Advance(600 * time.Millisecond)
		h.handle(t, ev("HELD_SENDS", b, "STOP", "p", "")) // b's UNDO at t0+600ms
		h.clock.Advance(200 * time.Millisecond)
		undoOf := func(id string) engine.UndoEntry {
			for _, e := range h.inst(t, id).Undo {
				if e.Command == "UNDO" {
					return e
				}
			}
			t.Fatalf("saga %s has no UNDO entry", id)
			return engine.UndoEntry{}
		}
		// p answers a's UNDO (sent 600ms before b's) at t0+800ms.
		h.handle(t, ev("HELD_SENDS", a, "UNDONE", "p", undoOf(a).CommandID))
		sent := len(h.st.outbox(t))

		h.fireAt(t, b) // its UNDO's re-send, due at t0+1.6s
		e := undoOf(b)
		if e.Attempts != 2 || e.Sent != 1 || e.Status != engine.UndoCompensating {
			t.Fatalf("b's UNDO after the held-back attempt: %d attempts, %d sent, %s; want 2, 1, compensating", e.Attempts, e.Sent, e.Status)
		}
		if n := len(h.st.outbox(t)); n != sent {
			t.Errorf("outbox grew from %d to %d: the held-back attempt was sent", sent, n)
		}
		hist := h.history(t, b)
		if last := hist[len(hist)-1]; last.Kind != engine.EntryRetry || !strings.Contains(last.Reason, "no UNDONE for compensation UNDO yet; attempt 2 of 3 not re-sent: p is still answering older commands") {
			t.Errorf("timeline's last entry = %s %q, want the compensation's re-send held back", last.Kind, last.Reason)
		}
		if h.obs.heldBack != 1 {
			t.Errorf("observer counted %d held back, want 1", h.obs.heldBack)
		}

		// p answers nothing during the next wait: the last attempt goes out.
		h.fireAt(t, b)
		e = undoOf(b)
		out := h.st.outbox(t)
		if len(out) != sent+1 || e.Attempts != 3 || e.Sent != 2 || out[len(out)-1].Message.Name != "UNDO" {
			t.Fatalf("after the next wait: outbox %d (was %d), attempts %d sent %d; want UNDO re-sent as attempt 3", len(out), sent, e.Attempts, e.Sent)
		}
	})
}
