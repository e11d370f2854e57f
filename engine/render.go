package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// edgeLabel describes one transition for a diagram: the event and its
// emitter, why the engine raises it (timeouts, exhausted retries), and the
// command sent.
type diagramEdge struct {
	from, to string // from "" = start
	event    string
	by       string
	cause    string   // for engine events: "timeout 10m" or "APPROVE_ORDER retries exhausted"
	timeout  bool     // raised by the from state's timeout
	command  string   // "" when none
	target   string   // participant the command goes to
	retry    string   // "retry 5×, 2s..1m" or ""
	roles    []string // by api: the roles that may fire it over HTTP
	undo     string   // the event's compensation: "FAIL_DEAL → deals", or ""
	undoSend string   // the command's compensation: "REVERT_ORDER → profile", or ""
	noEffect bool     // the command is declared effects: none

	cond     string   // a decision's condition, "otherwise" for its default, "" for no decision
	payload  string   // the command's payload mapping: "{deal_id, amount}", or ""
	branches []string // a parallel step's commands: "PLACE_ORDER → deals for each context.lines (undo: CANCEL_ORDER → deals)"
	join     string   // a parallel step's join: "join all: then TRADED, else TRADING_FAILED"
	contract string   // the event's contract: "schema, writes plan", or ""
}

// diagramEdges lists the transitions in definition order, one per source
// state.
func diagramEdges(m *Model) []diagramEdge {
	var out []diagramEdge
	for _, tr := range m.def.Transitions {
		src := []string{""}
		if !tr.Starts() {
			src = src[:0]
			for _, f := range tr.From {
				src = append(src, f.Value)
			}
		}
		for _, s := range src {
			e := diagramEdge{from: s, to: tr.To.Value, event: tr.On.Value, by: tr.By.Value, undo: undoText(tr.Compensate)}
			for _, r := range tr.Roles {
				e.roles = append(e.roles, r.Value)
			}
			if to := m.Timeout(s); to != nil && to.Event.Value == e.event {
				e.timeout = true
				e.cause = "timeout " + shortDuration(to.After)
			} else if cmd := m.ExhaustedCommand(s, e.event); cmd != "" {
				e.cause = cmd + " retries exhausted"
			} else if j := joinRaising(m, s, e.event); j != "" {
				e.cause = j
			}
			switch {
			case tr.When != nil:
				e.cond = tr.When.Text
			case decides(m, s, e.event):
				e.cond = "otherwise"
			}
			if tr.Send != nil {
				e.command, e.target = tr.Send.Command.Value, tr.Send.To.Value
				if r := tr.Send.Retry; r != nil {
					e.retry = fmt.Sprintf("retry %d×, %s..%s", r.Attempts, shortDuration(r.Backoff), shortDuration(r.MaxBackoff))
				}
				e.undoSend = undoText(tr.Send.Compensate)
				e.noEffect = tr.Send.NoEffects
				e.payload = mappingText(tr.Send.Payload)
			}
			for _, b := range tr.Branches {
				e.branches = append(e.branches, branchText(b))
			}
			if j := tr.Join; j != nil {
				e.join = joinText(j) + ": then " + j.Then.Value + ", else " + j.Else.Value
			}
			e.contract = contractText(m.def.Events[e.event])
			out = append(out, e)
		}
	}
	return out
}

// decides reports whether event in state is a decision on data (some
// transition of it has a condition).
func decides(m *Model, state, event string) bool {
	for _, a := range m.allowed[state] {
		if a.Event == event && a.When != "" {
			return true
		}
	}
	return false
}

// joinRaising names the join of a parallel step into state that raises
// event: "join all done", "join first failed"; "" when none does.
func joinRaising(m *Model, state, event string) string {
	for _, p := range m.parallelIn[state] {
		switch event {
		case p.Then:
			return "join " + joinPolicyText(p.Policy, p.N) + " done"
		case p.Else:
			return "join " + joinPolicyText(p.Policy, p.N) + " failed"
		}
	}
	return ""
}

func joinPolicyText(p definition.JoinPolicy, n int) string {
	if p == definition.JoinAtLeast {
		return fmt.Sprintf("at least %d", n)
	}
	return string(p)
}

func joinText(j *definition.Join) string { return "join " + joinPolicyText(j.Policy, j.N) }

// branchText describes a branch of a parallel step: "CMD → participant
// for each LIST (undo: C → p)".
func branchText(b *definition.Send) string {
	t := b.Command.Value + " → " + b.To.Value
	if b.ForEach != nil {
		t += " for each " + b.ForEach.Text
	}
	if b.Compensate != nil {
		t += " (undo: " + undoText(b.Compensate) + ")"
	}
	return t
}

