package system_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

// An operator's abort on the whole system (PostgreSQL + Kafka, SQLite +
// the embedded broker), read from every service's database: alice's buy
// waits in DRAFT (profile down); requests from alice herself, from a
// saga-viewer and from an operator naming a failed state the definition
// does not abort into are refused with nothing moved; olga, an operator,
// aborts it. MANUAL_CREATE_ORDER v4 takes its ABORT transition: profile's
// late approval is reverted, the deal failed with a reason that says it
// was stopped, alice's cash as funded, and alice is told once (the
// transition's NOTIFY, after the undo).
func TestOperatorAbortTellsTheClient(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be, system.Profile)
			waitFor(ctx, t, "the saga waits in DRAFT", func() (bool, error) {
				inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, w.deal.SagaID)
				return err == nil && inst.State == "DRAFT", nil
			})
			abortURL := w.sys.URLs.SagaMachine + "/api/v1/sagas/" + w.deal.SagaID + "/abort"
			viewer, err := w.sys.Token("victor", auth.RoleViewer)
			if err != nil {
				t.Fatal(err)
			}
			olga, err := w.sys.Token("olga", auth.RoleOperator)
			if err != nil {
				t.Fatal(err)
			}
			before := w.saga(ctx, t)
			for _, tc := range []struct {
				name, token, body string
				status            int
			}{
				{"the client herself", w.alice, `{"reason":"let me out"}`, http.StatusForbidden},
				{"a saga-viewer", viewer, `{"reason":"looks stuck"}`, http.StatusForbidden},
				{"a failed state the definition does not abort into", olga, `{"reason":"x","state":"CANCELLED"}`, http.StatusBadRequest},
			} {
				if st, body := post(ctx, t, abortURL, tc.token, tc.body); st != tc.status {
					t.Errorf("%s: %d %s, want %d", tc.name, st, body, tc.status)
				}
			}
			if after := w.saga(ctx, t); after.Rev != before.Rev || after.State != "DRAFT" {
				t.Fatalf("after the refused aborts: saga %s rev %d, want DRAFT rev %d", after.State, after.Rev, before.Rev)
			}
			w.abort(ctx, t, w.deal.SagaID, "client called the desk")
			if err := w.sys.Resume(system.Profile); err != nil {
				t.Fatal(err)
			}
			inst := w.finished(ctx, t)
			if inst.SagaVersion != 4 || inst.State != "FAILED" || inst.Status != engine.StatusFailed {
				t.Errorf("saga: v%d %s %s, want v4 FAILED failed", inst.SagaVersion, inst.State, inst.Status)
			}
			h, err := w.sys.SagaMachine.Store.History(ctx, w.deal.SagaID)
			if err != nil {
				t.Fatal(err)
			}
			aborts := 0
			for _, e := range h {
				if e.Kind == engine.EntryOperator && e.Event == "ABORT" {
					aborts++
					if e.Actor != "olga" || e.Reason != "client called the desk" || e.ToState != "FAILED" {
						t.Errorf("abort entry %+v, want olga's, into FAILED, with her reason", e)
					}
				}
			}
			if aborts != 1 {
				t.Errorf("%d aborts in the timeline, want 1", aborts)
			}
			if status, _ := w.row(ctx, t); status != deals.StatusFailed {
				t.Errorf("deal: %s, want failed", status)
			}
			if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("1000")) {
				t.Errorf("alice's cash: %s, want 1000 (as funded)", cash)
			}
			// The abort joined the saga's context: deals words the reason
			// as a stop, not as a service that did not answer in time.
			const want = "Your buy of 2 ACME at 100.00 USD failed: the order was stopped by our staff before it was confirmed against your portfolio. " +
				"The 200.00 USD taken from your cash were returned"
			if notes := w.notifications(ctx, t); len(notes) != 1 || notes[0].Status != "failed" || notes[0].Text != want {
				t.Errorf("notifications: %+v, want one failed: %q", notes, want)
			}
		})
	}
}
