package definition

import (
	"fmt"
	"sort"
	"strings"
)

// check runs the semantic rules on a structurally read definition. Checks
// that need the whole graph run only when every transition and the final /
// failed lists were readable, so that one broken row does not make healthy
// states look unreachable.
func (p *parser) check(def *Definition) {
	final := nameSet(def.Final)
	failed := nameSet(def.Failed)
	terminal := func(s string) bool { return final[s] || failed[s] }

	for _, f := range def.Failed {
		if final[f.Value] {
			p.add(f.Pos, ruleFinalAndFailed, "state %s is listed in both final and failed: a saga ends either successfully or not", f.Value)
		}
	}

	p.checkParticipants(def)
	p.checkReservedEvents(def)
	p.checkCompensations(def, terminal)
	p.checkStarts(def)
	p.checkDeterminism(def)
	p.checkParallel(def, terminal)
	p.checkContracts(def)

	for _, t := range def.Transitions {
		if t.On.Value == Abort && t.By.Value == Engine && t.To.Value != "" && !failed[t.To.Value] {
			p.add(t.To.Pos, ruleAbortNotFailed, "an operator's abort ends the saga unsuccessfully: on: %s, by: engine must go to a failed state (%s), not %s", Abort, nameList(def.Failed), t.To.Value)
		}
		for _, f := range t.From {
			if terminal(f.Value) {
				kind := "final"
				if !final[f.Value] {
					kind = "failed"
				}
				p.add(f.Pos, ruleFinalHasExit, "%s is a %s state: a finished saga takes no more events, so it cannot be in from", f.Value, kind)
			}
		}
		if t.Send != nil && t.Send.Retry != nil && terminal(t.To.Value) {
			p.add(t.Send.Retry.Pos, ruleRetryToTerminal, "retry on a command sent when entering %s, which is an end state: no reply can arrive there, so nothing would stop the re-sends; remove retry", t.To.Value)
		}
	}
	for _, name := range sortedStateNames(def) {
		st := def.States[name]
		if st.Timeout != nil && terminal(name) {
			p.add(st.Timeout.Pos, ruleTerminalTimeout, "%s is an end state: a finished saga has no time limit; remove its timeout", name)
		}
	}

	if !p.transitionsOK || !p.terminalsOK || !p.statesOK || p.transitionsNode == nil {
		return
	}
	p.checkGraph(def, final, failed)
	p.checkEngineEvents(def, terminal)
}

// nameList is the values of ns, comma-separated ("none" for none).
func nameList(ns []Name) string {
	if len(ns) == 0 {
		return "none"
	}
	vs := make([]string, len(ns))
	for i, n := range ns {
		vs[i] = n.Value
	}
	return strings.Join(vs, ", ")
}

func nameSet(ns []Name) map[string]bool {
	m := make(map[string]bool, len(ns))
	for _, n := range ns {
		m[n.Value] = true
	}
	return m
}

