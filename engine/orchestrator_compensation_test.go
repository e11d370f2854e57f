package engine_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// compensatedOrder is the language's test definition with compensations at
// both levels (engine/definition/testdata/good/compensated_order.yaml).
func compensatedOrder(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("definition/testdata/good/compensated_order.yaml")
	if err != nil {
		tb.Fatalf("read compensated_order.yaml: %v", err)
	}
	return string(b)
}

// abandon reaches a final state on a timeout while its compensable CHARGE
// is unanswered.
const abandon = `
saga: ABANDON
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
states:
  CHARGING:
    timeout: { after: 1m, event: CHARGE_SLOW }
transitions:
  - on: ORDER
    by: shop
    from: []
    to: CHARGING
    send:
      to: bank
      command: CHARGE
      compensate: { command: REFUND, done: REFUNDED, retry: { attempts: 2, backoff: 1s } }
  - { on: CHARGED, by: bank, from: [CHARGING], to: PAID, send: { to: shop, command: SHIP } }
  - { on: CHARGE_SLOW, by: engine, from: [CHARGING], to: FREE, send: { to: shop, command: GIVE_AWAY } }
  - { on: CANCEL, by: shop, from: [CHARGING], to: CANCELLED }
final: [PAID, FREE]
failed: [CANCELLED]
`

func newCompHarness(tb testing.TB) *harness {
	tb.Helper()
	return newHarness(tb, compensatedOrder(tb), abandon)
}

// ev builds an event of saga for sagaID answering causation.
func ev(saga, sagaID, name, by, causation string) engine.Message {
	m := event(sagaID, name, by, "")
	m.Saga, m.CausationID = saga, causation
	return m
}

// outbox returns the outbox records (none is published in these tests).
func (h *harness) outbox() []engine.OutboxRecord { return h.st.outbox(h.tb) }

// sent returns the records enqueued since the outbox had n records.
func (h *harness) sentSince(n int) []engine.OutboxRecord { return h.outbox()[n:] }

// last returns the newest outbox record named name.
func (h *harness) last(tb testing.TB, name string) engine.Message {
	tb.Helper()
	recs := h.outbox()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Message.Name == name {
			return recs[i].Message
		}
	}
	tb.Fatalf("no %s in the outbox (%v)", name, h.outboxNames())
	return engine.Message{}
}

func (h *harness) history(tb testing.TB, id string) []engine.HistoryEntry {
	tb.Helper()
	hist, err := h.st.History(context.Background(), id)
	if err != nil {
		tb.Fatalf("History: %v", err)
	}
	return hist
}

func (h *harness) deadLetters(tb testing.TB) []engine.DeadLetter {
	tb.Helper()
	dls, err := h.st.DeadLetters(context.Background(), 100, true)
	if err != nil {
		tb.Fatalf("DeadLetters: %v", err)
	}
	return dls
}

// kinds lists a timeline as kind:event.
func kinds(hist []engine.HistoryEntry) string {
	var out []string
	for _, e := range hist {
		out = append(out, string(e.Kind)+":"+e.Event)
	}
	return strings.Join(out, " ")
}

func undoStatuses(in engine.Instance) string {
	var out []string
	for _, e := range in.Undo {
		out = append(out, e.Command+"="+string(e.Status))
	}
	return strings.Join(out, " ")
}

// fireAt advances the clock to the saga's timer and fires it.
func (h *harness) fireAt(tb testing.TB, id string) {
	tb.Helper()
	in := h.inst(tb, id)
	if in.TimerAt == nil {
		tb.Fatalf("saga %s has no timer (state %s, status %s)", id, in.State, in.Status)
	}
	if d := in.TimerAt.Sub(h.clock.Now()); d > 0 {
		h.clock.Advance(d)
	}
	if _, err := h.o.FireTimers(context.Background()); err != nil {
		tb.Fatalf("FireTimers: %v", err)
	}
}

func TestRetryBudgetAndCommandDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	retry := &definition.Retry{Attempts: 5, Backoff: 2 * time.Second, MaxBackoff: time.Minute}
	capped := &definition.Retry{Attempts: 4, Backoff: 10 * time.Second, MaxBackoff: 15 * time.Second}
	if got, want := engine.RetryBudget(retry), 62*time.Second; got != want {
		t.Errorf("RetryBudget(5, 2s, 1m) = %v, want %v", got, want)
	}
	if got, want := engine.RetryBudget(capped), 55*time.Second; got != want { // 10 + 15 + 15 + 15
		t.Errorf("RetryBudget(4, 10s, 15s) = %v, want %v", got, want)
	}
	timeout := func(d time.Duration) *definition.Timeout { return &definition.Timeout{After: d} }
	tests := []struct {
		name      string
		retry     *definition.Retry
		timeout   *definition.Timeout
		sent, in  time.Time
		want      time.Time
		wantNoDue bool
	}{
		{"neither", nil, nil, t0, t0, time.Time{}, true},
		{"retry budget", retry, nil, t0, t0, t0.Add(62 * time.Second), false},
		{"state timeout", nil, timeout(10 * time.Minute), t0, t0, t0.Add(10 * time.Minute), false},
		{"timeout earlier than the budget", retry, timeout(30 * time.Second), t0, t0, t0.Add(30 * time.Second), false},
		{"budget earlier than the timeout", retry, timeout(10 * time.Minute), t0, t0, t0.Add(62 * time.Second), false},
		{"timeout counts from entering the state", nil, timeout(time.Minute), t0.Add(5 * time.Second), t0, t0.Add(time.Minute), false},
		{"budget counts from the first send", capped, nil, t0.Add(5 * time.Second), t0, t0.Add(60 * time.Second), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := engine.CommandDeadline(tc.retry, tc.timeout, tc.sent, tc.in)
			if tc.wantNoDue {
				if !got.IsZero() {
					t.Errorf("got %v, want none", got)
				}
				return
			}
			if !got.Equal(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// Commands carry the deadline of their step; re-sends keep id and
// deadline; commands into terminal states carry none.
func TestCommandsCarryDeadlines(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	t0 := h.clock.Now()
	h.handle(t, ev("COMPENSATED_ORDER", id, "REGISTER", "deals", ""))
	approve := h.last(t, "APPROVE_ORDER")
	if want := t0.Add(62 * time.Second); !approve.Deadline.Equal(want) { // retry budget < DRAFT's 10m
		t.Errorf("APPROVE_ORDER deadline = %v, want %v", approve.Deadline, want)
	}
	h.fireAt(t, id) // re-send
	again := h.last(t, "APPROVE_ORDER")
	if again.ID != approve.ID || !again.Deadline.Equal(approve.Deadline) || again.Attempt != 2 {
		t.Errorf("re-send = id %s deadline %v attempt %d, want id %s deadline %v attempt 2", again.ID, again.Deadline, again.Attempt, approve.ID, approve.Deadline)
	}
	if p := h.inst(t, id).Pending; p == nil || !p.Deadline.Equal(approve.Deadline) {
		t.Errorf("pending = %+v, want the deadline stored", p)
	}
	abandonID := uuid.NewString()
	t1 := h.clock.Now()
	h.handle(t, ev("ABANDON", abandonID, "ORDER", "shop", ""))
	if got, want := h.last(t, "CHARGE").Deadline, t1.Add(time.Minute); !got.Equal(want) {
		t.Errorf("CHARGE deadline = %v, want the state's time limit %v", got, want)
	}
	h.handle(t, ev("ABANDON", abandonID, "CHARGED", "bank", h.last(t, "CHARGE").ID))
	if ship := h.last(t, "SHIP"); !ship.Deadline.IsZero() {
		t.Errorf("SHIP into a final state has deadline %v, want none", ship.Deadline)
	}
}

// A saga that fails after approval undoes the approval and the
// registration, newest first, each after the previous one's done event,
// and only then sends its failed transition's command.
func TestFailureCompensatesInReverseOrder(t *testing.T) {
	h := newCompHarness(t)
	ctx := context.Background()
	id := uuid.NewString()
	reg := ev("COMPENSATED_ORDER", id, "REGISTER", "deals", "")
	reg.Payload = []byte(`{"deal_context":{"deal_id":"D-7"}}`)
	h.handle(t, reg)
	approve := h.last(t, "APPROVE_ORDER")
	approved := ev("COMPENSATED_ORDER", id, "ORDER_APPROVED", "profile", approve.ID)
	approved.Payload = []byte(`{"approved":true}`)
	h.handle(t, approved)
	if got := undoStatuses(h.inst(t, id)); got != "FAIL_DEAL=replied REVERT_ORDER=replied" {
		t.Fatalf("undo after approval = %s", got)
	}
	// APPROVE_DEAL goes unanswered: 5 sends, then DEALS_UNAVAILABLE.
	for range 5 {
		h.fireAt(t, id)
	}
	in := h.inst(t, id)
	if in.State != "FAILED" || in.Status != engine.StatusCompensating || in.Deferred == nil || in.Deferred.Name != "NOTIFY_FAILURE" {
		t.Fatalf("after exhaustion: %s %s deferred %+v, want FAILED compensating with NOTIFY_FAILURE held back", in.State, in.Status, in.Deferred)
	}
	if slices.Contains(h.outboxNames(), "NOTIFY_FAILURE") {
		t.Fatal("NOTIFY_FAILURE was sent before the compensations")
	}
	revert := h.last(t, "REVERT_ORDER")
	if revert.Compensates != approve.ID || revert.Participant != "profile" || !revert.Deadline.IsZero() || revert.Attempt != 1 {
		t.Errorf("REVERT_ORDER = %+v, want compensates %s, to profile, no deadline, attempt 1", revert, approve.ID)
	}
	hist := h.history(t, id)
	failing := hist[len(hist)-2]
	if failing.Event != "DEALS_UNAVAILABLE" || revert.CausationID != failing.MessageID {
		t.Errorf("REVERT_ORDER causation %s, want the failing event %s (%s)", revert.CausationID, failing.MessageID, failing.Event)
	}
	if slices.Contains(h.outboxNames(), "FAIL_DEAL") {
		t.Fatal("FAIL_DEAL sent before REVERT_ORDER was done")
	}
	// Profile reverts; its payload joins the context.
	reverted := ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "profile", revert.ID)
	reverted.Payload = []byte(`{"reverted":true}`)
	h.handle(t, reverted)
	fail := h.last(t, "FAIL_DEAL")
	if fail.Compensates != reg.ID || fail.Participant != "deals" {
		t.Errorf("FAIL_DEAL = %+v, want compensates REGISTER %s, to deals", fail, reg.ID)
	}
	if in := h.inst(t, id); in.Status != engine.StatusCompensating || !strings.Contains(string(in.Context), `"reverted":true`) {
		t.Errorf("after ORDER_REVERTED: %s context %s", in.Status, in.Context)
	}
	h.handle(t, ev("COMPENSATED_ORDER", id, "DEAL_FAILED", "deals", fail.ID))
	in = h.inst(t, id)
	if in.Status != engine.StatusFailed || in.TimerAt != nil || in.Deferred != nil {
		t.Errorf("after DEAL_FAILED: %s timer %v deferred %v, want failed, none, none", in.Status, in.TimerAt, in.Deferred)
	}
	if got := undoStatuses(in); got != "FAIL_DEAL=compensated REVERT_ORDER=compensated" {
		t.Errorf("undo = %s", got)
	}
	notify := h.last(t, "NOTIFY_FAILURE")
	if !strings.Contains(string(notify.Payload), `"reverted":true`) {
		t.Errorf("NOTIFY_FAILURE payload %s, want the context after the compensations", notify.Payload)
	}
	names := h.outboxNames()
	tail := names[len(names)-3:]
	if want := []string{"REVERT_ORDER", "FAIL_DEAL", "NOTIFY_FAILURE"}; !slices.Equal(tail, want) {
		t.Errorf("last commands = %v, want %v", tail, want)
	}
	want := "event:REGISTER event:ORDER_APPROVED retry: retry: retry: retry: timer:DEALS_UNAVAILABLE compensation: " +
		"compensation:ORDER_REVERTED compensation: compensation:DEAL_FAILED compensation:"
	if got := kinds(h.history(t, id)); got != want {
		t.Errorf("timeline = %s\nwant       %s", got, want)
	}
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Errorf("dead letters: %+v", dls)
	}
	// A duplicate done (another message id) changes nothing.
	n := len(h.outbox())
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "profile", revert.ID))
	if got := h.sentSince(n); len(got) != 0 {
		t.Errorf("duplicate done sent %d commands", len(got))
	}
	if in2 := h.inst(t, id); in2.Status != engine.StatusFailed || undoStatuses(in2) != undoStatuses(in) {
		t.Errorf("after a duplicate done: %s %s", in2.Status, undoStatuses(in2))
	}
	if last := h.history(t, id); last[len(last)-1].Kind != engine.EntryLate {
		t.Errorf("duplicate done recorded as %s, want late", last[len(last)-1].Kind)
	}
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Errorf("duplicate done dead-lettered: %+v", dls)
	}
	_ = ctx
}

