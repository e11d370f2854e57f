package httpapi

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Diagram geometry (pixels).
const (
	nodeH      = 46.0  // state box height
	layerGap   = 120.0 // vertical space between two layers' boxes
	nodeGap    = 48.0  // horizontal space between boxes of one layer
	dummyW     = 24.0  // width reserved for an edge crossing a layer
	margin     = 24.0
	labelLineH = 14.0
	labelFont  = 11.0
	nameFont   = 13.0
	startR     = 9.0
	startID    = "\x00start"
)

// textWidth estimates the width of s in a sans-serif font of size px.
func textWidth(s string, px float64) float64 {
	w := 0.0
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			w += 0.66
		case r == ' ' || r == '.' || r == ',' || r == ':' || r == '(' || r == ')' || r == 'i' || r == 'l':
			w += 0.32
		default:
			w += 0.56
		}
	}
	return w * px
}

// svgEdge is the drawing of every transition between one pair of states.
type svgEdge struct {
	from, to string
	lines    []svgLine // the label: one or more lines per transition
	failed   bool      // leads to a failed state
	engine   bool      // every transition is raised by the engine
}

// svgNode is a box, the start dot or a dummy point of a long edge.
type svgNode struct {
	id     string
	layer  int
	order  float64
	x, w   float64 // x is the centre
	dummy  bool
	state  string
	edgeIx int // for dummies: the edge they belong to
}

// svgLine is one line of an edge label.
type svgLine struct {
	text   string
	indent bool // continues the transition of the line above
	undo   bool // a compensation ("undo: COMMAND → participant")
}

// labelIndent is how far continuation lines of a label are indented.
const labelIndent = 10.0

// width is the width of the line in the label font, indentation included.
func (l svgLine) width() float64 {
	w := textWidth(l.text, labelFont)
	if l.indent {
		w += labelIndent
	}
	return w
}

// transitionLines describes one transition leaving src for a diagram:
// "EVENT (who) → COMMAND to participant", one line when nothing in it is
// compensated, where who is the
// emitter, with why the engine raises the event (timeout, exhausted
// retries) or which roles may fire a start over the HTTP API
// ("api: role-a | role-b"). A compensation is an "undo: COMMAND →
// participant" line after what it undoes: after the event for the
// transition's compensate, after the command for send.compensate.
func transitionLines(m *engine.Model, src string, tr *definition.Transition) []svgLine {
	who := tr.By.Value
	switch who {
	case definition.Engine:
		if to := m.Timeout(src); to != nil && to.Event.Value == tr.On.Value {
			who += ": timeout " + shortDuration(to.After)
		} else if cmd := m.ExhaustedCommand(src, tr.On.Value); cmd != "" {
			who += ": " + cmd + " retries exhausted"
		}
	case definition.API:
		roles := make([]string, 0, len(tr.Roles))
		for _, r := range tr.Roles {
			roles = append(roles, r.Value)
		}
		who += ": " + strings.Join(roles, " | ")
	}
	head := fmt.Sprintf("%s (%s)", tr.On.Value, who)
	send := ""
	if tr.Send != nil {
		send = fmt.Sprintf("→ %s to %s", tr.Send.Command.Value, tr.Send.To.Value)
	}
	var lines []svgLine
	if tr.Compensate == nil {
		if send != "" {
			head += " " + send
		}
		lines = append(lines, svgLine{text: head})
	} else {
		lines = append(lines, svgLine{text: head}, svgLine{text: undoLine(tr.Compensate), indent: true, undo: true})
		if send != "" {
			lines = append(lines, svgLine{text: send, indent: true})
		}
	}
	if tr.Send != nil && tr.Send.Compensate != nil {
		lines = append(lines, svgLine{text: undoLine(tr.Send.Compensate), indent: true, undo: true})
	}
	return lines
}

// undoLine is "undo: COMMAND → participant"; the definition fills in the
// participant when the file does not name one.
func undoLine(c *definition.Compensation) string {
	return "undo: " + c.Command.Value + " → " + c.To.Value
}

