package httpapi_test

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// loopSaga has a cycle (CHECKING ⇄ WAITING), a self-loop and a state two
// layers below its source.
const loopSaga = `saga: LOOPY
version: 2
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - { on: OPEN, by: shop, from: [], to: CHECKING, send: { to: bank, command: CHECK } }
  - { on: NOT_YET, by: bank, from: [CHECKING], to: WAITING }
  - { on: AGAIN, by: shop, from: [WAITING], to: CHECKING, send: { to: bank, command: CHECK } }
  - { on: PING, by: shop, from: [WAITING], to: WAITING }
  - { on: OK, by: bank, from: [CHECKING], to: DONE }
  - { on: GIVE_UP, by: shop, from: [CHECKING, WAITING], to: GAVE_UP }
final: [DONE]
failed: [GAVE_UP]
`

func compile(tb testing.TB, name, src string) *engine.Model {
	tb.Helper()
	def, problems := definition.Parse(name, []byte(src))
	if len(problems) > 0 {
		tb.Fatalf("parse %s: %v", name, problems)
	}
	m, err := engine.Compile(def)
	if err != nil {
		tb.Fatalf("compile %s: %v", name, err)
	}
	return m
}

// wellFormed parses svg as XML.
func wellFormed(tb testing.TB, svg string) {
	tb.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatalf("diagram is not well-formed XML: %v\n%s", err, svg)
		}
	}
}

func TestRenderSVG(t *testing.T) {
	shipped, _ := engine.LoadCatalog(sagas.FS)
	for _, tc := range []struct {
		name   string
		model  *engine.Model
		counts map[string]int64
		want   []string
	}{
		{"shipped", shipped.Latest("MANUAL_CREATE_ORDER"), map[string]int64{"DRAFT": 12},
			[]string{`<g class="count" data-state="DRAFT"><title>instances in DRAFT</title>`, `>12</text>`,
				`<g class="state failed" data-state="FAILED">`, `<g class="state final" data-state="NOTIFICATION">`,
				`<path class="edge failed engine"`, "timeout 10m"}},
		{"cycle and self-loop", compile(t, "loopy.yaml", loopSaga), nil,
			[]string{`data-state="CHECKING"`, `data-state="WAITING"`, "AGAIN (shop) → CHECK to bank",
				"PING (shop)", `<g class="count zero" data-state="DONE">`, "LOOPY v2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svg := httpapi.RenderSVG(tc.model, tc.counts)
			wellFormed(t, svg)
			for _, want := range tc.want {
				if !strings.Contains(svg, want) {
					t.Errorf("diagram lacks %q", want)
				}
			}
			for _, st := range tc.model.States() {
				if n := strings.Count(svg, `<g class="count`); n != len(tc.model.States()) {
					t.Fatalf("%d count badges, want %d", n, len(tc.model.States()))
				}
				if !strings.Contains(svg, `data-state="`+st+`"`) {
					t.Errorf("state %s is not drawn", st)
				}
			}
			if again := httpapi.RenderSVG(tc.model, tc.counts); again != svg {
				t.Error("RenderSVG is not deterministic")
			}
		})
	}
	// Names are escaped: a description with markup stays text.
	m := compile(t, "esc.yaml", strings.Replace(loopSaga, "version: 2", "version: 2\ndescription: a <b>bold</b> & risky saga\nstates:\n  WAITING: { description: \"waits for <script>\" }", 1))
	svg := httpapi.RenderSVG(m, nil)
	wellFormed(t, svg)
	if strings.Contains(svg, "<script>") {
		t.Error("a state description was not escaped")
	}
}

func BenchmarkRenderSVG(b *testing.B) {
	cat, _ := engine.LoadCatalog(sagas.FS)
	m := cat.Latest("MANUAL_CREATE_ORDER")
	counts := map[string]int64{"DRAFT": 3, "APPROVED": 1}
	size := 0
	for b.Loop() {
		size = len(httpapi.RenderSVG(m, counts))
	}
	b.ReportMetric(float64(size), "svg-bytes")
}
