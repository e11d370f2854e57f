package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// ErrNeedsData is wrapped by Apply's error for a decision on data: the
// event's payload and the saga's context are needed (ApplyWith).
var ErrNeedsData = errors.New("a decision on data needs the payload and the context")

// MaxFanOut is the most commands one fan-out branch (for_each) may send:
// a longer list fails the step (Expand's error) rather than flooding a
// participant.
const MaxFanOut = 1000

// Data is what ApplyWith reads besides the state machine: the event's
// payload and the saga's context before the event, for the conditions of
// decisions and the event's contract.
type Data struct {
	SagaID  string          // the saga instance (the saga.id of expressions)
	Payload json.RawMessage // the event's payload: a JSON object; empty or null for none
	Context json.RawMessage // the saga's context before the event: a JSON object; empty for {}
}

// ApplyWith is Apply with the data a decision needs. It checks the event's
// payload against its contract (Model.Contract) first, then picks the
// transition: the conditions of a decision's transitions are evaluated in
// file order with event = Data.Payload, context = Data.Context and saga =
// {id, name, version}; the first that holds applies, and when none does the
// default. Step.Condition names the condition taken.
//
// Besides Apply's errors it returns CodeInvalid when the payload breaks
// the event's contract (the message names the schema violation or the key
// the event may not write) and when a condition cannot be evaluated (a
// field missing from the payload, a type mismatch, the cost limit): the
// event cannot be applied as it is and is refused, never half-applied.
func (m *Model) ApplyWith(state, event, by string, d Data) (Step, error) {
	e, ok := m.edges[edgeKey{state, event}]
	if !ok || e.by != by {
		return Step{}, m.applyError(state, event, by)
	}
	if e.contract != nil {
		if err := e.contract.Check(d.Payload); err != nil {
			return Step{}, err
		}
	}
	if len(e.alts) == 0 {
		return e.step(state, event), nil
	}
	op := "apply " + event + " to " + m.String()
	in, err := m.input(d)
	if err != nil {
		return Step{}, &Error{Code: CodeInvalid, Op: op, Message: "read the payload and context for the decision", Err: err}
	}
	for _, a := range e.alts {
		ok, err := a.tr.When.Program.Bool(in)
		if err != nil {
			return Step{}, &Error{Code: CodeInvalid, Op: op,
				Message: fmt.Sprintf("the condition of the transition at line %d (%s) cannot be evaluated on this event", a.tr.Pos.Line, a.tr.When.Text), Err: err}
		}
		if ok {
			return a.step(state, event), nil
		}
	}
	return e.step(state, event), nil
}

// input decodes d for the expressions.
func (m *Model) input(d Data) (expr.Input, error) {
	ev, err := expr.Decode(d.Payload)
	if err != nil {
		return expr.Input{}, fmt.Errorf("payload: %w", err)
	}
	ctx, err := expr.Decode(d.Context)
	if err != nil {
		return expr.Input{}, fmt.Errorf("context: %w", err)
	}
	return expr.Input{Event: ev, Context: ctx, Saga: expr.Saga{ID: d.SagaID, Name: m.def.Saga, Version: m.def.Version}}, nil
}

// Decides reports whether some transition of the model has a condition, so
// that callers know Apply may answer ErrNeedsData.
func (m *Model) Decides() bool { return m.decisions }

// Contract is the data contract of one event: the JSON Schema its payload
// must satisfy and the top-level context keys it may write. It is shared
// and immutable.
type Contract struct {
	Event  string
	Schema *definition.Schema // nil: no schema
	// writes are the keys the event may write (its events: writes); nil
	// when the definition does not say.
	writes []string
	// foreign are the keys the event may not write: those other
	// participants' events declare (checked when writes is nil).
	foreign []string
}

// Writes lists the top-level context keys the event may write, sorted, or
// nil when the definition does not restrict them (then any key except
// Foreign).
func (c *Contract) Writes() []string { return slices.Clone(c.writes) }

