package profile

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// revertWorld is profile on one database with a funded portfolio of alice.
type revertWorld struct {
	db  *sqlx.DB
	p   *sdk.Participant
	s   *Service
	clk *clock
	pf  Portfolio
}

func newRevertWorld(t *testing.T, db *sqlx.DB, cash string) *revertWorld {
	t.Helper()
	clk := &clock{}
	clk.Set("2026-03-02T10:00:00Z")
	p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)
	pf, err := fundedPortfolio(context.Background(), s, "alice", dec(cash))
	if err != nil {
		t.Fatal(err)
	}
	return &revertWorld{db: db, p: p, s: s, clk: clk, pf: pf}
}

// approve sends APPROVE_ORDER of dc in saga sagaID and checks the event.
func (w *revertWorld) approve(t *testing.T, sagaID string, dc dealctx.DealContext, want string) engine.Message {
	t.Helper()
	msg := servicetest.Command(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(dc))
	out := servicetest.DispatchMessage(t, w.p, msg)
	if out.Reply == nil || out.Reply.Name != want {
		t.Fatalf("APPROVE_ORDER of deal %s: got %+v (err %v), want %s", dc.DealID, out.Reply, out.Err, want)
	}
	return msg
}

// revert sends REVERT_ORDER compensating forward with the context dc.
func (w *revertWorld) revert(t *testing.T, forward engine.Message, dc dealctx.DealContext) sdk.Outcome {
	t.Helper()
	return servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(dc)))
}

// holdings is the portfolio's cash and positions, e.g. `1000 {"AAPL":"2"}`.
func (w *revertWorld) holdings(t *testing.T) string {
	t.Helper()
	pf := mustPortfolio(t, w.s, "alice", w.pf.ID)
	return pf.Cash.String() + " " + positionsString(pf.Positions)
}

// snapshot is the snapshot of day as holdings prints it.
func (w *revertWorld) snapshot(t *testing.T, day string) string {
	t.Helper()
	snap, err := w.s.SnapshotAt(context.Background(), "alice", w.pf.ID, day)
	if err != nil {
		t.Fatalf("snapshot of %s: %v", day, err)
	}
	return snap.Cash.String() + " " + positionsString(snap.Positions)
}

func (w *revertWorld) reversals(t *testing.T, dealID string) int {
	t.Helper()
	var n int
	if err := w.db.Get(&n, w.db.Rebind(`SELECT COUNT(*) FROM order_reversals WHERE deal_id = ?`), dealID); err != nil {
		t.Fatal(err)
	}
	return n
}

