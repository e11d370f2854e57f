package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// rebalanceFile uses every construct of the language's second version.
const rebalanceFile = "definition/testdata/good/rebalance_portfolio.yaml"

// v2Model compiles a test definition, reading schema files beside it.
func v2Model(tb testing.TB, path string) *Model {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	def, problems := definition.ParseWith(path, data, definition.Options{Files: os.DirFS(filepath.Dir(path))})
	if len(problems) > 0 {
		tb.Fatalf("Parse(%s):\n%v", path, problems)
	}
	return mustCompile(tb, def)
}

// yamlModel compiles a definition written in the test.
func yamlModel(tb testing.TB, src string) *Model {
	tb.Helper()
	def, problems := definition.Parse("test.yaml", []byte(src))
	if len(problems) > 0 {
		tb.Fatalf("Parse:\n%v", problems)
	}
	return mustCompile(tb, def)
}

const plan3 = `{"plan": {"portfolio_id": "P-1", "cash_needed": "1500.50", "lines": [
	{"isin": "US0378331005", "side": "buy", "quantity": 10},
	{"isin": "US5949181045", "side": "sell", "quantity": 5},
	{"isin": "DE0007164600", "side": "buy", "quantity": 1}]}}`

func TestApplyWithDecision(t *testing.T) {
	m := v2Model(t, rebalanceFile)
	if !m.Decides() {
		t.Errorf("Decides() = false for a model with conditions")
	}
	_, err := m.Apply("CHECKING_RISK", "RISK_CHECKED", "profile")
	if !errors.Is(err, ErrNeedsData) || ErrorCode(err) != CodeInvalid {
		t.Fatalf("Apply of a decision: got %v, want CodeInvalid wrapping ErrNeedsData", err)
	}
	// Apply still serves the transitions that decide nothing.
	if st, err := m.Apply("", "REBALANCE_REQUESTED", "advisor"); err != nil || st.To != "CHECKING_RISK" {
		t.Fatalf("Apply of a start: got %+v, %v", st, err)
	}
	many := `{"plan": {"portfolio_id": "P-1", "cash_needed": "1", "lines": [` + strings.TrimSuffix(strings.Repeat(`{"isin": "US0378331005", "side": "buy", "quantity": 1},`, 21), ",") + `]}}`
	tests := []struct {
		name, payload, context string
		wantTo, wantCond       string
	}{
		{"risky", `{"risk": {"score": 80}}`, plan3, "AWAITING_APPROVAL", "event.risk.score > 70 || size(context.plan.lines) > 20"},
		{"many lines", `{"risk": {"score": 10}}`, many, "AWAITING_APPROVAL", "event.risk.score > 70 || size(context.plan.lines) > 20"},
		{"default", `{"risk": {"score": 10.5}}`, plan3, "TRADING", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "profile", Data{SagaID: "s1", Payload: json.RawMessage(tt.payload), Context: json.RawMessage(tt.context)})
			if err != nil {
				t.Fatalf("ApplyWith: %v", err)
			}
			if st.To != tt.wantTo || st.Condition != tt.wantCond {
				t.Errorf("got to %s when %q, want to %s when %q", st.To, st.Condition, tt.wantTo, tt.wantCond)
			}
			if (st.To == "TRADING") != (st.Parallel != nil) {
				t.Errorf("Parallel = %v for a step to %s", st.Parallel, st.To)
			}
		})
	}
	// A condition that cannot be evaluated refuses the event.
	_, err = m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "profile", Data{Payload: json.RawMessage(`{"risk": {"score": 10}}`), Context: json.RawMessage(`{}`)})
	if ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), "cannot be evaluated") {
		t.Errorf("condition on a missing key: got %v, want CodeInvalid", err)
	}
	// The contract is checked before the conditions.
	_, err = m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "profile", Data{Payload: json.RawMessage(`{"risk": {"score": "high"}}`), Context: json.RawMessage(plan3)})
	if ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), "at /risk/score") {
		t.Errorf("payload breaking the schema: got %v, want CodeInvalid naming /risk/score", err)
	}
	// Wrong participant and unknown events keep their codes.
	if _, err := m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "deals", Data{}); ErrorCode(err) != CodeWrongParticipant {
		t.Errorf("wrong participant: got %v", err)
	}
	if _, err := m.ApplyWith("CHECKING_RISK", "NOPE", "profile", Data{}); ErrorCode(err) != CodeUnknownEvent {
		t.Errorf("unknown event: got %v", err)
	}
	allowed := fmt.Sprint(m.Allowed("CHECKING_RISK"))
	if want := "[RISK_CHECKED (profile) when event.risk.score > 70 || size(context.plan.lines) > 20 RISK_CHECKED (profile) RISK_TIMED_OUT (engine)]"; allowed != want {
		t.Errorf("Allowed(CHECKING_RISK) = %s", allowed)
	}
}

