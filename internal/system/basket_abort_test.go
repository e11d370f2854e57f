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

// An operator's abort of a basket (BASKET_ORDER version 3) on the whole
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
			t.Run("while checking", func(t *testing.T) { basketAbort(t, be, false) })
			t.Run("while trading", func(t *testing.T) { basketAbort(t, be, true) })
		})
	}
}

func basketAbort(t *testing.T, be backend, trading bool) {
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

	abortURL := w.sys.URLs.SagaMachine + "/api/v1/sagas/" + b.SagaID + "/abort"
	alice, err := w.sys.Token("alice")
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := w.sys.Token("victor", auth.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	olga, err := w.sys.Token("olga", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	before := w.observe(ctx, t, b)
	for _, tc := range []struct{ name, token string }{{"the client herself", alice}, {"a saga-viewer", viewer}} {
		if st, body := post(ctx, t, abortURL, tc.token, `{"reason":"stop it"}`); st != http.StatusForbidden {
			t.Errorf("%s aborts: %d %s, want 403", tc.name, st, body)
		}
	}
	if after := w.observe(ctx, t, b); after != before {
		t.Fatalf("the refused aborts moved something:\n got %s\nwant %s", after, before)
	}
	if st, body := post(ctx, t, abortURL, olga, `{"reason":"client called the desk"}`); st != http.StatusOK {
		t.Fatalf("olga's abort: %d %s, want 200", st, body)
	}
	if err := w.sys.Resume(system.Profile); err != nil {
		t.Fatal(err)
	}

	inst, got := w.settle(ctx, t, b)
	if inst.SagaVersion != 3 || inst.State != "FAILED" || inst.Status != engine.StatusFailed {
		t.Fatalf("basket saga: v%d %s %s (undo %+v), want v3 FAILED failed", inst.SagaVersion, inst.State, inst.Status, inst.Undo)
	}
	notes := w.basketNotes(ctx, t, 1)
	quiesce(ctx, t, w.sys, cfg.GroupPrefix)
	// The invariant, from profile's database: every line profile applied
	// after the abort was reverted.
	pf := w.portfolio(ctx, t)
	if !pf.Cash.Equal(funded.Cash) {
		t.Errorf("alice's cash after the abort: %s, want %s (as funded)", pf.Cash, funded.Cash)
	}
	for instrument, q := range pf.Positions {
		if !q.IsZero() {
			t.Errorf("alice holds %s %s after the abort, want nothing", q, instrument)
		}
	}
	undone := map[string]int{}
	for _, e := range inst.Undo {
		undone[e.Command+"="+string(e.Status)]++
	}
	wantUndo := map[string]int{"FAIL_BASKET=compensated": 1}
	if trading {
		// Both lines answered approved after the abort: both reverted.
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
	// profile did apply the lines (after the abort): the timeline has
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
	// CHECK_BASKET has no effects (version 3), so the timeline records it
	// as late and nothing is parked.
	if lateChecks != 1 {
		t.Errorf("%d late BASKET_CHECKED of a command without effects in the timeline, want 1", lateChecks)
	}
	if got.Status != deals.StatusFailed {
		t.Errorf("basket status %q, want failed", got.Status)
	}
	for _, d := range got.Deals {
		if d.Status != deals.StatusFailed || !strings.Contains(d.Reason, "stopped by our staff") {
			t.Errorf("deal %s of the basket: %q %q, want failed, stopped by our staff", d.ID, d.Status, d.Reason)
		}
	}
	if n := notes[b.ID]; len(notes) != 1 || n.Status != deals.StatusFailed || !strings.Contains(n.Text, "stopped by our staff") {
		t.Errorf("notifications %+v, want one for basket %s: failed, stopped by our staff", notes, b.ID)
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
		V: envelope.Version, ID: uuid.NewString(), SagaID: sagaID, Saga: "BASKET_ORDER", SagaVersion: 3,
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