// A compensation unanswered past its attempts stops the saga; an operator
// retries it (same id, attempts start over), then resolves it; the saga
// then goes on.
func TestCompensationFailedRetryResolve(t *testing.T) {
	h := newCompHarness(t)
	obs := &compObserver{}
	h.reconfigure(func(c *engine.Config) { c.Observer = withComp{h.obs, obs} })
	ctx := context.Background()
	id := uuid.NewString()
	h.handle(t, ev("COMPENSATED_ORDER", id, "REGISTER", "deals", ""))
	approve := h.last(t, "APPROVE_ORDER")
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_APPROVED", "profile", approve.ID))
	// Not stuck: retry and resolve are refused and change nothing.
	for _, act := range []func() (engine.Instance, error){
		func() (engine.Instance, error) { return h.o.RetryCompensation(ctx, id, "alice", "x") },
		func() (engine.Instance, error) { return h.o.ResolveCompensation(ctx, id, "alice", "x") },
	} {
		before := h.inst(t, id)
		if _, err := act(); engine.ErrorCode(err) != engine.CodeConflict {
			t.Errorf("operator action on a running saga: err %v, want conflict", err)
		}
		if after := h.inst(t, id); after.Rev != before.Rev {
			t.Errorf("refused action changed the saga (rev %d → %d)", before.Rev, after.Rev)
		}
	}
	if _, err := h.o.Abort(ctx, id, "", "alice", "customer withdrew"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	in := h.inst(t, id)
	if in.State != "FAILED" || in.Status != engine.StatusCompensating {
		t.Fatalf("after abort: %s %s, want FAILED compensating", in.State, in.Status)
	}
	revert := h.last(t, "REVERT_ORDER")
	// REVERT_ORDER's retry: 20 attempts.
	for range 20 {
		h.fireAt(t, id)
	}
	in = h.inst(t, id)
	if in.Status != engine.StatusCompensationFailed || in.TimerAt != nil {
		t.Fatalf("after 20 attempts: %s timer %v, want compensation_failed, no timer", in.Status, in.TimerAt)
	}
	if e := in.Undo[1]; e.Status != engine.UndoCompensating || e.Sent != 20 || e.Attempts != 20 {
		t.Errorf("stuck entry = %+v", e)
	}
	hist := h.history(t, id)
	if last := hist[len(hist)-1]; last.Kind != engine.EntryCompensationFailed || !strings.Contains(last.Reason, "REVERT_ORDER") {
		t.Errorf("last entry = %+v, want compensation_failed naming REVERT_ORDER", last)
	}
	if obs.count(engine.CompensationFailed) != 1 {
		t.Errorf("compensation failed observed %d times, want 1", obs.count(engine.CompensationFailed))
	}
	// Nothing fires any more.
	h.clock.Advance(time.Hour)
	if n, _ := h.o.FireTimers(ctx); n != 0 {
		t.Errorf("a stuck saga's timer fired (%d)", n)
	}
	// Retry: same id, attempt counter goes on, retry budget starts over.
	n := len(h.outbox())
	got, err := h.o.RetryCompensation(ctx, id, "alice", "profile is back")
	if err != nil || got.Status != engine.StatusCompensating {
		t.Fatalf("RetryCompensation = %s, %v", got.Status, err)
	}
	sent := h.sentSince(n)
	if len(sent) != 1 || sent[0].Message.ID != revert.ID || sent[0].Message.Attempt != 21 {
		t.Fatalf("retry sent %+v, want REVERT_ORDER %s attempt 21", sent, revert.ID)
	}
	if got.Undo[1].Attempts != 1 {
		t.Errorf("attempts after retry = %d, want 1", got.Undo[1].Attempts)
	}
	for range 20 {
		h.fireAt(t, id)
	}
	if got := h.inst(t, id); got.Status != engine.StatusCompensationFailed {
		t.Fatalf("after another 20: %s", got.Status)
	}
	// Resolve needs a reason; then FAIL_DEAL goes out.
	if _, err := h.o.ResolveCompensation(ctx, id, "alice", " "); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("resolve without reason: %v, want invalid", err)
	}
	got, err = h.o.ResolveCompensation(ctx, id, "alice", "refunded by hand, ticket 42")
	if err != nil || got.Status != engine.StatusCompensating {
		t.Fatalf("ResolveCompensation = %s, %v", got.Status, err)
	}
	if e := got.Undo[1]; e.Status != engine.UndoResolved || e.ResolvedBy != "alice" || e.Reason != "refunded by hand, ticket 42" {
		t.Errorf("resolved entry = %+v", e)
	}
	fail := h.last(t, "FAIL_DEAL")
	h.handle(t, ev("COMPENSATED_ORDER", id, "DEAL_FAILED", "deals", fail.ID))
	if got := h.inst(t, id); got.Status != engine.StatusFailed {
		t.Errorf("after the last done: %s, want failed", got.Status)
	}
	// The abort has no command of its own to send.
	if slices.Contains(h.outboxNames(), "NOTIFY_FAILURE") {
		t.Error("an abort sent NOTIFY_FAILURE")
	}
	var ops []string
	for _, e := range h.history(t, id) {
		if e.Kind == engine.EntryOperator {
			ops = append(ops, e.Event+"/"+e.Actor)
		}
	}
	if want := []string{"ABORT/alice", "COMPENSATION_RETRY/alice", "COMPENSATION_RESOLVE/alice"}; !slices.Equal(ops, want) {
		t.Errorf("operator entries = %v, want %v", ops, want)
	}
	// A late done for the resolved compensation is recorded, not applied.
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "profile", revert.ID))
	if got := h.inst(t, id); got.Undo[1].Status != engine.UndoResolved || got.Status != engine.StatusFailed {
		t.Errorf("late done changed the saga: %s %s", got.Status, undoStatuses(got))
	}
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Errorf("dead letters: %+v", dls)
	}
	if obs.count(engine.CompensationRetried) != 1 || obs.count(engine.CompensationResolved) != 1 || obs.count(engine.CompensationDone) != 1 {
		t.Errorf("observed %v", obs.seen)
	}
}