// Foreign lists the context keys other participants own, which the event may
// not write, sorted.
func (c *Contract) Foreign() []string { return slices.Clone(c.foreign) }

// Allows reports whether the event may write the top-level context key.
func (c *Contract) Allows(key string) bool {
	if c.writes != nil {
		_, ok := slices.BinarySearch(c.writes, key)
		return ok
	}
	_, owned := slices.BinarySearch(c.foreign, key)
	return !owned
}

// Check checks payload (a JSON object; empty or null for {}) against the
// contract: first the keys it writes, then the schema. The error is an
// *Error with CodeInvalid naming every violation (a dead letter's reason).
func (c *Contract) Check(payload json.RawMessage) error {
	op := "check the contract of " + c.Event
	if c.writes != nil || c.foreign != nil {
		keys, err := topKeys(payload)
		if err != nil {
			return &Error{Code: CodeInvalid, Op: op, Message: "the payload is not a JSON object", Err: err}
		}
		var bad []string
		for _, k := range keys {
			if !c.Allows(k) {
				bad = append(bad, k)
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			if c.writes != nil {
				return Errorf(CodeInvalid, op, "%s may write only %s into the saga context, not %s", c.Event, strings.Join(c.writes, ", "), strings.Join(clipList(bad, 10), ", "))
			}
			return Errorf(CodeInvalid, op, "%s may not write %s into the saga context: other participants own them", c.Event, strings.Join(clipList(bad, 10), ", "))
		}
	}
	if c.Schema != nil {
		if err := c.Schema.Validate(payload); err != nil {
			return Errorf(CodeInvalid, op, "the payload of %s breaks its schema: %v", c.Event, err)
		}
	}
	return nil
}

func clipList(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(slices.Clone(l[:n]), fmt.Sprintf("and %d more", len(l)-n))
}

// topKeys lists the top-level keys of a JSON object (none for empty or
// null).
func topKeys(payload json.RawMessage) ([]string, error) {
	t := bytes.TrimSpace(payload)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(t, &obj); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	return keys, nil
}

// Contract returns the data contract of event, or nil when it has none (no
// schema, no writes, and no key owned by another participant). Every event
// a participant sends is checked against it before its payload joins the
// context: transitions (ApplyWith does it), compensations' done events and
// branches' replies (the caller does it).
func (m *Model) Contract(event string) *Contract { return m.contracts[event] }

// compileContracts builds the contracts: the events section, and the keys
// each participant owns for the events that do not list theirs.
func (m *Model) compileContracts(def *definition.Definition) error {
	if len(def.Events) == 0 {
		return nil // no schema, no writes: no key is owned, nothing to check
	}
	emitters := map[string]map[string]bool{} // event → participants (and api) that send it
	emit := func(event, who string) {
		if emitters[event] == nil {
			emitters[event] = map[string]bool{}
		}
		emitters[event][who] = true
	}
	for _, tr := range def.Transitions {
		if tr.By.Value != definition.Engine {
			emit(tr.On.Value, tr.By.Value)
		}
		for _, s := range tr.Sends() {
			if s.Compensate != nil {
				emit(s.Compensate.Done.Value, s.Compensate.To.Value)
			}
		}
		if c := tr.Compensate; c != nil {
			emit(c.Done.Value, c.To.Value)
		}
		for _, b := range tr.Branches {
			emit(b.OK.Value, b.To.Value)
			if b.Fail.Value != "" {
				emit(b.Fail.Value, b.To.Value)
			}
		}
	}
	owners := map[string]map[string]bool{} // key → participants whose events list it
	for name, ev := range def.Events {
		if emitters[name] == nil {
			return fmt.Errorf("events: %s is not sent by any participant", name)
		}
		for _, w := range ev.Writes {
			if owners[w.Value] == nil {
				owners[w.Value] = map[string]bool{}
			}
			for p := range emitters[name] {
				owners[w.Value][p] = true
			}
		}
	}
	for event, ems := range emitters {
		c := &Contract{Event: event}
		if ev := def.Events[event]; ev != nil {
			c.Schema = ev.Schema
			if ev.Writes != nil {
				c.writes = []string{}
				for _, w := range ev.Writes {
					c.writes = append(c.writes, w.Value)
				}
				sort.Strings(c.writes)
			}
		}
		if c.writes == nil {
			for key, ps := range owners {
				mine := false
				for p := range ems {
					mine = mine || ps[p]
				}
				if !mine {
					c.foreign = append(c.foreign, key)
				}
			}
			sort.Strings(c.foreign)
		}
		if c.Schema != nil || c.writes != nil || c.foreign != nil {
			m.contracts[event] = c
		}
	}
	return nil
}

// Mapping builds a command's payload from the saga's context (the
// definition's `payload:`). It is shared and immutable.
type Mapping struct {
	def *definition.Mapping
}

// Text describes the mapping for humans: its expression, or its keys.
func (mp *Mapping) Text() string {
	if mp.def.Expr != nil {
		return mp.def.Expr.Text
	}
	keys := make([]string, len(mp.def.Fields))
	for i, f := range mp.def.Fields {
		keys[i] = f.Key
	}
	return "{" + strings.Join(keys, ", ") + "}"
}

// build evaluates the mapping into a JSON-ready value.
func (mp *Mapping) build(in expr.Input) (any, error) {
	return buildMapping(mp.def, in)
}

func buildMapping(def *definition.Mapping, in expr.Input) (any, error) {
	if def.Expr != nil {
		return def.Expr.Program.Value(in)
	}
	out := make(map[string]any, len(def.Fields))
	for _, f := range def.Fields {
		var v any
		var err error
		if f.Nested != nil {
			v, err = buildMapping(f.Nested, in)
		} else {
			v, err = f.Expr.Program.Value(in)
		}
		if err != nil {
			return nil, fmt.Errorf("payload key %s (line %d): %w", f.Key, f.Pos.Line, err)
		}
		out[f.Key] = v
	}
	return out, nil
}

// BuildPayload is the payload of the command for a saga whose context
// (after the event that sent the command was merged into it) is context:
// the context itself when the command has no mapping, else the mapping's
// result, a JSON object of at most expr.MaxResultBytes. A fan-out branch's
// payloads come from Expand. The error (CodeInvalid) says which key of the
// mapping failed and why.
func (c *CommandSpec) BuildPayload(sagaID string, context json.RawMessage) (json.RawMessage, error) {
	if c.Payload == nil && c.ForEach == nil {
		return context, nil
	}
	out, err := c.Expand(sagaID, context)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 {
		return nil, Errorf(CodeInvalid, "build the payload of "+c.Name, "%s fans out into %d commands: use Expand", c.Name, len(out))
	}
	return out[0], nil
}

// Expand is the payloads of the commands c stands for: one per element of
// its for_each list (at most MaxFanOut; the mapping sees item and index),
// or one. Without a mapping each payload is the whole context.
func (c *CommandSpec) Expand(sagaID string, context json.RawMessage) ([]json.RawMessage, error) {
	op := "build the payload of " + c.Name
	if c.Payload == nil && c.ForEach == nil {
		return []json.RawMessage{context}, nil
	}
	ctx, err := expr.Decode(context)
	if err != nil {
		return nil, &Error{Code: CodeInvalid, Op: op, Message: "the saga context is not a JSON object", Err: err}
	}
	in := expr.Input{Context: ctx, Saga: expr.Saga{ID: sagaID, Name: c.saga, Version: c.version}}
	one := func(in expr.Input) (json.RawMessage, error) {
		if c.Payload == nil {
			return context, nil
		}
		v, err := c.Payload.build(in)
		if err != nil {
			return nil, &Error{Code: CodeInvalid, Op: op, Message: "the payload mapping failed", Err: err}
		}
		if _, ok := v.(map[string]any); !ok {
			return nil, Errorf(CodeInvalid, op, "the payload mapping gave %T, not an object", v)
		}
		raw, err := expr.Encode(v)
		if err != nil {
			return nil, &Error{Code: CodeInvalid, Op: op, Message: "the payload mapping's result", Err: err}
		}
		return raw, nil
	}
	if c.ForEach == nil {
		p, err := one(in)
		if err != nil {
			return nil, err
		}
		return []json.RawMessage{p}, nil
	}
	items, err := c.ForEach.Program.List(in)
	if err != nil {
		return nil, &Error{Code: CodeInvalid, Op: op, Message: "the for_each list failed", Err: err}
	}
	if len(items) > MaxFanOut {
		return nil, Errorf(CodeInvalid, op, "for_each gives %d elements: a fan-out sends at most %d commands", len(items), MaxFanOut)
	}
	out := make([]json.RawMessage, 0, len(items))
	for i, it := range items {
		in.Item, in.Index = it, i
		p, err := one(in)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// commandSpec compiles a send (or a branch) of the definition.
func (m *Model) commandSpec(s *definition.Send) (*CommandSpec, error) {
	topic, ok := m.partTopics[s.To.Value]
	if !ok {
		return nil, Errorf(CodeInvalid, "compile command", "%s goes to unknown participant %q", s.Command.Value, s.To.Value)
	}
	c := &CommandSpec{Participant: s.To.Value, Topic: topic, Name: s.Command.Value, Retry: s.Retry, ForEach: s.ForEach,
		NoEffects: s.NoEffects, saga: m.def.Saga, version: m.def.Version}
	if m.effects == nil {
		m.effects = map[[2]string]bool{}
	}
	key := [2]string{c.Participant, c.Name}
	m.effects[key] = m.effects[key] || !s.NoEffects
	if s.Payload != nil {
		if err := checkMapping(s.Payload); err != nil {
			return nil, Errorf(CodeInvalid, "compile command", "%s: %v", s.Command.Value, err)
		}
		c.Payload = &Mapping{def: s.Payload}
	}
	if s.ForEach != nil && s.ForEach.Program == nil {
		return nil, Errorf(CodeInvalid, "compile command", "the for_each of %s is not compiled", s.Command.Value)
	}
	return c, nil
}

// checkMapping makes sure every expression of a mapping is compiled.
func checkMapping(mp *definition.Mapping) error {
	if mp.Expr != nil {
		if mp.Expr.Program == nil {
			return fmt.Errorf("the payload expression at line %d is not compiled", mp.Expr.Pos.Line)
		}
		return nil
	}
	for _, f := range mp.Fields {
		switch {
		case f.Nested != nil:
			if err := checkMapping(f.Nested); err != nil {
				return err
			}
		case f.Expr == nil || f.Expr.Program == nil:
			return fmt.Errorf("payload key %s at line %d is not compiled", f.Key, f.Pos.Line)
		}
	}
	return nil
}

// Parallel is a parallel step: the branches a transition sends at once and
// its join. The saga waits for the join in State; the runtime records the
// step's ID in the instance, counts the replies of its commands
// (Branch.Reply) and asks Outcome when the step is over, then raises Then
// or Else (engine events with their transitions from State). Shared and
// immutable.
type Parallel struct {
	ID       int    // the step's number in the model (Model.Parallel), stable for a definition version
	Event    string // the event of the transition that starts it
	State    string // where the saga waits for the join
	Policy   definition.JoinPolicy
	N        int    // policy at_least: successes needed
	Then     string // raised when enough commands succeeded
	Else     string // raised when enough can no longer succeed
	Branches []*Branch
}

// Branch is one branch of a parallel step: its command (a fan-out's
// stands for one command per element, see CommandSpec.Expand) and the
// participant's replies.
type Branch struct {
	Index   int
	Command *CommandSpec // Retry has no Exhausted: past its attempts the command failed
	OK      string       // the reply when the command succeeded
	Fail    string       // the reply when it failed; "" when it has none
}

// Reply says whether event from participant answers one of p's branches,
// which one, and whether it is a success (ok) or a failure.
func (p *Parallel) Reply(participant, event string) (b *Branch, ok, found bool) {
	for _, b := range p.Branches {
		if b.Command.Participant != participant {
			continue
		}
		switch event {
		case b.OK:
			return b, true, true
		case b.Fail:
			if b.Fail != "" {
				return b, false, true
			}
		}
	}
	return nil, false, false
}

// JoinOutcome is where a parallel step stands.
type JoinOutcome int

// Join outcomes.
const (
	JoinPending JoinOutcome = iota // more replies are needed
	JoinDone                       // enough commands succeeded: raise Then
	JoinFailed                     // enough can no longer succeed: raise Else
)

// String names the outcome.
func (o JoinOutcome) String() string {
	switch o {
	case JoinDone:
		return "done"
	case JoinFailed:
		return "failed"
	}
	return "pending"
}

// Need is how many of total commands (after fan-out) must succeed: all of
// them, one (first), or N (at_least).
func (p *Parallel) Need(total int) int {
	switch p.Policy {
	case definition.JoinFirst:
		return 1
	case definition.JoinAtLeast:
		return p.N
	}
	return total
}

// Outcome is where the step stands when of total commands succeeded have
// succeeded and failed have failed (a fail reply, exhausted retries, an
// expired command). A failure decides only once the needed successes can no
// longer come; a success as soon as enough arrived.
func (p *Parallel) Outcome(total, succeeded, failed int) JoinOutcome {
	need := p.Need(total)
	switch {
	case succeeded >= need:
		return JoinDone
	case total-failed < need:
		return JoinFailed
	}
	return JoinPending
}

// Parallel returns the parallel step with id (Parallel.ID), or nil.
func (m *Model) Parallel(id int) *Parallel {
	if id < 0 || id >= len(m.parallels) {
		return nil
	}
	return m.parallels[id]
}

// ParallelsInto lists the parallel steps whose join the saga waits for in
// state (several transitions may lead into one such state, each its own
// step), in definition order.
func (m *Model) ParallelsInto(state string) []*Parallel { return slices.Clone(m.parallelIn[state]) }

// compileParallel compiles the parallel step of tr.
func (m *Model) compileParallel(tr *definition.Transition, id int) (*Parallel, error) {
	j := tr.Join
	if len(tr.Branches) == 0 {
		return nil, fmt.Errorf("the join at line %d has no branches", j.Pos.Line)
	}
	p := &Parallel{ID: id, Event: tr.On.Value, State: tr.To.Value, Policy: j.Policy, N: j.N, Then: j.Then.Value, Else: j.Else.Value}
	switch j.Policy {
	case definition.JoinAll, definition.JoinFirst:
	case definition.JoinAtLeast:
		if j.N < 1 {
			return nil, fmt.Errorf("policy at_least needs n ≥ 1, got %d", j.N)
		}
	default:
		return nil, fmt.Errorf("unknown join policy %q", j.Policy)
	}
	for i, b := range tr.Branches {
		c, err := m.commandSpec(b)
		if err != nil {
			return nil, err
		}
		if b.OK.Value == "" {
			return nil, fmt.Errorf("branch %s has no ok reply", b.Command.Value)
		}
		p.Branches = append(p.Branches, &Branch{Index: i, Command: c, OK: b.OK.Value, Fail: b.Fail.Value})
	}
	return p, nil
}

// accepts reports whether some transition handles event in state.
func (m *Model) accepts(state, event string) bool {
	_, ok := m.edges[edgeKey{state, event}]
	return ok
}

// sendInto returns the command that a transition into state sends to
// participant under the name command, or nil.
func (m *Model) sendInto(state, command, participant string) *CommandSpec {
	for _, e := range m.edges {
		for _, c := range append([]*edge{e}, e.alts...) {
			if c.to == state && c.send != nil && c.send.Name == command && c.send.Participant == participant {
				return c.send
			}
		}
	}
	return nil
}
