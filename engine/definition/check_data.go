package definition

import (
	"fmt"
	"sort"
	"strings"
)

// checkParallel checks the parallel steps: their target states, their join
// policies and how a reply names its branch.
func (p *parser) checkParallel(def *Definition, terminal func(string) bool) {
	parallel := false
	for _, t := range def.Transitions {
		parallel = parallel || t.Join != nil
	}
	if !parallel {
		return
	}
	into := map[string][]*Transition{}
	accepted := map[[2]string]*Transition{} // (state, event) → a transition taking it
	done := map[string]*Compensation{}
	for _, t := range def.Transitions {
		into[t.To.Value] = append(into[t.To.Value], t)
		for _, f := range t.From {
			if accepted[[2]string{f.Value, t.On.Value}] == nil {
				accepted[[2]string{f.Value, t.On.Value}] = t
			}
		}
		for _, c := range t.compensations() {
			done[c.Done.Value] = c
		}
	}
	reported := map[*Transition]bool{}
	for _, t := range def.Transitions {
		j := t.Join
		if j == nil || t.Branches == nil {
			continue
		}
		state := t.To.Value
		if terminal(state) {
			p.add(j.Pos, ruleParallelToTerminal, "a parallel step waits in its target state for the branches' replies, but %s is an end state where no reply can arrive: lead the step to a state that waits, and from there (on the join's then) to %s", state, state)
		}
		for _, other := range into[state] {
			if other.Join == nil && !reported[other] {
				reported[other] = true
				p.add(other.To.Pos, ruleJoinStateShared, "state %s waits for the join of the parallel step at line %d, so only parallel steps may enter it: this transition sends no branches and needs a state of its own", state, t.Pos.Line)
			}
		}
		fanOut := false
		for _, b := range t.Branches {
			fanOut = fanOut || b.ForEach != nil
		}
		if j.Policy == JoinAtLeast && j.N > len(t.Branches) && !fanOut {
			p.add(j.Pos, ruleJoinPolicy, "n %d is more than the %d branches of the step: the join could never succeed", j.N, len(t.Branches))
		}
		type reply struct{ participant, event string }
		seen := map[reply]*Send{}
		for _, b := range t.Branches {
			for _, ev := range []Name{b.OK, b.Fail} {
				if ev.Value == "" {
					continue
				}
				if ev.Value == b.OK.Value && ev.Pos != b.OK.Pos {
					p.add(ev.Pos, ruleBranchReply, "ok and fail of this branch are both %s: the saga could not tell success from failure", ev.Value)
					continue
				}
				k := reply{b.To.Value, ev.Value}
				if first, dup := seen[k]; dup && first != b {
					p.add(ev.Pos, ruleBranchReply, "%s from %s already answers the branch at line %d (%s): each reply must name one branch; give this one its own event", ev.Value, b.To.Value, first.Pos.Line, first.Command.Value)
					continue
				}
				seen[k] = b
				switch {
				case ev.Value == j.Then.Value || ev.Value == j.Else.Value:
					p.add(ev.Pos, ruleBranchReplyIsEvent, "%s is a reply of a branch and also the join's own event: give the reply its own name", ev.Value)
				case accepted[[2]string{state, ev.Value}] != nil:
					p.add(ev.Pos, ruleBranchReplyIsEvent, "%s is a reply of a branch and also triggers the transition at line %d in %s: the saga could not tell the two apart; give the reply its own name", ev.Value, accepted[[2]string{state, ev.Value}].On.Pos.Line, state)
				case done[ev.Value] != nil:
					p.add(ev.Pos, ruleBranchReplyIsEvent, "%s is a reply of a branch and also the done event of compensation %s: give the reply its own name", ev.Value, done[ev.Value].Command.Value)
				}
			}
		}
	}
}

// checkContracts checks the events section: that each entry is an event
// the participants send, and that no context key is written by the events
// of two different participants.
func (p *parser) checkContracts(def *Definition) {
	if len(def.Events) == 0 || !p.transitionsOK {
		return
	}
	emitters := map[string][]string{} // event → who sends it (participants, api), in file order
	emit := func(event, who string) {
		if !contains(emitters[event], who) {
			emitters[event] = append(emitters[event], who)
		}
	}
	raised := map[string]bool{} // events the engine raises
	for _, st := range def.States {
		if st.Timeout != nil {
			raised[st.Timeout.Event.Value] = true
		}
	}
	var known []string
	for _, t := range def.Transitions {
		if t.By.Value == Engine {
			raised[t.On.Value] = true
		} else {
			emit(t.On.Value, t.By.Value)
		}
		for _, c := range t.compensations() {
			emit(c.Done.Value, c.To.Value)
		}
		for _, b := range t.Branches {
			emit(b.OK.Value, b.To.Value)
			if b.Fail.Value != "" {
				emit(b.Fail.Value, b.To.Value)
			}
		}
		if j := t.Join; j != nil {
			raised[j.Then.Value], raised[j.Else.Value] = true, true
		}
		if t.Send != nil && t.Send.Retry != nil {
			raised[t.Send.Retry.Exhausted.Value] = true
		}
	}
	for ev := range emitters {
		known = append(known, ev)
	}
	sort.Strings(known)
	events := make([]*Event, 0, len(def.Events))
	for _, ev := range def.Events {
		events = append(events, ev)
	}
	sort.Slice(events, func(i, j int) bool { return before(events[i].Pos, events[j].Pos) })
	type owner struct {
		who   string // the emitters, joined
		event string
		pos   Pos
	}
	owners := map[string]owner{}
	for _, ev := range events {
		ems := emitters[ev.Name]
		if len(ems) == 0 {
			if raised[ev.Name] {
				p.add(ev.Pos, ruleContractEngineEvent, "%s is raised by the engine itself (a timeout, an exhausted retry or a join), with no payload to check: remove it from events", ev.Name)
				continue
			}
			msg := fmt.Sprintf("%s under events is not an event of this saga: no transition has on: %s and no compensation or branch answers it", ev.Name, ev.Name)
			if s := p.suggest(ev.Name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", s)
			}
			p.add(ev.Pos, ruleContractUnknownEvent, "%s", msg)
			continue
		}
		who := strings.Join(ems, ", ")
		for _, w := range ev.Writes {
			prev, ok := owners[w.Value]
			switch {
			case !ok:
				owners[w.Value] = owner{who: who, event: ev.Name, pos: w.Pos}
			case prev.who != who:
				p.add(w.Pos, ruleWritesShared, "context key %s is already written by %s (event %s, line %d), and %s sends %s: a key has one owner, so that no participant overwrites what another one wrote; rename one of the keys", w.Value, prev.who, prev.event, prev.pos.Line, who, ev.Name)
			}
		}
	}
}