// COMMAND_EXPIRED for the command the saga waits for fails the step at
// once; that command is not compensated (it had no effect).
func TestCommandExpiredRaisesExhaustedAtOnce(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	reg := ev("COMPENSATED_ORDER", id, "REGISTER", "deals", "")
	h.handle(t, reg)
	approve := h.last(t, "APPROVE_ORDER")
	// From the wrong participant: refused, nothing moves.
	forged := ev("COMPENSATED_ORDER", id, engine.EventCommandExpired, "deals", approve.ID)
	h.handle(t, forged)
	if in := h.inst(t, id); in.State != "DRAFT" {
		t.Fatalf("a forged COMMAND_EXPIRED moved the saga to %s", in.State)
	}
	if dls := h.deadLetters(t); len(dls) != 1 || dls[0].Code != engine.CodeWrongParticipant {
		t.Fatalf("dead letters = %+v, want one wrong-participant", dls)
	}
	expired := ev("COMPENSATED_ORDER", id, engine.EventCommandExpired, "profile", approve.ID)
	expired.Reason = "deadline passed " + strings.Repeat("é", 100_000) // a hostile reason is cut
	h.handle(t, expired)
	in := h.inst(t, id)
	if in.State != "FAILED" {
		t.Fatalf("after COMMAND_EXPIRED: %s, want FAILED through PROFILE_UNAVAILABLE", in.State)
	}
	if got := undoStatuses(in); got != "FAIL_DEAL=compensating REVERT_ORDER=expired" {
		t.Errorf("undo = %s, want REVERT_ORDER expired (not compensated) and FAIL_DEAL under way", got)
	}
	if slices.Contains(h.outboxNames(), "REVERT_ORDER") {
		t.Error("REVERT_ORDER sent for a command that had no effect")
	}
	hist := h.history(t, id)
	if got, want := kinds(hist), "event:REGISTER refused:COMMAND_EXPIRED expired:COMMAND_EXPIRED timer:PROFILE_UNAVAILABLE compensation:"; got != want {
		t.Errorf("timeline = %s, want %s", got, want)
	}
	if !strings.Contains(hist[2].Reason, "deadline passed") || !strings.Contains(hist[2].Reason, "PROFILE_UNAVAILABLE") || len(hist[2].Reason) > 1000 {
		t.Errorf("expired entry reason (%d bytes) = %.200q", len(hist[2].Reason), hist[2].Reason)
	}
	fail := h.last(t, "FAIL_DEAL")
	h.handle(t, ev("COMPENSATED_ORDER", id, "DEAL_FAILED", "deals", fail.ID))
	if in := h.inst(t, id); in.Status != engine.StatusFailed {
		t.Errorf("status = %s, want failed", in.Status)
	}
	if h.last(t, "NOTIFY_FAILURE").ID == "" {
		t.Error("no NOTIFY_FAILURE")
	}
	// The same refusal again (another id, as a non-SDK participant might):
	// recorded, not a dead letter.
	h.handle(t, ev("COMPENSATED_ORDER", id, engine.EventCommandExpired, "profile", approve.ID))
	if dls := h.deadLetters(t); len(dls) != 1 {
		t.Errorf("dead letters = %+v, want only the forged one", dls)
	}
}

