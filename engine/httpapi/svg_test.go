package httpapi_test

import (
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// paymentSaga has a start whose participant compensates (CANCEL_ORDER,
// sent to shop by default) and whose command compensates (REFUND to bank,
// with its own retry), a start over the HTTP API and an exhausted retry.
const paymentSaga = `saga: PAYMENT
version: 3
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - on: ORDERED
    by: shop
    from: []
    to: PAYING
    compensate: { command: CANCEL_ORDER, done: ORDER_CANCELLED }
    send:
      to: bank
      command: CHARGE
      retry: { attempts: 3, backoff: 1s, exhausted: BANK_DOWN }
      compensate: { command: REFUND, done: REFUNDED, retry: { attempts: 4, backoff: 2s, max_backoff: 8s } }
  - on: PHONE_ORDER
    by: api
    roles: [cashier, shop-lead]
    from: []
    to: PAYING
    send: { to: bank, command: CHARGE, retry: { attempts: 3, backoff: 1s, exhausted: BANK_DOWN } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
  - { on: BANK_DOWN, by: engine, from: [PAYING], to: FAILED }
final: [PAID]
failed: [FAILED]
`

var update = flag.Bool("update", false, "rewrite the golden files in testdata/svg/")

// goldenSVG compares got with testdata/svg/name, or rewrites it with -update.
func goldenSVG(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "svg", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("update golden file: %v", err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatalf("update golden file: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test ./engine/httpapi -run %s -update creates it): %v", t.Name(), err)
	}
	if got != string(want) {
		t.Errorf("diagram differs from %s (go test ./engine/httpapi -run %s -update rewrites it; look at both in a browser)\ngot:\n%s", path, t.Name(), got)
	}
}

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

// TestRenderSVGGolden draws the shipped MANUAL_CREATE_ORDER (version 3
// with its compensations and the client's cancellation, and version 1), SUPPORT_CALLBACK (a start over
// the HTTP API) and PAYMENT into testdata/svg/*.svg.
func TestRenderSVGGolden(t *testing.T) {
	cat := testCatalog(t)
	for _, tc := range []struct {
		file  string
		model *engine.Model
	}{
		{"manual_create_order.svg", cat.Latest("MANUAL_CREATE_ORDER")},
		{"manual_create_order.v1.svg", mustGet(t, cat, "MANUAL_CREATE_ORDER", 1)},
		{"support_callback.svg", cat.Latest("SUPPORT_CALLBACK")},
		{"payment.svg", compile(t, "payment.yaml", paymentSaga)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			svg := httpapi.RenderSVG(tc.model, map[string]int64{"DRAFT": 2, "FAILED": 1})
			wellFormed(t, svg)
			goldenSVG(t, tc.file, svg)
		})
	}
}

func mustGet(tb testing.TB, cat *engine.Catalog, name string, version int) *engine.Model {
	tb.Helper()
	m, err := cat.Get(name, version)
	if err != nil {
		tb.Fatalf("catalog: %v", err)
	}
	return m
}

// svgText is one <text> of a diagram.
type svgText struct {
	class, text string
}

// svgLabels reads the diagram's edge labels (<g class="label">), each as
// its lines in order.
func svgLabels(tb testing.TB, svg string) [][]svgText {
	tb.Helper()
	var out [][]svgText
	dec := xml.NewDecoder(strings.NewReader(svg))
	var label []svgText
	inLabel, inText := false, false
	cls := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatalf("diagram is not well-formed XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			attr := func(name string) string {
				for _, a := range tk.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch {
			case tk.Name.Local == "g" && strings.HasPrefix(attr("class"), "label"):
				inLabel, label = true, nil
			case tk.Name.Local == "text" && inLabel:
				inText, cls = true, attr("class")
			}
		case xml.CharData:
			if inText {
				label = append(label, svgText{cls, string(tk)})
			}
		case xml.EndElement:
			switch {
			case tk.Name.Local == "text":
				inText = false
			case tk.Name.Local == "g" && inLabel:
				inLabel = false
				out = append(out, label)
			}
		}
	}
}

// labelStarting returns the label whose first line is first.
func labelStarting(tb testing.TB, labels [][]svgText, first string) []svgText {
	tb.Helper()
	for _, l := range labels {
		if len(l) > 0 && l[0].text == first {
			return l
		}
	}
	tb.Fatalf("no edge label starts with %q; labels: %v", first, labels)
	return nil
}

