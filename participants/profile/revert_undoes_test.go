package profile

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// decisionsOf lists the decisions taken on portfolio pf, as
// "deal status command" lines in deal order (command "-" when NULL).
func decisionsOf(t *testing.T, db *sqlx.DB, pf string) string {
	t.Helper()
	var rows []string
	if err := db.Select(&rows, db.Rebind(`SELECT deal_id || ' ' || status || ' ' || COALESCE(command_id, '-')
		FROM order_decisions WHERE portfolio_id = ? ORDER BY deal_id`), pf); err != nil {
		t.Fatalf("read the decisions: %v", err)
	}
	return strings.Join(rows, "\n")
}

// reversalsOf lists the reversals recorded on portfolio pf, as
// "deal outcome" lines in deal order.
func reversalsOf(t *testing.T, db *sqlx.DB, pf string) string {
	t.Helper()
	var rows []string
	if err := db.Select(&rows, db.Rebind(`SELECT deal_id || ' ' || outcome FROM order_reversals WHERE portfolio_id = ? ORDER BY deal_id`), pf); err != nil {
		t.Fatalf("read the reversals: %v", err)
	}
	return strings.Join(rows, "\n")
}

// TestApproveOrderRecordsItsCommand: the decision of APPROVE_ORDER,
// approved or rejected, keeps the id of the command that took it; a
// repetition under a new command id keeps the first one.
func TestApproveOrderRecordsItsCommand(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		sagaID := uuid.NewString()
		a := line("alice", w.pf.ID, "buy", "10", "AAPL", "150")  // approved
		b := line("alice", w.pf.ID, "buy", "100", "TSLA", "100") // rejected: 10000 > 500
		fa := w.approve(t, sagaID, a, EventOrderApproved)
		fb := w.approve(t, sagaID, b, EventOrderRejected)
		w.approve(t, sagaID, a, EventOrderApproved) // a new command id: the decision repeated
		for _, tt := range []struct {
			deal, want string
		}{{a.DealID, fa.ID}, {b.DealID, fb.ID}} {
			var got string
			if err := db.Get(&got, db.Rebind(`SELECT command_id FROM order_decisions WHERE deal_id = ?`), tt.deal); err != nil || got != tt.want {
				t.Errorf("command_id of deal %s: got %q (err %v), want %s", tt.deal, got, err, tt.want)
			}
		}
	})
}