// mappingText describes a payload mapping: its keys, or its expression.
func mappingText(mp *definition.Mapping) string {
	if mp == nil {
		return ""
	}
	return (&Mapping{def: mp}).Text()
}

// contractText describes an event's contract: "schema, writes plan, risk".
func contractText(ev *definition.Event) string {
	if ev == nil {
		return ""
	}
	var parts []string
	if ev.Schema != nil {
		parts = append(parts, "schema")
	}
	if ev.Writes != nil {
		ws := make([]string, len(ev.Writes))
		for i, w := range ev.Writes {
			ws[i] = w.Value
		}
		parts = append(parts, "writes "+strings.Join(ws, ", "))
	}
	return strings.Join(parts, "; ")
}

// undoText describes a compensation as "COMMAND → participant", or "".
func undoText(c *definition.Compensation) string {
	if c == nil {
		return ""
	}
	return c.Command.Value + " → " + c.To.Value
}

// who is the emitter part of an edge label: "deals", "engine, timeout 10m",
// "api, roles deals-trader or deals-admin".
func (e diagramEdge) who() string {
	who := e.by
	if e.cause != "" {
		who += ", " + e.cause
	}
	if len(e.roles) > 0 {
		who += ", roles " + strings.Join(e.roles, " or ")
	}
	return who
}

// failedNote is what a failed state of a model with compensations says:
// entering it sends the compensations first.
const failedNote = "entering it first sends the compensations of the steps taken, newest first"

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

// mermaidText makes s safe inside a Mermaid stateDiagram label or note, where
// ';' and ':' have a meaning, '#' starts an entity and '<' and '>'
// (in conditions) could be read as markup.
func mermaidText(s string) string {
	return strings.NewReplacer(";", ",", ":", " -", "#", "No.", "\n", " ", "\r", "", "<", "‹", ">", "›").Replace(s)
}

// RenderMermaid draws m as a Mermaid stateDiagram-v2 (GitHub renders it in a
// ```mermaid block). Every transition is an edge labelled
// "EVENT (by) / COMMAND → participant"; events the engine raises say why
// (timeout or exhausted retries); starts over the HTTP API name their roles
// ("EVENT (api, roles a or b)"); compensations follow what they undo
// ("(by, undo CMD → participant)", "COMMAND → participant (undo CMD →
// participant)"), a command declared effects: none says "(no effects)"; a
// decision's transitions show their condition in brackets
// ("[event.amount › 1000]", "[otherwise]" for the default); a
// parallel step lists its branches and its join ("at once: A → p + B → q,
// join all: then DONE, else FAILED") and the engine's join events say so
// ("(engine, join all done)"); final states lead to [*]; failure states
// are styled with the "failure" class; state descriptions are notes, and
// in a model with compensations a failed state's note says they run first.
// The output is deterministic.
func RenderMermaid(m *Model) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\ntitle: %s\n---\n", mermaidText(m.String()))
	b.WriteString("stateDiagram-v2\n")
	b.WriteString("    classDef success fill:#e6f4ea,stroke:#137333,color:#0d652d\n")
	b.WriteString("    classDef failure fill:#fce8e6,stroke:#c5221f,color:#a50e0e\n")
	for _, e := range diagramEdges(m) {
		from := e.from
		if from == "" {
			from = "[*]"
		}
		who := e.who()
		if e.undo != "" {
			who += ", undo " + e.undo
		}
		label := fmt.Sprintf("%s (%s)", e.event, who)
		if e.cond != "" {
			label += " [" + e.cond + "]"
		}
		if e.command != "" {
			label += fmt.Sprintf(" / %s → %s", e.command, e.target)
			if e.undoSend != "" {
				label += " (undo " + e.undoSend + ")"
			}
			if e.noEffect {
				label += " (no effects)"
			}
		}
		if len(e.branches) > 0 {
			label += " / at once: " + strings.Join(e.branches, " + ") + ", " + e.join
		}
		fmt.Fprintf(&b, "    %s --> %s : %s\n", from, e.to, mermaidText(label))
	}
	for _, s := range m.finals {
		fmt.Fprintf(&b, "    %s --> [*]\n", s)
	}
	for _, s := range m.states {
		note := m.Description(s)
		if m.IsFailed(s) && m.Compensable() {
			if note != "" {
				note += " — "
			}
			note += failedNote
		}
		if note != "" {
			fmt.Fprintf(&b, "    note right of %s : %s\n", s, mermaidText(note))
		}
	}
	if len(m.finals) > 0 {
		fmt.Fprintf(&b, "    class %s success\n", strings.Join(m.finals, ","))
	}
	if len(m.failed) > 0 {
		fmt.Fprintf(&b, "    class %s failure\n", strings.Join(m.failed, ","))
	}
	return b.String()
}

