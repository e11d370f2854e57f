package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/looplab/fsm"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Model is the immutable, executable form of one validated Definition. It is
// safe for concurrent use. looplab/fsm does the state-machine work inside and
// never shows in this API.
//
// Compile builds one looplab/fsm event table from the definition's
// transitions and derives from the very same table a read-only lookup
// (state, event) → transition that Apply uses, so Apply takes no lock and
// allocates nothing on success. Compile then replays every (state, event)
// pair through an fsm.FSM and refuses the model if the two ever disagree.
type Model struct {
	def *definition.Definition

	events fsm.Events // the state machine as looplab/fsm sees it

	edges      map[edgeKey]*edge // (state, event) → transition
	known      map[string]bool   // every event name that is the On of a transition
	states     []string          // stable order, see States
	stateInfo  map[string]*stateInfo
	allowed    map[string][]Allowed // by state, "" = starting events
	startEvts  []string
	finals     []string
	failed     []string
	partTopics map[string]string
	partNames  []string
	keys       map[string]string
	eventNames []string                    // every event, in first-use order
	exhausted  map[edgeKey]string          // (state, exhausted event) → command whose retries raise it
	byDone     map[[2]string]*Compensation // (participant, done event) → compensation
	// effects is, per (participant, command), whether some send of it may
	// change something (true) or every send says effects: none (false).
	effects map[[2]string]bool

	contracts  map[string]*Contract   // event → its data contract (only events that have one)
	parallels  []*Parallel            // every parallel step, by ID
	parallelIn map[string][]*Parallel // state → the parallel steps that lead into it
	decisions  bool                   // some transition has a condition
}

// Step is the outcome of applying one event to one state.
type Step struct {
	From   string        // state before ("" when the event starts a saga)
	Event  string        // event applied
	By     string        // participant that emitted it (definition.Engine for timers, definition.API for HTTP starts)
	To     string        // state after
	Send   *CommandSpec  // command to send, nil if none; shared, must not be modified
	Undo   *Compensation // undoes what By did before emitting Event, nil if none; shared
	Final  bool          // To is a success terminal state
	Failed bool          // To is a failure terminal state

	// Condition is the condition (when) of the transition a decision took,
	// "" for a default or an ordinary transition. For the timeline.
	Condition string
	// Parallel is the parallel step the transition starts (its branches
	// are the commands to send, Send is then nil), nil for none; shared.
	Parallel *Parallel
	// Contract is the data contract of Event (Model.Contract), nil when it
	// has none; shared. ApplyWith has checked the payload against it.
	Contract *Contract
}

// CommandSpec is a command that a transition sends.
type CommandSpec struct {
	Participant string
	Topic       string
	Name        string
	Retry       *definition.Retry // nil: send once; a branch's retry has no Exhausted (the branch fails)
	Compensate  *Compensation     // undoes what the command did (or may have done), nil if none
	NoEffects   bool              // effects: none: the participant commits nothing for it
	// Payload builds the command's payload from the context (see
	// BuildPayload); nil: the payload is the whole saga context.
	Payload *Mapping
	// ForEach is a fan-out branch's list: one command per element (see
	// Expand); nil for one command.
	ForEach *definition.Expr

	saga    string // for the saga variable of mappings
	version int
}

// Allowed is one event that may be applied in a state: who must emit it and
// where it leads.
type Allowed struct {
	Event string // event name
	By    string // participant that must emit it (definition.Engine for timers and retries, definition.API for HTTP starts)
	To    string // state after
	When  string // the condition of a decision's transition; "" for the default and for ordinary transitions
}

// String formats a as "EVENT (by)", or "EVENT (by) when CONDITION" for a
// decision's conditional transition.
func (a Allowed) String() string {
	if a.When != "" {
		return a.Event + " (" + a.By + ") when " + a.When
	}
	return a.Event + " (" + a.By + ")"
}

type edgeKey struct{ state, event string }

type edge struct {
	tr   *definition.Transition
	by   string
	to   string
	send *CommandSpec
	undo *Compensation
	fin  bool
	fail bool

	roles    []string // by definition.API: the roles that may fire it over HTTP
	parallel *Parallel
	contract *Contract // of the event, nil for none
	// alts are the conditional transitions of a decision, in file order,
	// tried before this one, the default. nil for an ordinary transition.
	alts []*edge
}