// TestRenderSVGLanguage checks, independently of the golden files, how the
// diagram shows starts over the HTTP API with their roles, compensations
// after what they undo, exhausted retries and failed states that
// compensate first; and that a definition without compensations shows none
// of it.
func TestRenderSVGLanguage(t *testing.T) {
	cat := testCatalog(t)
	const undo = "undo"
	tests := []struct {
		name  string
		model *engine.Model
		first string    // first line of the label
		want  []svgText // the whole label
	}{
		{"transition and send compensations, then an api start on the same edge", compile(t, "payment.yaml", paymentSaga), "ORDERED (shop)",
			[]svgText{{"", "ORDERED (shop)"}, {undo, "undo: CANCEL_ORDER → shop"}, {"", "→ CHARGE to bank"}, {undo, "undo: REFUND → bank"},
				{"", "PHONE_ORDER (api: cashier | shop-lead) → CHARGE to bank"}}},
		{"exhausted retries of the command that led there", compile(t, "payment.yaml", paymentSaga), "BANK_DOWN (engine: CHARGE retries exhausted)",
			[]svgText{{"", "BANK_DOWN (engine: CHARGE retries exhausted)"}}},
		{"shipped start", cat.Latest("MANUAL_CREATE_ORDER"), "REGISTER (deals)",
			[]svgText{{"", "REGISTER (deals)"}, {undo, "undo: FAIL_DEAL → deals"}, {"", "→ APPROVE_ORDER to profile"}, {undo, "undo: REVERT_ORDER → profile"}}},
		{"shipped send compensation only", cat.Latest("MANUAL_CREATE_ORDER"), "ORDER_APPROVED (profile) → APPROVE_DEAL to deals",
			[]svgText{{"", "ORDER_APPROVED (profile) → APPROVE_DEAL to deals"}, {undo, "undo: FAIL_DEAL → deals"}}},
		{"shipped: two commands' retries into one state, each named, and the operator's abort", cat.Latest("MANUAL_CREATE_ORDER"), "DEALS_UNAVAILABLE (engine: REJECT_DEAL retries exhausted) → NOTIFY to notification",
			[]svgText{{"", "DEALS_UNAVAILABLE (engine: REJECT_DEAL retries exhausted) → NOTIFY to notification"}, {"", "ABORT (engine) → NOTIFY to notification"}}},
		{"api start with its roles", cat.Latest("SUPPORT_CALLBACK"), "CALLBACK_REQUESTED (api: support-agent | support-lead) → NOTIFY to notification",
			[]svgText{{"", "CALLBACK_REQUESTED (api: support-agent | support-lead) → NOTIFY to notification"}}},
		{"version 1 has no compensation", mustGet(t, cat, "MANUAL_CREATE_ORDER", 1), "REGISTER (deals) → APPROVE_ORDER to profile",
			[]svgText{{"", "REGISTER (deals) → APPROVE_ORDER to profile"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := labelStarting(t, svgLabels(t, httpapi.RenderSVG(tt.model, nil)), tt.first)
			if len(got) != len(tt.want) {
				t.Fatalf("label = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}

	// Failed states: marked in a model with compensations, not otherwise.
	for _, tc := range []struct {
		model  *engine.Model
		failed string
		marked bool
	}{
		{cat.Latest("MANUAL_CREATE_ORDER"), "FAILED", true},
		{compile(t, "payment.yaml", paymentSaga), "FAILED", true},
		{mustGet(t, cat, "MANUAL_CREATE_ORDER", 1), "FAILED", false},
		{compile(t, "loopy.yaml", loopSaga), "GAVE_UP", false},
	} {
		svg := httpapi.RenderSVG(tc.model, nil)
		start := strings.Index(svg, `<g class="state failed" data-state="`+tc.failed+`">`)
		if start < 0 {
			t.Fatalf("%s: failed state %s is not drawn", tc.model, tc.failed)
		}
		box := svg[start : start+strings.Index(svg[start:], "</g>\n")]
		marked := strings.Contains(box, `<text class="compensates"`) && strings.Contains(box, ">⟲ compensates first</text>") &&
			strings.Contains(box, "first sends the compensations of the steps taken, newest first</title>")
		if marked != tc.marked {
			t.Errorf("%s: failed state %s marked as compensating first = %t, want %t:\n%s", tc.model, tc.failed, marked, tc.marked, box)
		}
		if !tc.marked && (strings.Contains(svg, `<text class="undo"`) || strings.Contains(svg, ">undo: ") || strings.Contains(svg, `<text class="compensates"`)) {
			t.Errorf("%s has no compensation but its diagram mentions one", tc.model)
		}
	}

	// The tooltip of an edge holds every line, continuation lines indented.
	svg := httpapi.RenderSVG(compile(t, "payment.yaml", paymentSaga), nil)
	if want := "<title>ORDERED (shop)\n  undo: CANCEL_ORDER → shop\n  → CHARGE to bank\n  undo: REFUND → bank\nPHONE_ORDER (api: cashier | shop-lead) → CHARGE to bank</title>"; !strings.Contains(svg, want) {
		t.Errorf("diagram lacks the edge tooltip %q", want)
	}
}

// BenchmarkRenderSVGLarge draws a chain of n states, each left by a
// command with retries and by the engine when they are exhausted (the
// label of every such edge names the command).
func BenchmarkRenderSVGLarge(b *testing.B) {
	for _, n := range []int{100, 300} {
		var y strings.Builder
		y.WriteString("saga: LARGE\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n")
		y.WriteString("  - { on: E0, by: shop, from: [], to: S0, send: { to: shop, command: C0, retry: { attempts: 2, backoff: 1s, exhausted: X0 } } }\n")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&y, "  - { on: E%d, by: shop, from: [S%d], to: S%d, send: { to: shop, command: C%d, retry: { attempts: 2, backoff: 1s, exhausted: X%d } } }\n", i, i-1, i, i, i)
		}
		for i := 0; i < n; i++ {
			fmt.Fprintf(&y, "  - { on: X%d, by: engine, from: [S%d], to: FAILED }\n", i, i)
		}
		fmt.Fprintf(&y, "  - { on: DONE, by: shop, from: [S%d], to: END }\nfinal: [END]\nfailed: [FAILED]\n", n-1)
		m := compile(b, "large.yaml", y.String())
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				httpapi.RenderSVG(m, nil)
			}
		})
	}
}

// TestRenderSVGLabelsDoNotOverlap: no edge label covers another label or a
// state's box, even where the label's preferred spots are all taken (the
// shipped saga's DRAFT → FAILED label).
func TestRenderSVGLabelsDoNotOverlap(t *testing.T) {
	cat := testCatalog(t)
	type box struct {
		what           string
		x0, y0, x1, y1 float64
	}
	for _, m := range []*engine.Model{cat.Latest("MANUAL_CREATE_ORDER"), mustGet(t, cat, "MANUAL_CREATE_ORDER", 1),
		cat.Latest("SUPPORT_CALLBACK"), compile(t, "payment.yaml", paymentSaga), compile(t, "loopy.yaml", loopSaga)} {
		svg := httpapi.RenderSVG(m, nil)
		var labels, states []box
		dec := xml.NewDecoder(strings.NewReader(svg))
		var group string // class of the enclosing <g>
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			el, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			a := map[string]string{}
			for _, at := range el.Attr {
				a[at.Name.Local] = at.Value
			}
			if el.Name.Local == "g" {
				group = a["class"] + " " + a["data-state"]
				continue
			}
			if el.Name.Local != "rect" {
				continue
			}
			var x, y, w, h float64
			if _, err := fmt.Sscan(a["x"], &x); err != nil {
				t.Fatalf("%s: rect x %q: %v", m, a["x"], err)
			}
			fmt.Sscan(a["y"], &y)
			fmt.Sscan(a["width"], &w)
			fmt.Sscan(a["height"], &h)
			switch {
			case strings.HasPrefix(group, "label"):
				// The drawn background reaches 3px beyond the text on each side.
				labels = append(labels, box{"label " + fmt.Sprint(len(labels)), x + 3, y, x + w - 3, y + h})
			case a["class"] == "box":
				states = append(states, box{"state " + group, x, y, x + w, y + h})
			}
		}
		if len(labels) == 0 || len(states) != len(m.States()) {
			t.Fatalf("%s: read %d labels and %d state boxes, want some labels and %d boxes", m, len(labels), len(states), len(m.States()))
		}
		overlap := func(a, b box) bool { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 }
		for i, a := range labels {
			for _, b := range labels[i+1:] {
				if overlap(a, b) {
					t.Errorf("%s: %s %+v overlaps %s %+v", m, a.what, a, b.what, b)
				}
			}
			for _, b := range states {
				if overlap(a, b) {
					t.Errorf("%s: %s %+v overlaps %s %+v", m, a.what, a, b.what, b)
				}
			}
		}
	}
}