// TestRevertOtherDeal is the attack of a REVERT_ORDER whose payload names
// another deal than the order it compensates (a BASKET_ORDER saga with
// line A approved and line B rejected, whose compensation of A carries
// B's deal_context, e.g. falling back to the saga context): reverting B
// would move nothing and answer ORDER_REVERTED, and the saga would take
// A's cash as given back. It is parked with a reason naming both, on
// every delivery and replay, and nothing moves (cash, positions,
// decisions and reversals read back from the tables); the genuine
// compensations still revert A and B, after which the parked one stays
// parked. On SQLite and PostgreSQL.
func TestRevertOtherDeal(t *testing.T) {
	tests := []struct {
		name string
		// which APPROVE_ORDER the forged command compensates ("A" or
		// "B") and which deal its payload names ("A", "B", or "C": a
		// deal of the saga never decided)
		compensates, names string
		oldB               bool // B's decision has no command_id (taken before migration 00004)
		// the reason wanted, with {fA}, {fB} for the commands' ids and
		// {A}, {B}, {C} for the deals' ids
		want string
	}{
		{name: "A's compensation names rejected B", compensates: "A", names: "B",
			want: "REVERT_ORDER compensates command {fA}, but deal {B} was decided by command {fB}: the payload names another deal than the order it undoes"},
		{name: "B's compensation names approved A", compensates: "B", names: "A",
			want: "REVERT_ORDER compensates command {fB}, but deal {A} was decided by command {fA}: the payload names another deal than the order it undoes"},
		{name: "A's compensation names undecided C", compensates: "A", names: "C",
			want: "REVERT_ORDER compensates command {fA}, which decided deal {A}, not deal {C}: the payload names another deal than the order it undoes"},
		{name: "A's compensation names B decided before command ids", compensates: "A", names: "B", oldB: true,
			want: "REVERT_ORDER compensates command {fA}, which decided deal {A}, not deal {B}: the payload names another deal than the order it undoes"},
	}
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newRevertWorld(t, db, "2000")
				sagaID := uuid.NewString()
				deals := map[string]dealctx.DealContext{
					"A": line("alice", w.pf.ID, "buy", "10", "AAPL", "150"),  // approved: -1500
					"B": line("alice", w.pf.ID, "buy", "100", "TSLA", "100"), // rejected: 10000 > 500
					"C": line("alice", w.pf.ID, "buy", "1", "NVDA", "10"),    // never sent
				}
				forward := map[string]engine.Message{
					"A": w.approve(t, sagaID, deals["A"], EventOrderApproved),
					"B": w.approve(t, sagaID, deals["B"], EventOrderRejected),
				}
				if tt.oldB {
					if _, err := db.Exec(db.Rebind(`UPDATE order_decisions SET command_id = NULL WHERE deal_id = ?`), deals["B"].DealID); err != nil {
						t.Fatal(err)
					}
				}
				want := strings.NewReplacer("{fA}", forward["A"].ID, "{fB}", forward["B"].ID,
					"{A}", deals["A"].DealID, "{B}", deals["B"].DealID, "{C}", deals["C"].DealID).Replace(tt.want)
				const holdings = `500 {"AAPL":"10"}`
				decisions := decisionsOf(t, db, w.pf.ID)
				unchanged := func(when string) {
					t.Helper()
					if got := dbHoldings(t, db, w.pf.ID); got != holdings {
						t.Errorf("%s: portfolio %s, want untouched %s", when, got, holdings)
					}
					if got := decisionsOf(t, db, w.pf.ID); got != decisions {
						t.Errorf("%s: decisions\n%s\nwant unchanged\n%s", when, got, decisions)
					}
					if got := reversalsOf(t, db, w.pf.ID); got != "" {
						t.Errorf("%s: reversals %q, want none", when, got)
					}
				}

				forged := compensationOf(t, w.p, forward[tt.compensates], deals[tt.names])
				out := servicetest.DispatchMessage(t, w.p, forged)
				if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, want) {
					t.Fatalf("REVERT_ORDER of %s naming %s: got reply %+v dead letter %+v, want a dead letter containing %q",
						tt.compensates, tt.names, out.Reply, out.DeadLetter, want)
				}
				unchanged("after the forged REVERT_ORDER")
				// saga-machine re-sends it (same id): parked again, the same row.
				again := servicetest.DispatchMessage(t, w.p, forged)
				if again.DeadLetter == nil || again.DeadLetter.ID != out.DeadLetter.ID || again.Reply != nil {
					t.Errorf("re-send: got reply %+v dead letter %+v, want the same dead letter %s", again.Reply, again.DeadLetter, out.DeadLetter.ID)
				}
				unchanged("after its re-send")
				// An operator replays it: refused again, nothing moves.
				if rep, err := w.p.Replay(context.Background(), out.DeadLetter.ID); err == nil || !strings.Contains(err.Error(), want) || rep.Reply != nil {
					t.Errorf("replay: got reply %+v err %v, want the same refusal", rep.Reply, err)
				}
				unchanged("after its replay")

				// The genuine compensations, each with its own deal.
				if rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, compensationOf(t, w.p, forward["A"], deals["A"]))); !rev.Reverted || rev.DealID != deals["A"].DealID {
					t.Errorf("A's genuine REVERT_ORDER: got %+v, want A reverted", rev)
				}
				if rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, compensationOf(t, w.p, forward["B"], deals["B"]))); rev.Reverted || rev.DealID != deals["B"].DealID {
					t.Errorf("B's genuine REVERT_ORDER: got %+v, want B with nothing to undo", rev)
				}
				const after = `2000 {}`
				wantReversals := fmt.Sprintf("%s %s\n%s %s", deals["A"].DealID, outcomeReverted, deals["B"].DealID, outcomeNothing)
				if deals["B"].DealID < deals["A"].DealID {
					wantReversals = fmt.Sprintf("%s %s\n%s %s", deals["B"].DealID, outcomeNothing, deals["A"].DealID, outcomeReverted)
				}
				if got := dbHoldings(t, db, w.pf.ID); got != after {
					t.Errorf("after the genuine reverts: portfolio %s, want %s", got, after)
				}
				// The forged one once more: still parked, whatever is
				// recorded for the deal it names, and nothing moves.
				late := servicetest.DispatchMessage(t, w.p, forged)
				if late.DeadLetter == nil || late.Reply != nil || !strings.Contains(late.DeadLetter.Reason, want) {
					t.Errorf("re-send after the genuine reverts: got reply %+v dead letter %+v, want parked", late.Reply, late.DeadLetter)
				}
				if got := dbHoldings(t, db, w.pf.ID); got != after {
					t.Errorf("after the last re-send: portfolio %s, want %s", got, after)
				}
				if got := reversalsOf(t, db, w.pf.ID); got != wantReversals {
					t.Errorf("reversals:\n%s\nwant\n%s", got, wantReversals)
				}
				if got := decisionsOf(t, db, w.pf.ID); got != decisions {
					t.Errorf("decisions\n%s\nwant unchanged\n%s", got, decisions)
				}
			})
		}
	})
}

