package expr_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

func mustDecode(tb testing.TB, s string) map[string]any {
	tb.Helper()
	m, err := expr.Decode(json.RawMessage(s))
	if err != nil {
		tb.Fatalf("Decode(%s): %v", s, err)
	}
	return m
}

func mustCompile(tb testing.TB, k expr.Kind, text string, object bool) *expr.Program {
	tb.Helper()
	p, iss := expr.Compile(k, text, object)
	if len(iss) > 0 {
		tb.Fatalf("Compile(%q): %+v", text, iss)
	}
	return p
}

func TestConditions(t *testing.T) {
	in := expr.Input{
		Event:   mustDecode(t, `{"amount": 1500, "price": 2.5, "currency": "EUR", "lines": [{"qty": 2}, {"qty": 0}]}`),
		Context: mustDecode(t, `{"deal_context": {"user_id": "u1", "limit": 1000}}`),
		Saga:    expr.Saga{ID: "s-1", Name: "ORDER", Version: 3},
	}
	tests := []struct {
		text string
		want bool
	}{
		{`event.amount > 1000`, true},
		{`event.amount > context.deal_context.limit`, true},
		{`event.amount > 1000.5`, true}, // int against double
		{`event.price < 3`, true},       // double against int
		{`event.currency == "EUR" && saga.version == 3`, true},
		{`saga.id.startsWith("s-")`, true},
		{`has(event.discount)`, false},
		{`event.lines.exists(l, l.qty == 0)`, true},
		{`event.lines.all(l, l.qty > 0)`, false},
		{`size(event.lines) == 2`, true},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			got, err := mustCompile(t, expr.Condition, tt.text, false).Bool(in)
			if err != nil {
				t.Fatalf("Bool: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCompileProblems: mistakes are found when the expression is compiled,
// with a position inside the expression.
func TestCompileProblems(t *testing.T) {
	tests := []struct {
		kind      expr.Kind
		text      string
		object    bool
		line, col int
		want      string // part of the message
	}{
		{expr.Condition, `event.amount >`, false, 1, 15, "Syntax error"},
		{expr.Condition, `evnt.amount > 1`, false, 1, 1, "unknown name evnt: a condition sees only event, context, saga"},
		{expr.Condition, `event.amount + 1`, false, 1, 1, "a condition must be true or false, but this expression gives"},
		{expr.Condition, "event.a > 1 &&\n  context.b ==", false, 2, 15, "Syntax error"},
		{expr.Value, `event.amount`, false, 1, 1, "the event's payload is already merged into context"},
		{expr.Value, `"text"`, true, 1, 1, "a payload or context must be an object"},
		{expr.List, `1 + 2`, false, 1, 1, "for_each must give a list"},
		{expr.Condition, `size(1)`, false, 1, 5, "found no matching overload"},
		{expr.Condition, "", false, 1, 1, "the expression is empty"},
		{expr.Condition, strings.Repeat("a", expr.MaxBytes+1), false, 1, 1, "bytes long"},
		{expr.Condition, strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40), false, 0, 0, "recursion"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			p, iss := expr.Compile(tt.kind, tt.text, tt.object)
			if p != nil || len(iss) == 0 {
				t.Fatalf("Compile accepted %q", tt.text)
			}
			got := iss[0]
			if !strings.Contains(got.Message, tt.want) {
				t.Errorf("message %q does not contain %q", got.Message, tt.want)
			}
			if tt.line != 0 && (got.Line != tt.line || got.Col != tt.col) {
				t.Errorf("position %d:%d, want %d:%d (%s)", got.Line, got.Col, tt.line, tt.col, got.Message)
			}
		})
	}
}

// TestCostLimit: a hostile expression that would run for a very long time
// is stopped by the cost limit, with an error that says so.
func TestCostLimit(t *testing.T) {
	list := make([]any, 2000)
	for i := range list {
		list[i] = int64(i)
	}
	in := expr.Input{Context: map[string]any{"l": list}}
	for _, text := range []string{
		// 2000 × 2000 × 2000 comparisons.
		`context.l.all(a, context.l.all(b, context.l.all(c, a + b + c >= 0)))`,
		// a list of 4,000,000 elements, built in memory.
		`size(context.l.map(a, context.l.map(b, a * b))) > 0`,
	} {
		p := mustCompile(t, expr.Condition, text, false)
		_, err := p.Bool(in)
		if !errors.Is(err, expr.ErrCost) {
			t.Errorf("%s: got %v, want the cost limit", text, err)
		}
	}
}

func TestEvaluationErrors(t *testing.T) {
	in := expr.Input{Event: mustDecode(t, `{"amount": "12"}`)}
	for _, text := range []string{
		`event.missing > 1`, // no such key
		`event.amount > 1`,  // string against int
		`context.flag`,      // dyn that is absent
	} {
		p := mustCompile(t, expr.Condition, text, false)
		if got, err := p.Bool(in); err == nil {
			t.Errorf("%s: got %v, want an error", text, got)
		}
	}
	p := mustCompile(t, expr.Condition, `event.amount`, false) // dyn: not known to be a bool until run
	if _, err := p.Bool(in); err == nil || !strings.Contains(err.Error(), "not true or false") {
		t.Errorf("a string condition: got %v, want not true or false", err)
	}
}

func TestValues(t *testing.T) {
	in := expr.Input{
		Context: mustDecode(t, `{"deal": {"id": 9007199254740993, "amount": "10.50", "tags": ["a"]}, "user": "u1"}`),
		Saga:    expr.Saga{ID: "s-1", Name: "ORDER", Version: 2},
	}
	p := mustCompile(t, expr.Value, `{"deal_id": context.deal.id, "user": context.user, "saga": saga.id, "n": 1.0 * 3.0, "tags": context.deal.tags + ["b"], "none": null}`, true)
	v, err := p.Value(in)
	if err != nil {
		t.Fatalf("Value: %v", err)
	}
	got, err := expr.Encode(v)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	// The big integer keeps every digit (it is not a float64).
	want := `{"deal_id":9007199254740993,"n":3,"none":null,"saga":"s-1","tags":["a","b"],"user":"u1"}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	item := mustCompile(t, expr.ItemValue, `{"line": item, "at": index}`, true)
	v, err = item.Value(expr.Input{Item: "x", Index: 4})
	if err != nil {
		t.Fatalf("Value: %v", err)
	}
	if got, _ := expr.Encode(v); string(got) != `{"at":4,"line":"x"}` {
		t.Errorf("item mapping: got %s", got)
	}
	list := mustCompile(t, expr.List, `context.deal.tags`, false)
	if l, err := list.List(in); err != nil || len(l) != 1 || l[0] != "a" {
		t.Errorf("List: got %v, %v", l, err)
	}
	notList := mustCompile(t, expr.List, `context.user`, false)
	if _, err := notList.List(in); err == nil {
		t.Errorf("List of a string: want an error")
	}
}

func TestResultLimit(t *testing.T) {
	big := strings.Repeat("x", expr.MaxResultBytes)
	v := map[string]any{"s": big}
	if _, err := expr.Encode(v); err == nil {
		t.Errorf("Encode of %d bytes: want an error", len(big))
	}
}

func TestDecode(t *testing.T) {
	for _, bad := range []string{`[1]`, `"s"`, `{`, `{"a": 1e999}`} {
		if _, err := expr.Decode(json.RawMessage(bad)); err == nil {
			t.Errorf("Decode(%s): want an error", bad)
		}
	}
	for _, empty := range []string{``, `null`, ` `} {
		if m, err := expr.Decode(json.RawMessage(empty)); err != nil || len(m) != 0 {
			t.Errorf("Decode(%q): got %v, %v; want {}", empty, m, err)
		}
	}
	m := mustDecode(t, `{"i": 3, "f": 3.5, "big": 1e20, "l": [1, {"x": 2}]}`)
	if _, ok := m["i"].(int64); !ok {
		t.Errorf("3 decoded as %T, want int64", m["i"])
	}
	if _, ok := m["f"].(float64); !ok {
		t.Errorf("3.5 decoded as %T, want float64", m["f"])
	}
	if _, ok := m["big"].(float64); !ok {
		t.Errorf("1e20 decoded as %T, want float64", m["big"])
	}
	if x := m["l"].([]any)[1].(map[string]any)["x"]; x != int64(2) {
		t.Errorf("nested number decoded as %T %v, want int64 2", x, x)
	}
}

// BenchmarkCompile measures compiling one condition (what loading a
// definition pays per expression).
func BenchmarkCompile(b *testing.B) {
	for b.Loop() {
		if _, iss := expr.Compile(expr.Condition, `event.amount > 1000 && context.deal_context.user_id != ""`, false); len(iss) > 0 {
			b.Fatal(iss)
		}
	}
}

// BenchmarkCondition measures one evaluation of a small condition.
func BenchmarkCondition(b *testing.B) {
	p := mustCompile(b, expr.Condition, `event.amount > 1000 && context.deal_context.user_id != ""`, false)
	in := expr.Input{Event: mustDecode(b, `{"amount": 1500}`), Context: mustDecode(b, `{"deal_context": {"user_id": "u"}}`)}
	for b.Loop() {
		if _, err := p.Bool(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCostLimit measures how long a hostile expression runs before the
// cost limit stops it: the most CPU one evaluation can take.
func BenchmarkCostLimit(b *testing.B) {
	list := make([]any, 2000)
	for i := range list {
		list[i] = int64(i)
	}
	p := mustCompile(b, expr.Condition, `context.l.all(a, context.l.all(b, context.l.all(c, a + b + c >= 0)))`, false)
	in := expr.Input{Context: map[string]any{"l": list}}
	for b.Loop() {
		if _, err := p.Bool(in); !errors.Is(err, expr.ErrCost) {
			b.Fatal(err)
		}
	}
}
