package system_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// cancelWorld is a running system with alice's funded portfolio (1000.00
// USD) and one buy of 2 ACME at 100.00.
type cancelWorld struct {
	sys        *system.System
	cfg        system.Config
	alice, bob string // tokens
	portfolio  string
	deal       deals.Deal
	prod       *kafka.Producer // relays deals' outbox while deals is paused
}

// cancelDeal posts POST /deals/{id}/cancel as token and returns the status
// and the body.
func (w *cancelWorld) cancelDeal(ctx context.Context, t *testing.T, id, token string) (int, []byte) {
	t.Helper()
	return post(ctx, t, w.sys.URLs.Deals+"/deals/"+id+"/cancel", token, "", "Idempotency-Key", "cancel-"+id)
}

// relayDeals publishes deals' outbox by hand (its consumer, and so its
// relay, is paused).
func (w *cancelWorld) relayDeals(ctx context.Context, t *testing.T) {
	t.Helper()
	if w.prod == nil {
		p, err := kafka.NewProducer(w.sys.Kafka("test-relay"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		w.prod = p
	}
	if _, err := w.sys.Deals.Participant.Flush(ctx, func(ctx context.Context, recs []sdk.Record) error {
		out := make([]kafka.Record, len(recs))
		for i, r := range recs {
			out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
		}
		return w.prod.Publish(ctx, out)
	}); err != nil {
		t.Fatalf("relay deals' outbox: %v", err)
	}
}

// state reads the saga of the deal from saga-machine's database.
func (w *cancelWorld) saga(ctx context.Context, t *testing.T) engine.Instance {
	t.Helper()
	return w.sagaOf(ctx, t, w.deal.SagaID)
}

// cash reads alice's cash from profile's database.
func (w *cancelWorld) cash(ctx context.Context, t *testing.T) decimal.Decimal {
	t.Helper()
	var cash string
	pdb := w.sys.Profile.DB
	if err := pdb.GetContext(ctx, &cash, pdb.Rebind(`SELECT cash FROM portfolios WHERE id = ?`), w.portfolio); err != nil {
		t.Fatal(err)
	}
	return decimal.RequireFromString(cash)
}

// row reads the deal from deals' database.
func (w *cancelWorld) row(ctx context.Context, t *testing.T) (status string, cancelRequested bool) {
	t.Helper()
	var r struct {
		Status string
		Req    *string `db:"req"`
	}
	ddb := w.sys.Deals.DB
	if err := ddb.GetContext(ctx, &r, ddb.Rebind(`SELECT status, CAST(cancel_requested_at AS TEXT) AS req FROM deals WHERE id = ?`), w.deal.ID); err != nil {
		t.Fatal(err)
	}
	return r.Status, r.Req != nil
}

// events counts the saga's timeline entries of kind event named name.
func (w *cancelWorld) events(ctx context.Context, t *testing.T, name string) int {
	t.Helper()
	return w.entries(ctx, t, func(e engine.HistoryEntry) bool { return e.Event == name && e.Kind == engine.EntryEvent })
}

// entries counts the entries of the saga's timeline that keep takes.
func (w *cancelWorld) entries(ctx context.Context, t *testing.T, keep func(engine.HistoryEntry) bool) int {
	t.Helper()
	h, err := w.sys.SagaMachine.Store.History(ctx, w.deal.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range h {
		if keep(e) {
			n++
		}
	}
	return n
}

// notifications reads the deal's notifications from notification's database.
func (w *cancelWorld) notifications(ctx context.Context, t *testing.T) []struct{ Status, Text string } {
	t.Helper()
	var notes []struct{ Status, Text string }
	ndb := w.sys.Notification.DB
	if err := ndb.SelectContext(ctx, &notes, ndb.Rebind(`SELECT status, text FROM notifications WHERE deal_id = ?`), w.deal.ID); err != nil {
		t.Fatal(err)
	}
	return notes
}

// newCancelWorld starts a system with the services of paused paused,
// funds alice's portfolio and places her buy (relayed by hand when deals
// is paused).
func newCancelWorld(ctx context.Context, t *testing.T, be backend, paused ...string) *cancelWorld {
	t.Helper()
	cfg := be.config(t)
	cfg.Paused = paused
	w := &cancelWorld{sys: start(t, cfg), cfg: cfg}
	var err error
	if w.alice, err = w.sys.Token("alice"); err != nil {
		t.Fatal(err)
	}
	if w.bob, err = w.sys.Token("bob"); err != nil {
		t.Fatal(err)
	}
	c, err := w.sys.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx); err != nil {
		t.Fatalf("login: %v", err)
	}
	pf, err := c.CreatePortfolio(ctx, "Main", "USD")
	if err != nil {
		t.Fatal(err)
	}
	w.portfolio = pf.ID
	if _, _, err := w.sys.Fund(ctx, pf.ID, "1000.00", "USD", "funding", "fund-"+pf.ID); err != nil {
		t.Fatal(err)
	}
	if w.deal, _, err = c.CreateDeal(ctx, system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "2", Price: "100.00", Currency: "USD"}, ""); err != nil {
		t.Fatalf("POST /deals: %v", err)
	}
	return w
}

// settled waits until the saga and every service are at rest and checks
// that nobody parked anything.
func (w *cancelWorld) settled(ctx context.Context, t *testing.T) {
	t.Helper()
	quiesce(ctx, t, w.sys, w.cfg.GroupPrefix)
	dls, err := w.sys.SagaMachine.Store.DeadLetters(ctx, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Errorf("saga-machine dead letters: %+v, want none", dls)
	}
	noneParked(ctx, t, w.sys)
}

// noneParked checks that no participant service of sys parked a command.
func noneParked(ctx context.Context, t *testing.T, sys *system.System) {
	t.Helper()
	for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
		parked, err := svc.Participant.DeadLetters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != 0 {
			t.Errorf("%s dead letters: %+v, want none", svc.Name, parked)
		}
	}
}