// reversalOf decodes ORDER_REVERTED's payload, checking that it carries
// order_reversal and nothing else (deal_context stays as it is).
func reversalOf(t *testing.T, out sdk.Outcome) dealctx.Reversal {
	t.Helper()
	if out.Reply == nil || out.Reply.Name != EventOrderReverted || out.Err != nil {
		t.Fatalf("got reply %+v (err %v, dead letter %+v), want %s", out.Reply, out.Err, out.DeadLetter, EventOrderReverted)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out.Reply.Payload, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["deal_context"]; ok || len(top) != 1 {
		t.Errorf("ORDER_REVERTED payload %s: want order_reversal only (merging it must leave deal_context as it is)", out.Reply.Payload)
	}
	var env dealctx.ReversalEnvelope
	if err := json.Unmarshal(out.Reply.Payload, &env); err != nil {
		t.Fatal(err)
	}
	return env.OrderReversal
}

// TestRevertOrder undoes each kind of decision once on SQLite and
// PostgreSQL: an approved buy or sell moves cash and position back and
// updates today's snapshot; a rejected or undecided order moves nothing;
// every repetition (redelivery, a new command id) answers the same and
// moves nothing more.
func TestRevertOrder(t *testing.T) {
	tests := []struct {
		name         string
		holdings     string // AAPL bought first, "" for none
		side, qty    string
		decide       string // the APPROVE_ORDER answer before the revert; "" for none sent
		wantReverted bool
		wantReason   string
		wantBefore   string // cash and positions after the decision
		wantAfter    string // ... and after the revert
	}{
		{name: "approved buy", side: "buy", qty: "10", decide: EventOrderApproved, wantReverted: true,
			wantReason: "the buy was undone: 1500.00 USD returned to the cash, 10 AAPL taken back",
			wantBefore: `500 {"AAPL":"10"}`, wantAfter: `2000 {}`},
		{name: "approved buy beside an older position", holdings: "2", side: "buy", qty: "10", decide: EventOrderApproved, wantReverted: true,
			wantReason: "the buy was undone: 1500.00 USD returned to the cash, 10 AAPL taken back",
			wantBefore: `200 {"AAPL":"12"}`, wantAfter: `1700 {"AAPL":"2"}`},
		{name: "approved sell", holdings: "4", side: "sell", qty: "3", decide: EventOrderApproved, wantReverted: true,
			wantReason: "the sell was undone: 450.00 USD taken back from the cash, 3 AAPL returned",
			wantBefore: `1850 {"AAPL":"1"}`, wantAfter: `1400 {"AAPL":"4"}`},
		{name: "rejected buy", side: "buy", qty: "100", decide: EventOrderRejected,
			wantReason: "the order was rejected: nothing to undo", wantBefore: `2000 {}`, wantAfter: `2000 {}`},
		{name: "never decided", side: "buy", qty: "10",
			wantReason: "the order was not decided: nothing to undo, and it will not be applied if it arrives later",
			wantBefore: `2000 {}`, wantAfter: `2000 {}`},
	}
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newRevertWorld(t, db, "2000")
				if tt.holdings != "" {
					w.approve(t, uuid.NewString(), deal("alice", w.pf.ID, "buy", tt.holdings, "150"), EventOrderApproved)
				}
				sagaID := uuid.NewString()
				dc := deal("alice", w.pf.ID, tt.side, tt.qty, "150")
				forward := servicetest.Command(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(dc))
				if tt.decide != "" {
					forward = w.approve(t, sagaID, dc, tt.decide)
				}
				if got := w.holdings(t); got != tt.wantBefore {
					t.Fatalf("after the decision: got %s, want %s", got, tt.wantBefore)
				}
				// The compensation carries the context of when the saga
				// failed: profile's decision, if it was merged.
				ctxNow := dc
				if tt.decide == EventOrderApproved {
					ctxNow.Status = dealctx.StatusApproved
				}
				w.clk.Set("2026-03-03T09:00:00Z") // the saga fails the next day
				comp := servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(ctxNow))
				comp.Deadline = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // long past: a compensation is never refused for it
				out := servicetest.DispatchMessage(t, w.p, comp)
				rev := reversalOf(t, out)
				if rev.DealID != dc.DealID || rev.Reverted != tt.wantReverted || rev.Reason != tt.wantReason {
					t.Errorf("order_reversal: got %+v, want deal %s reverted %v %q", rev, dc.DealID, tt.wantReverted, tt.wantReason)
				}
				if got := w.holdings(t); got != tt.wantAfter {
					t.Errorf("after the revert: got %s, want %s", got, tt.wantAfter)
				}
				// Today's snapshot shows the reversal; the day of the approval keeps it.
				if got := w.snapshot(t, "2026-03-03"); got != tt.wantAfter {
					t.Errorf("snapshot of the revert's day: got %s, want %s", got, tt.wantAfter)
				}
				if got := w.snapshot(t, "2026-03-02"); got != tt.wantBefore {
					t.Errorf("snapshot of the approval's day: got %s, want it unchanged %s", got, tt.wantBefore)
				}

				// Redelivery of the same command: the stored reply.
				again := servicetest.DispatchMessage(t, w.p, comp)
				if !again.Duplicate || again.Reply == nil || again.Reply.ID != out.Reply.ID {
					t.Errorf("redelivery: got duplicate %v reply %+v, want the stored reply %s", again.Duplicate, again.Reply, out.Reply.ID)
				}
				// Another compensation command for the same deal: the same
				// answer, nothing moves twice.
				second := reversalOf(t, w.revert(t, forward, ctxNow))
				if second != rev {
					t.Errorf("second REVERT_ORDER: got %+v, want the first answer %+v", second, rev)
				}
				// The forward command again (re-sent by saga-machine, same
				// id): the stored decision or the barrier's refusal, no effect.
				servicetest.DispatchMessage(t, w.p, forward)
				// The deal under a new APPROVE_ORDER id: rejected, no effect.
				late := servicetest.Dispatch(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(dc))
				if late.Reply == nil || late.Reply.Name != EventOrderRejected || !strings.Contains(late.Reply.Reason, "was reverted") {
					t.Errorf("APPROVE_ORDER after the revert: got %+v, want ORDER_REJECTED (reverted)", late.Reply)
				}
				if got := w.holdings(t); got != tt.wantAfter {
					t.Errorf("after the repetitions: got %s, want still %s", got, tt.wantAfter)
				}
				if n := w.reversals(t, dc.DealID); n != 1 {
					t.Errorf("reversal rows: got %d, want 1", n)
				}
			})
		}
	})
}

