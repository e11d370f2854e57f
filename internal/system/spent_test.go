package system_test

import (
	"context"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

// An aborted sell whose proceeds the client has spent meanwhile (what the
// chaos run met once aborts raced users who keep trading), on the whole
// system, read from every database. deals is down, so the sagas wait for
// it after profile's decisions: alice buys 2 ACME (cash 1000 → 800), sells
// them at 150 (→ 1100) and buys 10 BETA at 110 with the proceeds (→ 0).
// olga aborts the sell, and deals comes back. The sell's reversal would
// take cash below zero, so profile refuses it and parks it for an
// operator, moving nothing; the saga keeps re-sending it (still
// compensating, never failed with the effect kept). A funding operator
// deposits 300; the next re-send takes the proceeds back and returns the
// instruments. The buys execute, the sell fails with its notification, and
// cash and positions equal deposits − executed buys + executed sells.
func TestAbortedSellWithSpentProceeds(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be, system.Deals) // alice: 1000.00 USD, a buy of 2 ACME at 100.00
			alice, err := w.sys.Client("alice")
			if err != nil {
				t.Fatal(err)
			}
			approved := func(sagaID string) {
				t.Helper()
				w.relayDeals(ctx, t)
				waitFor(ctx, t, "profile approved saga "+sagaID, func() (bool, error) {
					inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, sagaID)
					return err == nil && inst.State == "APPROVED", nil
				})
			}
			approved(w.deal.SagaID)
			sell, _, err := alice.CreateDeal(ctx, system.DealRequest{PortfolioID: w.portfolio, Side: "sell", Instrument: "ACME", Quantity: "2", Price: "150.00", Currency: "USD"}, "")
			if err != nil {
				t.Fatal(err)
			}
			approved(sell.SagaID)
			spend, _, err := alice.CreateDeal(ctx, system.DealRequest{PortfolioID: w.portfolio, Side: "buy", Instrument: "BETA", Quantity: "10", Price: "110.00", Currency: "USD"}, "")
			if err != nil {
				t.Fatal(err)
			}
			approved(spend.SagaID)
			if cash := w.cash(ctx, t); !cash.IsZero() {
				t.Fatalf("alice's cash after the three approvals: %s, want 0", cash)
			}

			w.abort(ctx, t, sell.SagaID, "client disputes the sell")
			// deals back: the compensations run in reverse order, the
			// sell's execution's (FAIL_DEAL) before its order's.
			if err := w.sys.Resume(system.Deals); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "profile parks the reversal it cannot make", func() (bool, error) {
				parked, err := w.sys.Profile.Participant.DeadLetters(ctx)
				if err != nil {
					return false, err
				}
				for _, d := range parked {
					if d.Command == "REVERT_ORDER" && d.SagaID == sell.SagaID && strings.Contains(d.Reason, "cannot be reverted automatically") {
						return true, nil
					}
				}
				return false, nil
			})
			// Nothing moved: no negative cash, no short position; the saga
			// still owes the reversal.
			if cash := w.cash(ctx, t); !cash.IsZero() {
				t.Errorf("alice's cash after the refused reversal: %s, want 0 (nothing moved)", cash)
			}
			if inst := w.sagaOf(ctx, t, sell.SagaID); inst.Status != engine.StatusCompensating {
				t.Errorf("the sell's saga: %s in %s, want compensating (the reversal is owed)", inst.Status, inst.State)
			}

			if _, _, err := w.sys.Fund(ctx, w.portfolio, "300.00", "USD", "settles the disputed sell", "settle-"+sell.ID); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "the next re-send reverts the sell", func() (bool, error) {
				for _, e := range w.sagaOf(ctx, t, sell.SagaID).Undo {
					if e.Command == "REVERT_ORDER" && e.Status == engine.UndoCompensated {
						return true, nil
					}
				}
				return false, nil
			})
			for _, id := range []string{w.deal.SagaID, sell.SagaID, spend.SagaID} {
				if _, err := w.sys.WaitFinal(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(ctx, t, "three notifications", func() (bool, error) {
				var n int
				ndb := w.sys.Notification.DB
				err := ndb.GetContext(ctx, &n, ndb.Rebind(`SELECT count(*) FROM notifications WHERE user_id = ?`), "alice")
				return n >= 3, err
			})
			quiesce(ctx, t, w.sys, w.cfg.GroupPrefix)

			// From the databases: deals' outcomes, then profile's money.
			for _, c := range []struct {
				name, id, want string
			}{{"the first buy", w.deal.ID, deals.StatusExecuted}, {"the sell", sell.ID, deals.StatusFailed}, {"the second buy", spend.ID, deals.StatusExecuted}} {
				var status string
				ddb := w.sys.Deals.DB
				if err := ddb.GetContext(ctx, &status, ddb.Rebind(`SELECT status FROM deals WHERE id = ?`), c.id); err != nil {
					t.Fatal(err)
				}
				if status != c.want {
					t.Errorf("%s: %s, want %s", c.name, status, c.want)
				}
			}
			// 1000 + 300 deposited − 200 − 1100 bought = 0; 2 ACME, 10 BETA.
			if cash := w.cash(ctx, t); !cash.IsZero() {
				t.Errorf("alice's cash: %s, want 0 = 1300 deposited − 1300 of executed buys", cash)
			}
			held := map[string]decimal.Decimal{}
			var rows []struct {
				Instrument string
				Quantity   string
			}
			pdb := w.sys.Profile.DB
			if err := pdb.SelectContext(ctx, &rows, pdb.Rebind(`SELECT instrument, CAST(quantity AS TEXT) AS quantity FROM positions WHERE portfolio_id = ?`), w.portfolio); err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				held[r.Instrument] = decimal.RequireFromString(r.Quantity)
			}
			if !held["ACME"].Equal(decimal.NewFromInt(2)) || !held["BETA"].Equal(decimal.NewFromInt(10)) {
				t.Errorf("alice holds %v, want 2 ACME and 10 BETA", held)
			}
			var notes []struct{ DealID, Status string }
			ndb := w.sys.Notification.DB
			if err := ndb.SelectContext(ctx, &notes, ndb.Rebind(`SELECT deal_id AS dealid, status FROM notifications WHERE user_id = ?`), "alice"); err != nil {
				t.Fatal(err)
			}
			byDeal := map[string][]string{}
			for _, n := range notes {
				byDeal[n.DealID] = append(byDeal[n.DealID], n.Status)
			}
			if len(notes) != 3 || len(byDeal[sell.ID]) != 1 || byDeal[sell.ID][0] != "failed" {
				t.Errorf("notifications %v, want one per deal, the sell's failed", byDeal)
			}
			// saga-machine parked nothing; profile's parked attempts are the
			// operator's record of the refused reversal, nothing else.
			dls, err := w.sys.SagaMachine.Store.DeadLetters(ctx, 100, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(dls) != 0 {
				t.Errorf("saga-machine dead letters: %+v, want none", dls)
			}
			parked, err := w.sys.Profile.Participant.DeadLetters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range parked {
				if d.Command != "REVERT_ORDER" || d.SagaID != sell.SagaID {
					t.Errorf("profile parked %s of saga %s (%s), want only the sell's refused reversal", d.Command, d.SagaID, d.Reason)
				}
			}
		})
	}
}

// sagaOf reads saga id from saga-machine's database.
func (w *cancelWorld) sagaOf(ctx context.Context, t *testing.T, id string) engine.Instance {
	t.Helper()
	inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return inst
}