type stateInfo struct {
	final, failed bool
	timeout       *definition.Timeout
}

// Compile turns a validated definition into a Model. It fails only if def
// breaks an invariant the validator guarantees (a programming error).
func Compile(def *definition.Definition) (*Model, error) {
	if def == nil {
		return nil, Errorf(CodeInvalid, "compile saga definition", "definition is nil")
	}
	op := fmt.Sprintf("compile saga %s v%d", def.Saga, def.Version)
	fail := func(format string, args ...any) (*Model, error) {
		return nil, Errorf(CodeInvalid, op, format, args...)
	}
	if def.Saga == "" {
		return fail("saga name is empty")
	}
	if def.Version <= 0 {
		return fail("version %d is not positive", def.Version)
	}
	m := &Model{
		def:        def,
		edges:      make(map[edgeKey]*edge),
		known:      make(map[string]bool),
		stateInfo:  make(map[string]*stateInfo),
		allowed:    make(map[string][]Allowed),
		partTopics: make(map[string]string, len(def.Participants)),
		keys:       make(map[string]string, len(def.Keys)),
		exhausted:  make(map[edgeKey]string),
		byDone:     make(map[[2]string]*Compensation),
		contracts:  make(map[string]*Contract),
		parallelIn: make(map[string][]*Parallel),
	}
	for name, p := range def.Participants {
		if name == definition.Engine || name == definition.API {
			return fail("participant name %q is reserved", name)
		}
		m.partTopics[name] = p.Topic
		m.partNames = append(m.partNames, name)
	}
	sort.Strings(m.partNames)
	for name, k := range def.Keys {
		m.keys[name] = k.Path
	}

	info := func(s string) *stateInfo {
		si := m.stateInfo[s]
		if si == nil {
			si = &stateInfo{}
			m.stateInfo[s] = si
		}
		return si
	}
	for name, st := range def.States {
		info(name).timeout = st.Timeout
	}
	for _, n := range def.Final {
		info(n.Value).final = true
		m.finals = append(m.finals, n.Value)
	}
	for _, n := range def.Failed {
		si := info(n.Value)
		if si.final {
			return fail("state %s is both final and failed", n.Value)
		}
		si.failed = true
		m.failed = append(m.failed, n.Value)
	}

	// The conditional transitions of decisions, by (state, event), in file
	// order; m.edges holds the defaults (and every other transition).
	alts := map[edgeKey][]*edge{}
	var altOrder []edgeKey
	edgeOf := make([]*edge, len(def.Transitions))
	for i, tr := range def.Transitions {
		ev, by, to := tr.On.Value, tr.By.Value, tr.To.Value
		if ev == "" || by == "" || to == "" {
			return fail("transition at line %d has an empty event, participant or target", tr.Pos.Line)
		}
		var roles []string
		switch by {
		case definition.Engine:
		case definition.API:
			if !tr.Starts() {
				return fail("transition %s by api does not start a saga", ev)
			}
			if len(tr.Roles) == 0 {
				return fail("transition %s by api has no roles", ev)
			}
			for _, r := range tr.Roles {
				roles = append(roles, r.Value)
			}
		default:
			if _, ok := m.partTopics[by]; !ok {
				return fail("transition %s is emitted by unknown participant %q", ev, by)
			}
		}
		if by != definition.API && len(tr.Roles) > 0 {
			return fail("transition %s by %s has roles; only by api may", ev, by)
		}
		if tr.When != nil && tr.When.Program == nil {
			return fail("the condition of transition %s at line %d is not compiled", ev, tr.Pos.Line)
		}
		var send *CommandSpec
		if tr.Send != nil {
			var err error
			if send, err = m.commandSpec(tr.Send); err != nil {
				return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile the send of " + ev, Err: err}
			}
		}
		toInfo := info(to)
		e := &edge{tr: tr, by: by, to: to, send: send, fin: toInfo.final, fail: toInfo.failed, roles: roles}
		if tr.Join != nil {
			p, err := m.compileParallel(tr, len(m.parallels))
			if err != nil {
				return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile the parallel step of " + ev, Err: err}
			}
			m.parallels = append(m.parallels, p)
			m.parallelIn[to] = append(m.parallelIn[to], p)
			e.parallel = p
		}
		edgeOf[i] = e
		src := []string{""}
		if !tr.Starts() {
			src = src[:0]
			for _, f := range tr.From {
				src = append(src, f.Value)
			}
		}
		when := ""
		if tr.When != nil {
			when = tr.When.Text
			m.decisions = true
		}
		for _, s := range src {
			if s != "" {
				if si := info(s); si.final || si.failed {
					return fail("transition %s leaves terminal state %s", ev, s)
				}
			}
			k := edgeKey{s, ev}
			if tr.When != nil {
				if alts[k] == nil {
					altOrder = append(altOrder, k)
				}
				alts[k] = append(alts[k], e)
			} else {
				if prev, dup := m.edges[k]; dup {
					return fail("event %s is handled twice in state %s (lines %d and %d)", ev, displayState(s), prev.tr.Pos.Line, tr.Pos.Line)
				}
				m.edges[k] = e
			}
			m.allowed[s] = append(m.allowed[s], Allowed{Event: ev, By: by, To: to, When: when})
		}
		if !m.known[ev] {
			m.eventNames = append(m.eventNames, ev)
		}
		m.known[ev] = true
		if tr.When != nil {
			// looplab/fsm knows one target per (state, event): the default's.
			continue
		}
		if tr.Starts() {
			m.startEvts = append(m.startEvts, ev)
		}
		m.events = append(m.events, fsm.EventDesc{Name: ev, Src: src, Dst: to})
		if send != nil && send.Retry != nil {
			k := edgeKey{to, send.Retry.Exhausted.Value}
			if _, dup := m.exhausted[k]; !dup {
				m.exhausted[k] = send.Name
			}
		}
	}
	for i, tr := range def.Transitions {
		// The exhausted events of the conditional transitions' retries.
		if e := edgeOf[i]; tr.When != nil && e.send != nil && e.send.Retry != nil {
			k := edgeKey{e.to, e.send.Retry.Exhausted.Value}
			if _, dup := m.exhausted[k]; !dup {
				m.exhausted[k] = e.send.Name
			}
		}
	}
	if len(m.startEvts) == 0 {
		return fail("no transition starts a saga (from: [])")
	}
	// Compensations, once every event is known (a done event must not be one).
	for i, tr := range def.Transitions {
		e := edgeOf[i]
		if tr.Compensate != nil && (e.by == definition.Engine || e.by == definition.API) {
			return fail("transition %s by %s has a compensation", tr.On.Value, e.by)
		}
		var err error
		if e.undo, err = m.compensation(tr.Compensate); err != nil {
			return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile compensations", Err: err}
		}
		if tr.Send != nil {
			if e.send.Compensate, err = m.compensation(tr.Send.Compensate); err != nil {
				return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile compensations", Err: err}
			}
		}
		if e.parallel != nil {
			for j, b := range tr.Branches {
				if e.parallel.Branches[j].Command.Compensate, err = m.compensation(b.Compensate); err != nil {
					return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile compensations", Err: err}
				}
			}
		}
	}
	if err := m.compileContracts(def); err != nil {
		return nil, &Error{Code: CodeInvalid, Op: op, Message: "compile the events' contracts", Err: err}
	}
	if len(m.contracts) > 0 {
		for i := range def.Transitions {
			edgeOf[i].contract = m.contracts[edgeOf[i].tr.On.Value]
		}
	}
	// A decision's lookup entry is its default with the conditional
	// transitions to try first (a copy: the default's edge is shared by
	// the other states of its from list).
	for _, k := range altOrder {
		def, ok := m.edges[k]
		if !ok {
			return fail("event %s in state %s is decided by conditions only: it has no default transition", k.event, displayState(k.state))
		}
		for _, a := range alts[k] {
			if a.by != def.by {
				return fail("event %s in state %s comes from %s in one transition and from %s in another", k.event, displayState(k.state), def.by, a.by)
			}
		}
		head := *def
		head.alts = alts[k]
		m.edges[k] = &head
	}
	for name, si := range m.stateInfo {
		if si.timeout != nil && !m.known[si.timeout.Event.Value] {
			return fail("timeout of state %s raises %s, which no transition handles", name, si.timeout.Event.Value)
		}
	}
	m.states = m.orderStates()
	if err := m.crossCheck(); err != nil {
		return nil, &Error{Code: CodeInternal, Op: op, Message: "looplab/fsm disagrees with the transition table", Err: err}
	}
	return m, nil
}

