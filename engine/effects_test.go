package engine_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// lookup checks a limit (effects: none: the bank commits nothing for it)
// before it charges (an effect, without a compensation).
const lookup = `
saga: LOOKUP
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - on: ORDER
    by: shop
    from: []
    to: CHECKING
    send: { to: bank, command: CHECK_LIMIT, effects: none }
  - on: LIMIT_OK
    by: bank
    from: [CHECKING]
    to: CHARGING
    send: { to: bank, command: CHARGE }
  - { on: CHARGED, by: bank, from: [CHARGING], to: PAID }
  - { on: CANCEL, by: shop, from: [CHECKING, CHARGING], to: GAVE_UP }
final: [PAID]
failed: [GAVE_UP]
`

// An answer that comes after the saga stopped waiting for it is recorded
// as late, not parked, when it answers a command the definition declares
// without effects (effects: none); an answer to a command with effects,
// to a command the saga never sent, or from another participant than the
// one it was sent to is a dead letter as before.
func TestLateAnswerToCommandWithoutEffects(t *testing.T) {
	h := newHarness(t, lookup)
	checked, charged := uuid.NewString(), uuid.NewString()
	h.handle(t, ev("LOOKUP", checked, "ORDER", "shop", ""))
	check := h.last(t, "CHECK_LIMIT")
	h.handle(t, ev("LOOKUP", checked, "CANCEL", "shop", ""))
	h.handle(t, ev("LOOKUP", charged, "ORDER", "shop", ""), ev("LOOKUP", charged, "LIMIT_OK", "bank", h.last(t, "CHECK_LIMIT").ID))
	charge := h.last(t, "CHARGE")
	h.handle(t, ev("LOOKUP", charged, "CANCEL", "shop", ""))
	for _, id := range []string{checked, charged} {
		if got := h.inst(t, id); got.State != "GAVE_UP" || got.Status != engine.StatusFailed {
			t.Fatalf("saga %s: %s %s, want GAVE_UP failed", id, got.State, got.Status)
		}
	}

	h.handle(t, ev("LOOKUP", checked, "LIMIT_OK", "bank", check.ID))
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Fatalf("the late answer to CHECK_LIMIT was parked: %+v", dls)
	}
	hist := h.history(t, checked)
	last := hist[len(hist)-1]
	if last.Kind != engine.EntryLate || last.Event != "LIMIT_OK" || len(last.Commands) != 1 || last.Commands[0].ID != check.ID ||
		!strings.Contains(last.Reason, "CHECK_LIMIT has no effects (effects: none): nothing to undo") {
		t.Errorf("timeline's last entry = %s %s %v %q, want LIMIT_OK late, answering CHECK_LIMIT", last.Kind, last.Event, last.Commands, last.Reason)
	}
	if got := h.inst(t, checked); got.State != "GAVE_UP" || len(got.Context) > 2 {
		t.Errorf("saga after the late answer: %s, context %s; want GAVE_UP, nothing merged", got.State, got.Context)
	}

	for _, tc := range []struct {
		name string
		m    engine.Message
	}{
		{"an answer to a command with effects", ev("LOOKUP", charged, "CHARGED", "bank", charge.ID)},
		{"a command the saga never sent", ev("LOOKUP", checked, "LIMIT_OK", "bank", uuid.NewString())},
		{"no causation", ev("LOOKUP", checked, "LIMIT_OK", "bank", "")},
		{"another participant than the command's", ev("LOOKUP", checked, "LIMIT_OK", "shop", check.ID)},
	} {
		before := len(h.deadLetters(t))
		h.handle(t, tc.m)
		h.deadLetterFor(t, tc.m.ID)
		if n := len(h.deadLetters(t)); n != before+1 {
			t.Errorf("%s: %d dead letters (was %d), want it parked, and only it", tc.name, n, before)
		}
	}
}