// TestRevertBeforeApproveBesideDecidedLine is the barrier case with the
// command check in the way: in a saga where line B is decided, the
// compensation of line A overtakes A's APPROVE_ORDER. It answers
// ORDER_REVERTED (nothing to undo: A's command decided nothing) and the
// late APPROVE_ORDER of A is refused by the SDK's barrier (COMMAND_EXPIRED),
// on delivery and redelivery, and moves nothing. On SQLite and PostgreSQL.
func TestRevertBeforeApproveBesideDecidedLine(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		sagaID := uuid.NewString()
		a := line("alice", w.pf.ID, "buy", "10", "AAPL", "150")
		b := line("alice", w.pf.ID, "buy", "2", "TSLA", "100")
		w.approve(t, sagaID, b, EventOrderApproved)
		fa := basketCommand(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(a))
		rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, compensationOf(t, w.p, fa, a)))
		if rev.Reverted || rev.DealID != a.DealID || !strings.Contains(rev.Reason, "was not decided") {
			t.Errorf("REVERT_ORDER before its APPROVE_ORDER: got %+v, want deal %s not decided", rev, a.DealID)
		}
		for i := range 2 { // the delivery and a redelivery
			out := servicetest.DispatchMessage(t, w.p, fa)
			if !out.Expired || out.Reply == nil || out.Reply.Name != engine.EventCommandExpired {
				t.Errorf("APPROVE_ORDER %d after its compensation: got %+v (expired %v), want COMMAND_EXPIRED", i, out.Reply, out.Expired)
			}
		}
		if got, want := dbHoldings(t, db, w.pf.ID), `1800 {"TSLA":"2"}`; got != want {
			t.Errorf("portfolio: got %s, want %s (line B only)", got, want)
		}
		var n int
		if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM order_decisions WHERE deal_id = ?`), a.DealID); err != nil || n != 0 {
			t.Errorf("decisions on deal A: got %d (err %v), want none", n, err)
		}
	})
}

// TestRevertDecisionWithoutCommand: a decision taken before decisions kept
// their command (migration 00004, command_id NULL) is reverted as before,
// on the payload's word: by the compensation of its APPROVE_ORDER, and by
// one whose compensates id profile cannot check against it. On SQLite and
// PostgreSQL.
func TestRevertDecisionWithoutCommand(t *testing.T) {
	for _, ofForward := range []bool{true, false} {
		t.Run(fmt.Sprintf("compensates the forward command=%v", ofForward), func(t *testing.T) {
			servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
				w := newRevertWorld(t, db, "2000")
				dc := deal("alice", w.pf.ID, "buy", "4", "125")
				forward := w.approve(t, uuid.NewString(), dc, EventOrderApproved)
				if _, err := db.Exec(db.Rebind(`UPDATE order_decisions SET command_id = NULL WHERE deal_id = ?`), dc.DealID); err != nil {
					t.Fatal(err)
				}
				comp := servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(dc))
				if !ofForward {
					comp.Compensates = uuid.NewString()
				}
				rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, comp))
				if !rev.Reverted || rev.Reason != "the buy was undone: 500.00 USD returned to the cash, 4 AAPL taken back" {
					t.Errorf("order_reversal: got %+v, want the buy undone", rev)
				}
				if got := w.holdings(t); got != `2000 {}` {
					t.Errorf("portfolio: got %s, want 2000 {}", got)
				}
			})
		})
	}
}