func sortedStateNames(def *Definition) []string {
	names := make([]string, 0, len(def.States))
	for n := range def.States {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *parser) checkParticipants(def *Definition) {
	declared := make([]string, 0, len(def.Participants))
	for n := range def.Participants {
		declared = append(declared, n)
	}
	sort.Strings(declared)
	used := map[string]bool{}
	undeclared := func(n Name, role string) {
		msg := fmt.Sprintf("%s `%s` is not declared under participants", role, n.Value)
		if s := p.suggest(n.Value, declared); s != "" {
			msg += fmt.Sprintf("; did you mean `%s`?", s)
		} else if len(declared) > 0 {
			msg += " (declared: " + joinFew(declared, 10) + ")"
		}
		p.add(n.Pos, ruleUndeclared, "%s", msg)
	}
	for _, t := range def.Transitions {
		if by := t.By.Value; by != Engine && by != API {
			used[by] = true
			if p.participantsOK && def.Participants[by] == nil {
				undeclared(t.By, "by: participant")
			}
		}
		for _, c := range t.compensations() {
			if !c.toWritten {
				continue // by or send.to, checked here already
			}
			switch to := c.To.Value; {
			case to == Engine || to == API:
				p.add(c.To.Pos, ruleCompensateToReserved, "compensations cannot be sent to %s: compensate.to must name a participant (the one whose effect is undone)", to)
			case p.participantsOK && def.Participants[to] == nil:
				used[to] = true
				undeclared(c.To, "compensate.to: participant")
			default:
				used[to] = true
			}
		}
		for _, send := range t.Sends() {
			to := send.To.Value
			used[to] = true
			switch {
			case to == Engine:
				p.add(send.To.Pos, ruleSendToEngine, "commands cannot be sent to the engine: send.to must name a participant")
			case to == API:
				p.add(send.To.Pos, ruleSendToAPI, "commands cannot be sent to api (the callers of the HTTP API): send.to must name a participant")
			case p.participantsOK && def.Participants[to] == nil:
				undeclared(send.To, "send.to: participant")
			}
		}
	}
	if !p.transitionsOK {
		return
	}
	for _, name := range declared {
		if !used[name] && name != Engine && name != API {
			part := def.Participants[name]
			p.add(part.Pos, ruleUnusedParticipant, "participant %s takes part in no transition (no by: or send.to: names it); remove it or use it", name)
		}
	}
}

func (p *parser) checkStarts(def *Definition) {
	starts := 0
	for _, t := range def.Transitions {
		switch {
		case t.By.Value == API && !t.Starts():
			p.add(t.By.Pos, ruleAPINotStart, "by: api is allowed only on a starting transition (from: []): over the HTTP API a caller may start a saga, never move a running one")
		case t.By.Value == API && t.Roles == nil:
			p.add(t.By.Pos, ruleAPIRoles, "a transition by: api needs roles: the roles allowed to start the saga over the HTTP API (any one suffices), e.g. roles: [deals-trader]")
		case t.By.Value != API && t.Roles != nil:
			p.add(t.rolesPos, ruleRolesWithoutAPI, "roles is allowed only with by: api: a transition by %s is fired by that participant over the bus, never over the HTTP API", t.By.Value)
		}
		if !t.Starts() {
			continue
		}
		starts++
		if t.By.Value == Engine {
			p.add(t.By.Pos, ruleEngineStart, "a starting transition (from: []) cannot be by engine: the engine only raises events for sagas that already exist")
		}
	}
	if starts == 0 && p.transitionsOK && p.transitionsNode != nil {
		p.addAt(p.transitionsNode, ruleNoStart, "no transition starts the saga: one needs from: [] (the event that creates a new saga)")
	}
}

// checkDeterminism checks the decision groups: the transitions of one
// event in one state (or of one starting event). A group of one is an
// ordinary transition; a larger group is a decision on data, whose rows
// have conditions (when) but one, the default.
func (p *parser) checkDeterminism(def *Definition) {
	type key struct{ state, event string }
	// first holds every (state, event); groups only those accepted twice
	// or more, so that a saga without decisions allocates no lists.
	first := map[key]*Transition{}
	groups := map[key][]*Transition{}
	var order []key
	for _, t := range def.Transitions {
		froms := t.From
		if t.Starts() {
			froms = []Name{{}}
		}
		for _, f := range froms {
			k := key{f.Value, t.On.Value}
			prev, seen := first[k]
			switch {
			case !seen:
				first[k] = t
				if t.whenWritten {
					order = append(order, k)
					groups[k] = []*Transition{t}
				}
			case groups[k] == nil:
				order = append(order, k)
				groups[k] = []*Transition{prev, t}
			default:
				groups[k] = append(groups[k], t)
			}
		}
	}
	where := func(state string) string {
		if state == "" {
			return "to start a saga"
		}
		return "in state " + state
	}
	for _, k := range order {
		g := groups[k]
		var defaults []*Transition
		conds := map[string]*Transition{}
		for _, t := range g {
			if !t.whenWritten {
				defaults = append(defaults, t)
			} else if t.When != nil {
				if first, dup := conds[t.When.Text]; dup {
					p.add(t.When.Pos, ruleDuplicateCondition, "this condition is the same as the one at line %d for event %s %s: the first that holds applies, so this transition could never happen; change or remove one", first.When.Pos.Line, k.event, where(k.state))
				} else {
					conds[t.When.Text] = t
				}
			}
			if t.By.Value != g[0].By.Value {
				p.add(t.By.Pos, ruleDecisionBy, "event %s %s is also accepted at line %d by %s: the transitions of one event in one state are one decision and name the same by (here %s)", k.event, where(k.state), g[0].On.Pos.Line, g[0].By.Value, t.By.Value)
			}
		}
		for i, t := range defaults[min(1, len(defaults)):] {
			first := defaults[i]
			p.add(t.On.Pos, ruleNondeterministic, "event %s is accepted twice %s: here (to %s) and at line %d (to %s); the saga could not know which way to go (to decide on data, give all but one of them a condition: when)",
				k.event, where(k.state), t.To.Value, first.On.Pos.Line, first.To.Value)
		}
		if len(defaults) == 0 {
			lines := make([]string, 0, len(g))
			for _, t := range g {
				lines = append(lines, fmt.Sprint(t.On.Pos.Line))
			}
			at := "at line "
			if len(lines) > 1 {
				at = "at lines "
			}
			p.add(g[0].On.Pos, ruleDecisionNoDefault, "event %s %s is decided by conditions only (%s%s): add the default, the same transition without when, taken when no condition holds", k.event, where(k.state), at, strings.Join(lines, ", "))
		}
	}
}

// checkGraph finds states that cannot be entered, cannot be left, or cannot
// lead to an end.
func (p *parser) checkGraph(def *Definition, final, failed map[string]bool) {
	terminal := func(s string) bool { return final[s] || failed[s] }
	next := map[string][]string{}
	prev := map[string][]string{}
	entered := map[string]bool{}
	var queue []string
	reached := map[string]bool{}
	for _, t := range def.Transitions {
		entered[t.To.Value] = true
		if t.Starts() && !reached[t.To.Value] {
			reached[t.To.Value] = true
			queue = append(queue, t.To.Value)
		}
		for _, f := range t.From {
			next[f.Value] = append(next[f.Value], t.To.Value)
			prev[t.To.Value] = append(prev[t.To.Value], f.Value)
		}
	}
	queueStart := append([]string(nil), queue...)
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, n := range next[s] {
			if !reached[n] {
				reached[n] = true
				queue = append(queue, n)
			}
		}
	}
	// States from which an end state can be reached (walking backwards).
	// Dead ends count as ends here: they are reported on their own, and
	// the states leading to them need no second report.
	canEnd := map[string]bool{}
	for s := range def.States {
		if terminal(s) || len(next[s]) == 0 {
			canEnd[s] = true
			queue = append(queue, s)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, n := range prev[s] {
			if !canEnd[n] {
				canEnd[n] = true
				queue = append(queue, n)
			}
		}
	}
	names := sortedStateNames(def)
	var deadEnds, neverEntered []string
	for _, name := range names {
		if p.onlyDeclared[name] {
			continue
		}
		if !entered[name] {
			neverEntered = append(neverEntered, name)
		}
		if !terminal(name) && len(next[name]) == 0 {
			deadEnds = append(deadEnds, name)
		}
	}
	for _, name := range names {
		st := def.States[name]
		if p.onlyDeclared[name] && !terminal(name) {
			p.add(st.Pos, ruleUnusedState, "state %s is declared under states but no transition goes to or leaves it; remove it or add its transitions", name)
			continue
		}
		// A misspelled state in `to:` makes a dead end of the typo and an
		// unreachable state of the right name: suggest one for the other.
		hint := func(candidates []string) string {
			if s := p.suggest(name, candidates); s != "" {
				return fmt.Sprintf(" (did you mean %s?)", s)
			}
			return ""
		}
		if !failed[name] && !reached[name] && len(queueStart) > 0 {
			if !entered[name] {
				p.add(st.Pos, ruleUnreachable, "state %s is never entered: no transition has to: %s%s", name, name, hint(deadEnds))
			} else {
				p.add(st.Pos, ruleUnreachable, "state %s can never be reached: every transition into it leaves from a state that is never reached", name)
			}
		}
		if terminal(name) {
			continue
		}
		if len(next[name]) == 0 {
			p.add(st.Pos, ruleDeadEnd, "state %s is a dead end: no transition leaves it and it is not listed in final or failed%s", name, hint(neverEntered))
			continue
		}
		if !canEnd[name] {
			p.add(st.Pos, ruleCannotFinish, "from state %s the saga can never end: no sequence of transitions leads to a final or failed state", name)
		}
	}
}

// joinFew joins the first n of list with ", " and says how many more
// there are.
func joinFew(list []string, n int) string {
	if len(list) <= n {
		return strings.Join(list, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(list[:n], ", "), len(list)-n)
}

// checkEngineEvents matches the events the engine raises (state timeouts and
// exhausted retries) with the transitions that handle them, both ways.
func (p *parser) checkEngineEvents(def *Definition, terminal func(string) bool) {
	// handlers[state][event]: who handles event in state (in a valid file
	// one participant; a few are kept for the message otherwise).
	type handling struct {
		engine bool
		by     []string // at most 3 names
	}
	handlers := map[string]map[string]*handling{}
	for _, t := range def.Transitions {
		for _, f := range t.From {
			if handlers[f.Value] == nil {
				handlers[f.Value] = map[string]*handling{}
			}
			h := handlers[f.Value][t.On.Value]
			if h == nil {
				h = &handling{}
				handlers[f.Value][t.On.Value] = h
			}
			h.engine = h.engine || t.By.Value == Engine
			if len(h.by) < 3 && !contains(h.by, t.By.Value) {
				h.by = append(h.by, t.By.Value)
			}
		}
	}
	// raised[state][event]: the engine can raise event while in state.
	raised := map[string]map[string]bool{}
	raisedAnywhere := map[string]bool{}
	raise := func(state, event string) {
		if raised[state] == nil {
			raised[state] = map[string]bool{}
		}
		raised[state][event] = true
		raisedAnywhere[event] = true
	}
	unhandled := func(at Pos, what, event, state string) {
		h := handlers[state][event]
		if h == nil {
			p.add(at, ruleUnhandledEvent, "%s is not handled: add a transition with on: %s, by: engine, from: [%s]", what, event, state)
			return
		}
		if !h.engine {
			p.add(at, ruleUnhandledEvent, "%s is handled in %s only by %s; the engine raises it, so the transition needs by: engine", what, state, strings.Join(h.by, ", "))
		}
	}
	for _, name := range sortedStateNames(def) {
		// An operator can abort a saga in any state that is not an end.
		if !terminal(name) {
			raise(name, Abort)
		}
		st := def.States[name]
		if st.Timeout == nil {
			continue
		}
		raise(name, st.Timeout.Event.Value)
		if !terminal(name) {
			unhandled(st.Timeout.Event.Pos, fmt.Sprintf("timeout event %s of state %s", st.Timeout.Event.Value, name), st.Timeout.Event.Value, name)
		}
	}
	for _, t := range def.Transitions {
		if j := t.Join; j != nil {
			raise(t.To.Value, j.Then.Value)
			raise(t.To.Value, j.Else.Value)
			if !terminal(t.To.Value) {
				unhandled(j.Then.Pos, fmt.Sprintf("join event %s of the parallel step into %s", j.Then.Value, t.To.Value), j.Then.Value, t.To.Value)
				unhandled(j.Else.Pos, fmt.Sprintf("join event %s of the parallel step into %s", j.Else.Value, t.To.Value), j.Else.Value, t.To.Value)
			}
		}
		if t.Send == nil || t.Send.Retry == nil {
			continue
		}
		r := t.Send.Retry
		raise(t.To.Value, r.Exhausted.Value)
		if !terminal(t.To.Value) {
			unhandled(r.Exhausted.Pos, fmt.Sprintf("exhausted event %s of the retry of %s (raised in state %s)", r.Exhausted.Value, t.Send.Command.Value, t.To.Value), r.Exhausted.Value, t.To.Value)
		}
	}
	for _, t := range def.Transitions {
		if t.By.Value != Engine || t.Starts() {
			continue
		}
		if !raisedAnywhere[t.On.Value] {
			p.add(t.On.Pos, ruleNeverRaised, "the engine never raises %s: no state timeout (timeout.event), no retry (retry.exhausted) and no join (then, else) names it, so this transition could never happen", t.On.Value)
			continue
		}
		for _, f := range t.From {
			if t.On.Value == Abort && terminal(f.Value) {
				continue // final-has-exit says why
			}
			if !raised[f.Value][t.On.Value] {
				p.add(f.Pos, ruleNeverRaised, "the engine never raises %s in state %s: neither a timeout of %s nor a retry or join of a command sent on entering %s names it", t.On.Value, f.Value, f.Value, f.Value)
			}
		}
	}
}

// compensations lists the compensations of t: its own, then its sends'.
func (t *Transition) compensations() []*Compensation {
	var out []*Compensation
	if t.Compensate != nil {
		out = append(out, t.Compensate)
	}
	for _, s := range t.Sends() {
		if s.Compensate != nil {
			out = append(out, s.Compensate)
		}
	}
	return out
}

// Sends lists the commands t sends: its send, or the branches of its
// parallel step; none when it sends nothing.
func (t *Transition) Sends() []*Send {
	if t.Send != nil {
		return []*Send{t.Send}
	}
	return t.Branches
}

// checkCompensations checks what a compensation undoes and that its done
// event names it alone.
func (p *parser) checkCompensations(def *Definition, terminal func(string) bool) {
	on := map[string]*Transition{} // every event that triggers a transition
	for _, t := range def.Transitions {
		if on[t.On.Value] == nil {
			on[t.On.Value] = t
		}
	}
	doneBy := map[string]*Compensation{}
	var first *Compensation
	for _, t := range def.Transitions {
		if c := t.Compensate; c != nil && (t.By.Value == Engine || t.By.Value == API) {
			what := "the engine raises its events itself"
			if t.By.Value == API {
				what = "a caller of the HTTP API asserts its event; no participant did anything yet"
			}
			p.add(c.Pos, ruleCompensateByReserved, "a transition by %s has no participant's effect to undo (%s): put compensate on the send of the command whose effect needs undoing", t.By.Value, what)
		}
		for _, s := range t.Sends() {
			if s.Compensate != nil && s.Compensate.Command.Value == s.Command.Value {
				p.add(s.Compensate.Command.Pos, ruleCompensateSame, "the compensation of %s is %s itself: name the command that undoes it, e.g. REVERT_%s", s.Command.Value, s.Command.Value, s.Command.Value)
			}
		}
		for _, c := range t.compensations() {
			if first == nil {
				first = c
			}
			if terminal(t.To.Value) {
				p.add(c.Pos, ruleCompensateNeverRuns, "this compensation would never run: the transition ends the saga in %s, and compensations run only for the steps before a saga fails; remove compensate", t.To.Value)
			}
			done := c.Done.Value
			if other := on[done]; other != nil {
				p.add(c.Done.Pos, ruleDoneIsEvent, "%s is the done event of compensation %s and also triggers the transition at line %d: the saga could not tell a finished undo from that event; give the done event its own name, e.g. %s_UNDONE", done, c.Command.Value, other.On.Pos.Line, c.Command.Value)
			}
			prev, seen := doneBy[done]
			switch {
			case !seen:
				doneBy[done] = c
			case prev.To.Value != c.To.Value || prev.Command.Value != c.Command.Value:
				p.add(c.Done.Pos, ruleDoneReused, "%s is already the done event of compensation %s → %s (line %d): a done event must name one compensation; give this one its own", done, prev.Command.Value, prev.To.Value, prev.Done.Pos.Line)
			case !sameRetry(prev.Retry, c.Retry):
				p.add(c.Done.Pos, ruleDoneReused, "%s is already the done event of compensation %s → %s (line %d) with another retry policy: give both the same retry, or this one its own done event", done, prev.Command.Value, prev.To.Value, prev.Done.Pos.Line)
			}
		}
	}
	if first != nil && len(def.Failed) == 0 {
		p.add(first.Pos, ruleCompensateNoFailed, "compensations run when the saga enters a failed state, and this saga has none: add failed: [...] with the states where it fails (and the transitions into them), or remove compensate")
	}
}

func sameRetry(a, b *Retry) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Attempts == b.Attempts && a.Backoff == b.Backoff && a.MaxBackoff == b.MaxBackoff
}

// checkReservedEvents refuses definitions that name one of their own events
// CommandExpired (saga-machine always reads that event as a participant's
// "this command had no effect" answer, whatever the definition says) or
// Abort other than in `on: ABORT, by: engine` (the engine raises it for
// an operator's abort, and only then).
func (p *parser) checkReservedEvents(def *Definition) {
	reserved := func(n Name, what string) {
		switch n.Value {
		case CommandExpired:
			p.add(n.Pos, ruleReservedEvent, "%s %s is reserved: participants answer a command that arrived after its deadline with it (no effect); give this event another name", what, n.Value)
		case Abort:
			p.add(n.Pos, ruleReservedEvent, "%s %s is reserved: the engine raises it when an operator aborts the saga; give this event another name", what, n.Value)
		}
	}
	for _, name := range sortedStateNames(def) {
		if st := def.States[name]; st.Timeout != nil {
			reserved(st.Timeout.Event, "timeout event")
		}
	}
	for _, t := range def.Transitions {
		if t.On.Value == Abort {
			if t.By.Value != Engine {
				p.add(t.On.Pos, ruleReservedEvent, "event %s is reserved: the engine raises it when an operator aborts the saga, so a transition on it must be by: engine (not %s)", Abort, t.By.Value)
			}
		} else {
			reserved(t.On, "event")
		}
		if t.Send != nil && t.Send.Retry != nil {
			reserved(t.Send.Retry.Exhausted, "exhausted event")
		}
		for _, c := range t.compensations() {
			reserved(c.Done, "done event")
		}
		for _, b := range t.Branches {
			reserved(b.OK, "reply event")
			reserved(b.Fail, "reply event")
		}
		if j := t.Join; j != nil {
			reserved(j.Then, "join event")
			reserved(j.Else, "join event")
		}
	}
}
