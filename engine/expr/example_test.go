package expr_test

import (
	"encoding/json"
	"fmt"

	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// A condition is compiled once, when its definition is read, and evaluated
// on every event.
func ExampleCompile() {
	cond, issues := expr.Compile(expr.Condition, `event.amount > 1000 && context.client.tier != "gold"`, false)
	if len(issues) > 0 {
		fmt.Println(issues)
		return
	}
	event, _ := expr.Decode(json.RawMessage(`{"amount": 1500}`))
	ctx, _ := expr.Decode(json.RawMessage(`{"client": {"tier": "silver"}}`))
	ok, err := cond.Bool(expr.Input{Event: event, Context: ctx})
	fmt.Println(ok, err)

	_, issues = expr.Compile(expr.Condition, `event.amount >`, false)
	fmt.Printf("%d:%d %s\n", issues[0].Line, issues[0].Col, issues[0].Message)
	// Output:
	// true <nil>
	// 1:15 Syntax error: the expression ends too early (something is missing at its end)
}