// TestApplyWithHostileCondition: a payload that makes a condition
// expensive is refused by the cost limit, not computed for seconds.
func TestApplyWithHostileCondition(t *testing.T) {
	m := yamlModel(t, `
saga: HOSTILE
version: 1
participants: { shop: { topic: SHOP } }
transitions:
  - { on: GO, by: shop, from: [], when: "event.l.all(a, event.l.all(b, event.l.all(c, a + b + c >= 0)))", to: A }
  - { on: GO, by: shop, from: [], to: B }
final: [A, B]
`)
	l := make([]int, 2000)
	payload, _ := json.Marshal(map[string]any{"l": l})
	_, err := m.ApplyWith("", "GO", "shop", Data{Payload: payload})
	if ErrorCode(err) != CodeInvalid || !errors.Is(err, expr.ErrCost) {
		t.Errorf("got %v, want CodeInvalid wrapping expr.ErrCost", err)
	}
	// A start decided on the payload.
	st, err := m.ApplyWith("", "GO", "shop", Data{Payload: json.RawMessage(`{"l": [1, 2]}`)})
	if err != nil || st.To != "A" {
		t.Errorf("start decision: got %+v, %v; want A", st, err)
	}
	if got := m.StartEvents(); len(got) != 1 || got[0] != "GO" {
		t.Errorf("StartEvents() = %v, want [GO] once", got)
	}
}

func TestContracts(t *testing.T) {
	m := v2Model(t, rebalanceFile)
	tests := []struct {
		event, payload string
		want           string // "" for accepted
	}{
		{"REBALANCE_REQUESTED", plan3, ""},
		{"REBALANCE_REQUESTED", `{"plan": {"portfolio_id": "P-1", "cash_needed": "1", "lines": [{"isin": "US0378331005", "side": "buy", "quantity": 0}]}}`, "at /plan/lines/0/quantity"},
		{"REBALANCE_REQUESTED", `{"plan": {"portfolio_id": "P", "cash_needed": "1", "lines": []}, "risk": {}}`, "may write only plan into the saga context, not risk"},
		{"REBALANCE_REQUESTED", `[1]`, "not a JSON object"},
		{"RISK_CHECKED", `{}`, "missing property 'risk'"},
		{"RISK_CHECKED", ``, "missing property 'risk'"},
		// REBALANCE_REFUSED declares nothing: it may write any key but
		// those of other participants (risk is profile's, orders deals').
		{"REBALANCE_REFUSED", `{"reason": "no"}`, ""},
		{"REBALANCE_REFUSED", `{"risk": {"score": 0}, "orders": []}`, "may not write orders, risk"},
		{"REBALANCE_REFUSED", `{"plan": {}}`, ""}, // the advisor's own key
		// A done event: deals may not write the advisor's plan.
		{"ORDER_CANCELLED", `{"plan": {}}`, "may not write plan into the saga context: other participants own them"},
	}
	for _, tt := range tests {
		t.Run(tt.event+" "+tt.payload, func(t *testing.T) {
			c := m.Contract(tt.event)
			if c == nil {
				t.Fatalf("Contract(%s) = nil", tt.event)
			}
			err := c.Check(json.RawMessage(tt.payload))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check: %v, want accepted", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || ErrorCode(err) != CodeInvalid):
				t.Errorf("Check: got %v, want CodeInvalid containing %q", err, tt.want)
			}
		})
	}
	if got := m.Contract("REBALANCE_REQUESTED").Writes(); fmt.Sprint(got) != "[plan]" {
		t.Errorf("Writes() = %v, want [plan]", got)
	}
	if m.Contract("TRADED") != nil {
		t.Errorf("an engine event has a contract")
	}
	// A model without contracts checks nothing.
	if c := mustCompile(t, handDef(t)).Contract("REGISTER"); c != nil {
		t.Errorf("MANUAL_CREATE_ORDER v1 has a contract for REGISTER: %+v", c)
	}
}