// The case: profile approves after the saga failed for
// PROFILE_UNAVAILABLE. The approval is not a dead letter: it is late and
// the REVERT_ORDER sent when the saga failed covers it.
func TestLateApprovalAfterFailure(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	h.handle(t, ev("COMPENSATED_ORDER", id, "REGISTER", "deals", ""))
	approve := h.last(t, "APPROVE_ORDER")
	for range 5 {
		h.fireAt(t, id)
	}
	in := h.inst(t, id)
	if in.State != "FAILED" || in.Status != engine.StatusCompensating || undoStatuses(in) != "FAIL_DEAL=replied REVERT_ORDER=compensating" {
		t.Fatalf("after PROFILE_UNAVAILABLE: %s %s %s", in.State, in.Status, undoStatuses(in))
	}
	// A forged approval (deals claiming profile's answer) is refused as
	// before and changes nothing.
	before := h.inst(t, id)
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_APPROVED", "deals", approve.ID))
	if after := h.inst(t, id); after.Rev != before.Rev || undoStatuses(after) != undoStatuses(before) {
		t.Fatalf("a forged approval changed the saga: %s", undoStatuses(after))
	}
	if dls := h.deadLetters(t); len(dls) != 1 || dls[0].Code != engine.CodeFinished {
		t.Fatalf("dead letters = %+v, want the forged approval refused", dls)
	}
	// The approval arrives while REVERT_ORDER is under way.
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_APPROVED", "profile", approve.ID))
	hist := h.history(t, id)
	late := hist[len(hist)-1]
	if late.Kind != engine.EntryLate || late.Event != "ORDER_APPROVED" || !strings.Contains(late.Reason, "under way") {
		t.Errorf("late entry = %+v", late)
	}
	if dls := h.deadLetters(t); len(dls) != 1 {
		t.Fatalf("dead letters = %+v, want only the forged one", dls)
	}
	revert := h.last(t, "REVERT_ORDER")
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "profile", revert.ID))
	h.handle(t, ev("COMPENSATED_ORDER", id, "DEAL_FAILED", "deals", h.last(t, "FAIL_DEAL").ID))
	// Once everything is undone, another late approval says so.
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_APPROVED", "profile", approve.ID))
	hist = h.history(t, id)
	if late := hist[len(hist)-1]; late.Kind != engine.EntryLate || !strings.Contains(late.Reason, "already ran") {
		t.Errorf("late entry after the compensation = %+v", late)
	}
	if in := h.inst(t, id); in.Status != engine.StatusFailed {
		t.Errorf("status = %s", in.Status)
	}
	if dls := h.deadLetters(t); len(dls) != 1 {
		t.Errorf("dead letters = %+v, want only the forged one", dls)
	}
	// An answer to a command without compensation keeps today's refusal.
	h.handle(t, ev("COMPENSATED_ORDER", id, "DEAL_UPDATED", "deals", uuid.NewString()))
	if dls := h.deadLetters(t); len(dls) != 2 || dls[0].Code != engine.CodeFinished {
		t.Errorf("dead letters = %+v, want a second finished", dls)
	}
}

// A saga that ends in success after abandoning a compensable command
// compensates it after its final command; a late reply then finds it
// compensated.
func TestSuccessCompensatesAbandonedCommands(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	h.handle(t, ev("ABANDON", id, "ORDER", "shop", ""))
	charge := h.last(t, "CHARGE")
	h.fireAt(t, id) // CHARGE_SLOW → FREE
	in := h.inst(t, id)
	if in.State != "FREE" || in.Status != engine.StatusCompensating {
		t.Fatalf("after the timeout: %s %s, want FREE compensating", in.State, in.Status)
	}
	names := h.outboxNames()
	if want := []string{"CHARGE", "GIVE_AWAY", "REFUND"}; !slices.Equal(names, want) {
		t.Fatalf("outbox = %v, want %v (the final command first)", names, want)
	}
	refund := h.last(t, "REFUND")
	h.handle(t, ev("ABANDON", id, "REFUNDED", "bank", refund.ID))
	if in := h.inst(t, id); in.Status != engine.StatusCompleted || in.TimerAt != nil {
		t.Errorf("after REFUNDED: %s timer %v, want completed", in.Status, in.TimerAt)
	}
	h.handle(t, ev("ABANDON", id, "CHARGED", "bank", charge.ID))
	hist := h.history(t, id)
	if late := hist[len(hist)-1]; late.Kind != engine.EntryLate || !strings.Contains(late.Reason, "already ran") {
		t.Errorf("late CHARGED = %+v", late)
	}
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Errorf("dead letters = %+v", dls)
	}
	// A success with its command answered compensates nothing.
	ok := uuid.NewString()
	h.handle(t, ev("ABANDON", ok, "ORDER", "shop", ""))
	h.handle(t, ev("ABANDON", ok, "CHARGED", "bank", h.last(t, "CHARGE").ID))
	if in := h.inst(t, ok); in.Status != engine.StatusCompleted || undoStatuses(in) != "REFUND=replied" {
		t.Errorf("paid saga: %s %s", in.Status, undoStatuses(in))
	}
}

// A reply with effect for a command nobody compensated yet, reaching a
// finished saga, is compensated now, with the same retry rules.
func TestLateReplyToFinishedSagaIsCompensatedNow(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	h.handle(t, ev("ABANDON", id, "ORDER", "shop", ""))
	charge := h.last(t, "CHARGE")
	// Profile-like participant said expired first (entry expired), so the
	// timeout's success did not compensate it ...
	h.handle(t, ev("ABANDON", id, engine.EventCommandExpired, "bank", charge.ID))
	in := h.inst(t, id)
	if in.State != "FREE" || in.Status != engine.StatusCompleted || undoStatuses(in) != "REFUND=expired" {
		t.Fatalf("after COMMAND_EXPIRED: %s %s %s, want FREE completed with REFUND expired", in.State, in.Status, undoStatuses(in))
	}
	// ... and then the charge is reported done after all: an effect.
	h.handle(t, ev("ABANDON", id, "CHARGED", "bank", charge.ID))
	in = h.inst(t, id)
	if in.Status != engine.StatusCompensating || undoStatuses(in) != "REFUND=compensating" {
		t.Fatalf("after the late CHARGED: %s %s", in.Status, undoStatuses(in))
	}
	hist := h.history(t, id)
	if late := hist[len(hist)-2]; late.Kind != engine.EntryCompensation {
		t.Errorf("entry before the late one = %+v", late)
	}
	if late := hist[len(hist)-1]; late.Kind != engine.EntryLate || len(late.Commands) != 1 || late.Commands[0].Name != "REFUND" {
		t.Errorf("late entry = %+v, want it to name the REFUND sent", late)
	}
	// REFUND's retry: 2 attempts, then the saga stops.
	h.fireAt(t, id)
	h.fireAt(t, id)
	if in := h.inst(t, id); in.Status != engine.StatusCompensationFailed {
		t.Errorf("after 2 attempts: %s, want compensation_failed", in.Status)
	}
}