// refusedAttacks: bob cancelling alice's deal and a cancel of a deal that
// does not exist are 404; the deal and the saga do not move.
func (w *cancelWorld) refusedAttacks(ctx context.Context, t *testing.T) {
	t.Helper()
	before := w.saga(ctx, t)
	for _, tc := range []struct{ name, id, token string }{
		{"bob cancels alice's deal", w.deal.ID, w.bob},
		{"unknown deal", uuid.NewString(), w.alice},
	} {
		if st, body := w.cancelDeal(ctx, t, tc.id, tc.token); st != http.StatusNotFound {
			t.Errorf("%s: %d %s, want 404", tc.name, st, body)
		}
	}
	if status, req := w.row(ctx, t); status != deals.StatusDraft || req {
		t.Errorf("after the refused cancels: deal %s (cancel requested %v), want an untouched draft", status, req)
	}
	if after := w.saga(ctx, t); after.Rev != before.Rev || after.State != before.State || w.events(ctx, t, deals.EventCancelRequested) != 0 {
		t.Errorf("after the refused cancels: saga %s rev %d, want %s rev %d and no CANCEL_REQUESTED", after.State, after.Rev, before.State, before.Rev)
	}
}

// acceptCancel cancels as alice twice: 202 both times, the second
// replayed.
func (w *cancelWorld) acceptCancel(ctx context.Context, t *testing.T) {
	t.Helper()
	st, body := w.cancelDeal(ctx, t, w.deal.ID, w.alice)
	var d deals.Deal
	if err := json.Unmarshal(body, &d); err != nil || st != http.StatusAccepted || d.CancelRequestedAt == nil {
		t.Fatalf("alice's cancel: %d %s, want 202 with cancel_requested_at", st, body)
	}
	if st, body := w.cancelDeal(ctx, t, w.deal.ID, w.alice); st != http.StatusAccepted {
		t.Errorf("alice's cancel again: %d %s, want 202", st, body)
	}
}

