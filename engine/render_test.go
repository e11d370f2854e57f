package engine

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatalf("update golden file: %v", err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test ./engine -run %s -update rewrites it)\ngot:\n%s\nwant:\n%s", name, path, t.Name(), got, want)
	}
}

func TestRenderGoldenCompensated(t *testing.T) {
	m := mustCompile(t, compensatedDef(t))
	for _, r := range []struct {
		file   string
		render func(*Model) string
	}{
		{"compensated_order.mmd", RenderMermaid},
		{"compensated_order.dot", RenderDOT},
	} {
		t.Run(r.file, func(t *testing.T) { golden(t, r.file, r.render(m)) })
	}
}

// TestRenderCompensationsAndAPIStarts checks how starts over the HTTP API
// and compensations are drawn, independently of the golden files.
func TestRenderCompensationsAndAPIStarts(t *testing.T) {
	m := mustCompile(t, compensatedDef(t))
	mmd, dot := RenderMermaid(m), RenderDOT(m)
	tests := []struct {
		name, text, want string
	}{
		{"mermaid compensations", mmd, "    [*] --> DRAFT : REGISTER (deals, undo FAIL_DEAL → deals) / APPROVE_ORDER → profile (undo REVERT_ORDER → profile)\n"},
		{"mermaid api start", mmd, "    [*] --> DRAFT : PHONE_ORDER_TAKEN (api, roles deals-trader or deals-admin) / APPROVE_ORDER → profile (undo REVERT_ORDER → profile)\n"},
		{"mermaid failed note", mmd, "    note right of FAILED : Something went wrong, every effect has been undone and the client told. — entering it first sends the compensations of the steps taken, newest first\n"},
		{"dot compensations", dot, "    __start -> \"DRAFT\" [label=\"REGISTER (deals)\\nundo: FAIL_DEAL → deals\\nAPPROVE_ORDER → profile\\nretry 5×, 2s..1m\\nundo: REVERT_ORDER → profile\"];\n"},
		{"dot api start", dot, "    __start -> \"DRAFT\" [label=\"PHONE_ORDER_TAKEN (api, roles deals-trader or deals-admin)\\nAPPROVE_ORDER → profile\\nretry 5×, 2s..1m\\nundo: REVERT_ORDER → profile\"];\n"},
		{"dot failed state", dot, "    \"FAILED\" [label=\"FAILED\\n⟲ compensates first\""},
	}
	for _, tt := range tests {
		if !strings.Contains(tt.text, tt.want) {
			t.Errorf("%s: output does not contain %q:\n%s", tt.name, tt.want, tt.text)
		}
	}
	// Without compensations, nothing of it shows.
	plain := RenderMermaid(mustCompile(t, handDef(t))) + RenderDOT(mustCompile(t, handDef(t)))
	for _, word := range []string{"undo", "compensat", "roles"} {
		if strings.Contains(plain, word) {
			t.Errorf("MANUAL_CREATE_ORDER v1 drawing mentions %q", word)
		}
	}
}

// TestRenderGolden draws MANUAL_CREATE_ORDER: version 1 (hand-built and
// sagas/manual_create_order.v1.yaml) into testdata/manual_create_order.v1.*,
// version 2 (sagas/manual_create_order.v2.yaml, with its compensations) into
// testdata/manual_create_order.v2.*, version 3 (the shipped
// sagas/manual_create_order.yaml, with the client's cancellation) into
// testdata/manual_create_order.* (cmd/sagactl checks that `sagactl render`
// prints the same).
func TestRenderGolden(t *testing.T) {
	for _, mc := range models(t) {
		m := mc.m
		for _, r := range []struct {
			file   string
			render func(*Model) string
		}{
			{mc.golden + ".mmd", RenderMermaid},
			{mc.golden + ".dot", RenderDOT},
		} {
			t.Run(mc.src+"/"+r.file, func(t *testing.T) {
				got := r.render(m)
				golden(t, r.file, got)
				if again := r.render(m); again != got {
					t.Errorf("second render differs from the first")
				}
			})
		}
	}
}