// edgesOf groups m's transitions by (from, to), in definition order.
func edgesOf(m *engine.Model) []*svgEdge {
	var out []*svgEdge
	idx := map[[2]string]*svgEdge{}
	for _, tr := range m.Definition().Transitions {
		srcs := []string{startID}
		if !tr.Starts() {
			srcs = srcs[:0]
			for _, f := range tr.From {
				srcs = append(srcs, f.Value)
			}
		}
		for _, src := range srcs {
			k := [2]string{src, tr.To.Value}
			e := idx[k]
			if e == nil {
				e = &svgEdge{from: src, to: tr.To.Value, failed: m.IsFailed(tr.To.Value), engine: true}
				idx[k] = e
				out = append(out, e)
			}
			e.lines = append(e.lines, transitionLines(m, src, tr)...)
			e.engine = e.engine && tr.By.Value == definition.Engine
		}
	}
	return out
}

// title is the edge's tooltip: its label, one line per line.
func (e *svgEdge) title() string {
	texts := make([]string, len(e.lines))
	for i, l := range e.lines {
		texts[i] = l.text
		if l.indent {
			texts[i] = "  " + l.text
		}
	}
	return strings.Join(texts, "\n")
}

// shortDuration formats d without zero units: 10m, 2s, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// compensatesNote is the second line of a failed state's box in a model
// with compensations, and compensatesTitle its tooltip.
const (
	compensatesNote  = "⟲ compensates first"
	compensatesTitle = "entering it first sends the compensations of the steps taken, newest first"
)

// stateNote is the second line of a state's box: its time limit, or that a
// failed state of a compensable model compensates first; "" for none.
func stateNote(m *engine.Model, state string) (text, class string) {
	if to := m.Timeout(state); to != nil {
		return "timeout " + shortDuration(to.After), "timeout"
	}
	if m.IsFailed(state) && m.Compensable() {
		return compensatesNote, "compensates"
	}
	return "", ""
}

// layout is a layered (Sugiyama-style) drawing of a model.
type layout struct {
	nodes  map[string]*svgNode
	layers [][]*svgNode
	edges  []*svgEdge
	back   map[*svgEdge]bool
	chains map[*svgEdge][]*svgNode // forward edges: source, dummies..., target
}

// newLayout layers the states by longest path from the start (after
// removing the edges that close cycles), adds a dummy node per layer that a
// long edge crosses, orders each layer by the barycenter of its neighbours
// and gives every node an x.
func newLayout(m *engine.Model) *layout {
	l := &layout{nodes: map[string]*svgNode{}, edges: edgesOf(m), back: map[*svgEdge]bool{}, chains: map[*svgEdge][]*svgNode{}}
	ids := append([]string{startID}, m.States()...)
	for i, id := range ids {
		w := math.Max(110, textWidth(id, nameFont)+44)
		if id == startID {
			w = 2 * startR
		} else if note, _ := stateNote(m, id); note != "" {
			w = math.Max(w, textWidth(note, labelFont)+44)
		}
		l.nodes[id] = &svgNode{id: id, state: id, w: w, order: float64(i)}
	}
	out := map[string][]*svgEdge{}
	for _, e := range l.edges {
		out[e.from] = append(out[e.from], e)
	}
	// Back edges: edges to a node on the DFS stack (self-loops included).
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var dfs func(v string)
	dfs = func(v string) {
		color[v] = grey
		for _, e := range out[v] {
			switch color[e.to] {
			case grey:
				l.back[e] = true
			case white:
				dfs(e.to)
			}
		}
		color[v] = black
	}
	for _, id := range ids {
		if color[id] == white {
			dfs(id)
		}
	}
	// Longest-path layering over the forward edges (Kahn's order).
	indeg := map[string]int{}
	for _, e := range l.edges {
		if !l.back[e] {
			indeg[e.to]++
		}
	}
	var queue []string
	for _, id := range ids {
		if indeg[id] == 0 {
			queue = append(queue, id)
		}
	}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, e := range out[v] {
			if l.back[e] {
				continue
			}
			if n := l.nodes[v].layer + 1; n > l.nodes[e.to].layer {
				l.nodes[e.to].layer = n
			}
			if indeg[e.to]--; indeg[e.to] == 0 {
				queue = append(queue, e.to)
			}
		}
	}
	maxLayer := 0
	for _, n := range l.nodes {
		maxLayer = max(maxLayer, n.layer)
	}
	l.layers = make([][]*svgNode, maxLayer+1)
	for _, id := range ids {
		n := l.nodes[id]
		l.layers[n.layer] = append(l.layers[n.layer], n)
	}
	// Dummies for forward edges longer than one layer.
	for i, e := range l.edges {
		if l.back[e] {
			continue
		}
		src, dst := l.nodes[e.from], l.nodes[e.to]
		chain := []*svgNode{src}
		for layer := src.layer + 1; layer < dst.layer; layer++ {
			d := &svgNode{id: fmt.Sprintf("\x00d%d_%d", i, layer), layer: layer, w: dummyW, dummy: true, edgeIx: i,
				order: src.order + 0.5}
			l.layers[layer] = append(l.layers[layer], d)
			chain = append(chain, d)
		}
		l.chains[e] = append(chain, dst)
	}
	l.order()
	l.place()
	return l
}