// finished waits until the deal's saga is final, its notification stored
// and every service at rest with nothing parked (settled), and returns
// the saga.
func (w *cancelWorld) finished(ctx context.Context, t *testing.T) engine.Instance {
	t.Helper()
	inst, err := w.sys.WaitFinal(ctx, w.deal.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the notification is stored", func() (bool, error) { return len(w.notifications(ctx, t)) > 0, nil })
	w.settled(ctx, t)
	return inst
}

// cancelledOnce checks the end of a cancelled deal: the saga CANCELLED
// (every compensation done) with one CANCEL_REQUESTED, the deal cancelled,
// alice's cash as funded and one cancellation notification.
func (w *cancelWorld) cancelledOnce(ctx context.Context, t *testing.T, wantText string) {
	t.Helper()
	inst := w.finished(ctx, t)
	if inst.SagaVersion != 4 || inst.State != "CANCELLED" || inst.Status != engine.StatusFailed {
		t.Errorf("saga: v%d %s %s, want v4 CANCELLED failed", inst.SagaVersion, inst.State, inst.Status)
	}
	if n := w.events(ctx, t, deals.EventCancelRequested); n != 1 {
		t.Errorf("CANCEL_REQUESTED in the timeline %d times, want once", n)
	}
	if status, req := w.row(ctx, t); status != deals.StatusCancelled || !req {
		t.Errorf("deal: %s (cancel requested %v), want cancelled", status, req)
	}
	if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("1000")) {
		t.Errorf("alice's cash: %s, want 1000 (as funded)", cash)
	}
	if notes := w.notifications(ctx, t); len(notes) != 1 || notes[0].Status != "cancelled" || notes[0].Text != wantText {
		t.Errorf("notifications: %+v, want one cancelled: %q", notes, wantText)
	}
}

// Cancellation of a deal on the whole system (PostgreSQL + Kafka, SQLite +
// the embedded broker), read from every service's database:
//   - in DRAFT (profile down): accepted, the saga ends CANCELLED, profile's
//     late approval is reverted, the deal cancelled, the cash as funded;
//   - once profile approved (deals' consumer down, so the saga waits in
//     APPROVED): accepted, the approval compensated, the cash restored;
//   - once executed: refused as too late (409), the deal stays executed and
//     the cash stays spent, the saga never sees it.
//
// Before each accepted cancel, bob cancelling alice's deal and a cancel of
// an unknown deal are refused (404) with nothing moved; alice's cancel is
// sent twice and reaches the saga once.
func TestCancelDeal(t *testing.T) {
	const buy = "Your buy of 2 ACME at 100.00 USD was cancelled at your request"
	for _, be := range backends {
		t.Run(be.name+"/draft", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be, system.Profile)
			waitFor(ctx, t, "the saga waits in DRAFT", func() (bool, error) {
				inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, w.deal.SagaID)
				return err == nil && inst.State == "DRAFT", nil
			})
			w.refusedAttacks(ctx, t)
			w.acceptCancel(ctx, t)
			waitFor(ctx, t, "the saga is cancelled", func() (bool, error) { return w.saga(ctx, t).State == "CANCELLED", nil })
			if err := w.sys.Resume(system.Profile); err != nil {
				t.Fatal(err)
			}
			w.cancelledOnce(ctx, t, buy+". The 200.00 USD taken from your cash were returned")
		})
		t.Run(be.name+"/approved", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be, system.Deals)
			w.approved(ctx, t)
			w.refusedAttacks(ctx, t)
			w.acceptCancel(ctx, t)
			w.relayDeals(ctx, t) // CANCEL_REQUESTED
			waitFor(ctx, t, "the saga is cancelled", func() (bool, error) { return w.saga(ctx, t).State == "CANCELLED", nil })
			if err := w.sys.Resume(system.Deals); err != nil {
				t.Fatal(err)
			}
			w.cancelledOnce(ctx, t, buy+". The 200.00 USD taken from your cash were returned")
		})
		t.Run(be.name+"/executed", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be)
			inst, err := w.sys.WaitFinal(ctx, w.deal.SagaID)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "the notification is stored", func() (bool, error) { return len(w.notifications(ctx, t)) > 0, nil })
			if inst.State != "NOTIFICATION" {
				t.Fatalf("saga: %s, want NOTIFICATION", inst.State)
			}
			st, body := w.cancelDeal(ctx, t, w.deal.ID, w.alice)
			if st != http.StatusConflict || !strings.Contains(string(body), "too late") {
				t.Errorf("cancel of the executed deal: %d %s, want 409 too late", st, body)
			}
			w.settled(ctx, t)
			if status, req := w.row(ctx, t); status != deals.StatusExecuted || req {
				t.Errorf("deal: %s (cancel requested %v), want executed", status, req)
			}
			if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("800")) {
				t.Errorf("alice's cash: %s, want 800 (the buy stands)", cash)
			}
			if after := w.saga(ctx, t); after.Rev != inst.Rev || w.events(ctx, t, deals.EventCancelRequested) != 0 {
				t.Errorf("saga after the refused cancel: rev %d (was %d), want untouched", after.Rev, inst.Rev)
			}
			if notes := w.notifications(ctx, t); len(notes) != 1 || notes[0].Status != "executed" {
				t.Errorf("notifications: %+v, want the execution only", notes)
			}
		})
	}
}