// COMMAND_EXPIRED for a command the saga sent earlier (no compensation) is
// recorded; for a command it never sent, or for a saga that does not
// exist, it is a dead letter with a clear reason.
func TestCommandExpiredForOtherCommands(t *testing.T) {
	h := newHarness(t, fast)
	id := uuid.NewString()
	h.handle(t, fastEvent(id, "GO"))
	do := h.last(t, "DO")
	h.handle(t, fastEvent(id, "DONE")) // the saga is finished
	exp := fastEvent(id, engine.EventCommandExpired)
	exp.CausationID = do.ID
	h.handle(t, exp)
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Fatalf("dead letters = %+v, want none for a command the saga sent", dls)
	}
	hist := h.history(t, id)
	if last := hist[len(hist)-1]; last.Kind != engine.EntryLate || last.Event != engine.EventCommandExpired || len(last.Commands) != 1 || last.Commands[0].Name != "DO" {
		t.Errorf("last entry = %+v, want late COMMAND_EXPIRED naming DO", last)
	}
	unknown := fastEvent(id, engine.EventCommandExpired)
	unknown.CausationID = uuid.NewString()
	nocause := fastEvent(id, engine.EventCommandExpired)
	noSaga := fastEvent(uuid.NewString(), engine.EventCommandExpired)
	noSaga.CausationID = do.ID
	h.handle(t, unknown, nocause, noSaga)
	dls := h.deadLetters(t)
	if len(dls) != 3 {
		t.Fatalf("dead letters = %+v, want 3", dls)
	}
	byMsg := map[string]engine.DeadLetter{}
	for _, d := range dls {
		byMsg[d.MessageID] = d
	}
	for _, c := range []struct {
		m    engine.Message
		code engine.Code
		says string
	}{{unknown, engine.CodeIllegal, "never sent"}, {nocause, engine.CodeInvalid, "causation_id"}, {noSaga, engine.CodeNotFound, "does not exist"}} {
		d := byMsg[c.m.ID]
		if d.Code != c.code || !strings.Contains(d.Reason, c.says) {
			t.Errorf("dead letter of %s = %s %q, want %s saying %q", c.m.ID, d.Code, d.Reason, c.code, c.says)
		}
	}
}

// A done event answering no compensation command of the saga is a dead
// letter and changes nothing.
func TestDoneEventForUnknownCompensation(t *testing.T) {
	h := newCompHarness(t)
	id := uuid.NewString()
	h.handle(t, ev("COMPENSATED_ORDER", id, "REGISTER", "deals", ""))
	before := h.inst(t, id)
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "profile", uuid.NewString()))
	if after := h.inst(t, id); after.Rev != before.Rev {
		t.Errorf("saga changed: rev %d → %d", before.Rev, after.Rev)
	}
	if dls := h.deadLetters(t); len(dls) != 1 || dls[0].Code != engine.CodeIllegal || !strings.Contains(dls[0].Reason, "REVERT_ORDER") {
		t.Errorf("dead letters = %+v", dls)
	}
	// From another participant than the compensation's: an unknown event.
	h.handle(t, ev("COMPENSATED_ORDER", id, "ORDER_REVERTED", "deals", uuid.NewString()))
	if dls := h.deadLetters(t); len(dls) != 2 || dls[0].Code != engine.CodeUnknownEvent {
		t.Errorf("dead letters = %+v", dls)
	}
}

// A v1 definition (no compensation) keeps its behaviour: failure sends the
// failed transition's command at once and the status is failed. A saga
// started on MANUAL_CREATE_ORDER v1 finishes on v1 beside v2.
func TestNoCompensationNoChange(t *testing.T) {
	h := newHarness(t)
	id := uuid.NewString()
	reg := event(id, "REGISTER", "deals", "")
	reg.SagaVersion = 1
	h.handle(t, reg)
	for range 5 {
		h.fireAt(t, id)
	}
	in := h.inst(t, id)
	if in.SagaVersion != 1 || in.State != "FAILED" || in.Status != engine.StatusFailed || len(in.Undo) != 0 || in.Deferred != nil || in.TimerAt != nil {
		t.Errorf("v1 failure: v%d %s %s undo %v deferred %v timer %v, want v1 FAILED failed with nothing to undo or hold back",
			in.SagaVersion, in.State, in.Status, in.Undo, in.Deferred, in.TimerAt)
	}
	// v1's PROFILE_UNAVAILABLE sends nothing: 5 APPROVE_ORDER and no NOTIFY.
	if got, want := h.outboxNames(), slices.Repeat([]string{"APPROVE_ORDER"}, 5); !slices.Equal(got, want) {
		t.Errorf("outbox = %v, want %v", got, want)
	}
}

// detour leaves its compensable CHARGE unanswered on a timeout and sends
// another compensable command, INVOICE, to the same participant.
const detour = `
saga: DETOUR
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
states:
  CHARGING:
    timeout: { after: 1m, event: CHARGE_SLOW }
transitions:
  - on: ORDER
    by: shop
    from: []
    to: CHARGING
    send: { to: bank, command: CHARGE, compensate: { command: REFUND, done: REFUNDED } }
  - { on: CHARGED, by: bank, from: [CHARGING], to: PAID }
  - on: CHARGE_SLOW
    by: engine
    from: [CHARGING]
    to: INVOICING
    send: { to: bank, command: INVOICE, compensate: { command: CANCEL_INVOICE, done: INVOICE_CANCELLED } }
  - { on: INVOICED, by: bank, from: [INVOICING], to: BILLED }
  - { on: CANCEL, by: shop, from: [CHARGING, INVOICING], to: CANCELLED }
final: [PAID, BILLED]
failed: [CANCELLED]
`