// neighbours returns, per node, the nodes one layer up (up=true) or down.
func (l *layout) neighbours(up bool) map[*svgNode][]*svgNode {
	nb := map[*svgNode][]*svgNode{}
	for _, chain := range l.chains {
		for i := 0; i+1 < len(chain); i++ {
			a, b := chain[i], chain[i+1]
			if up {
				nb[b] = append(nb[b], a)
			} else {
				nb[a] = append(nb[a], b)
			}
		}
	}
	return nb
}

// order sorts every layer, then sweeps down and up a few times placing each
// node at the mean position of its neighbours in the previous layer.
func (l *layout) order() {
	renumber := func(layer []*svgNode) {
		sort.SliceStable(layer, func(i, j int) bool { return layer[i].order < layer[j].order })
		for i, n := range layer {
			n.order = float64(i)
		}
	}
	for _, layer := range l.layers {
		renumber(layer)
	}
	ups, downs := l.neighbours(true), l.neighbours(false)
	sweep := func(layer []*svgNode, nb map[*svgNode][]*svgNode) {
		for _, n := range layer {
			if ns := nb[n]; len(ns) > 0 {
				sum := 0.0
				for _, o := range ns {
					sum += o.order
				}
				n.order = sum/float64(len(ns)) + n.order*1e-3 // keep ties stable
			}
		}
		renumber(layer)
	}
	for range 4 {
		for i := 1; i < len(l.layers); i++ {
			sweep(l.layers[i], ups)
		}
		for i := len(l.layers) - 2; i >= 0; i-- {
			sweep(l.layers[i], downs)
		}
	}
}

// place gives every node an x: centred under its upper neighbours, pushed
// apart where boxes would overlap, the layer shifted back towards the
// wanted positions.
func (l *layout) place() {
	ups := l.neighbours(true)
	for li, layer := range l.layers {
		want := make([]float64, len(layer))
		for i, n := range layer {
			want[i] = float64(i) * 160
			if ns := ups[n]; li > 0 && len(ns) > 0 {
				sum := 0.0
				for _, o := range ns {
					sum += o.x
				}
				want[i] = sum / float64(len(ns))
			}
		}
		for i, n := range layer {
			n.x = want[i]
			if i > 0 {
				prev := layer[i-1]
				n.x = math.Max(n.x, prev.x+(prev.w+n.w)/2+nodeGap)
			}
		}
		shift := 0.0
		for i, n := range layer {
			shift += want[i] - n.x
		}
		shift /= float64(len(layer))
		for _, n := range layer {
			n.x += shift
		}
	}
}

// y returns the top of a layer's boxes.
func layerY(layer int) float64 { return margin + float64(layer)*(nodeH+layerGap) }

// rect is an axis-aligned box, for label collision checks.
type rect struct{ x0, y0, x1, y1 float64 }

func (a rect) overlaps(b rect) bool {
	return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1
}

// pt is a point.
type pt struct{ x, y float64 }

// bezier evaluates a cubic Bézier curve at t.
func bezier(p0, p1, p2, p3 pt, t float64) pt {
	u := 1 - t
	a, b, c, d := u*u*u, 3*u*u*t, 3*u*t*t, t*t*t
	return pt{a*p0.x + b*p1.x + c*p2.x + d*p3.x, a*p0.y + b*p1.y + c*p2.y + d*p3.y}
}