// A client's cancel that loses the race to an operator's abort, on the
// whole system (both backends): profile approved and deals' consumer is
// down, so the saga waits in APPROVED; olga aborts it (REVERT_ORDER runs,
// FAIL_DEAL waits for deals); alice's cancel is then still accepted (the
// deal is a draft: 202), and its CANCEL_REQUESTED reaches a saga already
// in FAILED. saga-machine records it as a late entry of the timeline, not a
// dead letter; once deals is back the deal ends failed with the abort's
// reason (cancel_requested_at kept), the cash as funded, one notification,
// nothing parked anywhere.
func TestCancelAfterAbort(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be, system.Deals)
			w.approved(ctx, t)
			w.abort(ctx, t, w.deal.SagaID, "the client called the desk")
			waitFor(ctx, t, "the saga is aborted", func() (bool, error) { return w.saga(ctx, t).State == "FAILED", nil })
			w.acceptCancel(ctx, t) // the deal is still a draft: deals accepts
			w.relayDeals(ctx, t)   // CANCEL_REQUESTED, to a saga already in FAILED
			waitFor(ctx, t, "the late CANCEL_REQUESTED is in the timeline", func() (bool, error) {
				return w.lateStops(ctx, t) == 1, nil
			})
			if err := w.sys.Resume(system.Deals); err != nil {
				t.Fatal(err)
			}
			inst := w.finished(ctx, t) // nothing parked anywhere
			if inst.State != "FAILED" || inst.Status != engine.StatusFailed {
				t.Errorf("saga: %s %s, want FAILED failed", inst.State, inst.Status)
			}
			if n := w.events(ctx, t, deals.EventCancelRequested); n != 0 || w.lateStops(ctx, t) != 1 {
				t.Errorf("CANCEL_REQUESTED taken %d times, late %d times; want never taken, late once", n, w.lateStops(ctx, t))
			}
			if status, req := w.row(ctx, t); status != deals.StatusFailed || !req {
				t.Errorf("deal: %s (cancel requested %v), want failed with the cancel recorded", status, req)
			}
			if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("1000")) {
				t.Errorf("alice's cash: %s, want 1000 (the approval reverted)", cash)
			}
			if notes := w.notifications(ctx, t); len(notes) != 1 || notes[0].Status != "failed" || !strings.Contains(notes[0].Text, "stopped by our staff") {
				t.Errorf("notifications: %+v, want one: failed, stopped by our staff", notes)
			}
		})
	}
}

// approved relays REGISTER by hand (deals' consumer is down) and waits
// until profile approved: the saga waits in APPROVED, alice's cash is 800.
func (w *cancelWorld) approved(ctx context.Context, t *testing.T) {
	t.Helper()
	w.relayDeals(ctx, t) // REGISTER
	waitFor(ctx, t, "profile approves (the saga waits in APPROVED)", func() (bool, error) {
		inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, w.deal.SagaID)
		return err == nil && inst.State == "APPROVED", nil
	})
	if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("800")) {
		t.Fatalf("cash after the approval: %s, want 800", cash)
	}
}

// lateStops counts the saga's late CANCEL_REQUESTED entries.
func (w *cancelWorld) lateStops(ctx context.Context, t *testing.T) int {
	t.Helper()
	return w.entries(ctx, t, func(e engine.HistoryEntry) bool {
		return e.Kind == engine.EntryLate && e.Event == deals.EventCancelRequested && strings.Contains(e.Reason, "asks to stop the saga")
	})
}

// abort has olga, an operator, abort saga sagaID through saga-machine's
// API (POST /api/v1/sagas/{id}/abort) with reason, and wants 200.
func (w *cancelWorld) abort(ctx context.Context, t *testing.T, sagaID, reason string) {
	t.Helper()
	olga, err := w.sys.Token("olga", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]string{"reason": reason})
	if err != nil {
		t.Fatal(err)
	}
	if st, out := post(ctx, t, w.sys.URLs.SagaMachine+"/api/v1/sagas/"+sagaID+"/abort", olga, string(body)); st != http.StatusOK {
		t.Fatalf("olga's abort of saga %s: %d %s, want 200", sagaID, st, out)
	}
}