// dotQuote quotes s as a Graphviz string; "\n" becomes a centred line break.
func dotQuote(s string) string {
	s = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\r", "", "\n", `\n`).Replace(s)
	return `"` + s + `"`
}

// RenderDOT draws m as a Graphviz digraph: a point for the start, rounded
// boxes for waiting states (tooltip = description, timeout in the label),
// double circles for final states, red double octagons for failure states,
// dashed edges for transitions raised by a state timeout and dotted edges for
// exhausted retries. Starts over the HTTP API name their roles, each
// compensation is an "undo: CMD → participant" line under the event or
// command it undoes, and in a model with compensations failed states say
// "⟲ compensates first". Language v2 adds lines to an edge's label: the
// condition of a decision ("[event.amount > 1000]", "[otherwise]"), the
// event's contract ("contract: schema; writes plan"), the command's payload
// mapping ("payload {deal_id, amount}"), one "‖ COMMAND → participant"
// line per branch of a parallel step (with "for each LIST" for a fan-out)
// and its join ("join all: then DONE, else FAILED"); the engine's join
// events are dotted like exhausted retries. The output is deterministic.
func RenderDOT(m *Model) string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", dotQuote(m.String()))
	fmt.Fprintf(&b, "    label=%s;\n    labelloc=t;\n    rankdir=LR;\n", dotQuote(m.String()))
	b.WriteString("    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n")
	b.WriteString("    edge [fontname=\"Helvetica\", fontsize=10];\n")
	b.WriteString("    __start [shape=point, width=0.2, label=\"\", tooltip=\"saga starts\"];\n")
	for _, s := range m.states {
		attrs := []string{}
		label := s
		if to := m.Timeout(s); to != nil {
			label += "\n⏱ " + shortDuration(to.After)
		}
		tooltip := m.Description(s)
		if m.IsFailed(s) && m.Compensable() {
			label += "\n⟲ compensates first"
			if tooltip != "" {
				tooltip += "\n"
			}
			tooltip += failedNote
		}
		attrs = append(attrs, "label="+dotQuote(label))
		switch {
		case m.IsFinal(s):
			attrs = append(attrs, "shape=doublecircle", "style=\"\"", "color=\"#137333\"")
		case m.IsFailed(s):
			attrs = append(attrs, "shape=doubleoctagon", "style=filled", "color=red", "fillcolor=\"#fce8e6\"", "fontcolor=red")
		}
		if tooltip != "" {
			attrs = append(attrs, "tooltip="+dotQuote(tooltip))
		}
		fmt.Fprintf(&b, "    %s [%s];\n", dotQuote(s), strings.Join(attrs, ", "))
	}
	for _, e := range diagramEdges(m) {
		from := "__start"
		if e.from != "" {
			from = dotQuote(e.from)
		}
		label := fmt.Sprintf("%s (%s)", e.event, e.who())
		if e.cond != "" {
			label += "\n[" + e.cond + "]"
		}
		if e.contract != "" {
			label += "\ncontract: " + e.contract
		}
		if e.undo != "" {
			label += "\nundo: " + e.undo
		}
		if e.command != "" {
			label += fmt.Sprintf("\n%s → %s", e.command, e.target)
			if e.noEffect {
				label += " (no effects)"
			}
			if e.payload != "" {
				label += "\npayload " + e.payload
			}
			if e.retry != "" {
				label += "\n" + e.retry
			}
			if e.undoSend != "" {
				label += "\nundo: " + e.undoSend
			}
		}
		for _, br := range e.branches {
			label += "\n‖ " + br
		}
		if e.join != "" {
			label += "\n" + e.join
		}
		attrs := []string{"label=" + dotQuote(label)}
		switch {
		case e.timeout:
			attrs = append(attrs, "style=dashed")
		case e.cause != "":
			attrs = append(attrs, "style=dotted")
		}
		if m.IsFailed(e.to) {
			attrs = append(attrs, "color=red", "fontcolor=red")
		}
		fmt.Fprintf(&b, "    %s -> %s [%s];\n", from, dotQuote(e.to), strings.Join(attrs, ", "))
	}
	b.WriteString("}\n")
	return b.String()
}