// A participant outside the SDK may answer without causation ids. An event
// the state machine accepts from the receiver of the command the saga waits
// for answers that command: a v2 MANUAL_CREATE_ORDER answered that way
// completes and undoes nothing. A command the saga abandoned (a timeout or
// an exhausted retry moved it on) is still compensated: an answer without
// causation id is not taken for its answer.
func TestAnswersWithoutCausationID(t *testing.T) {
	for _, decision := range []string{"ORDER_APPROVED", "ORDER_REJECTED"} {
		t.Run("v2 "+decision, func(t *testing.T) {
			h := newHarness(t)
			id := uuid.NewString()
			h.handle(t, event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D-1","user_id":7}}`))
			h.fireAt(t, id) // APPROVE_ORDER re-sent (same id): still the command waited for
			h.handle(t, event(id, decision, "profile", ""))
			h.handle(t, event(id, "DEAL_UPDATED", "deals", ""))
			in := h.inst(t, id)
			if in.SagaVersion != 4 || in.State != "NOTIFICATION" || in.Status != engine.StatusCompleted || in.TimerAt != nil {
				t.Fatalf("saga = v%d %s %s timer %v, want v4 NOTIFICATION completed without timer", in.SagaVersion, in.State, in.Status, in.TimerAt)
			}
			if got, want := undoStatuses(in), "FAIL_DEAL=replied REVERT_ORDER=replied FAIL_DEAL=replied"; got != want {
				t.Errorf("undo = %s, want %s (both commands answered)", got, want)
			}
			second := map[string]string{"ORDER_APPROVED": "APPROVE_DEAL", "ORDER_REJECTED": "REJECT_DEAL"}[decision]
			if got, want := h.outboxNames(), []string{"APPROVE_ORDER", "APPROVE_ORDER", second, "NOTIFY"}; !slices.Equal(got, want) {
				t.Errorf("outbox = %v, want %v: no compensation", got, want)
			}
			if got, want := kinds(h.history(t, id)), "event:REGISTER retry: event:"+decision+" event:DEAL_UPDATED"; got != want {
				t.Errorf("timeline = %s, want %s", got, want)
			}
			if dls := h.deadLetters(t); len(dls) != 0 {
				t.Errorf("dead letters = %+v", dls)
			}
		})
	}

	t.Run("abandoned on a timeout", func(t *testing.T) {
		h := newHarness(t, detour)
		id := uuid.NewString()
		h.handle(t, ev("DETOUR", id, "ORDER", "shop", ""))
		charge := h.last(t, "CHARGE")
		h.fireAt(t, id) // CHARGE_SLOW → INVOICING: CHARGE is abandoned
		invoice := h.last(t, "INVOICE")
		if in := h.inst(t, id); in.State != "INVOICING" || undoStatuses(in) != "REFUND=open CANCEL_INVOICE=open" {
			t.Fatalf("after the timeout: %s %s", in.State, undoStatuses(in))
		}
		// bank's answer without causation id answers INVOICE, the command
		// the saga waits for, not the abandoned CHARGE.
		h.handle(t, ev("DETOUR", id, "INVOICED", "bank", ""))
		in := h.inst(t, id)
		if in.State != "BILLED" || in.Status != engine.StatusCompensating || undoStatuses(in) != "REFUND=compensating CANCEL_INVOICE=replied" {
			t.Fatalf("after INVOICED: %s %s %s, want BILLED compensating the abandoned CHARGE only", in.State, in.Status, undoStatuses(in))
		}
		refund := h.last(t, "REFUND")
		if refund.Compensates != charge.ID || refund.Participant != "bank" {
			t.Errorf("REFUND = %+v, want it to undo CHARGE %s", refund, charge.ID)
		}
		// The abandoned CHARGE's own late answer without causation id is not
		// taken for an answer either: the REFUND under way goes on.
		h.handle(t, ev("DETOUR", id, "CHARGED", "bank", ""))
		if got := h.inst(t, id); got.Status != engine.StatusCompensating || undoStatuses(got) != "REFUND=compensating CANCEL_INVOICE=replied" {
			t.Errorf("after a CHARGED without causation: %s %s", got.Status, undoStatuses(got))
		}
		h.handle(t, ev("DETOUR", id, "REFUNDED", "bank", refund.ID))
		in = h.inst(t, id)
		if in.Status != engine.StatusCompleted || in.TimerAt != nil || undoStatuses(in) != "REFUND=compensated CANCEL_INVOICE=replied" {
			t.Errorf("after REFUNDED: %s timer %v %s, want completed", in.Status, in.TimerAt, undoStatuses(in))
		}
		if got, want := h.outboxNames(), []string{"CHARGE", "INVOICE", "REFUND"}; !slices.Equal(got, want) {
			t.Errorf("outbox = %v, want %v: CANCEL_INVOICE never sent", got, want)
		}
		if invoice.ID == charge.ID {
			t.Error("INVOICE has CHARGE's id")
		}
	})

	t.Run("abandoned on an exhausted retry", func(t *testing.T) {
		h := newHarness(t)
		id := uuid.NewString()
		h.handle(t, event(id, "REGISTER", "deals", ""))
		approve := h.last(t, "APPROVE_ORDER")
		for range 5 { // 5 sends unanswered, then PROFILE_UNAVAILABLE
			h.fireAt(t, id)
		}
		in := h.inst(t, id)
		if in.State != "FAILED" || in.Status != engine.StatusCompensating || undoStatuses(in) != "FAIL_DEAL=replied REVERT_ORDER=compensating" {
			t.Fatalf("after PROFILE_UNAVAILABLE: %s %s %s", in.State, in.Status, undoStatuses(in))
		}
		// profile's approval arrives late, without causation id: it cannot
		// be told from a forgery and changes nothing; REVERT_ORDER goes on.
		h.handle(t, event(id, "ORDER_APPROVED", "profile", ""))
		if got := h.inst(t, id); got.Rev != in.Rev || undoStatuses(got) != undoStatuses(in) {
			t.Errorf("a late approval without causation changed the saga: rev %d → %d, %s", in.Rev, got.Rev, undoStatuses(got))
		}
		if dls := h.deadLetters(t); len(dls) != 1 || dls[0].Code != engine.CodeFinished {
			t.Errorf("dead letters = %+v, want the late approval refused as finished", dls)
		}
		revert := h.last(t, "REVERT_ORDER")
		if revert.Compensates != approve.ID {
			t.Errorf("REVERT_ORDER compensates %s, want APPROVE_ORDER %s", revert.Compensates, approve.ID)
		}
		h.handle(t, ev("MANUAL_CREATE_ORDER", id, "ORDER_REVERTED", "profile", revert.ID))
		h.handle(t, ev("MANUAL_CREATE_ORDER", id, "DEAL_FAILED", "deals", h.last(t, "FAIL_DEAL").ID))
		if got := h.inst(t, id); got.Status != engine.StatusFailed || undoStatuses(got) != "FAIL_DEAL=compensated REVERT_ORDER=compensated" {
			t.Errorf("after the compensations: %s %s, want failed", got.Status, undoStatuses(got))
		}
		names := h.outboxNames()
		if want := []string{"REVERT_ORDER", "FAIL_DEAL", "NOTIFY"}; !slices.Equal(names[len(names)-3:], want) {
			t.Errorf("outbox = %v, want it to end with %v", names, want)
		}
	})
}

// withComp is the harness's counting observer with compensation outcomes
// going to comp.
type withComp struct {
	*countingObserver
	comp *compObserver
}

func (w withComp) Compensation(saga, event string, o engine.CompensationOutcome) {
	w.comp.Compensation(saga, event, o)
}

type compObserver struct {
	engine.NopObserver
	seen []engine.CompensationOutcome
}

func (c *compObserver) Compensation(_, _ string, o engine.CompensationOutcome) {
	c.seen = append(c.seen, o)
}

func (c *compObserver) count(o engine.CompensationOutcome) int {
	n := 0
	for _, s := range c.seen {
		if s == o {
			n++
		}
	}
	return n
}

// loop sends its compensable CHARGE again (a new id) after a timeout.
const loop = `
saga: LOOP
version: 1
participants:
  bank: { topic: BANK_TOPIC }
states:
  CHARGING:
    timeout: { after: 1m, event: SLOW }
transitions:
  - on: ORDER
    by: bank
    from: []
    to: CHARGING
    send: { to: bank, command: CHARGE, compensate: { command: REFUND, done: REFUNDED } }
  - on: SLOW
    by: engine
    from: [CHARGING]
    to: CHARGING_AGAIN
    send: { to: bank, command: CHARGE, compensate: { command: REFUND, done: REFUNDED } }
  - { on: CHARGED, by: bank, from: [CHARGING, CHARGING_AGAIN], to: PAID }
  - { on: GIVE_UP, by: bank, from: [CHARGING_AGAIN], to: FAILED }
final: [PAID]
failed: [FAILED]
`

// A success that kept one of two sends of the same compensable command
// does not undo the other (the compensation would undo the kept business
// record); a failure undoes both, newest first.
func TestSuccessKeepsTheEffectOfARepeatedCommand(t *testing.T) {
	for _, answer := range []int{0, 1} { // which CHARGE is answered
		h := newHarness(t, loop)
		id := uuid.NewString()
		h.handle(t, ev("LOOP", id, "ORDER", "bank", ""))
		first := h.last(t, "CHARGE")
		h.fireAt(t, id) // SLOW → CHARGING_AGAIN, CHARGE again
		second := h.last(t, "CHARGE")
		if first.ID == second.ID {
			t.Fatal("the second CHARGE has the first one's id")
		}
		answered := []engine.Message{first, second}[answer]
		h.handle(t, ev("LOOP", id, "CHARGED", "bank", answered.ID))
		in := h.inst(t, id)
		if in.Status != engine.StatusCompleted || slices.Contains(h.outboxNames(), "REFUND") {
			t.Errorf("answer %d: %s %s, outbox %v; want completed without REFUND", answer, in.Status, undoStatuses(in), h.outboxNames())
		}
		other := []engine.Message{first, second}[1-answer]
		h.handle(t, ev("LOOP", id, "CHARGED", "bank", other.ID))
		hist := h.history(t, id)
		if late := hist[len(hist)-1]; late.Kind != engine.EntryLate || !strings.Contains(late.Reason, "nothing to undo") {
			t.Errorf("answer %d: late entry = %+v", answer, late)
		}
		if slices.Contains(h.outboxNames(), "REFUND") || len(h.deadLetters(t)) != 0 {
			t.Errorf("answer %d: outbox %v dead letters %v", answer, h.outboxNames(), h.deadLetters(t))
		}
	}
	h := newHarness(t, loop)
	id := uuid.NewString()
	h.handle(t, ev("LOOP", id, "ORDER", "bank", ""))
	first := h.last(t, "CHARGE")
	h.fireAt(t, id)
	second := h.last(t, "CHARGE")
	h.handle(t, ev("LOOP", id, "GIVE_UP", "bank", ""))
	if got := h.last(t, "REFUND"); got.Compensates != second.ID {
		t.Fatalf("first REFUND compensates %s, want the newest CHARGE %s", got.Compensates, second.ID)
	}
	h.handle(t, ev("LOOP", id, "REFUNDED", "bank", h.last(t, "REFUND").ID))
	if got := h.last(t, "REFUND"); got.Compensates != first.ID {
		t.Fatalf("second REFUND compensates %s, want %s", got.Compensates, first.ID)
	}
	h.handle(t, ev("LOOP", id, "REFUNDED", "bank", h.last(t, "REFUND").ID))
	if in := h.inst(t, id); in.Status != engine.StatusFailed {
		t.Errorf("status %s, want failed", in.Status)
	}
}
