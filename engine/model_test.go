package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/looplab/fsm"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// handDef builds MANUAL_CREATE_ORDER v1 as sagas/manual_create_order.v1.yaml
// describes it, without the parser, so the model can be tested on its own.
func handDef(tb testing.TB) *definition.Definition {
	tb.Helper()
	n := func(v string) definition.Name { return definition.Name{Value: v} }
	ns := func(vs ...string) []definition.Name {
		out := []definition.Name{}
		for _, v := range vs {
			out = append(out, n(v))
		}
		return out
	}
	retry := func(exhausted string) *definition.Retry {
		return &definition.Retry{Attempts: 5, Backoff: 2 * time.Second, MaxBackoff: time.Minute, Exhausted: n(exhausted)}
	}
	tr := func(line int, on, by string, from []definition.Name, to string, send *definition.Send) *definition.Transition {
		return &definition.Transition{On: n(on), By: n(by), From: from, To: n(to), Send: send, Pos: definition.Pos{Line: line, Col: 5}}
	}
	send := func(to, cmd string, r *definition.Retry) *definition.Send {
		return &definition.Send{To: n(to), Command: n(cmd), Retry: r}
	}
	st := func(name, desc string, declared bool) *definition.State {
		return &definition.State{Name: name, Description: desc, Declared: declared}
	}
	states := map[string]*definition.State{
		"DRAFT":        st("DRAFT", "The deal is registered; profile is checking the balance.", true),
		"APPROVED":     st("APPROVED", "Profile approved the order and updated the portfolio; deals must execute the deal.", true),
		"REJECTED":     st("REJECTED", "Profile rejected the order; deals must mark the deal rejected.", true),
		"NOTIFICATION": st("NOTIFICATION", "The deal is settled and the client has been notified.", true),
		"FAILED":       st("FAILED", "A participant did not answer in time; an operator should look at it.", true),
	}
	states["DRAFT"].Timeout = &definition.Timeout{After: 10 * time.Minute, Event: n("APPROVAL_TIMED_OUT")}
	return &definition.Definition{
		File:    "manual_create_order.yaml",
		Saga:    "MANUAL_CREATE_ORDER",
		Version: 1,
		Participants: map[string]*definition.Participant{
			"deals":        {Name: "deals", Topic: "DEALS_TOPIC"},
			"profile":      {Name: "profile", Topic: "PROFILE_TOPIC"},
			"notification": {Name: "notification", Topic: "NOTIFICATION_TOPIC"},
		},
		Keys: map[string]*definition.Key{
			"deal_id": {Name: "deal_id", Path: "deal_context.deal_id"},
			"user_id": {Name: "user_id", Path: "deal_context.user_id"},
		},
		States: states,
		Transitions: []*definition.Transition{
			tr(38, "REGISTER", "deals", ns(), "DRAFT", send("profile", "APPROVE_ORDER", retry("PROFILE_UNAVAILABLE"))),
			tr(47, "ORDER_APPROVED", "profile", ns("DRAFT"), "APPROVED", send("deals", "APPROVE_DEAL", retry("DEALS_UNAVAILABLE"))),
			tr(56, "ORDER_REJECTED", "profile", ns("DRAFT"), "REJECTED", send("deals", "REJECT_DEAL", retry("DEALS_UNAVAILABLE"))),
			tr(65, "DEAL_UPDATED", "deals", ns("APPROVED", "REJECTED"), "NOTIFICATION", send("notification", "NOTIFY", nil)),
			tr(72, "PROFILE_UNAVAILABLE", "engine", ns("DRAFT"), "FAILED", nil),
			tr(79, "APPROVAL_TIMED_OUT", "engine", ns("DRAFT"), "FAILED", nil),
			tr(86, "DEALS_UNAVAILABLE", "engine", ns("APPROVED", "REJECTED"), "FAILED", nil),
		},
		Final:  ns("NOTIFICATION"),
		Failed: ns("FAILED"),
	}
}

func mustCompile(tb testing.TB, def *definition.Definition) *Model {
	tb.Helper()
	m, err := Compile(def)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return m
}

// legalRow is one allowed (state, event, by) with its expected outcome,
// written from the seed's table (architecture.en.md) and the engine rows of
// the YAML, independently of the model.
type legalRow struct {
	from, event, by, to string
	cmdTo, cmd, topic   string
	final, failed       bool
	undo, cmdUndo       *mcoCompensation // version 2: compensation of the event, of the command
}

