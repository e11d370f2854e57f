package engine

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// compensatedFile is the test definition with compensations (not shipped).
const compensatedFile = "definition/testdata/good/compensated_order.yaml"

func compensatedDef(tb testing.TB) *definition.Definition {
	tb.Helper()
	data, err := os.ReadFile(compensatedFile)
	if err != nil {
		tb.Fatalf("read %s: %v", compensatedFile, err)
	}
	def, problems := definition.Parse(compensatedFile, data)
	if len(problems) > 0 {
		tb.Fatalf("Parse(%s):\n%v", compensatedFile, problems)
	}
	return def
}

func TestCompileCompensations(t *testing.T) {
	m := mustCompile(t, compensatedDef(t))
	if !m.Compensable() {
		t.Errorf("Compensable() = false, want true")
	}
	if mustCompile(t, handDef(t)).Compensable() {
		t.Errorf("MANUAL_CREATE_ORDER v1: Compensable() = true, want false")
	}
	step, err := m.Apply("", "REGISTER", "deals")
	if err != nil {
		t.Fatalf("Apply(REGISTER): %v", err)
	}
	wantUndo := Compensation{Participant: "deals", Topic: "DEALS_TOPIC", Command: "FAIL_DEAL", Done: "DEAL_FAILED",
		Retry: &definition.Retry{Attempts: 10, Backoff: time.Second, MaxBackoff: time.Minute}}
	if step.Undo == nil || !sameCompensation(*step.Undo, wantUndo) {
		t.Errorf("REGISTER Undo = %+v, want %+v (to: defaults to by, retry to the default)", step.Undo, wantUndo)
	}
	wantRevert := Compensation{Participant: "profile", Topic: "PROFILE_TOPIC", Command: "REVERT_ORDER", Done: "ORDER_REVERTED",
		Retry: &definition.Retry{Attempts: 20, Backoff: time.Second, MaxBackoff: time.Minute}}
	if step.Send == nil || step.Send.Compensate == nil || !sameCompensation(*step.Send.Compensate, wantRevert) {
		t.Fatalf("REGISTER Send.Compensate = %+v, want %+v (to: defaults to send.to)", step.Send, wantRevert)
	}
	phone, err := m.Apply("", "PHONE_ORDER_TAKEN", definition.API)
	if err != nil {
		t.Fatalf("Apply(PHONE_ORDER_TAKEN): %v", err)
	}
	if phone.Undo != nil {
		t.Errorf("PHONE_ORDER_TAKEN by api Undo = %+v, want none", phone.Undo)
	}
	if phone.Send.Compensate != step.Send.Compensate {
		t.Errorf("the aliased send's compensation is not the shared one: %p vs %p", phone.Send.Compensate, step.Send.Compensate)
	}
	approved, err := m.Apply("DRAFT", "ORDER_APPROVED", "profile")
	if err != nil {
		t.Fatalf("Apply(ORDER_APPROVED): %v", err)
	}
	if approved.Undo != nil || approved.Send.Compensate != nil {
		t.Errorf("ORDER_APPROVED: Undo %+v, Send.Compensate %+v; want none", approved.Undo, approved.Send.Compensate)
	}

	for _, tt := range []struct {
		participant, event string
		want               *Compensation
	}{
		{"profile", "ORDER_REVERTED", step.Send.Compensate},
		{"deals", "DEAL_FAILED", step.Undo},
		{"deals", "ORDER_REVERTED", nil},   // profile's done event, from someone else
		{"profile", "ORDER_APPROVED", nil}, // a transition's event
		{"engine", "DEAL_FAILED", nil},
	} {
		got, ok := m.CompensationByDone(tt.participant, tt.event)
		if got != tt.want || ok != (tt.want != nil) {
			t.Errorf("CompensationByDone(%s, %s) = %+v, %t; want %+v", tt.participant, tt.event, got, ok, tt.want)
		}
	}
	// A done event is no transition's event: Apply refuses it, the
	// orchestrator asks CompensationByDone.
	if _, err := m.Apply("FAILED", "ORDER_REVERTED", "profile"); ErrorCode(err) != CodeUnknownEvent {
		t.Errorf("Apply(done event) = %v, want %s", err, CodeUnknownEvent)
	}
}