func TestParallelStep(t *testing.T) {
	m := v2Model(t, rebalanceFile)
	st, err := m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "profile", Data{Payload: json.RawMessage(`{"risk": {"score": 1}}`), Context: json.RawMessage(plan3)})
	if err != nil {
		t.Fatal(err)
	}
	p := st.Parallel
	if p == nil || st.Send != nil {
		t.Fatalf("step: Parallel %v, Send %v; want a parallel step and no single send", p, st.Send)
	}
	if m.Parallel(p.ID) != p || p.State != "TRADING" || p.Then != "TRADED" || p.Else != "TRADING_FAILED" || p.Policy != definition.JoinAll {
		t.Errorf("parallel step: %+v", p)
	}
	if into := m.ParallelsInto("TRADING"); len(into) != 2 {
		t.Errorf("ParallelsInto(TRADING): got %d steps, want 2 (the default and the approval)", len(into))
	}
	if len(p.Branches) != 2 {
		t.Fatalf("branches: got %d, want 2", len(p.Branches))
	}
	orders, cash := p.Branches[0], p.Branches[1]
	if orders.Command.Compensate == nil || orders.Command.Compensate.Command != "CANCEL_ORDER" || cash.Command.Retry == nil || cash.Command.Retry.Exhausted.Value != "" {
		t.Errorf("branches: %+v %+v", orders.Command, cash.Command)
	}
	for _, tt := range []struct {
		participant, event string
		branch             *Branch
		ok, found          bool
	}{
		{"deals", "ORDER_PLACED", orders, true, true},
		{"deals", "ORDER_REFUSED", orders, false, true},
		{"profile", "CASH_SHORT", cash, false, true},
		{"profile", "ORDER_PLACED", nil, false, false}, // from the wrong participant
		{"deals", "TRADED", nil, false, false},
	} {
		b, ok, found := p.Reply(tt.participant, tt.event)
		if b != tt.branch || ok != tt.ok || found != tt.found {
			t.Errorf("Reply(%s, %s) = %v, %v, %v", tt.participant, tt.event, b, ok, found)
		}
	}
	outcomes := []struct {
		policy                 definition.JoinPolicy
		n, total, succ, failed int
		want                   JoinOutcome
	}{
		{definition.JoinAll, 0, 4, 3, 0, JoinPending},
		{definition.JoinAll, 0, 4, 4, 0, JoinDone},
		{definition.JoinAll, 0, 4, 3, 1, JoinFailed},
		{definition.JoinAll, 0, 0, 0, 0, JoinDone}, // an empty fan-out
		{definition.JoinFirst, 0, 3, 1, 0, JoinDone},
		{definition.JoinFirst, 0, 3, 0, 2, JoinPending},
		{definition.JoinFirst, 0, 3, 0, 3, JoinFailed},
		{definition.JoinAtLeast, 2, 3, 1, 1, JoinPending},
		{definition.JoinAtLeast, 2, 3, 2, 1, JoinDone},
		{definition.JoinAtLeast, 2, 3, 1, 2, JoinFailed},
		{definition.JoinAtLeast, 5, 3, 0, 0, JoinFailed}, // a fan-out shorter than n
	}
	for _, o := range outcomes {
		q := &Parallel{Policy: o.policy, N: o.n}
		if got := q.Outcome(o.total, o.succ, o.failed); got != o.want {
			t.Errorf("%s n=%d: Outcome(%d, %d, %d) = %s, want %s", o.policy, o.n, o.total, o.succ, o.failed, got, o.want)
		}
	}
}

