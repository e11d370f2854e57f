package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.txt")

// shipped is MANUAL_CREATE_ORDER as new sagas start it (version 2, with
// compensations); shippedV1 is version 1, kept for the sagas started on it.
const (
	shipped   = "../../sagas/manual_create_order.yaml"
	shippedV1 = "../../sagas/manual_create_order.v1.yaml"
)

// compensated is the test definition with compensations and a start over
// the HTTP API (not shipped).
const compensated = "../../engine/definition/testdata/good/compensated_order.yaml"

// rebalance is the test definition that uses every construct of the
// language's second version (decisions, a parallel step with a fan-out,
// mappings, contracts); mco12 migrates MANUAL_CREATE_ORDER v1 to v2.
const (
	rebalance = "../../engine/definition/testdata/good/rebalance_portfolio.yaml"
	mco12     = "../../engine/definition/testdata/migrations/good/manual_create_order.1-2.yaml"
	badMig    = "../../engine/definition/testdata/migrations/bad/migration-unknown-state.yaml"
	planFile  = "REBALANCE_REQUESTED=testdata/payloads/plan.json"
	// basket is the second shipped saga, BASKET_ORDER.
	basket     = "../../sagas/basket_order.yaml"
	basketFile = "BASKET_REGISTERED=testdata/payloads/basket.json"
)

// runResult is what one sagactl invocation did.
type runResult struct {
	code           int
	stdout, stderr string
}