var manualCreateOrderRows = []legalRow{
	// The seed's table, one line per (from state, event).
	{from: "", event: "REGISTER", by: "deals", to: "DRAFT", cmdTo: "profile", cmd: "APPROVE_ORDER", topic: "PROFILE_TOPIC"},
	{from: "DRAFT", event: "ORDER_APPROVED", by: "profile", to: "APPROVED", cmdTo: "deals", cmd: "APPROVE_DEAL", topic: "DEALS_TOPIC"},
	{from: "DRAFT", event: "ORDER_REJECTED", by: "profile", to: "REJECTED", cmdTo: "deals", cmd: "REJECT_DEAL", topic: "DEALS_TOPIC"},
	{from: "APPROVED", event: "DEAL_UPDATED", by: "deals", to: "NOTIFICATION", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", final: true},
	{from: "REJECTED", event: "DEAL_UPDATED", by: "deals", to: "NOTIFICATION", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", final: true},
	// Beyond the seed: timeouts and exhausted retries.
	{from: "DRAFT", event: "PROFILE_UNAVAILABLE", by: "engine", to: "FAILED", failed: true},
	{from: "DRAFT", event: "APPROVAL_TIMED_OUT", by: "engine", to: "FAILED", failed: true},
	{from: "APPROVED", event: "DEALS_UNAVAILABLE", by: "engine", to: "FAILED", failed: true},
	{from: "REJECTED", event: "DEALS_UNAVAILABLE", by: "engine", to: "FAILED", failed: true},
}

// mcoCompensation is one compensation of MANUAL_CREATE_ORDER v2, written
// from docs/manual-create-order.md: every one is re-sent up to 20 times,
// waiting 1s doubling to 1m.
type mcoCompensation struct{ command, to, topic, done string }

var (
	failDeal    = &mcoCompensation{command: "FAIL_DEAL", to: "deals", topic: "DEALS_TOPIC", done: "DEAL_FAILED"}
	revertOrder = &mcoCompensation{command: "REVERT_ORDER", to: "profile", topic: "PROFILE_TOPIC", done: "ORDER_REVERTED"}
)

// manualCreateOrderV2Rows is the table of version 2 (the shipped
// sagas/manual_create_order.yaml), written from docs/manual-create-order.md
// independently of the model: the same rows as version 1, with the
// compensations of REGISTER, APPROVE_ORDER, APPROVE_DEAL and REJECT_DEAL and
// NOTIFY on the transitions into FAILED.
var manualCreateOrderV2Rows = []legalRow{
	{from: "", event: "REGISTER", by: "deals", to: "DRAFT", cmdTo: "profile", cmd: "APPROVE_ORDER", topic: "PROFILE_TOPIC", undo: failDeal, cmdUndo: revertOrder},
	{from: "DRAFT", event: "ORDER_APPROVED", by: "profile", to: "APPROVED", cmdTo: "deals", cmd: "APPROVE_DEAL", topic: "DEALS_TOPIC", cmdUndo: failDeal},
	{from: "DRAFT", event: "ORDER_REJECTED", by: "profile", to: "REJECTED", cmdTo: "deals", cmd: "REJECT_DEAL", topic: "DEALS_TOPIC", cmdUndo: failDeal},
	{from: "APPROVED", event: "DEAL_UPDATED", by: "deals", to: "NOTIFICATION", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", final: true},
	{from: "REJECTED", event: "DEAL_UPDATED", by: "deals", to: "NOTIFICATION", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", final: true},
	{from: "DRAFT", event: "PROFILE_UNAVAILABLE", by: "engine", to: "FAILED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
	{from: "DRAFT", event: "APPROVAL_TIMED_OUT", by: "engine", to: "FAILED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
	{from: "APPROVED", event: "DEALS_UNAVAILABLE", by: "engine", to: "FAILED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
	{from: "REJECTED", event: "DEALS_UNAVAILABLE", by: "engine", to: "FAILED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
}

// manualCreateOrderV3Rows is the table of version 3 (the shipped
// sagas/manual_create_order.yaml): version 2's rows and CANCEL_REQUESTED
// from deals in every waiting state into the failed state CANCELLED.
var manualCreateOrderV3Rows = append(append([]legalRow(nil), manualCreateOrderV2Rows...),
	legalRow{from: "DRAFT", event: "CANCEL_REQUESTED", by: "deals", to: "CANCELLED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
	legalRow{from: "APPROVED", event: "CANCEL_REQUESTED", by: "deals", to: "CANCELLED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
	legalRow{from: "REJECTED", event: "CANCEL_REQUESTED", by: "deals", to: "CANCELLED", cmdTo: "notification", cmd: "NOTIFY", topic: "NOTIFICATION_TOPIC", failed: true},
)

// mcoModel is one compiled MANUAL_CREATE_ORDER with the table it must
// follow and the stem of its render golden files in testdata/.
type mcoModel struct {
	src    string
	m      *Model
	rows   []legalRow
	golden string
}

// models gives the MANUAL_CREATE_ORDER models: version 1 compiled from the
// hand-built definition and from sagas/manual_create_order.v1.yaml (kept for
// the sagas started on it), version 2 from sagas/manual_create_order.v2.yaml
// (kept likewise) and version 3 from the shipped sagas/manual_create_order.yaml.
func models(t *testing.T) []mcoModel {
	t.Helper()
	return []mcoModel{
		{"hand-built", mustCompile(t, handDef(t)), manualCreateOrderRows, "manual_create_order.v1"},
		{"sagas/manual_create_order.v1.yaml", mustCompile(t, parsedDef(t, shippedSagaV1)), manualCreateOrderRows, "manual_create_order.v1"},
		{"sagas/manual_create_order.v2.yaml", mustCompile(t, parsedDef(t, shippedSagaV2)), manualCreateOrderV2Rows, "manual_create_order.v2"},
		{"sagas/manual_create_order.yaml", mustCompile(t, parsedDef(t, shippedSaga)), manualCreateOrderV3Rows, "manual_create_order"},
	}
}

func TestApplySeedTable(t *testing.T) {
	for _, mc := range models(t) {
		m := mc.m
		for _, r := range mc.rows {
			t.Run(fmt.Sprintf("%s/%s+%s", mc.src, displayState(r.from), r.event), func(t *testing.T) {
				got, err := m.Apply(r.from, r.event, r.by)
				if err != nil {
					t.Fatalf("Apply(%q, %q, %q): %v", r.from, r.event, r.by, err)
				}
				want := Step{From: r.from, Event: r.event, By: r.by, To: r.to, Final: r.final, Failed: r.failed}
				gotNoSend := got
				gotNoSend.Send, gotNoSend.Undo = nil, nil
				if gotNoSend != want {
					t.Errorf("step = %+v, want %+v", gotNoSend, want)
				}
				switch {
				case r.cmd == "" && got.Send != nil:
					t.Errorf("Send = %+v, want none", *got.Send)
				case r.cmd != "" && got.Send == nil:
					t.Errorf("Send = nil, want %s to %s", r.cmd, r.cmdTo)
				case r.cmd != "":
					if got.Send.Name != r.cmd || got.Send.Participant != r.cmdTo || got.Send.Topic != r.topic {
						t.Errorf("Send = %s to %s on %s, want %s to %s on %s",
							got.Send.Name, got.Send.Participant, got.Send.Topic, r.cmd, r.cmdTo, r.topic)
					}
					checkCompensation(t, "the command's compensation", got.Send.Compensate, r.cmdUndo)
				}
				checkCompensation(t, "the event's compensation", got.Undo, r.undo)
			})
		}
	}
}

// checkCompensation compares a compiled compensation with the documented
// one (nil: none).
func checkCompensation(tb testing.TB, what string, got *Compensation, want *mcoCompensation) {
	tb.Helper()
	switch {
	case want == nil && got != nil:
		tb.Errorf("%s = %+v, want none", what, *got)
	case want != nil && got == nil:
		tb.Errorf("%s = nil, want %s → %s", what, want.command, want.to)
	case want != nil:
		if got.Command != want.command || got.Participant != want.to || got.Topic != want.topic || got.Done != want.done {
			tb.Errorf("%s = %s → %s on %s done %s, want %s → %s on %s done %s", what,
				got.Command, got.Participant, got.Topic, got.Done, want.command, want.to, want.topic, want.done)
		}
		if r := got.Retry; r == nil || r.Attempts != 20 || r.Backoff != time.Second || r.MaxBackoff != time.Minute || r.Exhausted.Value != "" {
			tb.Errorf("%s retry = %+v, want 20 sends, backoff 1s..1m, no exhausted", what, r)
		}
	}
}

// TestApplyEveryIllegalPair tries every state (and "no saga") × every event
// (and one unknown) × every emitter (participants, engine, a stranger) that
// is not a row of the table, and checks the error code from the rules:
// unknown event first, then finished, then illegal, then wrong participant.
func TestApplyEveryIllegalPair(t *testing.T) {
	for _, mc := range models(t) {
		src, m := mc.src, mc.m
		legal := map[[3]string]bool{}
		legalStateEvent := map[[2]string]string{}
		for _, r := range mc.rows {
			legal[[3]string{r.from, r.event, r.by}] = true
			legalStateEvent[[2]string{r.from, r.event}] = r.by
		}
		states := []string{"", "DRAFT", "APPROVED", "REJECTED", "NOTIFICATION", "FAILED"}
		events := []string{"REGISTER", "ORDER_APPROVED", "ORDER_REJECTED", "DEAL_UPDATED",
			"PROFILE_UNAVAILABLE", "APPROVAL_TIMED_OUT", "DEALS_UNAVAILABLE", "APPROVE_ORDER", "NO_SUCH_EVENT"}
		bys := []string{"deals", "profile", "notification", "engine", "stranger", ""}
		terminal := map[string]string{"NOTIFICATION": "success", "FAILED": "failure"}
		known := map[string]bool{"REGISTER": true, "ORDER_APPROVED": true, "ORDER_REJECTED": true,
			"DEAL_UPDATED": true, "PROFILE_UNAVAILABLE": true, "APPROVAL_TIMED_OUT": true, "DEALS_UNAVAILABLE": true}
		if m.HasEvent("CANCEL_REQUESTED") { // version 3: the client's cancellation
			states = append(states, "CANCELLED")
			events = append(events, "CANCEL_REQUESTED")
			known["CANCEL_REQUESTED"], terminal["CANCELLED"] = true, "failure"
		}
		checked := 0
		for _, s := range states {
			for _, ev := range events {
				for _, by := range bys {
					if legal[[3]string{s, ev, by}] {
						continue
					}
					var want Code
					knownEvent := known[ev]
					_, legalHere := legalStateEvent[[2]string{s, ev}]
					switch {
					case !knownEvent:
						want = CodeUnknownEvent
					case terminal[s] != "":
						want = CodeFinished
					case !legalHere:
						want = CodeIllegal
					default:
						want = CodeWrongParticipant
					}
					step, err := m.Apply(s, ev, by)
					if got := ErrorCode(err); got != want {
						t.Errorf("%s: Apply(%q, %q, %q) code = %q (err %v), want %q", src, s, ev, by, got, err, want)
						continue
					}
					if step != (Step{}) {
						t.Errorf("%s: Apply(%q, %q, %q) step = %+v on error, want zero", src, s, ev, by, step)
					}
					var e *Error
					if !errors.As(err, &e) {
						t.Fatalf("%s: error %T is not *Error", src, err)
					}
					msg := err.Error()
					if s != "" && !strings.Contains(msg, s) {
						t.Errorf("%s: message %q does not name state %s", src, msg, s)
					}
					if want == CodeFinished && !strings.Contains(msg, terminal[s]) {
						t.Errorf("%s: message %q does not say %s", src, msg, terminal[s])
					}
					if want == CodeIllegal || want == CodeUnknownEvent {
						for _, r := range mc.rows {
							if r.from == s && !strings.Contains(msg, r.event+" ("+r.by+")") {
								t.Errorf("%s: message %q does not list allowed %s (%s)", src, msg, r.event, r.by)
							}
						}
					}
					if want == CodeWrongParticipant && !strings.Contains(msg, legalStateEvent[[2]string{s, ev}]) {
						t.Errorf("%s: message %q does not name the expected participant", src, msg)
					}
					checked++
				}
			}
		}
		if wantN := len(states)*len(events)*len(bys) - len(mc.rows); checked != wantN {
			t.Errorf("%s: checked %d illegal triples, want %d", src, checked, wantN)
		}
	}
}

func TestApplyUnknownState(t *testing.T) {
	m := mustCompile(t, handDef(t))
	_, err := m.Apply("LIMBO", "DEAL_UPDATED", "deals")
	if got, want := ErrorCode(err), CodeInvalid; got != want {
		t.Fatalf("code = %q (%v), want %q", got, err, want)
	}
	if !strings.Contains(err.Error(), "LIMBO") {
		t.Errorf("message %q does not name the state", err)
	}
}

// TestApplyAgreesWithFSM checks the lookup table against looplab/fsm driven
// directly, for every state and event.
func TestApplyAgreesWithFSM(t *testing.T) {
	m := mustCompile(t, handDef(t))
	ctx := context.Background()
	for _, s := range append([]string{""}, m.States()...) {
		for _, ev := range append(m.Events(), "NO_SUCH_EVENT") {
			by := ""
			for _, a := range m.Allowed(s) {
				if a.Event == ev {
					by = a.By
				}
			}
			step, err := m.Apply(s, ev, by)
			to, fsmErr := m.applyFSM(ctx, s, ev)
			if (err == nil) != (fsmErr == nil) {
				t.Errorf("(%q, %s): Apply err %v, fsm err %v", s, ev, err, fsmErr)
				continue
			}
			if err == nil && step.To != to {
				t.Errorf("(%q, %s): Apply to %s, fsm to %s", s, ev, step.To, to)
			}
		}
	}
}

func TestModelAccessors(t *testing.T) {
	m := mustCompile(t, handDef(t))
	checks := []struct {
		name      string
		got, want any
	}{
		{"Name", m.Name(), "MANUAL_CREATE_ORDER"},
		{"Version", m.Version(), 1},
		{"String", m.String(), "MANUAL_CREATE_ORDER v1"},
		{"States", m.States(), []string{"DRAFT", "APPROVED", "REJECTED", "NOTIFICATION", "FAILED"}},
		{"StartEvents", m.StartEvents(), []string{"REGISTER"}},
		{"FinalStates", m.FinalStates(), []string{"NOTIFICATION"}},
		{"FailedStates", m.FailedStates(), []string{"FAILED"}},
		{"Participants", m.Participants(), []string{"deals", "notification", "profile"}},
		{"Topic(profile)", m.Topic("profile"), "PROFILE_TOPIC"},
		{"Topic(nobody)", m.Topic("nobody"), ""},
		{"Keys", fmt.Sprint(m.Keys()), "map[deal_id:deal_context.deal_id user_id:deal_context.user_id]"},
		{"IsFinal(NOTIFICATION)", m.IsFinal("NOTIFICATION"), true},
		{"IsFinal(FAILED)", m.IsFinal("FAILED"), false},
		{"IsFailed(FAILED)", m.IsFailed("FAILED"), true},
		{"IsTerminal(FAILED)", m.IsTerminal("FAILED"), true},
		{"IsTerminal(DRAFT)", m.IsTerminal("DRAFT"), false},
		{"IsTerminal(LIMBO)", m.IsTerminal("LIMBO"), false},
		{"HasState(DRAFT)", m.HasState("DRAFT"), true},
		{"HasEvent(NOTIFY)", m.HasEvent("NOTIFY"), false},
		{"Timeout(APPROVED)", m.Timeout("APPROVED") == nil, true},
		{"Allowed(\"\")", m.Allowed(""), []Allowed{{Event: "REGISTER", By: "deals", To: "DRAFT"}}},
		{"Allowed(APPROVED)", m.Allowed("APPROVED"), []Allowed{{Event: "DEAL_UPDATED", By: "deals", To: "NOTIFICATION"}, {Event: "DEALS_UNAVAILABLE", By: "engine", To: "FAILED"}}},
		{"Allowed(NOTIFICATION)", len(m.Allowed("NOTIFICATION")), 0},
		{"Description(DRAFT)", m.Description("DRAFT"), "The deal is registered; profile is checking the balance."},
	}
	for _, c := range checks {
		if fmt.Sprintf("%#v", c.got) != fmt.Sprintf("%#v", c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if to := m.Timeout("DRAFT"); to == nil || to.After != 10*time.Minute || to.Event.Value != "APPROVAL_TIMED_OUT" {
		t.Errorf("Timeout(DRAFT) = %+v, want 10m APPROVAL_TIMED_OUT", to)
	}
	// Returned slices are copies.
	s := m.States()
	s[0] = "CHANGED"
	if got := m.States()[0]; got != "DRAFT" {
		t.Errorf("States()[0] after caller's change = %s, want DRAFT", got)
	}
}

func TestCompileRejectsBrokenInvariants(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(d *definition.Definition)
		want   string
	}{
		{"no start", func(d *definition.Definition) { d.Transitions = d.Transitions[1:] }, "starts a saga"},
		{"duplicate edge", func(d *definition.Definition) {
			c := *d.Transitions[1]
			c.To = definition.Name{Value: "REJECTED"}
			d.Transitions = append(d.Transitions, &c)
		}, "handled twice in state DRAFT"},
		{"leaves terminal", func(d *definition.Definition) {
			c := *d.Transitions[3]
			c.From = []definition.Name{{Value: "NOTIFICATION"}}
			c.On = definition.Name{Value: "AGAIN"}
			d.Transitions = append(d.Transitions, &c)
		}, "leaves terminal state NOTIFICATION"},
		{"unknown emitter", func(d *definition.Definition) { d.Transitions[1].By = definition.Name{Value: "bank"} }, "unknown participant \"bank\""},
		{"unknown receiver", func(d *definition.Definition) { d.Transitions[0].Send.To = definition.Name{Value: "bank"} }, "unknown participant \"bank\""},
		{"final and failed", func(d *definition.Definition) { d.Failed = append(d.Failed, definition.Name{Value: "NOTIFICATION"}) }, "both final and failed"},
		{"timeout event unhandled", func(d *definition.Definition) { d.Transitions = slices.Delete(d.Transitions, 5, 6) }, "APPROVAL_TIMED_OUT, which no transition handles"},
		{"zero version", func(d *definition.Definition) { d.Version = 0 }, "not positive"},
		{"reserved participant", func(d *definition.Definition) { d.Participants["engine"] = &definition.Participant{Name: "engine"} }, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := handDef(t)
			tt.break_(d)
			m, err := Compile(d)
			if err == nil {
				t.Fatalf("Compile = %v, nil error; want error containing %q", m, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if _, err := Compile(nil); ErrorCode(err) != CodeInvalid {
		t.Errorf("Compile(nil) error = %v, want code %s", err, CodeInvalid)
	}
}

// apiDef is handDef with a second start, PHONE_ORDER_TAKEN, that callers of
// the HTTP API with role deals-trader or deals-admin may fire.
func apiDef(tb testing.TB) *definition.Definition {
	tb.Helper()
	d := handDef(tb)
	first := d.Transitions[0]
	d.Transitions = append(d.Transitions, &definition.Transition{
		On: definition.Name{Value: "PHONE_ORDER_TAKEN"}, By: definition.Name{Value: definition.API},
		Roles: []definition.Name{{Value: "deals-trader"}, {Value: "deals-admin"}},
		From:  []definition.Name{}, To: definition.Name{Value: "DRAFT"}, Send: first.Send, Pos: definition.Pos{Line: 90, Col: 5},
	})
	return d
}

func TestStartRoles(t *testing.T) {
	m := mustCompile(t, apiDef(t))
	tests := []struct {
		event     string
		wantRoles []string
		wantOK    bool
	}{
		{"PHONE_ORDER_TAKEN", []string{"deals-trader", "deals-admin"}, true},
		{"REGISTER", nil, false},       // deals starts it over the bus only
		{"ORDER_APPROVED", nil, false}, // not a starting event
		{"NO_SUCH_EVENT", nil, false},
	}
	for _, tt := range tests {
		roles, ok := m.StartRoles(tt.event)
		if ok != tt.wantOK || !slices.Equal(roles, tt.wantRoles) {
			t.Errorf("StartRoles(%s) = %v, %t; want %v, %t", tt.event, roles, ok, tt.wantRoles, tt.wantOK)
		}
	}
	roles, _ := m.StartRoles("PHONE_ORDER_TAKEN")
	roles[0] = "anyone"
	if again, _ := m.StartRoles("PHONE_ORDER_TAKEN"); again[0] != "deals-trader" {
		t.Errorf("StartRoles after the caller changed its slice: got %v, want a copy", again)
	}
	if roles, ok := mustCompile(t, handDef(t)).StartRoles("REGISTER"); ok || roles != nil {
		t.Errorf("MANUAL_CREATE_ORDER v1 StartRoles(REGISTER) = %v, %t; want none: deals starts it", roles, ok)
	}
}

// TestApplyAPIStart: an HTTP start is applied as by api; nobody else may
// fire it, and api may fire nothing else.
func TestApplyAPIStart(t *testing.T) {
	m := mustCompile(t, apiDef(t))
	step, err := m.Apply("", "PHONE_ORDER_TAKEN", definition.API)
	if err != nil {
		t.Fatalf("Apply(PHONE_ORDER_TAKEN by api): %v", err)
	}
	if step.To != "DRAFT" || step.By != definition.API || step.Send == nil || step.Send.Name != "APPROVE_ORDER" {
		t.Errorf("step = %+v, want api → DRAFT sending APPROVE_ORDER", step)
	}
	for _, tt := range []struct {
		state, event, by string
		want             Code
	}{
		{"", "PHONE_ORDER_TAKEN", "deals", CodeWrongParticipant},
		{"", "REGISTER", definition.API, CodeWrongParticipant},
		{"DRAFT", "ORDER_APPROVED", definition.API, CodeWrongParticipant},
		{"DRAFT", "PHONE_ORDER_TAKEN", definition.API, CodeIllegal},
	} {
		if _, err := m.Apply(tt.state, tt.event, tt.by); ErrorCode(err) != tt.want {
			t.Errorf("Apply(%q, %s, %s) = %v, want code %s", tt.state, tt.event, tt.by, err, tt.want)
		}
	}
	if got, want := m.Participants(), []string{"deals", "notification", "profile"}; !slices.Equal(got, want) {
		t.Errorf("Participants() = %v, want %v (api is no participant)", got, want)
	}
}

func TestCompileRejectsBrokenAPIStarts(t *testing.T) {
	last := func(d *definition.Definition) *definition.Transition { return d.Transitions[len(d.Transitions)-1] }
	tests := []struct {
		name   string
		break_ func(d *definition.Definition)
		want   string
	}{
		{"api moves a running saga", func(d *definition.Definition) {
			last(d).From = []definition.Name{{Value: "APPROVED"}}
		}, "by api does not start a saga"},
		{"api without roles", func(d *definition.Definition) { last(d).Roles = nil }, "by api has no roles"},
		{"roles by a participant", func(d *definition.Definition) {
			d.Transitions[0].Roles = []definition.Name{{Value: "deals-trader"}}
		}, "by deals has roles"},
		{"api declared", func(d *definition.Definition) { d.Participants["api"] = &definition.Participant{Name: "api"} }, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := apiDef(t)
			tt.break_(d)
			_, err := Compile(d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestApplyConcurrent(t *testing.T) {
	m := mustCompile(t, handDef(t))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r := manualCreateOrderRows[(g+i)%len(manualCreateOrderRows)]
				st, err := m.Apply(r.from, r.event, r.by)
				if err != nil || st.To != r.to {
					errs <- fmt.Errorf("Apply(%q, %s) = %s, %v; want %s", r.from, r.event, st.To, err, r.to)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkApply measures the lookup-table Apply (what the engine uses) on
// the happy path and on a refused event, and, for comparison, the same
// transition done by a fresh looplab/fsm per call.
func BenchmarkApply(b *testing.B) {
	m := mustCompile(b, handDef(b))
	b.Run("table", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := manualCreateOrderRows[i%len(manualCreateOrderRows)]
			if _, err := m.Apply(r.from, r.event, r.by); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("table-refused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Apply("APPROVED", "ORDER_APPROVED", "profile"); err == nil {
				b.Fatal("illegal event accepted")
			}
		}
	})
	b.Run("fresh-looplab-fsm", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			r := manualCreateOrderRows[i%len(manualCreateOrderRows)]
			if _, err := m.applyFSM(ctx, r.from, r.event); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// bigSaga is a valid definition of n transitions shaped like a real saga,
// scaled up: a chain S0 → S1 → … → S(n-2) where every step has its own
// event and sends its own command with a retry, and one engine transition
// from every waiting state to FAILED when a retry is exhausted. It has n
// states and n distinct events, so a states × events check is quadratic
// in its size.
func bigSaga(n int) []byte {
	var b strings.Builder
	// Short names keep 10,000 transitions under definition.MaxFileBytes.
	b.WriteString("saga: BIG\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\n  b: { topic: BANK_TOPIC }\n")
	b.WriteString("transitions:\n")
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0, send: { to: b, command: C0, retry: &r { attempts: 3, backoff: 1s, exhausted: GAVE_UP } } }\n")
	for i := 1; i < n-2; i++ {
		fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: b, command: C%d, retry: *r } }\n", i, i-1, i, i)
	}
	fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: shop, command: DONE } }\n", n-2, n-3, n-2)
	b.WriteString("  - { on: GAVE_UP, by: engine, to: FAILED, from: [S0")
	for i := 1; i < n-2; i++ {
		fmt.Fprintf(&b, ", S%d", i)
	}
	fmt.Fprintf(&b, "] }\nfinal: [S%d]\nfailed: [FAILED]\n", n-2)
	return []byte(b.String())
}

func TestBigSagaCompiles(t *testing.T) {
	if got := len(bigSaga(10_000)); got > definition.MaxFileBytes {
		t.Fatalf("bigSaga(10000) is %d bytes, more than definition.MaxFileBytes", got)
	}
	def, problems := definition.Parse("big.yaml", bigSaga(1000))
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems)
	}
	m := mustCompile(t, def)
	if got, want := len(def.Transitions), 1000; got != want {
		t.Errorf("transitions: got %d, want %d", got, want)
	}
	if got, want := len(m.States()), 1000; got != want {
		t.Errorf("states: got %d, want %d", got, want)
	}
	if got, want := m.ExhaustedCommand("S500", "GAVE_UP"), "C500"; got != want {
		t.Errorf("ExhaustedCommand(S500, GAVE_UP) = %q, want %q", got, want)
	}
	if step, err := m.Apply("S997", "E998", "b"); err != nil || !step.Final {
		t.Errorf("Apply(S997, E998) = %+v, %v; want the final step", step, err)
	}
}

// BenchmarkLoadSize measures what saga-machine, sagactl and the validate
// endpoint do with a definition: Parse, then Compile, for growing sizes. It
// grows linearly: docs/definition-language.md ("Limits") has the numbers.
func BenchmarkLoadSize(b *testing.B) {
	for _, n := range []int{100, 1_000, 5_000, 10_000} {
		for _, v2 := range []bool{false, true} {
			data, name := bigSaga(n), fmt.Sprintf("transitions=%d", n)
			if v2 && n > 5_000 {
				continue // bigSagaV2(10000) is larger than definition.MaxFileBytes
			}
			if v2 {
				data, name = bigSagaV2(n), fmt.Sprintf("v2/transitions=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					def, problems := definition.Parse("big.yaml", data)
					if len(problems) > 0 {
						b.Fatal(problems[0])
					}
					if _, err := Compile(def); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// bigSagaV2 is bigSaga with the constructs of the language's second
// version: every fifth step is a decision on the payload (a condition and
// its default), sends its command with a payload mapping, and its event
// has a contract (an inline schema, shared by an alias, and the key it
// writes). n/5 expressions: 1,000 at 5,000 transitions, the largest that
// fits in definition.MaxFileBytes.
func bigSagaV2(n int) []byte {
	var b strings.Builder
	b.WriteString("saga: BIG\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\n  b: { topic: BANK_TOPIC }\n")
	b.WriteString("transitions:\n")
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0, send: { to: b, command: C0, retry: &r { attempts: 3, backoff: 1s, exhausted: GAVE_UP } } }\n")
	var events strings.Builder
	i := 1
	for ; i < n-2; i++ {
		if i%5 != 0 || i+1 >= n-2 {
			fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: b, command: C%d, retry: *r } }\n", i, i-1, i, i)
			continue
		}
		// A decision: E(i) goes on to S(i) when the amount is large, and
		// skips to S(i+1) otherwise; the skipped transition still exists.
		fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], when: \"event.a > %d\", to: S%d, send: { to: b, command: C%d, retry: *r, payload: \"{'a': context.a}\" } }\n", i, i-1, i, i, i)
		fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: b, command: C%d, retry: *r } }\n", i, i-1, i+1, i+1)
		if events.Len() == 0 {
			fmt.Fprintf(&events, "  E%d: { schema: &s { type: object, properties: { a: { type: integer } } }, writes: [a] }\n", i)
		} else {
			fmt.Fprintf(&events, "  E%d: { schema: *s, writes: [a] }\n", i)
		}
		i++
		fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: b, command: C%d, retry: *r } }\n", i, i-1, i, i)
	}
	fmt.Fprintf(&b, "  - { on: E%d, by: b, from: [S%d], to: S%d, send: { to: shop, command: DONE } }\n", n-2, n-3, n-2)
	b.WriteString("  - { on: GAVE_UP, by: engine, to: FAILED, from: [S0")
	for i := 1; i < n-2; i++ {
		fmt.Fprintf(&b, ", S%d", i)
	}
	fmt.Fprintf(&b, "] }\nfinal: [S%d]\nfailed: [FAILED]\nevents:\n%s", n-2, events.String())
	return []byte(b.String())
}

func TestBigSagaV2Compiles(t *testing.T) {
	data := bigSagaV2(5_000)
	if len(data) > definition.MaxFileBytes {
		t.Fatalf("bigSagaV2(5000) is %d bytes, more than definition.MaxFileBytes", len(data))
	}
	def, problems := definition.Parse("big.yaml", data)
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems[:min(5, len(problems))])
	}
	m := mustCompile(t, def)
	if !m.Decides() || m.Contract("E5") == nil {
		t.Errorf("bigSagaV2 has no decision or contract")
	}
	st, err := m.ApplyWith("S4", "E5", "b", Data{Payload: json.RawMessage(`{"a": 3, "x": 1}`), Context: json.RawMessage(`{}`)})
	if err == nil {
		t.Errorf("E5 writing x: accepted (%+v), want refused by writes", st)
	}
	st, err = m.ApplyWith("S4", "E5", "b", Data{Payload: json.RawMessage(`{"a": 3}`), Context: json.RawMessage(`{}`)})
	if err != nil || st.To != "S6" {
		t.Errorf("E5 with a small a: %+v, %v; want the default to S6", st, err)
	}
	st, err = m.ApplyWith("S4", "E5", "b", Data{Payload: json.RawMessage(`{"a": 300}`), Context: json.RawMessage(`{}`)})
	if err != nil || st.To != "S5" || st.Send.Payload == nil {
		t.Errorf("E5 with a large a: %+v, %v; want the condition's transition to S5", st, err)
	}
}

// TestCrossCheckCatchesDisagreement breaks the model behind Compile's back
// and checks that crossCheck notices each kind of disagreement between the
// table and looplab/fsm.
func TestCrossCheckCatchesDisagreement(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(m *Model)
		want   string
	}{
		{"fsm knows an edge the table lacks", func(m *Model) {
			m.events = append(m.events, fsm.EventDesc{Name: "ORDER_APPROVED", Src: []string{"APPROVED"}, Dst: "FAILED"})
		}, "does not have"},
		{"table edge leads elsewhere", func(m *Model) {
			e := *m.edges[edgeKey{"DRAFT", "ORDER_APPROVED"}]
			e.to = "REJECTED"
			m.edges[edgeKey{"DRAFT", "ORDER_APPROVED"}] = &e
		}, "DRAFT, event ORDER_APPROVED"},
		{"table edge the fsm lacks", func(m *Model) {
			m.events = slices.DeleteFunc(slices.Clone(m.events), func(e fsm.EventDesc) bool { return e.Name == "DEAL_UPDATED" })
		}, "fsm says allowed=false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCompile(t, handDef(t))
			if err := m.crossCheck(); err != nil {
				t.Fatalf("crossCheck of an intact model: %v", err)
			}
			tt.break_(m)
			err := m.crossCheck()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("crossCheck = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// parsedDef parses a shipped saga file.
func parsedDef(tb testing.TB, path string) *definition.Definition {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read shipped saga: %v", err)
	}
	def, problems := definition.Parse(path, data)
	if len(problems) > 0 {
		tb.Fatalf("Parse(%s):\n%v", path, problems)
	}
	return def
}

const (
	// shippedSaga is MANUAL_CREATE_ORDER as new sagas start it (version 3).
	shippedSaga = "../sagas/manual_create_order.yaml"
	// shippedSagaV2 is MANUAL_CREATE_ORDER version 2 (compensations, no
	// cancellation), kept so that the sagas started on it finish on it.
	shippedSagaV2 = "../sagas/manual_create_order.v2.yaml"
	// shippedSagaV1 is MANUAL_CREATE_ORDER version 1, kept so that the
	// sagas started on it finish on it.
	shippedSagaV1 = "../sagas/manual_create_order.v1.yaml"
)