// TestApproveAfterItsRevert: the compensation overtakes its forward
// command (profile was down; saga-machine gave up and sent REVERT_ORDER,
// queued behind nothing): the APPROVE_ORDER arriving afterwards is
// refused by the SDK's barrier and the cash does not move, on SQLite and
// PostgreSQL.
func TestApproveAfterItsRevert(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		dc := deal("alice", w.pf.ID, "buy", "10", "150")
		forward := servicetest.Command(t, w.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(dc))
		forward.Deadline = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // still in time: only the barrier stops it
		rev := reversalOf(t, w.revert(t, forward, dc))
		if rev.Reverted {
			t.Errorf("revert before the approval: got reverted %v, want nothing to undo", rev.Reverted)
		}
		for i := range 2 { // the delivery and a redelivery
			out := servicetest.DispatchMessage(t, w.p, forward)
			if !out.Expired || out.Reply == nil || out.Reply.Name != engine.EventCommandExpired {
				t.Errorf("APPROVE_ORDER %d after its compensation: got %+v (expired %v), want COMMAND_EXPIRED", i, out.Reply, out.Expired)
			}
		}
		if got := w.holdings(t); got != `2000 {}` {
			t.Errorf("portfolio: got %s, want untouched 2000 {}", got)
		}
		var n int
		if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM order_decisions WHERE deal_id = ?`), dc.DealID); err != nil || n != 0 {
			t.Errorf("decisions on the deal: got %d (err %v), want none", n, err)
		}
	})
}

// TestRevertRefused: a reversal profile cannot make without taking a
// position or the cash below zero, and the attacks on REVERT_ORDER, are
// parked as dead letters with the reason, and nothing moves. A parked
// reversal is tried again by saga-machine's re-send (same command id) and
// succeeds once the portfolio can take it.
func TestRevertRefused(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		t.Run("bought position sold since", func(t *testing.T) {
			w := newRevertWorld(t, db, "2000")
			dc := deal("alice", w.pf.ID, "buy", "10", "150")
			forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
			w.approve(t, uuid.NewString(), deal("alice", w.pf.ID, "sell", "6", "100"), EventOrderApproved)
			before := w.holdings(t) // 500+600, 4 AAPL
			comp := servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(dc))
			out := servicetest.DispatchMessage(t, w.p, comp)
			if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, "holds 4 AAPL, fewer than the 10 it bought") {
				t.Fatalf("revert: got reply %+v dead letter %+v, want a dead letter naming the position", out.Reply, out.DeadLetter)
			}
			if got := w.holdings(t); got != before || before != `1100 {"AAPL":"4"}` {
				t.Errorf("portfolio: got %s, want untouched %s", got, before)
			}
			if n := w.reversals(t, dc.DealID); n != 0 {
				t.Errorf("reversal rows: got %d, want none", n)
			}
			// saga-machine re-sends it: parked again, the same row.
			if again := servicetest.DispatchMessage(t, w.p, comp); again.DeadLetter == nil || again.DeadLetter.ID != out.DeadLetter.ID {
				t.Errorf("re-send: got %+v, want the same dead letter %s", again.DeadLetter, out.DeadLetter.ID)
			}
			// The client buys 6 back; the next re-send reverts the buy.
			w.approve(t, uuid.NewString(), deal("alice", w.pf.ID, "buy", "6", "100"), EventOrderApproved)
			rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, comp))
			if !rev.Reverted {
				t.Errorf("re-send once the position is back: got %+v, want reverted", rev)
			}
			if got := w.holdings(t); got != `2000 {}` {
				t.Errorf("portfolio after the revert: got %s, want 2000 {}", got)
			}
		})
		t.Run("sell proceeds spent since", func(t *testing.T) {
			w := newRevertWorld(t, db, "100")
			w.approve(t, uuid.NewString(), deal("alice", w.pf.ID, "buy", "1", "100"), EventOrderApproved)
			dc := deal("alice", w.pf.ID, "sell", "1", "300")
			forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
			w.approve(t, uuid.NewString(), deal("alice", w.pf.ID, "buy", "2", "100"), EventOrderApproved)
			out := w.revert(t, forward, dc)
			if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, "has 100.00 USD in cash, less than the 300.00 USD it was paid") {
				t.Fatalf("revert: got reply %+v dead letter %+v, want a dead letter naming the cash", out.Reply, out.DeadLetter)
			}
			if got := w.holdings(t); got != `100 {"AAPL":"2"}` {
				t.Errorf("portfolio: got %s, want untouched 100 {\"AAPL\":\"2\"}", got)
			}
		})
		attacks := []struct {
			name  string
			forge func(w *revertWorld, comp *engine.Message, dc *dealctx.DealContext)
			want  string
		}{
			{"another saga reverts the deal", func(_ *revertWorld, comp *engine.Message, _ *dealctx.DealContext) { comp.SagaID = uuid.NewString() },
				"a saga reverts only its own order"},
			{"not a compensation", func(_ *revertWorld, comp *engine.Message, _ *dealctx.DealContext) { comp.Compensates = "" },
				"compensates is empty"},
			{"another user's deal", func(_ *revertWorld, _ *engine.Message, dc *dealctx.DealContext) { dc.UserID = "mallory" },
				"is not user mallory's"},
			{"another portfolio", func(w *revertWorld, _ *engine.Message, dc *dealctx.DealContext) {
				other, err := fundedPortfolio(context.Background(), w.s, "alice", dec("1"))
				if err != nil {
					panic(err)
				}
				dc.PortfolioID = other.ID
			}, "was decided on portfolio"},
			{"a malformed context", func(_ *revertWorld, _ *engine.Message, dc *dealctx.DealContext) { dc.Amount = dec("0.01") },
				"is not quantity*price"},
		}
		for _, tt := range attacks {
			t.Run(tt.name, func(t *testing.T) {
				w := newRevertWorld(t, db, "2000")
				dc := deal("alice", w.pf.ID, "buy", "10", "150")
				forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
				forged := dc
				comp := servicetest.Compensation(t, w.p, CommandRevertOrder, forward, nil)
				tt.forge(w, &comp, &forged)
				raw, err := json.Marshal(dealctx.Wrap(forged))
				if err != nil {
					t.Fatal(err)
				}
				comp.Payload = raw
				out := servicetest.DispatchMessage(t, w.p, comp)
				if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("forged REVERT_ORDER: got reply %+v dead letter %+v, want a dead letter containing %q", out.Reply, out.DeadLetter, tt.want)
				}
				if got := w.holdings(t); got != `500 {"AAPL":"10"}` {
					t.Errorf("portfolio: got %s, want the approval untouched 500 {\"AAPL\":\"10\"}", got)
				}
				if n := w.reversals(t, dc.DealID); n != 0 {
					t.Errorf("reversal rows: got %d, want none", n)
				}
				// The genuine compensation still works afterwards.
				if rev := reversalOf(t, w.revert(t, forward, dc)); !rev.Reverted {
					t.Errorf("genuine revert after the forged one: got %+v, want reverted", rev)
				}
				if got := w.holdings(t); got != `2000 {}` {
					t.Errorf("portfolio after the genuine revert: got %s, want 2000 {}", got)
				}
			})
		}
	})
}

// TestRevertOldDecision reverts an approval recorded before decisions
// kept what they moved (migration 00003), and so before they kept their
// command (00004): the saga context says it.
func TestRevertOldDecision(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		dc := deal("alice", w.pf.ID, "buy", "4", "125")
		forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
		if _, err := db.Exec(db.Rebind(`UPDATE order_decisions SET saga_id = '', side = '', instrument = '', quantity = NULL, amount = NULL, command_id = NULL WHERE deal_id = ?`), dc.DealID); err != nil {
			t.Fatal(err)
		}
		rev := reversalOf(t, w.revert(t, forward, dc))
		if !rev.Reverted || rev.Reason != "the buy was undone: 500.00 USD returned to the cash, 4 AAPL taken back" {
			t.Errorf("order_reversal: got %+v", rev)
		}
		if got := w.holdings(t); got != `2000 {}` {
			t.Errorf("portfolio: got %s, want 2000 {}", got)
		}
	})
}

// TestConcurrentReverts sends several REVERT_ORDERs of one approved buy
// (different command ids, as two compensations of one effect could be) at
// once beside a buy of the same portfolio: the cash comes back exactly
// once, with no lost update.
func TestConcurrentReverts(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		dc := deal("alice", w.pf.ID, "buy", "10", "150")
		forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
		other := deal("alice", w.pf.ID, "buy", "1", "100")
		msgs := []engine.Message{servicetest.Command(t, w.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(other))}
		for range 5 {
			msgs = append(msgs, servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(dc)))
		}
		var wg sync.WaitGroup
		outs := make([]sdk.Outcome, len(msgs))
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			body, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				outs[i], errs[i] = w.p.Dispatch(context.Background(), sdk.Record{Topic: w.p.Config().CommandTopic, Key: m.SagaID, Value: body})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("dispatch %d: %v", i, err)
			}
		}
		reverted := 0
		for i, out := range outs[1:] {
			if out.Reply == nil || out.Reply.Name != EventOrderReverted {
				t.Errorf("revert %d: got %+v (err %v), want ORDER_REVERTED", i, out.Reply, out.Err)
				continue
			}
			reverted++
		}
		if outs[0].Reply == nil || outs[0].Reply.Name != EventOrderApproved {
			t.Errorf("the other buy: got %+v (err %v), want ORDER_APPROVED", outs[0].Reply, outs[0].Err)
		}
		if got := w.holdings(t); reverted != 5 || got != `1900 {"AAPL":"1"}` {
			t.Errorf("portfolio: got %s after %d answers, want 1900 {\"AAPL\":\"1\"} (the buy of 10 reverted once, the other applied)", got, reverted)
		}
		if n := w.reversals(t, dc.DealID); n != 1 {
			t.Errorf("reversal rows: got %d, want 1", n)
		}
	})
}