func (r runResult) String() string {
	return fmt.Sprintf("exit: %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

func runSagactl(tb testing.TB, args ...string) runResult {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return runResult{code, stdout.String(), stderr.String()}
}

// TestGolden runs sagactl in-process and compares exit status, stdout and
// stderr with testdata/golden/NAME.txt (go test -update rewrites them).
func TestGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"help", []string{"help"}, 0},
		{"no-args", nil, 2},
		{"unknown-command", []string{"lint", shipped}, 2},
		{"validate-shipped", []string{"validate", shipped}, 0},
		{"validate-mixed", []string{"validate", "testdata/good.yaml", "testdata/bad.yaml", "testdata/broken_yaml.yaml"}, 1},
		{"validate-json-bad", []string{"validate", "--format", "json", "testdata/bad.yaml"}, 1},
		{"validate-json-good-flag-after-file", []string{"validate", shipped, "--format=json"}, 0},
		{"validate-unreadable", []string{"validate", "testdata/good.yaml", "testdata/missing.yaml"}, 2},
		{"validate-no-file", []string{"validate"}, 2},
		{"validate-bad-format", []string{"validate", "--format", "xml", shipped}, 2},
		{"validate-unknown-flag", []string{"validate", "--strict", shipped}, 2},
		{"render-mermaid", []string{"render", "--format", "mermaid", shipped}, 0},
		{"render-dot", []string{"render", "--format", "dot", shipped}, 0},
		{"render-invalid", []string{"render", "testdata/bad.yaml"}, 1},
		{"render-two-files", []string{"render", shipped, shipped}, 2},
		{"simulate-approved", []string{"simulate", shipped, "REGISTER", "ORDER_APPROVED", "DEAL_UPDATED"}, 0},
		{"simulate-rejected", []string{"simulate", shipped, "REGISTER", "ORDER_REJECTED", "DEAL_UPDATED"}, 0},
		{"simulate-timeout", []string{"simulate", shipped, "REGISTER", "APPROVAL_TIMED_OUT"}, 0},
		{"simulate-running", []string{"simulate", shipped, "REGISTER", "ORDER_APPROVED"}, 0},
		{"simulate-illegal", []string{"simulate", shipped, "REGISTER", "ORDER_REJECTED", "ORDER_APPROVED"}, 1},
		{"simulate-wrong-participant", []string{"simulate", shipped, "REGISTER", "ORDER_APPROVED@deals"}, 1},
		{"simulate-unknown-event", []string{"simulate", shipped, "REGISTER", "ORDER_APPROVD"}, 1},
		{"simulate-after-finish", []string{"simulate", shipped, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_APPROVED"}, 1},
		{"simulate-not-started", []string{"simulate", shipped, "ORDER_APPROVED"}, 1},
		{"simulate-bad-event-arg", []string{"simulate", shipped, "REGISTER@"}, 2},
		{"simulate-no-events", []string{"simulate", shipped}, 2},
		// Version 1: a failed saga is finished at once, nothing to undo.
		{"validate-shipped-v1", []string{"validate", shippedV1}, 0},
		{"simulate-timeout-v1", []string{"simulate", shippedV1, "REGISTER", "APPROVAL_TIMED_OUT"}, 0},
		{"simulate-after-finish-v1", []string{"simulate", shippedV1, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_APPROVED"}, 1},
		// Version 2 once every compensation is done: finished in FAILED.
		{"simulate-after-compensation-shipped", []string{"simulate", shipped, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED", "DEAL_FAILED", "ORDER_APPROVED"}, 1},
		// A cancellation that reaches a failed saga (compensating or done)
		// is late, as in saga-machine; after success, or from another
		// participant, it is refused.
		{"simulate-late-cancel", []string{"simulate", shipped, "REGISTER", "APPROVAL_TIMED_OUT", "CANCEL_REQUESTED", "ORDER_REVERTED", "DEAL_FAILED", "CANCEL_REQUESTED"}, 0},
		{"simulate-late-cancel-wrong-participant", []string{"simulate", shipped, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED", "DEAL_FAILED", "CANCEL_REQUESTED@profile"}, 1},
		{"simulate-cancel-after-success", []string{"simulate", shipped, "REGISTER", "ORDER_APPROVED", "DEAL_UPDATED", "CANCEL_REQUESTED"}, 1},
		{"validate-compensated", []string{"validate", compensated}, 0},
		{"render-compensated", []string{"render", compensated}, 0},
		{"simulate-compensated", []string{"simulate", compensated, "REGISTER", "ORDER_APPROVED", "DEALS_UNAVAILABLE", "ORDER_REVERTED", "DEAL_FAILED"}, 0},
		{"simulate-compensating", []string{"simulate", compensated, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED"}, 0},
		{"simulate-compensation-wrong-done", []string{"simulate", compensated, "REGISTER", "APPROVAL_TIMED_OUT", "DEAL_FAILED"}, 1},
		{"simulate-compensation-wrong-participant", []string{"simulate", compensated, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED@deals"}, 1},
		{"simulate-event-while-compensating", []string{"simulate", compensated, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_APPROVED"}, 1},
		{"simulate-after-compensation", []string{"simulate", compensated, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED", "DEAL_FAILED", "ORDER_APPROVED"}, 1},
		{"simulate-api-start", []string{"simulate", compensated, "PHONE_ORDER_TAKEN", "ORDER_REJECTED", "DEAL_UPDATED"}, 0},
		{"simulate-api-start-by-participant", []string{"simulate", compensated, "PHONE_ORDER_TAKEN@deals"}, 1},
		// Language v2: decisions, parallel steps, mappings, contracts.
		{"validate-v2", []string{"validate", rebalance}, 0},
		{"render-v2-mermaid", []string{"render", rebalance}, 0},
		{"render-v2-dot", []string{"render", "--format", "dot", rebalance}, 0},
		{"simulate-v2-decision-risky", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 80}}`}, 0},
		{"simulate-v2-parallel", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 10}}`,
			"ORDER_PLACED", `CASH_RESERVED={"cash": {"reserved": "1500.50"}}`, `ORDER_PLACED={"orders": ["o-1", "o-2"]}`, "ORDER_PLACED"}, 0},
		{"simulate-v2-parallel-running", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 10}}`, "ORDER_PLACED"}, 0},
		{"simulate-v2-parallel-fails", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 10}}`,
			"ORDER_PLACED", "CASH_SHORT", "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_CANCELLED"}, 0},
		{"simulate-v2-compensation-batch", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 10}}`,
			"ORDER_PLACED", "CASH_SHORT", "ORDER_CANCELLED", "CASH_RELEASED"}, 1},
		{"simulate-v2-approval", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 99}}`,
			`REBALANCE_APPROVED={"approval": {"by": "client"}}`, "ORDER_PLACED", "ORDER_PLACED", "ORDER_PLACED", "CASH_RESERVED"}, 0},
		{"simulate-v2-payload-not-json", []string{"simulate", rebalance, "REBALANCE_REQUESTED=@testdata/payloads/bad_plan.json"}, 2},
		{"simulate-v2-schema", []string{"simulate", "--payload", "REBALANCE_REQUESTED=testdata/payloads/bad_plan.json", rebalance, "REBALANCE_REQUESTED"}, 1},
		{"simulate-v2-writes", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk": {"score": 10}, "plan": {}}`}, 1},
		{"simulate-v2-empty-fan-out", []string{"simulate", rebalance, `REBALANCE_REQUESTED={"plan": {"portfolio_id": "P", "cash_needed": "1", "lines": []}}`, `RISK_CHECKED={"risk": {"score": 10}}`}, 0},
		{"simulate-v2-missing-payload", []string{"simulate", "--payload", planFile, rebalance, "REBALANCE_REQUESTED", "RISK_CHECKED"}, 1},
		{"simulate-bad-payload-arg", []string{"simulate", rebalance, "REBALANCE_REQUESTED=[1]"}, 2},
		{"simulate-missing-payload-file", []string{"simulate", "--payload", "X=testdata/payloads/missing.json", rebalance, "REBALANCE_REQUESTED"}, 2},
		// BASKET_ORDER: a decision on profile's check, a fan-out over the
		// lines; a refused line reverts the applied ones (not itself).
		{"validate-basket", []string{"validate", basket}, 0},
		{"simulate-basket-executed", []string{"simulate", "--payload", basketFile, basket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check": {"sufficient": true, "reason": ""}}`,
			"ORDER_APPROVED", "ORDER_APPROVED", `BASKET_EXECUTED={"basket_result": {"status": "executed", "reason": ""}}`}, 0},
		{"simulate-basket-rejected", []string{"simulate", "--payload", basketFile, basket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check": {"sufficient": false, "reason": "insufficient cash"}}`,
			`BASKET_REJECTED={"basket_result": {"status": "rejected", "reason": "insufficient cash"}}`}, 0},
		{"simulate-basket-line-refused", []string{"simulate", "--payload", basketFile, basket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check": {"sufficient": true, "reason": ""}}`,
			"ORDER_APPROVED", `ORDER_REJECTED={"deal_context": {"deal_id": "d2", "reason": "insufficient holdings"}}`, "ORDER_REVERTED", "BASKET_FAILED"}, 0},
		// Migrations.
		{"validate-migration", []string{"validate", "--sagas", "../../sagas", mco12}, 0},
		{"validate-migration-bad", []string{"validate", "--sagas", "../../sagas", badMig}, 1},
		{"migrate-dry-run", []string{"migrate", "--dry-run", "--sagas", "../../sagas", mco12, "testdata/instances/approved_v1.json"}, 0},
		{"migrate-finished", []string{"migrate", "--dry-run", "--sagas", "../../sagas", mco12, "testdata/instances/finished_v1.json"}, 1},
		{"migrate-without-dry-run", []string{"migrate", "--sagas", "../../sagas", mco12, "testdata/instances/approved_v1.json"}, 2},
		{"migrate-bad-migration", []string{"migrate", "--dry-run", "--sagas", "../../sagas", badMig, "testdata/instances/approved_v1.json"}, 1},
		{"migrate-api-detail", []string{"migrate", "--dry-run", "--sagas", "../../sagas", mco12, "testdata/instances/detail_v1.json"}, 0},
		{"migrate-not-an-instance", []string{"migrate", "--dry-run", "--sagas", "../../sagas", mco12, "testdata/payloads/plan.json"}, 2},
		{"migrate-all-without-saga", []string{"migrate", "--apply", "--url", "http://127.0.0.1:1", "--all", "--from", "1", "--to", "2", "--reason", "x"}, 2},
		{"migrate-all-with-ids", []string{"migrate", "--dry-run", "--url", "http://127.0.0.1:1", "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "2", "saga-1"}, 2},
		{"migrate-state-without-all", []string{"migrate", "--apply", "--url", "http://127.0.0.1:1", "--to", "2", "--reason", "x", "--state", "DRAFT", "saga-1"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSagactl(t, tt.args...)
			if got.code != tt.wantCode {
				t.Errorf("exit = %d, want %d\n%s", got.code, tt.wantCode, got)
			}
			path := filepath.Join("testdata", "golden", tt.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
					t.Fatalf("update golden: %v", err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (go test -update creates it): %v", err)
			}
			if got.String() != string(want) {
				t.Errorf("sagactl %s: output differs from %s\ngot:\n%s\nwant:\n%s", strings.Join(tt.args, " "), path, got, want)
			}
		})
	}
}

// TestValidateJSON checks that --format json is a JSON array of
// definition.Problem with positions, and [] when all files are valid.
func TestValidateJSON(t *testing.T) {
	tests := []struct {
		name      string
		files     []string
		wantCode  int
		wantFiles []string
	}{
		{"valid", []string{shipped}, 0, nil},
		{"invalid", []string{shipped, "testdata/bad.yaml", "testdata/broken_yaml.yaml"}, 1, []string{"testdata/bad.yaml", "testdata/broken_yaml.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSagactl(t, append([]string{"validate", "--format", "json"}, tt.files...)...)
			if got.code != tt.wantCode {
				t.Fatalf("exit = %d, want %d\n%s", got.code, tt.wantCode, got)
			}
			var problems []definition.Problem
			if err := json.Unmarshal([]byte(got.stdout), &problems); err != nil {
				t.Fatalf("stdout is not a JSON array of problems: %v\n%s", err, got.stdout)
			}
			if problems == nil {
				t.Fatalf("stdout = %q, want a JSON array", got.stdout)
			}
			seen := map[string]bool{}
			for _, p := range problems {
				seen[p.File] = true
				if p.Line == 0 || p.Rule == "" || p.Message == "" {
					t.Errorf("problem %+v lacks a position, rule or message", p)
				}
			}
			for _, f := range tt.wantFiles {
				if !seen[f] {
					t.Errorf("no problem for %s in %v", f, problems)
				}
			}
			if len(tt.wantFiles) == 0 && len(problems) != 0 {
				t.Errorf("problems = %v, want none", problems)
			}
		})
	}
}

// TestRenderMatchesEngineGolden ties the command to the engine's golden
// diagrams: version 2's, which docs/manual-create-order.md shows, and
// version 1's.
func TestRenderMatchesEngineGolden(t *testing.T) {
	for _, tc := range []struct{ file, stem string }{{shipped, "manual_create_order"}, {shippedV1, "manual_create_order.v1"}} {
		for format, ext := range map[string]string{"mermaid": ".mmd", "dot": ".dot"} {
			got := runSagactl(t, "render", "--format", format, tc.file)
			want, err := os.ReadFile(filepath.Join("..", "..", "engine", "testdata", tc.stem+ext))
			if err != nil {
				t.Fatal(err)
			}
			if got.code != 0 || got.stdout != string(want) {
				t.Errorf("render --format %s %s = exit %d, stdout differs from engine/testdata/%s%s:\n%s", format, tc.file, got.code, tc.stem, ext, got)
			}
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args       []string
		wantFormat string
		wantPos    []string
	}{
		{[]string{"a", "b"}, "text", []string{"a", "b"}},
		{[]string{"--format", "json", "a"}, "json", []string{"a"}},
		{[]string{"a", "--format=json", "b"}, "json", []string{"a", "b"}},
		{[]string{"a", "--", "--format=json"}, "text", []string{"a", "--format=json"}},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		format := fs.String("format", "text", "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Fatalf("parseInterspersed(%q): %v", tt.args, err)
		}
		if *format != tt.wantFormat || strings.Join(pos, "|") != strings.Join(tt.wantPos, "|") {
			t.Errorf("parseInterspersed(%q) = format %s, args %q; want %s, %q", tt.args, *format, pos, tt.wantFormat, tt.wantPos)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]string{"10m": "10m", "2s": "2s", "1m0s": "1m", "1h": "1h", "1h30m": "1h30m", "90s": "1m30s", "500ms": "500ms"} {
		d, err := time.ParseDuration(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := duration(d); got != want {
			t.Errorf("duration(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestDocsAreCurrent checks that the diagrams and transcripts pasted in the
// docs are what sagactl prints today.
func TestDocsAreCurrent(t *testing.T) {
	docs := map[string]string{}
	for _, f := range []string{"manual-create-order.md", "sagactl.md", "basket-order.md"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "docs", f))
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = string(data)
	}
	const mco, mcoV1 = "sagas/manual_create_order.yaml", "sagas/manual_create_order.v1.yaml"
	const (
		docRebalance = "engine/definition/testdata/good/rebalance_portfolio.yaml"
		docPlan      = "REBALANCE_REQUESTED=cmd/sagactl/testdata/payloads/plan.json"
		docMig       = "engine/definition/testdata/migrations/good/manual_create_order.1-2.yaml"
		docBasket    = "sagas/basket_order.yaml"
		docBasketP   = "BASKET_REGISTERED=cmd/sagactl/testdata/payloads/basket.json"
	)
	// form is how the doc shows a run: "" a transcript ("$ sagactl ARGS",
	// with `; echo "exit $?"` and the exit line when it is not 0, then
	// stdout and stderr), "output" the output alone (a diagram block),
	// "no-exit" a transcript without the exit status.
	tests := []struct {
		doc      string
		args     []string
		wantCode int
		form     string
	}{
		{"manual-create-order.md", []string{"render", "--format", "mermaid", mco}, 0, "output"},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVED", "DEAL_UPDATED"}, 0, ""},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "ORDER_REJECTED", "DEAL_UPDATED"}, 0, ""},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "PROFILE_UNAVAILABLE", "ORDER_REVERTED", "DEAL_FAILED"}, 0, ""},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED", "DEAL_FAILED"}, 0, ""},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVED", "DEALS_UNAVAILABLE", "DEAL_FAILED", "ORDER_REVERTED", "DEAL_FAILED"}, 0, ""},
		{"manual-create-order.md", []string{"simulate", mco, "REGISTER", "ORDER_REJECTED", "ORDER_APPROVED"}, 1, "no-exit"},
		{"sagactl.md", []string{"validate", mco}, 0, ""},
		{"sagactl.md", []string{"validate", mcoV1}, 0, ""},
		{"sagactl.md", []string{"validate", mco, "cmd/sagactl/testdata/bad.yaml"}, 1, ""},
		{"sagactl.md", []string{"validate", "sagas/missing.yaml"}, 2, ""},
		{"sagactl.md", []string{"validate", "--format", "json", "cmd/sagactl/testdata/broken_yaml.yaml"}, 1, "no-exit"},
		{"sagactl.md", []string{"render", "--format", "dot", mco}, 0, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVED", "DEAL_UPDATED"}, 0, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVED"}, 0, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "APPROVAL_TIMED_OUT"}, 0, ""},
		{"sagactl.md", []string{"simulate", "engine/definition/testdata/good/compensated_order.yaml", "REGISTER", "ORDER_APPROVED", "DEALS_UNAVAILABLE", "ORDER_REVERTED", "DEAL_FAILED"}, 0, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "ORDER_REJECTED", "ORDER_APPROVED"}, 1, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVED@deals"}, 1, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "ORDER_APPROVD"}, 1, ""},
		{"sagactl.md", []string{"simulate", mco, "REGISTER", "APPROVAL_TIMED_OUT", "ORDER_REVERTED", "DEAL_FAILED", "DEAL_UPDATED"}, 1, ""},
		// Language v2.
		{"sagactl.md", []string{"simulate", "--payload", docPlan, docRebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk":{"score":80}}`}, 0, ""},
		{"sagactl.md", []string{"simulate", "--payload", docPlan, docRebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk":{"score":10}}`,
			"ORDER_PLACED", "CASH_RESERVED", "ORDER_PLACED", "ORDER_PLACED"}, 0, ""},
		{"sagactl.md", []string{"simulate", "--payload", docPlan, docRebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk":{"score":10}}`,
			"ORDER_PLACED", "CASH_SHORT", "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_CANCELLED"}, 0, ""},
		{"sagactl.md", []string{"simulate", "--payload", docPlan, docRebalance, "REBALANCE_REQUESTED", `RISK_CHECKED={"risk":{"score":10},"plan":{}}`}, 1, ""},
		// The second shipped saga.
		{"basket-order.md", []string{"render", docBasket}, 0, "output"},
		{"basket-order.md", []string{"simulate", "--payload", docBasketP, docBasket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check":{"sufficient":true,"reason":""}}`,
			"ORDER_APPROVED", "ORDER_APPROVED", `BASKET_EXECUTED={"basket_result":{"status":"executed","reason":""}}`}, 0, ""},
		{"basket-order.md", []string{"simulate", "--payload", docBasketP, docBasket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check":{"sufficient":false,"reason":"insufficient cash"}}`,
			`BASKET_REJECTED={"basket_result":{"status":"rejected","reason":"insufficient cash"}}`}, 0, ""},
		{"basket-order.md", []string{"simulate", "--payload", docBasketP, docBasket, "BASKET_REGISTERED", `BASKET_CHECKED={"basket_check":{"sufficient":true,"reason":""}}`,
			"ORDER_APPROVED", `ORDER_REJECTED={"deal_context":{"deal_id":"d2","reason":"insufficient holdings"}}`, "ORDER_REVERTED", "BASKET_FAILED"}, 0, ""},
		{"sagactl.md", []string{"validate", "--sagas", "sagas", docMig}, 0, ""},
		{"sagactl.md", []string{"migrate", "--dry-run", "--sagas", "sagas", docMig, "cmd/sagactl/testdata/instances/approved_v1.json"}, 0, ""},
		{"sagactl.md", []string{"migrate", "--dry-run", "--sagas", "sagas", docMig, "cmd/sagactl/testdata/instances/finished_v1.json"}, 1, ""},
	}
	// The docs show paths relative to the repository root.
	t.Chdir(filepath.Join("..", ".."))
	for _, tt := range tests {
		got := runSagactl(t, tt.args...)
		quoted := make([]string, len(tt.args))
		for i, a := range tt.args {
			quoted[i] = shellQuote(a)
		}
		cmd := "sagactl " + strings.Join(quoted, " ")
		if got.code != tt.wantCode {
			t.Fatalf("%s: exit %d, want %d\n%s", cmd, got.code, tt.wantCode, got)
		}
		want := got.stdout + got.stderr
		switch {
		case tt.form == "no-exit" || tt.form == "" && tt.wantCode == 0:
			want = "$ " + cmd + "\n" + want
		case tt.form == "":
			want = "$ " + cmd + "; echo \"exit $?\"\n" + want + fmt.Sprintf("exit %d\n", tt.wantCode)
		}
		if !strings.Contains(docs[tt.doc], want) {
			t.Errorf("docs/%s does not show the current output of %s; paste:\n%s", tt.doc, cmd, want)
		}
	}
}

// shellQuote quotes an argument the way the docs show it: in single quotes
// when the shell would otherwise change it (a JSON payload).
func shellQuote(a string) string {
	if strings.ContainsAny(a, " \"'{}$*?;&|<>()") {
		return "'" + a + "'"
	}
	return a
}

// TestValidateHostileFiles: sagactl reads no more of a file than the parser
// accepts and prints a bounded list of problems, whatever the file holds.
func TestValidateHostileFiles(t *testing.T) {
	dir := t.TempDir()
	var bomb strings.Builder
	bomb.WriteString("saga: BOMB\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n")
	bomb.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n  - &T { on: GO, by: shop, from: [S0")
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&bomb, ", S%d", i)
	}
	bomb.WriteString("], to: DONE }\n" + strings.Repeat("  - *T\n", 1000) + "final: [DONE]\n")
	files := map[string]string{
		"huge.yaml": strings.Repeat("# padding\n", 3*definition.MaxFileBytes/10),
		"bomb.yaml": bomb.String(),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		file      string
		wantRule  string
		wantCount int
	}{
		{"huge.yaml", "file-too-large", 1},
		{"bomb.yaml", "too-many-problems", definition.MaxProblems + 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := runSagactl(t, "validate", "--format", "json", filepath.Join(dir, tt.file))
			if got.code != exitInvalid {
				t.Fatalf("exit = %d, want %d\n%.2000s", got.code, exitInvalid, got)
			}
			var problems []definition.Problem
			if err := json.Unmarshal([]byte(got.stdout), &problems); err != nil {
				t.Fatalf("stdout is not a JSON array of problems: %v", err)
			}
			if len(problems) != tt.wantCount || problems[len(problems)-1].Rule != tt.wantRule {
				t.Errorf("got %d problems, the last %+v; want %d, the last %s", len(problems), problems[len(problems)-1], tt.wantCount, tt.wantRule)
			}
		})
	}
}

// TestHostileInputs: the files simulate and migrate read are bounded, and a
// payload that makes a condition expensive is refused by the cost limit.
func TestHostileInputs(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`{"x": "`+strings.Repeat("a", maxPayloadBytes)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	bigInstance := filepath.Join(dir, "instance.json")
	if err := os.WriteFile(bigInstance, []byte(`{"id": "`+strings.Repeat("a", maxInstanceBytes)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	hostile := filepath.Join(dir, "hostile.yaml")
	if err := os.WriteFile(hostile, []byte(`saga: HOSTILE
version: 1
participants: { shop: { topic: SHOP } }
transitions:
  - { on: GO, by: shop, from: [], when: "event.l.all(a, event.l.all(b, event.l.all(c, a + b + c >= 0)))", to: A }
  - { on: GO, by: shop, from: [], to: B }
final: [A, B]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	list := strings.TrimSuffix(strings.Repeat("1,", 2000), ",")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"big payload file", []string{"simulate", "--payload", "X=" + big, rebalance, "REBALANCE_REQUESTED"}, exitUsage, "larger than"},
		{"big instance file", []string{"migrate", "--dry-run", "--sagas", "../../sagas", mco12, bigInstance}, exitUsage, "larger than"},
		{"expensive condition", []string{"simulate", hostile, `GO={"l": [` + list + `]}`}, exitInvalid, "costs more than the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSagactl(t, tt.args...)
			if got.code != tt.code || !strings.Contains(got.stderr, tt.want) {
				t.Errorf("exit %d, stderr %.300q; want exit %d and %q", got.code, got.stderr, tt.code, tt.want)
			}
			if len(got.stdout)+len(got.stderr) > 10_000 {
				t.Errorf("%d bytes of output", len(got.stdout)+len(got.stderr))
			}
		})
	}
}
