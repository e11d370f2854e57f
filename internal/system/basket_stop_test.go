package system_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

// An operator's abort of a basket (BASKET_ORDER version 4) on the whole
// system, read back from every service's database. profile is down when
// the operator aborts, and answers everything it was sent once it is back:
//   - while checking: no line was ever sent, no cash moves; profile's late
//     check (CHECK_BASKET has effects: none) is a late entry of the
//     timeline, nothing is parked;
//   - while trading: both lines were sent; profile applies them after the
//     abort and saga-machine reverts each (late answers to a compensable
//     command), so alice's cash and positions end as funded.
//
// In both, the refused aborts (alice herself, a saga-viewer) move nothing,
// the basket and its deals end failed with the abort's reason, and alice
// is told once, after the undo.
func TestBasketAbort(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Run("while checking", func(t *testing.T) { basketStop(t, be, false, operatorAbort) })
			t.Run("while trading", func(t *testing.T) { basketStop(t, be, true, operatorAbort) })
		})
	}
}

// TestBasketCancel is TestBasketAbort with the client's cancellation
// (POST /baskets/{id}/cancel, BASKET_ORDER version 4) instead of the
// operator's abort: the refused cancellations (bob, an operator, who owns
// no basket) move nothing; alice's is accepted; the saga ends CANCELLED
// with what profile applied reverted, the deals cancelled at her request,
// and she is told once. Cancelling again answers the same and sends
// nothing more.
func TestBasketCancel(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Run("while checking", func(t *testing.T) { basketStop(t, be, false, clientCancel) })
			t.Run("while trading", func(t *testing.T) { basketStop(t, be, true, clientCancel) })
		})
	}
}

// basketStopper is how a running basket is stopped: its refused attempts,
// the accepted one, and how the basket, its deals and its notification
// end.
type basketStopper struct {
	name string
	// refused are the attempts that must move nothing (each names the
	// token and the HTTP status it must get), accepted the one that stops
	// the basket; both post to url.
	refused  []stopAttempt
	accepted stopAttempt
	url      func(w *basketWorld, b deals.Basket) string
	body     string
	// state is the saga's end state; status, reason and text those of the
	// basket's deals and notification.
	state, status, reason, text string
}

type stopAttempt struct {
	who    string
	user   string
	roles  []string
	status int
}

var operatorAbort = basketStopper{
	name: "abort",
	refused: []stopAttempt{{who: "the client herself", user: "alice", status: http.StatusForbidden},
		{who: "a saga-viewer", user: "victor", roles: []string{auth.RoleViewer}, status: http.StatusForbidden}},
	accepted: stopAttempt{who: "olga, an operator", user: "olga", roles: []string{auth.RoleOperator}, status: http.StatusOK},
	url: func(w *basketWorld, b deals.Basket) string {
		return w.sys.URLs.SagaMachine + "/api/v1/sagas/" + b.SagaID + "/abort"
	},
	body:  `{"reason":"client called the desk"}`,
	state: "FAILED", status: deals.StatusFailed, reason: "stopped by our staff", text: "stopped by our staff",
}

var clientCancel = basketStopper{
	name: "cancel",
	refused: []stopAttempt{{who: "bob, another client", user: "bob", status: http.StatusNotFound},
		{who: "olga, an operator (no owner)", user: "olga", roles: []string{auth.RoleOperator}, status: http.StatusNotFound}},
	accepted: stopAttempt{who: "alice, the owner", user: "alice", status: http.StatusAccepted},
	url: func(w *basketWorld, b deals.Basket) string {
		return w.sys.URLs.Deals + "/baskets/" + b.ID + "/cancel"
	},
	state: "CANCELLED", status: deals.StatusCancelled, reason: "cancelled at your request", text: "cancelled at your request",
}