// orderStates lists start targets first, then the other states in
// breadth-first order along transitions (file order), then any state not
// reached that way (sorted), then the final and the failed states in file
// order.
func (m *Model) orderStates() []string {
	seen := make(map[string]bool, len(m.stateInfo))
	var order []string
	terminal := func(s string) bool { si := m.stateInfo[s]; return si.final || si.failed }
	var queue []string
	for _, a := range m.allowed[""] {
		if !seen[a.To] {
			seen[a.To] = true
			queue = append(queue, a.To)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		if !terminal(s) {
			order = append(order, s)
		}
		for _, a := range m.allowed[s] {
			if !seen[a.To] {
				seen[a.To] = true
				queue = append(queue, a.To)
			}
		}
	}
	var rest []string
	for s := range m.stateInfo {
		if !seen[s] && !terminal(s) {
			rest = append(rest, s)
		}
	}
	sort.Strings(rest)
	order = append(order, rest...)
	order = append(order, m.finals...)
	return append(order, m.failed...)
}

// crossCheck makes sure looplab/fsm, built from m.events, and the lookup
// table Apply uses agree, in time linear in the number of edges (a
// definition has up to definition.MaxTransitions transitions; states ×
// events would be quadratic):
//   - every edge of the table is allowed by the fsm and leads where the
//     table says;
//   - every (state, event) the fsm was given is an edge of the table, so
//     the fsm allows nothing the table refuses (the fsm knows no pair it
//     was not given);
//   - in every state (and before the start) the fsm refuses an event no
//     transition has.
func (m *Model) crossCheck() error {
	f := fsm.NewFSM("", m.events, nil)
	ctx := context.Background()
	for _, s := range append([]string{""}, m.states...) {
		f.SetState(s)
		if f.Can(noSuchEvent) {
			return fmt.Errorf("state %s: fsm allows the unknown event %s", displayState(s), noSuchEvent)
		}
		for _, a := range m.allowed[s] {
			e := m.edges[edgeKey{s, a.Event}]
			if e == nil || !e.leadsTo(a.To, a.When) {
				return fmt.Errorf("state %s, event %s: the allowed list and the table disagree", displayState(s), a.Event)
			}
			f.SetState(s)
			if !f.Can(a.Event) {
				return fmt.Errorf("state %s, event %s: fsm says allowed=false, table says true", displayState(s), a.Event)
			}
			err := f.Event(ctx, a.Event)
			var noTr fsm.NoTransitionError
			if err != nil && !errors.As(err, &noTr) {
				return fmt.Errorf("state %s, event %s: %w", displayState(s), a.Event, err)
			}
			if got := f.Current(); got != e.to {
				return fmt.Errorf("state %s, event %s: fsm went to %s, table to %s", displayState(s), a.Event, got, e.to)
			}
		}
	}
	for _, ed := range m.events {
		for _, src := range ed.Src {
			e, ok := m.edges[edgeKey{src, ed.Name}]
			if !ok || e.to != ed.Dst {
				return fmt.Errorf("state %s, event %s: fsm was given a transition to %s that the table does not have", displayState(src), ed.Name, ed.Dst)
			}
		}
	}
	return nil
}

// leadsTo reports whether e (a lookup entry) has a transition to state with
// condition when ("" for the default).
func (e *edge) leadsTo(state, when string) bool {
	if when == "" {
		return e.to == state
	}
	for _, a := range e.alts {
		if a.to == state && a.tr.When != nil && a.tr.When.Text == when {
			return true
		}
	}
	return false
}

// noSuchEvent is an event name no definition can have (names are
// UPPER_SNAKE_CASE).
const noSuchEvent = "no such event"

// applyFSM is Apply done by looplab/fsm on a fresh FSM for every call. It is
// kept for the benchmark that justifies the lookup table, and for tests that
// check both agree.
func (m *Model) applyFSM(ctx context.Context, state, event string) (string, error) {
	f := fsm.NewFSM(state, m.events, nil)
	err := f.Event(ctx, event)
	var noTr fsm.NoTransitionError
	if err != nil && !errors.As(err, &noTr) {
		return "", err
	}
	return f.Current(), nil
}

func displayState(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Definition returns the definition the model was compiled from. Callers must
// not modify it.
func (m *Model) Definition() *definition.Definition { return m.def }

// Name is the saga name, e.g. MANUAL_CREATE_ORDER.
func (m *Model) Name() string { return m.def.Saga }

// Version is the definition version.
func (m *Model) Version() int { return m.def.Version }

// String is "NAME vVERSION", e.g. "MANUAL_CREATE_ORDER v1".
func (m *Model) String() string { return fmt.Sprintf("%s v%d", m.def.Saga, m.def.Version) }

// Apply returns the step taken when participant by emits event in state
// (state "" means the saga does not exist yet, so only starting events are
// allowed). When the event is not allowed it returns an *Error with code
// CodeUnknownEvent, CodeIllegal, CodeWrongParticipant or CodeFinished and a
// message naming the events that are allowed in state. A state the model
// does not have gives CodeInvalid.
//
// A decision on data (transitions with conditions) needs the event's
// payload and the saga's context: Apply refuses it with CodeInvalid and
// ErrNeedsData; use ApplyWith. Apply does not check the event's contract
// (Step.Contract); ApplyWith does.
func (m *Model) Apply(state, event, by string) (Step, error) {
	if e, ok := m.edges[edgeKey{state, event}]; ok && e.by == by {
		if e.alts != nil {
			return Step{}, &Error{Code: CodeInvalid, Op: "apply " + event + " to " + m.String(),
				Message: fmt.Sprintf("event %s in state %s is a decision on data: its conditions need the payload and the context (ApplyWith)", event, displayState(state)), Err: ErrNeedsData}
		}
		return e.step(state, event), nil
	}
	return Step{}, m.applyError(state, event, by)
}

// step is the Step of taking e from state on event.
func (e *edge) step(state, event string) Step {
	st := Step{From: state, Event: event, By: e.by, To: e.to, Send: e.send, Undo: e.undo, Final: e.fin, Failed: e.fail,
		Parallel: e.parallel, Contract: e.contract}
	if e.tr.When != nil {
		st.Condition = e.tr.When.Text
	}
	return st
}

// applyError explains why Apply refused (state, event, by). It is off the
// fast path.
func (m *Model) applyError(state, event, by string) error {
	op := "apply " + event + " to " + m.String()
	if !m.known[event] {
		return Errorf(CodeUnknownEvent, op, "%s has no event %s; %s", m, event, m.allowedText(state))
	}
	if state != "" {
		si, ok := m.stateInfo[state]
		if !ok {
			return Errorf(CodeInvalid, op, "%s has no state %s", m, state)
		}
		if si.final || si.failed {
			outcome := "success"
			if si.failed {
				outcome = "failure"
			}
			return Errorf(CodeFinished, op, "the saga is finished in %s (%s); no event is allowed there", state, outcome)
		}
	}
	e, ok := m.edges[edgeKey{state, event}]
	if !ok {
		if state == "" {
			return Errorf(CodeIllegal, op, "event %s does not start a saga; %s", event, m.allowedText(state))
		}
		return Errorf(CodeIllegal, op, "event %s is not allowed in state %s; %s", event, state, m.allowedText(state))
	}
	return Errorf(CodeWrongParticipant, op, "event %s in state %s must come from %s, not %q; %s", event, displayState(state), e.by, by, m.allowedText(state))
}

func (m *Model) allowedText(state string) string {
	al := m.allowed[state]
	var b strings.Builder
	if state == "" {
		b.WriteString("events that start a saga: ")
	} else {
		b.WriteString("allowed in " + state + ": ")
	}
	if len(al) == 0 {
		b.WriteString("none")
	}
	for i, a := range al {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
	}
	return b.String()
}

// HasState reports whether state is a state of the model.
func (m *Model) HasState(state string) bool { _, ok := m.stateInfo[state]; return ok }

// HasEvent reports whether some transition handles event.
func (m *Model) HasEvent(event string) bool { return m.known[event] }

// Timeout returns the time limit of state, or nil when it has none. Callers
// must not modify it.
func (m *Model) Timeout(state string) *definition.Timeout {
	if si := m.stateInfo[state]; si != nil {
		return si.timeout
	}
	return nil
}

// ExhaustedCommand returns the command whose exhausted retries raise event
// while the saga waits in state (the first such transition in the file), or
// "" when no retry raises event there.
func (m *Model) ExhaustedCommand(state, event string) string {
	return m.exhausted[edgeKey{state, event}]
}

// IsFinal reports whether state is a success terminal state.
func (m *Model) IsFinal(state string) bool { si := m.stateInfo[state]; return si != nil && si.final }

// IsFailed reports whether state is a failure terminal state.
func (m *Model) IsFailed(state string) bool { si := m.stateInfo[state]; return si != nil && si.failed }

// IsTerminal reports whether state is final or failed: no event is accepted there.
func (m *Model) IsTerminal(state string) bool {
	si := m.stateInfo[state]
	return si != nil && (si.final || si.failed)
}

// States lists every state: the targets of starting transitions first, then
// the others in breadth-first order along the transitions, then the final and
// the failed states. The order is stable for a given definition.
func (m *Model) States() []string { return slices.Clone(m.states) }

// Events lists every event name handled by some transition, in the order of
// first use in the definition.
func (m *Model) Events() []string { return slices.Clone(m.eventNames) }

// Allowed lists the events accepted in state, in definition order; state ""
// gives the events that start a saga. Terminal and unknown states give none.
func (m *Model) Allowed(state string) []Allowed { return slices.Clone(m.allowed[state]) }

// Keys returns the business keys: key name → dotted path into the saga
// context. The map is a copy.
func (m *Model) Keys() map[string]string {
	out := make(map[string]string, len(m.keys))
	for k, v := range m.keys {
		out[k] = v
	}
	return out
}

// Participants lists the participant names, sorted. The reserved
// definition.Engine and definition.API are not among them.
func (m *Model) Participants() []string { return slices.Clone(m.partNames) }

// NoEffects reports whether the definition declares command, sent to
// participant, without effects (effects: none on every send of it): an
// answer to it that comes late changes nothing anywhere.
func (m *Model) NoEffects(participant, command string) bool {
	has, sent := m.effects[[2]string{participant, command}]
	return sent && !has
}

// OnlyStops reports whether event, raised by participant by, is a request
// to stop the saga: the definition has at least one transition on it by
// that participant, and every transition on it leads into a failed state
// (a cancellation, for example). Such an event that reaches a saga which
// has already failed asks for what has happened.
func (m *Model) OnlyStops(event, by string) bool {
	some := false
	for _, tr := range m.def.Transitions {
		if tr.On.Value != event {
			continue
		}
		if si := m.stateInfo[tr.To.Value]; si == nil || !si.failed || len(tr.From) == 0 {
			return false
		}
		some = some || tr.By.Value == by
	}
	return some
}

// sendsNoEffects reports whether the definition sends participant some
// command without effects.
func (m *Model) sendsNoEffects(participant string) bool {
	for k, has := range m.effects {
		if k[0] == participant && !has {
			return true
		}
	}
	return false
}

// Topic returns the command topic of participant, or "" if the saga has no
// such participant.
func (m *Model) Topic(participant string) string { return m.partTopics[participant] }

// StartRoles reports whether event starts a saga over the HTTP API (a starting transition `by: api`)
// and which roles may fire it (any one suffices). ok is false for events that only a participant may start.
// The slice is a copy.
func (m *Model) StartRoles(event string) (roles []string, ok bool) {
	e, found := m.edges[edgeKey{"", event}]
	if !found || e.by != definition.API {
		return nil, false
	}
	return slices.Clone(e.roles), true
}

// StartEvents lists the events that start a saga, in definition order.
func (m *Model) StartEvents() []string { return slices.Clone(m.startEvts) }

// FinalStates lists the success terminal states, in definition order.
func (m *Model) FinalStates() []string { return slices.Clone(m.finals) }

// FailedStates lists the failure terminal states, in definition order.
func (m *Model) FailedStates() []string { return slices.Clone(m.failed) }

// Description returns the description of state for humans, or "".
func (m *Model) Description(state string) string {
	if st := m.def.States[state]; st != nil {
		return st.Description
	}
	return ""
}