// RenderSVG draws m as a standalone SVG document: states as boxes in layers
// from the start dot downwards, one arrow per pair of states labelled with
// its transitions (event, emitter, command sent; see transitionLines: why
// the engine raises an event, the roles of a start over the HTTP API, an
// "undo: COMMAND → participant" line after each compensated event or
// command), final states green, failed states red (in a model with
// compensations marked "⟲ compensates first"), back edges curving on the
// right. counts (instances per state, may be nil) are drawn as a badge on
// each box; every badge is a <g class="count" data-state="NAME"> whose
// <text> the console updates. The output is deterministic.
func RenderSVG(m *engine.Model, counts map[string]int64) string {
	l := newLayout(m)
	var body strings.Builder
	var placed []rect
	box := rect{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
	grow := func(r rect) {
		box = rect{math.Min(box.x0, r.x0), math.Min(box.y0, r.y0), math.Max(box.x1, r.x1), math.Max(box.y1, r.y1)}
	}
	nodeRect := func(n *svgNode) rect {
		y := layerY(n.layer)
		if n.id == startID {
			return rect{n.x - startR, y + nodeH/2 - startR, n.x + startR, y + nodeH/2 + startR}
		}
		return rect{n.x - n.w/2, y, n.x + n.w/2, y + nodeH}
	}
	for _, n := range l.nodes {
		placed = append(placed, nodeRect(n))
	}
	// labelAt finds a free spot for a label beside point p of a curve that
	// runs towards dx (negative: leftwards).
	label := func(e *svgEdge, cands []pt, dx float64) {
		w := 0.0
		for _, l := range e.lines {
			w = math.Max(w, l.width())
		}
		h := float64(len(e.lines))*labelLineH + 4
		try := func(p pt, left bool) (rect, bool) {
			r := rect{p.x + 7, p.y - h/2, p.x + 7 + w, p.y + h/2}
			if left {
				r = rect{p.x - 7 - w, p.y - h/2, p.x - 7, p.y + h/2}
			}
			for _, o := range placed {
				if r.overlaps(o) {
					return r, false
				}
			}
			return r, true
		}
		var best rect
		found := false
		for _, p := range cands {
			for _, left := range []bool{dx < 0, dx >= 0} {
				if r, ok := try(p, left); ok {
					best, found = r, true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			// Every candidate overlaps something: start from the first one
			// and move the label sideways, away from the curve, past
			// whatever it overlaps. Each move passes a placed box in one
			// direction, so this ends.
			left := dx < 0
			best, _ = try(cands[0], left)
			for moved := true; moved; {
				moved = false
				for _, o := range placed {
					if !best.overlaps(o) {
						continue
					}
					w := best.x1 - best.x0
					if left {
						best.x1 = o.x0 - 4
						best.x0 = best.x1 - w
					} else {
						best.x0 = o.x1 + 4
						best.x1 = best.x0 + w
					}
					moved = true
				}
			}
		}
		placed = append(placed, best)
		grow(best)
		cls := "label"
		if e.failed {
			cls += " failed"
		}
		fmt.Fprintf(&body, `<g class="%s"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="3"/>`, cls, best.x0-3, best.y0, best.x1-best.x0+6, h)
		for i, l := range e.lines {
			x, cls := best.x0, ""
			if l.indent {
				x += labelIndent
			}
			if l.undo {
				cls = ` class="undo"`
			}
			fmt.Fprintf(&body, `<text%s x="%.1f" y="%.1f">%s</text>`, cls, x, best.y0+labelLineH*float64(i+1)-1, html.EscapeString(l.text))
		}
		body.WriteString("</g>\n")
	}
	// Edges first, so boxes are drawn over their ends.
	var labels []func()
	for _, e := range l.edges {
		cls := "edge"
		if e.failed {
			cls += " failed"
		}
		if e.engine {
			cls += " engine"
		}
		title := html.EscapeString(e.title())
		if l.back[e] {
			src, dst := l.nodes[e.from], l.nodes[e.to]
			sy, dy := layerY(src.layer)+nodeH/2, layerY(dst.layer)+nodeH/2
			var p0, p1, p2, p3 pt
			if e.from == e.to {
				// A self-loop on the side of the box with more room.
				gapL, gapR := math.Inf(1), math.Inf(1)
				for _, n := range l.layers[src.layer] {
					if n.dummy || n == src {
						continue
					}
					if d := n.x - src.x; d > 0 {
						gapR = math.Min(gapR, d)
					} else {
						gapL = math.Min(gapL, -d)
					}
				}
				side := 1.0
				if gapL > gapR {
					side = -1
				}
				edge := src.x + side*src.w/2
				p0, p3 = pt{edge, sy - 10}, pt{edge, sy + 10}
				p1, p2 = pt{edge + side*45, sy - 22}, pt{edge + side*45, sy + 22}
			} else {
				// A back edge goes round the right of every box of the
				// layers it spans.
				right := math.Max(src.x+src.w/2, dst.x+dst.w/2)
				for li := min(src.layer, dst.layer); li <= max(src.layer, dst.layer); li++ {
					for _, n := range l.layers[li] {
						right = math.Max(right, n.x+n.w/2)
					}
				}
				// It leaves from the top of the source (the gap above it is
				// free of boxes) and enters the target from the right.
				top := layerY(src.layer)
				p0, p3 = pt{src.x + src.w/4, top}, pt{dst.x + dst.w/2, dy}
				p1, p2 = pt{right + 60, top - layerGap/2}, pt{right + 60, dy}
			}
			fmt.Fprintf(&body, `<path class="%s" d="M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f" marker-end="url(#arrow)"><title>%s</title></path>`+"\n",
				cls, p0.x, p0.y, p1.x, p1.y, p2.x, p2.y, p3.x, p3.y, title)
			mid := bezier(p0, p1, p2, p3, 0.5)
			grow(rect{math.Min(p0.x, mid.x), math.Min(p0.y, p3.y), math.Max(p0.x, mid.x), math.Max(p0.y, p3.y)})
			dir := mid.x - p0.x
			labels = append(labels, func() {
				label(e, []pt{mid, bezier(p0, p1, p2, p3, 0.3), bezier(p0, p1, p2, p3, 0.7)}, dir)
			})
			continue
		}
		chain := l.chains[e]
		var d strings.Builder
		var first [4]pt
		for i := 0; i+1 < len(chain); i++ {
			a, b := chain[i], chain[i+1]
			ay := layerY(a.layer) + nodeH
			if a.id == startID {
				ay = layerY(a.layer) + nodeH/2 + startR
			} else if a.dummy {
				ay = layerY(a.layer) + nodeH
			}
			by := layerY(b.layer)
			p0, p3 := pt{a.x, ay}, pt{b.x, by - 2}
			p1, p2 := pt{a.x, (ay + by) / 2}, pt{b.x, (ay + by) / 2}
			if i == 0 {
				fmt.Fprintf(&d, "M%.1f,%.1f", p0.x, p0.y)
				first = [4]pt{p0, p1, p2, p3}
			} else {
				fmt.Fprintf(&d, " L%.1f,%.1f", p0.x, p0.y) // straight through the dummy's layer
			}
			fmt.Fprintf(&d, " C%.1f,%.1f %.1f,%.1f %.1f,%.1f", p1.x, p1.y, p2.x, p2.y, p3.x, p3.y)
		}
		fmt.Fprintf(&body, `<path class="%s" d="%s" marker-end="url(#arrow)"><title>%s</title></path>`+"\n", cls, d.String(), title)
		f := first
		dx := f[3].x - f[0].x
		labels = append(labels, func() {
			label(e, []pt{bezier(f[0], f[1], f[2], f[3], 0.5), bezier(f[0], f[1], f[2], f[3], 0.35),
				bezier(f[0], f[1], f[2], f[3], 0.65), bezier(f[0], f[1], f[2], f[3], 0.2), bezier(f[0], f[1], f[2], f[3], 0.8)}, dx)
		})
	}
	for _, f := range labels {
		f()
	}
	for _, layer := range l.layers {
		for _, n := range layer {
			if n.dummy {
				continue
			}
			r := nodeRect(n)
			grow(r)
			if n.id == startID {
				fmt.Fprintf(&body, `<circle class="start" cx="%.1f" cy="%.1f" r="%.1f"><title>saga starts</title></circle>`+"\n", n.x, (r.y0+r.y1)/2, startR)
				continue
			}
			cls := "state"
			switch {
			case m.IsFinal(n.state):
				cls += " final"
			case m.IsFailed(n.state):
				cls += " failed"
			}
			fmt.Fprintf(&body, `<g class="%s" data-state="%s">`, cls, html.EscapeString(n.state))
			note, noteClass := stateNote(m, n.state)
			tip := m.Description(n.state)
			if noteClass == "compensates" {
				if tip != "" {
					tip += "\n"
				}
				tip += compensatesTitle
			}
			if tip != "" {
				fmt.Fprintf(&body, "<title>%s</title>", html.EscapeString(tip))
			}
			fmt.Fprintf(&body, `<rect class="box" x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="10"/>`, r.x0, r.y0, n.w, nodeH)
			ty := r.y0 + nodeH/2 + 4.5
			if note != "" {
				ty = r.y0 + 19
				fmt.Fprintf(&body, `<text class="%s" x="%.1f" y="%.1f">%s</text>`, noteClass, n.x, r.y0+36, html.EscapeString(note))
			}
			fmt.Fprintf(&body, `<text class="name" x="%.1f" y="%.1f">%s</text>`, n.x, ty, html.EscapeString(n.state))
			c := counts[n.state]
			txt := fmt.Sprint(c)
			bw := math.Max(22, textWidth(txt, labelFont)+12)
			zero := ""
			if c == 0 {
				zero = " zero"
			}
			fmt.Fprintf(&body, `<g class="count%s" data-state="%s"><title>instances in %s</title><rect x="%.1f" y="%.1f" width="%.1f" height="18" rx="9"/><text x="%.1f" y="%.1f">%s</text></g>`,
				zero, html.EscapeString(n.state), html.EscapeString(n.state), r.x1-bw+6, r.y0-9, bw, r.x1-bw/2+6, r.y0+4, txt)
			body.WriteString("</g>\n")
			grow(rect{r.x0, r.y0 - 9, r.x1 + 6, r.y1})
		}
	}
	x0, y0 := box.x0-margin, box.y0-margin
	w, h := box.x1-box.x0+2*margin, box.y1-box.y0+2*margin
	var out strings.Builder
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" class="saga-diagram" viewBox="%.1f %.1f %.1f %.1f" width="%.0f" height="%.0f" role="img" aria-label="%s">`+"\n",
		x0, y0, w, h, w, h, html.EscapeString("state diagram of "+m.String()))
	fmt.Fprintf(&out, "<title>%s</title>\n", html.EscapeString(m.String()))
	out.WriteString(svgStyle)
	out.WriteString(body.String())
	out.WriteString("</svg>\n")
	return out.String()
}

// svgStyle is embedded in every diagram so the SVG also reads well alone.
const svgStyle = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6b7a"/></marker></defs>
<style>
.saga-diagram { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.edge { fill: none; stroke: #5f6b7a; stroke-width: 1.4; }
.edge.engine { stroke-dasharray: 5 4; }
.edge.failed { stroke: #c5221f; }
.label rect { fill: #ffffff; fill-opacity: 0.92; }
.label text { font-size: 11px; fill: #3c4652; }
.label.failed text { fill: #a50e0e; }
.label text.undo { fill: #8a4b00; font-style: italic; }
.start { fill: #202833; }
.state rect.box { fill: #eef3fb; stroke: #3b6fb6; stroke-width: 1.5; }
.state.final rect.box { fill: #e6f4ea; stroke: #137333; }
.state.failed rect.box { fill: #fce8e6; stroke: #c5221f; }
.state text.name { font-size: 13px; font-weight: 600; fill: #1f2a37; text-anchor: middle; }
.state text.timeout { font-size: 11px; fill: #5f6b7a; text-anchor: middle; }
.state text.compensates { font-size: 11px; fill: #a50e0e; text-anchor: middle; }
.count rect { fill: #1a56db; stroke: #ffffff; stroke-width: 1.5; }
.count text { font-size: 11px; font-weight: 700; fill: #ffffff; text-anchor: middle; }
.count.zero rect { fill: #9aa5b1; }
</style>
`