// TestRenderContent checks the rules of the drawing independently of the
// golden files.
func TestRenderContent(t *testing.T) {
	m := mustCompile(t, handDef(t))
	mmd, dot := RenderMermaid(m), RenderDOT(m)
	tests := []struct {
		name, text, want string
	}{
		{"mermaid header", mmd, "\nstateDiagram-v2\n"},
		{"mermaid start", mmd, "    [*] --> DRAFT : REGISTER (deals) / APPROVE_ORDER → profile\n"},
		{"mermaid seed row", mmd, "    REJECTED --> NOTIFICATION : DEAL_UPDATED (deals) / NOTIFY → notification\n"},
		{"mermaid timeout", mmd, "    DRAFT --> FAILED : APPROVAL_TIMED_OUT (engine, timeout 10m)\n"},
		{"mermaid retries", mmd, "    APPROVED --> FAILED : DEALS_UNAVAILABLE (engine, APPROVE_DEAL retries exhausted)\n"},
		{"mermaid final", mmd, "    NOTIFICATION --> [*]\n"},
		{"mermaid failure class", mmd, "    class FAILED failure\n"},
		{"mermaid note without semicolon", mmd, "    note right of DRAFT : The deal is registered, profile is checking the balance.\n"},
		{"dot start", dot, "    __start -> \"DRAFT\" [label=\"REGISTER (deals)\\nAPPROVE_ORDER → profile\\nretry 5×, 2s..1m\"];\n"},
		{"dot final", dot, "    \"NOTIFICATION\" [label=\"NOTIFICATION\", shape=doublecircle"},
		{"dot failed red", dot, "    \"FAILED\" [label=\"FAILED\", shape=doubleoctagon, style=filled, color=red"},
		{"dot timeout dashed", dot, "    \"DRAFT\" -> \"FAILED\" [label=\"APPROVAL_TIMED_OUT (engine, timeout 10m)\", style=dashed, color=red, fontcolor=red];\n"},
		{"dot timeout in state", dot, "    \"DRAFT\" [label=\"DRAFT\\n⏱ 10m\""},
	}
	for _, tt := range tests {
		if !strings.Contains(tt.text, tt.want) {
			t.Errorf("%s: output does not contain %q:\n%s", tt.name, tt.want, tt.text)
		}
	}
}

func TestRenderEscapes(t *testing.T) {
	d := handDef(t)
	d.Saga = `Q"UOTE`
	d.States["DRAFT"].Description = "say \"hi\"; then: # go\\on\nnext"
	m := mustCompile(t, d)
	if got, want := RenderDOT(m), `tooltip="say \"hi\"; then: # go\\on\nnext"`; !strings.Contains(got, want) {
		t.Errorf("DOT does not contain %s:\n%s", want, got)
	}
	if got, want := RenderDOT(m), `digraph "Q\"UOTE v1" {`; !strings.Contains(got, want) {
		t.Errorf("DOT does not contain %s", want)
	}
	if got, want := RenderMermaid(m), "note right of DRAFT : say \"hi\", then - No. go\\on next\n"; !strings.Contains(got, want) {
		t.Errorf("Mermaid does not contain %q:\n%s", want, got)
	}
}

func TestShortDuration(t *testing.T) {
	for _, tt := range []struct{ in, want string }{{"10m", "10m"}, {"2s", "2s"}, {"1h30m", "1h30m"}, {"2h", "2h"}, {"1m30s", "1m30s"}, {"500ms", "500ms"}} {
		d, err := time.ParseDuration(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := shortDuration(d); got != tt.want {
			t.Errorf("shortDuration(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestRenderV2 draws the definition that uses every construct of the
// language's second version: the goldens, and what each construct must
// show whatever the layout.
func TestRenderV2(t *testing.T) {
	m := v2Model(t, rebalanceFile)
	mmd, dot := RenderMermaid(m), RenderDOT(m)
	golden(t, "rebalance_portfolio.mmd", mmd)
	golden(t, "rebalance_portfolio.dot", dot)
	for _, want := range []string{
		"CHECKING_RISK --> AWAITING_APPROVAL : RISK_CHECKED (profile) [event.risk.score › 70 || size(context.plan.lines) › 20] / ASK_APPROVAL → notification",
		"CHECKING_RISK --> TRADING : RISK_CHECKED (profile) [otherwise] / at once - PLACE_ORDER → deals for each context.plan.lines",
		"+ RESERVE_CASH → profile (undo - RELEASE_CASH → profile), join all - then TRADED, else TRADING_FAILED",
		"TRADING --> DONE : TRADED (engine, join all done)",
		"TRADING --> FAILED : TRADING_FAILED (engine, join all failed)",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q", want)
		}
	}
	for _, want := range []string{
		`[event.risk.score > 70 || size(context.plan.lines) > 20]`,
		`\n[otherwise]\n`,
		`contract: schema; writes plan`,
		`payload {portfolio_id, lines, requested_by}`,
		`\n‖ PLACE_ORDER → deals for each context.plan.lines (undo: CANCEL_ORDER → deals)`,
		`\njoin all: then TRADED, else TRADING_FAILED"`,
		`"TRADING" -> "FAILED" [label="TRADING_FAILED (engine, join all failed)", style=dotted`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q", want)
		}
	}
}