// The diagrams say which commands have no effects, and only those.
func TestRenderNoEffects(t *testing.T) {
	m, err := testCatalog(t, lookup).Get("LOOKUP", 1)
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"mermaid": engine.RenderMermaid(m), "dot": engine.RenderDOT(m)} {
		if !strings.Contains(text, "CHECK_LIMIT → bank (no effects)") {
			t.Errorf("%s: CHECK_LIMIT is not drawn without effects:\n%s", name, text)
		}
		if strings.Count(text, "(no effects)") != 1 {
			t.Errorf("%s: %d commands drawn without effects, want 1 (CHARGE has effects):\n%s", name, strings.Count(text, "(no effects)"), text)
		}
	}
}

// A request to stop a saga (every transition on the event leads into a
// failed state) that reaches it after it has already failed lost a race
// with another stop: it is a late entry of the timeline, not a dead
// letter. The same event on a saga that ended in success, from a
// participant the definition does not take it from, or an event that is
// not only a stop, is parked as before.
func TestLateStopOfAFailedSaga(t *testing.T) {
	h := newHarness(t, lookup)
	gaveUp, paid := uuid.NewString(), uuid.NewString()
	h.handle(t, ev("LOOKUP", gaveUp, "ORDER", "shop", ""), ev("LOOKUP", gaveUp, "CANCEL", "shop", ""))
	h.handle(t, ev("LOOKUP", paid, "ORDER", "shop", ""), ev("LOOKUP", paid, "LIMIT_OK", "bank", h.last(t, "CHECK_LIMIT").ID))
	h.handle(t, ev("LOOKUP", paid, "CHARGED", "bank", h.last(t, "CHARGE").ID))
	if got := h.inst(t, gaveUp); got.State != "GAVE_UP" || got.Status != engine.StatusFailed {
		t.Fatalf("saga %s: %s %s, want GAVE_UP failed", gaveUp, got.State, got.Status)
	}
	if got := h.inst(t, paid); got.State != "PAID" || got.Status != engine.StatusCompleted {
		t.Fatalf("saga %s: %s %s, want PAID completed", paid, got.State, got.Status)
	}

	before := h.inst(t, gaveUp)
	again := ev("LOOKUP", gaveUp, "CANCEL", "shop", "")
	h.handle(t, again)
	if dls := h.deadLetters(t); len(dls) != 0 {
		t.Fatalf("the late CANCEL was parked: %+v", dls)
	}
	hist := h.history(t, gaveUp)
	last := hist[len(hist)-1]
	if last.Kind != engine.EntryLate || last.Event != "CANCEL" || last.MessageID != again.ID || last.FromState != "GAVE_UP" || last.ToState != "GAVE_UP" ||
		!strings.Contains(last.Reason, "asks to stop the saga, which had already stopped in GAVE_UP") {
		t.Errorf("timeline's last entry = %s %s %s→%s %q, want CANCEL late in GAVE_UP", last.Kind, last.Event, last.FromState, last.ToState, last.Reason)
	}
	if got := h.inst(t, gaveUp); got.State != before.State || got.Status != before.Status || string(got.Context) != string(before.Context) || len(got.Undo) != len(before.Undo) {
		t.Errorf("the late CANCEL moved the saga: %+v, was %+v", got, before)
	}

	for _, tc := range []struct {
		name string
		m    engine.Message
	}{
		{"a stop of a saga that ended in success", ev("LOOKUP", paid, "CANCEL", "shop", "")},
		{"a stop from a participant the definition does not take it from", ev("LOOKUP", gaveUp, "CANCEL", "bank", "")},
		{"an event that is not only a stop", ev("LOOKUP", gaveUp, "ORDER", "shop", "")},
		{"a stop that names a command it answers", ev("LOOKUP", gaveUp, "CANCEL", "shop", uuid.NewString())},
	} {
		before := len(h.deadLetters(t))
		h.handle(t, tc.m)
		h.deadLetterFor(t, tc.m.ID)
		if n := len(h.deadLetters(t)); n != before+1 {
			t.Errorf("%s: %d dead letters (was %d), want it parked, and only it", tc.name, n, before)
		}
	}
}
