// Command promql-selectors parses PromQL expressions with Prometheus' own
// parser (github.com/prometheus/prometheus/promql/parser) and prints, for
// each, the metric names it selects or the parse error. k8s/monitoring's
// tests use it to check that every query of the alert rules and of the
// Grafana dashboard parses and names only metrics the binaries export.
//
// It is a module of its own so that the Prometheus server module (and the
// Go version it requires) stays out of the repository's go.mod;
// scripts/promtool.sh builds it next to promtool.
//
//	echo '["rate(a_total[5m])", "sum(b"]' | promql-selectors
//	[{"expr":"rate(a_total[5m])","metrics":["a_total"]},{"expr":"sum(b","error":"..."}]
//
// A selector without a metric name (e.g. {__name__=~"a.*"}) is an error:
// its metrics cannot be checked.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// result is what is printed for one expression.
type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "promql-selectors:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	var exprs []string
	if err := json.NewDecoder(in).Decode(&exprs); err != nil {
		return fmt.Errorf("read a JSON array of expressions: %w", err)
	}
	results := make([]result, 0, len(exprs))
	for _, e := range exprs {
		results = append(results, selectors(e))
	}
	return json.NewEncoder(out).Encode(results)
}

// selectors parses expr and collects the metric names of its selectors.
func selectors(expr string) result {
	r := result{Expr: expr}
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			r.Error = fmt.Sprintf("selector %s names no metric", vs)
			return nil
		}
		if !slices.Contains(r.Metrics, name) {
			r.Metrics = append(r.Metrics, name)
		}
		return nil
	})
	slices.Sort(r.Metrics)
	return r
}