func basketStop(t *testing.T, be backend, trading bool, stop basketStopper) {
	cfg := be.config(t)
	cfg.Paused = []string{system.Profile}
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	w := newBasketWorld(ctx, t, cfg, "1000.00")
	funded := w.portfolio(ctx, t)
	b := w.basket(ctx, t, line("buy", "ACME", "2", "100.00"), line("buy", "BETA", "3", "50.00"))
	w.waitSent(ctx, t, w.sys.Topics.Profile, b.SagaID, "CHECK_BASKET")
	wantState := "CHECKING"
	if trading {
		// profile's check, as profile would send it (it reads and moves
		// nothing); profile itself answers CHECK_BASKET only when resumed.
		w.forgeCheck(ctx, t, b.SagaID)
		wantState = "TRADING"
		w.waitSent(ctx, t, w.sys.Topics.Profile, b.SagaID, "APPROVE_ORDER")
	}
	waitFor(ctx, t, "the basket's saga waits in "+wantState, func() (bool, error) {
		inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, b.SagaID)
		return err == nil && inst.State == wantState, err
	})

	url := stop.url(w, b)
	attempt := func(a stopAttempt) {
		tok, err := w.sys.Token(a.user, a.roles...)
		if err != nil {
			t.Fatal(err)
		}
		if st, body := post(ctx, t, url, tok, stop.body); st != a.status {
			t.Errorf("%s: %s %d %s, want %d", stop.name, a.who, st, body, a.status)
		}
	}
	before := w.observe(ctx, t, b)
	for _, a := range stop.refused {
		attempt(a)
	}
	if after := w.observe(ctx, t, b); after != before {
		t.Fatalf("the refused %ss moved something:\n got %s\nwant %s", stop.name, after, before)
	}
	attempt(stop.accepted)
	if err := w.sys.Resume(system.Profile); err != nil {
		t.Fatal(err)
	}

	inst, got := w.settle(ctx, t, b)
	if inst.SagaVersion != 4 || inst.State != stop.state || inst.Status != engine.StatusFailed {
		t.Fatalf("basket saga: v%d %s %s (undo %+v), want v4 %s failed", inst.SagaVersion, inst.State, inst.Status, inst.Undo, stop.state)
	}
	notes := w.basketNotes(ctx, t, 1)
	quiesce(ctx, t, w.sys, cfg.GroupPrefix)
	// The invariant, from profile's database: every line profile applied
	// after the abort or cancel was reverted.
	pf := w.portfolio(ctx, t)
	if !pf.Cash.Equal(funded.Cash) {
		t.Errorf("alice's cash after the %s: %s, want %s (as funded)", stop.name, pf.Cash, funded.Cash)
	}
	for instrument, q := range pf.Positions {
		if !q.IsZero() {
			t.Errorf("alice holds %s %s after the %s, want nothing", q, instrument, stop.name)
		}
	}
	undone := map[string]int{}
	for _, e := range inst.Undo {
		undone[e.Command+"="+string(e.Status)]++
	}
	wantUndo := map[string]int{"FAIL_BASKET=compensated": 1}
	if trading {
		// Both lines answered approved after the stop: both reverted.
		wantUndo["REVERT_ORDER=compensated"] = 2
	}
	if mustJSON(t, undone) != mustJSON(t, wantUndo) {
		t.Errorf("undo %v, want %v", undone, wantUndo)
	}
	wantLines := 0
	if trading {
		wantLines = 2
	}
	if n := w.commandsNamed(ctx, t, b.SagaID, "APPROVE_ORDER"); n != wantLines {
		t.Errorf("%d APPROVE_ORDER in the timeline, want %d", n, wantLines)
	}
	// profile did apply the lines (after the stop): the timeline has
	// their approvals as late answers, so the reverts undid real debits.
	hist, err := w.sys.SagaMachine.Store.History(ctx, b.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	late, lateChecks := 0, 0
	for _, h := range hist {
		switch {
		case h.Kind == engine.EntryLate && h.Event == "ORDER_APPROVED":
			late++
		case h.Kind == engine.EntryLate && h.Event == "BASKET_CHECKED" && strings.Contains(h.Reason, "CHECK_BASKET has no effects (effects: none)"):
			lateChecks++
		}
	}
	if late != wantLines {
		t.Errorf("%d late ORDER_APPROVED in the timeline, want %d", late, wantLines)
	}
	// profile's own check came after the saga stopped waiting for it (in
	// the trading case the check saga-machine took was the forged one):
	// CHECK_BASKET has no effects (version 3 on), so the timeline records it
	// as late and nothing is parked.
	if lateChecks != 1 {
		t.Errorf("%d late BASKET_CHECKED of a command without effects in the timeline, want 1", lateChecks)
	}
	if got.Status != stop.status {
		t.Errorf("basket status %q, want %s", got.Status, stop.status)
	}
	for _, d := range got.Deals {
		if d.Status != stop.status || !strings.Contains(d.Reason, stop.reason) {
			t.Errorf("deal %s of the basket: %q %q, want %s, %s", d.ID, d.Status, d.Reason, stop.status, stop.reason)
		}
	}
	if n := notes[b.ID]; len(notes) != 1 || n.Status != stop.status || !strings.Contains(n.Text, stop.text) {
		t.Errorf("notifications %+v, want one for basket %s: %s, %s", notes, b.ID, stop.status, stop.text)
	}
	// Again once it is over: an abort is refused (the saga ended), a
	// cancel answers as the first time; either way nothing moves.
	settled := w.observe(ctx, t, b)
	again := stop.accepted
	if stop.name == "abort" {
		again.status = http.StatusConflict
	}
	attempt(again)
	quiesce(ctx, t, w.sys, cfg.GroupPrefix)
	if after := w.observe(ctx, t, b); after != settled {
		t.Errorf("a second %s moved something:\n got %s\nwant %s", stop.name, after, settled)
	}

	dls, err := w.sys.SagaMachine.Store.DeadLetters(ctx, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Errorf("saga-machine dead letters %+v, want none", dls)
	}
	noneParked(ctx, t, w.sys)
}

// forgeCheck writes profile's answer to the saga's CHECK_BASKET, that the
// portfolio can pay, on profile's event topic (the test's Kafka user may
// write it).
func (w *basketWorld) forgeCheck(ctx context.Context, t *testing.T, sagaID string) {
	t.Helper()
	hist, err := w.sys.SagaMachine.Store.History(ctx, sagaID)
	if err != nil {
		t.Fatal(err)
	}
	var check string
	for _, h := range hist {
		for _, c := range h.Commands {
			if c.Name == "CHECK_BASKET" {
				check = c.ID
			}
		}
	}
	if check == "" {
		t.Fatalf("saga %s: no CHECK_BASKET in its timeline", sagaID)
	}
	m := envelope.Message{
		V: envelope.Version, ID: uuid.NewString(), SagaID: sagaID, Saga: "BASKET_ORDER", SagaVersion: 4,
		Kind: envelope.KindEvent, Name: "BASKET_CHECKED", Participant: system.Profile, CausationID: check,
		OccurredAt: time.Now().UTC(),
		Payload:    json.RawMessage(`{"basket_check":{"sufficient":true,"reason":"cash 1000.00 USD covers 350.00 USD"}}`),
	}
	v, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kafka.NewProducer(w.sys.Kafka("basket-abort-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	rec := kafka.Record{
		Topic: engine.EventTopic(w.sys.Topics.Events, system.Profile), Key: sagaID, Value: v,
		Headers: map[string]string{envelope.HeaderKind: string(envelope.KindEvent), envelope.HeaderName: m.Name},
	}
	if err := prod.Publish(ctx, []kafka.Record{rec}); err != nil {
		t.Fatalf("publish profile's check: %v", err)
	}
}