func TestPayloadMappings(t *testing.T) {
	m := v2Model(t, rebalanceFile)
	st, err := m.ApplyWith("", "REBALANCE_REQUESTED", "advisor", Data{Payload: json.RawMessage(plan3)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Send.BuildPayload("s-9", json.RawMessage(plan3))
	if err != nil {
		t.Fatalf("BuildPayload: %v", err)
	}
	var check map[string]any
	if err := json.Unmarshal(got, &check); err != nil || check["portfolio_id"] != "P-1" || check["requested_by"] != "s-9" || len(check["lines"].([]any)) != 3 {
		t.Errorf("CHECK_RISK payload: %s (%v)", got, err)
	}
	trading, _ := m.ApplyWith("CHECKING_RISK", "RISK_CHECKED", "profile", Data{Payload: json.RawMessage(`{"risk": {"score": 1}}`), Context: json.RawMessage(plan3)})
	orders := trading.Parallel.Branches[0].Command
	payloads, err := orders.Expand("s-9", json.RawMessage(plan3))
	if err != nil || len(payloads) != 3 {
		t.Fatalf("Expand: %d payloads, %v; want 3", len(payloads), err)
	}
	if want := `{"line":{"isin":"US5949181045","quantity":5,"side":"sell"},"line_no":1,"portfolio_id":"P-1"}`; string(payloads[1]) != want {
		t.Errorf("second order: got %s, want %s", payloads[1], want)
	}
	if _, err := orders.BuildPayload("s-9", json.RawMessage(plan3)); err == nil {
		t.Errorf("BuildPayload of a fan-out of 3: want an error (use Expand)")
	}
	cash, err := trading.Parallel.Branches[1].Command.BuildPayload("s-9", json.RawMessage(plan3))
	if err != nil || string(cash) != `{"amount":"1500.50","portfolio_id":"P-1"}` {
		t.Errorf("RESERVE_CASH payload: %s, %v", cash, err)
	}
	traded, _ := m.Apply("TRADING", "TRADED", "engine")
	notify, err := traded.Send.BuildPayload("s-9", json.RawMessage(plan3))
	if err != nil || string(notify) != `{"notificationDTO":{"message":"rebalanced: 3 orders","user":"P-1"}}` {
		t.Errorf("NOTIFY payload: %s, %v", notify, err)
	}
	// Without a mapping the payload is the context, as before.
	mco := mustCompile(t, handDef(t))
	reg, _ := mco.Apply("", "REGISTER", "deals")
	ctx := json.RawMessage(`{"deal_context": {"deal_id": "d"}}`)
	if p, err := reg.Send.BuildPayload("s", ctx); err != nil || string(p) != string(ctx) {
		t.Errorf("payload without a mapping: %s, %v; want the context", p, err)
	}
	// A mapping over a context without the keys it reads fails with
	// CodeInvalid (the command cannot be built), and so does a fan-out
	// past MaxFanOut.
	if _, err := st.Send.BuildPayload("s", json.RawMessage(`{}`)); ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), "portfolio_id") {
		t.Errorf("mapping over an empty context: got %v", err)
	}
	long := fmt.Sprintf(`{"plan": {"portfolio_id": "P", "lines": [%s]}}`, strings.TrimSuffix(strings.Repeat(`1,`, MaxFanOut+1), ","))
	if _, err := orders.Expand("s", json.RawMessage(long)); ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), "at most") {
		t.Errorf("fan-out of %d: got %v", MaxFanOut+1, err)
	}
}

func TestPlanGroup(t *testing.T) {
	a := &Compensation{Command: "A"}
	b := &Compensation{Command: "B"}
	c := &Compensation{Command: "C"}
	taken := []Undo{
		{Compensation: a, Of: "register"},
		{Compensation: b, Of: "order-1", Group: "step"},
		{Compensation: b, Of: "order-2", Group: "step", Compensated: true},
		{Compensation: c, Of: "cash", Group: "step"},
	}
	ofs := func(us []Undo) string {
		var out []string
		for _, u := range us {
			out = append(out, u.Of)
		}
		return strings.Join(out, ",")
	}
	if got := ofs(PlanGroup(taken)); got != "cash,order-1" {
		t.Errorf("PlanGroup: got %s, want cash,order-1 (the step's branches together, newest first)", got)
	}
	taken[1].Compensated, taken[3].Compensated = true, true
	if got := ofs(PlanGroup(taken)); got != "register" {
		t.Errorf("PlanGroup after the step: got %s, want register", got)
	}
	taken[0].Compensated = true
	if got := PlanGroup(taken); len(got) != 0 {
		t.Errorf("PlanGroup when all is done: got %v", got)
	}
}