func sameCompensation(a, b Compensation) bool {
	return a.Participant == b.Participant && a.Topic == b.Topic && a.Command == b.Command && a.Done == b.Done &&
		a.Retry != nil && b.Retry != nil && a.Retry.Attempts == b.Retry.Attempts &&
		a.Retry.Backoff == b.Retry.Backoff && a.Retry.MaxBackoff == b.Retry.MaxBackoff && a.Retry.Exhausted.Value == ""
}

func TestUndosAndPlan(t *testing.T) {
	m := mustCompile(t, compensatedDef(t))
	var taken []Undo
	for _, ev := range [][3]string{{"", "REGISTER", "deals"}, {"DRAFT", "ORDER_APPROVED", "profile"}} {
		step, err := m.Apply(ev[0], ev[1], ev[2])
		if err != nil {
			t.Fatalf("Apply(%s): %v", ev[1], err)
		}
		taken = append(taken, step.Undos("event-"+ev[1], "command-of-"+ev[1])...)
	}
	names := func(us []Undo) string {
		var out []string
		for _, u := range us {
			out = append(out, u.Compensation.Command+"@"+u.Of)
		}
		return strings.Join(out, ",")
	}
	// The event's effect came before the command's; ORDER_APPROVED's step
	// declares none.
	if got, want := names(taken), "FAIL_DEAL@event-REGISTER,REVERT_ORDER@command-of-REGISTER"; got != want {
		t.Fatalf("Undos: got %s, want %s", got, want)
	}
	before := slices.Clone(taken)
	if got, want := names(Plan(taken)), "REVERT_ORDER@command-of-REGISTER,FAIL_DEAL@event-REGISTER"; got != want {
		t.Errorf("Plan: got %s, want %s (newest first)", got, want)
	}
	if !slices.Equal(taken, before) {
		t.Errorf("Plan modified its input")
	}
	taken[1].Compensated = true
	if got, want := names(Plan(taken)), "FAIL_DEAL@event-REGISTER"; got != want {
		t.Errorf("Plan after REVERT_ORDER was done: got %s, want %s", got, want)
	}
	taken[0].Compensated = true
	if got := Plan(taken); len(got) != 0 {
		t.Errorf("Plan when all is compensated: got %s, want none", names(got))
	}
	if got := Plan(nil); len(got) != 0 {
		t.Errorf("Plan(nil) = %v, want none", got)
	}
}

func TestCompileRejectsBrokenCompensations(t *testing.T) {
	comp := func(to, cmd, done string) *definition.Compensation {
		return &definition.Compensation{To: definition.Name{Value: to}, Command: definition.Name{Value: cmd}, Done: definition.Name{Value: done}}
	}
	tests := []struct {
		name   string
		break_ func(d *definition.Definition)
		want   string
	}{
		{"unknown participant", func(d *definition.Definition) {
			d.Transitions[0].Send.Compensate = comp("bank", "REVERT_ORDER", "ORDER_REVERTED")
		}, `unknown participant "bank"`},
		{"done event is a transition's event", func(d *definition.Definition) {
			d.Transitions[0].Send.Compensate = comp("profile", "REVERT_ORDER", "ORDER_APPROVED")
		}, "also triggers a transition"},
		{"one done event, two compensations", func(d *definition.Definition) {
			d.Transitions[0].Send.Compensate = comp("profile", "REVERT_ORDER", "UNDONE")
			d.Transitions[1].Compensate = comp("profile", "UNAPPROVE", "UNDONE")
		}, "names two compensations"},
		{"compensation by engine", func(d *definition.Definition) {
			d.Transitions[4].Compensate = comp("profile", "REVERT_ORDER", "ORDER_REVERTED")
		}, "by engine has a compensation"},
		{"empty command", func(d *definition.Definition) {
			d.Transitions[0].Send.Compensate = comp("profile", "", "ORDER_REVERTED")
		}, "empty command or done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := handDef(t)
			tt.break_(d)
			_, err := Compile(d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
