package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// simSagaID is the saga id a simulated saga's expressions see (saga.id).
const simSagaID = "simulated-saga"

// payloadFlags collects --payload EVENT=FILE.
type payloadFlags map[string]json.RawMessage

func (p payloadFlags) String() string { return "" }

func (p payloadFlags) Set(v string) error {
	event, file, ok := strings.Cut(v, "=")
	if !ok || event == "" || file == "" {
		return fmt.Errorf("want EVENT=FILE, got %q", v)
	}
	data, err := readPayload(file)
	if err != nil {
		return fmt.Errorf("read the payload of %s: %w", event, err)
	}
	if err := checkPayload(data); err != nil {
		return fmt.Errorf("the payload of %s in %s: %w", event, file, err)
	}
	p[event] = bytes.TrimSpace(data)
	return nil
}

// maxPayloadBytes bounds a payload file (saga-machine's messages are far
// smaller).
const maxPayloadBytes = 1 << 20

// readPayload reads at most maxPayloadBytes of file.
func readPayload(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPayloadBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPayloadBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, maxPayloadBytes)
	}
	return data, nil
}

// checkPayload accepts a JSON object.
func checkPayload(data []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return errors.New("a payload must be a JSON object, e.g. {\"amount\": 1500}")
	}
	return nil
}

// stepArg is one EVENT[@participant][=JSON] of the command line.
type stepArg struct {
	event, by string
	payload   json.RawMessage // nil: none given
}

func parseStepArg(i int, arg string, files payloadFlags) (stepArg, error) {
	head, payload, hasPayload := strings.Cut(arg, "=")
	event, by, explicit := strings.Cut(head, "@")
	if event == "" || (explicit && by == "") {
		return stepArg{}, fmt.Errorf("event %d: %q is not EVENT, EVENT@participant or EVENT=JSON", i, arg)
	}
	sa := stepArg{event: event, by: by}
	switch {
	case hasPayload:
		if err := checkPayload([]byte(payload)); err != nil {
			return stepArg{}, fmt.Errorf("event %d (%s): %w", i, event, err)
		}
		sa.payload = json.RawMessage(payload)
	case files[event] != nil:
		sa.payload = files[event]
	}
	return sa, nil
}

func simulate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("simulate", "[--payload EVENT=FILE]... FILE EVENT[@participant][=JSON]...", stderr)
	files := payloadFlags{}
	fs.Var(files, "payload", "the payload of EVENT, read from FILE, for every EVENT of the run written without =JSON (repeatable)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			return exitUsage
		}
		return flagExit(err)
	}
	if len(rest) < 2 {
		fmt.Fprintln(stderr, "sagactl simulate: want a FILE and at least one EVENT")
		fs.Usage()
		return exitUsage
	}
	m, code := compile("simulate", rest[0], stderr)
	if m == nil {
		return code
	}
	var steps []stepArg
	for i, arg := range rest[1:] {
		sa, err := parseStepArg(i+1, arg, files)
		if err != nil {
			fmt.Fprintf(stderr, "sagactl simulate: %v\n", err)
			return exitUsage
		}
		steps = append(steps, sa)
	}
	sim := &simulation{m: m, stdout: stdout, context: json.RawMessage("{}")}
	for i, sa := range steps {
		var err error
		switch {
		case sim.lateStop(i+1, sa):
		case sim.compensating():
			err = sim.done(i+1, sa)
		case sim.join != nil && sim.isReply(sa):
			err = sim.reply(i+1, sa)
		default:
			err = sim.apply(fmt.Sprint(i+1), sa)
		}
		if err != nil {
			sim.flush()
			fmt.Fprintf(stderr, "sagactl simulate: step %d: %v\n", i+1, err)
			return exitInvalid
		}
	}
	sim.flush()
	sim.summary()
	return exitOK
}

// simulation is one saga run by sagactl simulate: its state and context,
// the compensable effects of its steps, the parallel step it waits for,
// and the table printed so far.
type simulation struct {
	m      *engine.Model
	stdout io.Writer
	tw     *tabwriter.Writer // nil when no row is pending
	notes  []string          // printed under the table once it is flushed

	state   string
	context json.RawMessage
	taken   []engine.Undo
	failing *engine.Step // the step into a failed state, while compensating
	undone  int          // compensations done
	join    *joinRun     // the parallel step the saga waits for, nil for none
}

// joinRun is a parallel step under way: the commands of each branch and
// the replies so far.
type joinRun struct {
	p         *engine.Parallel
	group     string      // the Undo.Group of its commands
	sent      map[int]int // branch index → commands sent
	answered  map[int]int // branch index → replies received
	succeeded int
	failed    int
	total     int
}

func (s *simulation) row(cols ...string) {
	if s.tw == nil {
		s.tw = tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(s.tw, "#\tSTATE BEFORE\tEVENT (by)\tSTATE AFTER\tCOMMANDS SENT\tARMED IN NEW STATE")
	}
	fmt.Fprintln(s.tw, strings.Join(cols, "\t"))
}

// note is printed under the table (a payload built by a mapping).
func (s *simulation) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

func (s *simulation) flush() {
	if s.tw != nil {
		s.tw.Flush()
		s.tw = nil
	}
	for _, n := range s.notes {
		fmt.Fprintln(s.stdout, n)
	}
	s.notes = nil
}

// rowDone ends a row: the notes it produced break the table.
func (s *simulation) rowDone() {
	if len(s.notes) > 0 {
		s.flush()
	}
}

// compensating reports whether the saga entered a failed state and still
// has compensations to send.
func (s *simulation) compensating() bool { return s.failing != nil }

// batch is the compensations the saga sends (or sent) together and waits
// for: one, or the branches of a parallel step.
func (s *simulation) batch() []engine.Undo { return engine.PlanGroup(s.taken) }

// merge overlays payload's top-level keys on the context, as saga-machine
// does with an accepted event's payload.
func (s *simulation) merge(payload json.RawMessage) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil
	}
	ctx := map[string]json.RawMessage{}
	if err := json.Unmarshal(s.context, &ctx); err != nil {
		return fmt.Errorf("the simulated context: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return fmt.Errorf("the payload: %w", err)
	}
	for k, v := range top {
		ctx[k] = v
	}
	out, err := json.Marshal(ctx)
	if err != nil {
		return err
	}
	s.context = out
	return nil
}

// lateStop takes an event that only asks the saga to stop (every
// transition on it leads into a failed state: a cancellation) when the
// saga has failed already, compensating or not. saga-machine records such
// an event as a late entry of the timeline, not a dead letter, and nothing
// changes: it lost a race with another stop. It reports whether it took
// the event.
func (s *simulation) lateStop(n int, sa stepArg) bool {
	by := sa.by
	if by == "" {
		by = expectedBy(s.m, s.state, sa.event)
	}
	if !s.m.IsFailed(s.state) || !s.m.OnlyStops(sa.event, by) {
		return false
	}
	state := s.state
	if s.compensating() {
		state += " (compensating)"
	}
	s.row(strconv.Itoa(n), state, fmt.Sprintf("%s (%s)", sa.event, by), state,
		"- (late: the saga had already stopped; the timeline records it, nothing changes)", "-")
	return true
}

// refused formats an engine refusal of event.
func refused(event, by, state string, err error) error {
	who := event
	if by != "" {
		who += " (" + by + ")"
	}
	return fmt.Errorf("%s refused in %s [%s]: %s", who, stateName(state), engine.ErrorCode(err), errMessage(err))
}

// apply applies a participant's or the engine's event to the saga.
func (s *simulation) apply(n string, sa stepArg) error {
	event, by := sa.event, sa.by
	if by == "" {
		by = expectedBy(s.m, s.state, event)
	}
	step, err := s.m.ApplyWith(s.state, event, by, engine.Data{SagaID: simSagaID, Payload: sa.payload, Context: s.context})
	if err != nil {
		return refused(event, by, s.state, err)
	}
	if err := s.merge(sa.payload); err != nil {
		return err
	}
	s.join = nil
	of := func(what string) string { return fmt.Sprintf("%s of step %s", what, n) }
	sent, err := s.sent(step, n)
	if err != nil {
		return err
	}
	cmd := ""
	if step.Send != nil {
		cmd = step.Send.Name
	}
	s.taken = append(s.taken, step.Undos(of(step.Event), of(cmd))...)
	s.state = step.To
	eventCol := fmt.Sprintf("%s (%s)", step.Event, step.By)
	if step.Condition != "" {
		eventCol += " when " + step.Condition
	}
	plan := s.batch()
	if !step.Failed || len(plan) == 0 {
		s.row(n, stateName(step.From), eventCol, s.stateAfter(), sent, armedText(s.m, step))
		s.rowDone()
		return s.joinDecided(n)
	}
	// Entering a failed state: the compensations go first, newest first,
	// a step's at a time (a parallel step's branches together); the
	// transition's own command waits for them.
	s.failing = &step
	s.row(n, stateName(step.From), eventCol, step.To+" (compensating)", compensationsSent(plan), compensationArmed(plan[0].Compensation))
	s.flush()
	all := engine.Plan(s.taken)
	if !grouped(all) {
		fmt.Fprintf(s.stdout, "%s is a failed state: %d compensations to send first, one at a time, newest first, each after the done event of the one before:\n", step.To, len(all))
	} else {
		fmt.Fprintf(s.stdout, "%s is a failed state: %d compensations to send first, newest first, a parallel step's together, each batch after the done events of the one before:\n", step.To, len(all))
	}
	for i, u := range all {
		together := ""
		if u.Group != "" {
			together = " [together with the other branches of " + u.Group + "]"
		}
		fmt.Fprintf(s.stdout, "  %d. %s, undoes %s; done: %s (%s)%s\n", i+1, compensationText(u.Compensation), u.Of, u.Compensation.Done, u.Compensation.Participant, together)
	}
	fmt.Fprintf(s.stdout, "  then: %s\n", commandText(step.Send))
	return nil
}

// grouped reports whether some of the undos belong to a parallel step.
func grouped(us []engine.Undo) bool {
	for _, u := range us {
		if u.Group != "" {
			return true
		}
	}
	return false
}

// stateAfter is the STATE AFTER column: the state, and the join's progress
// while the saga waits for a parallel step.
func (s *simulation) stateAfter() string {
	if j := s.join; j != nil {
		return fmt.Sprintf("%s (join %s: %d/%d ok, %d failed)", s.state, j.p.Policy, j.succeeded, j.total, j.failed)
	}
	return s.state
}

// sent builds what step sends: the COMMANDS SENT column, the payloads of
// the commands with a mapping (notes), and for a parallel step the join to
// wait for with the compensable branch commands.
func (s *simulation) sent(step engine.Step, n string) (string, error) {
	if step.Parallel == nil {
		if step.Send != nil && step.Send.Payload != nil {
			p, err := step.Send.BuildPayload(simSagaID, s.context)
			if err != nil {
				return "", fmt.Errorf("%s: %w", step.Send.Name, err)
			}
			s.note("   payload of %s: %s", step.Send.Name, p)
		}
		return commandText(step.Send), nil
	}
	j := &joinRun{p: step.Parallel, group: "step " + n, sent: map[int]int{}, answered: map[int]int{}}
	var cols []string
	for _, b := range step.Parallel.Branches {
		payloads, err := b.Command.Expand(simSagaID, s.context)
		if err != nil {
			return "", fmt.Errorf("branch %s: %w", b.Command.Name, err)
		}
		j.sent[b.Index] = len(payloads)
		j.total += len(payloads)
		text := commandText(b.Command)
		if b.Command.ForEach != nil {
			text += fmt.Sprintf(" ×%d", len(payloads))
		}
		cols = append(cols, text)
		for i, p := range payloads {
			name := b.Command.Name
			if b.Command.ForEach != nil {
				name = fmt.Sprintf("%s #%d", name, i+1)
			}
			if b.Command.Payload != nil {
				s.note("   payload of %s: %s", name, p)
			}
			if c := b.Command.Compensate; c != nil {
				s.taken = append(s.taken, engine.Undo{Compensation: c, Of: fmt.Sprintf("%s of step %s", name, n), Group: j.group})
			}
		}
	}
	s.join = j
	return strings.Join(cols, "; "), nil
}

// isReply reports whether sa answers a branch of the parallel step the saga
// waits for.
func (s *simulation) isReply(sa stepArg) bool {
	by := sa.by
	for _, b := range s.join.p.Branches {
		if by == "" || by == b.Command.Participant {
			if sa.event == b.OK || (b.Fail != "" && sa.event == b.Fail) {
				return true
			}
		}
	}
	return false
}

// reply counts a branch's reply and, once the join is decided, raises its
// event.
func (s *simulation) reply(n int, sa stepArg) error {
	j := s.join
	by := sa.by
	if by == "" {
		for _, b := range j.p.Branches {
			if sa.event == b.OK || (b.Fail != "" && sa.event == b.Fail) {
				by = b.Command.Participant
				break
			}
		}
	}
	b, ok, found := j.p.Reply(by, sa.event)
	if !found {
		return fmt.Errorf("%s (%s) refused in %s: it answers no branch of the parallel step", sa.event, by, s.state)
	}
	if j.answered[b.Index] >= j.sent[b.Index] {
		return fmt.Errorf("%s (%s) refused in %s: every %s sent (%d) is answered already", sa.event, by, s.state, b.Command.Name, j.sent[b.Index])
	}
	if c := s.m.Contract(sa.event); c != nil {
		if err := c.Check(sa.payload); err != nil {
			return refused(sa.event, by, s.state, err)
		}
	}
	if err := s.merge(sa.payload); err != nil {
		return err
	}
	elem := j.answered[b.Index] // replies answer a branch's commands in order
	j.answered[b.Index]++
	before := s.stateAfter()
	if ok {
		j.succeeded++
	} else {
		j.failed++
		// A failed command had no effect: nothing to undo.
		s.dropUndo(b, j, elem)
	}
	s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", sa.event, by), s.stateAfter(), "-", "-")
	return s.joinDecided("↳")
}

// dropUndo removes the undo of command elem (0-based; the element of a
// fan-out) of branch b of the step the saga waits for.
func (s *simulation) dropUndo(b *engine.Branch, j *joinRun, elem int) {
	if b.Command.Compensate == nil {
		return
	}
	name := b.Command.Name
	if b.Command.ForEach != nil {
		name = fmt.Sprintf("%s #%d", name, elem+1)
	}
	of := fmt.Sprintf("%s of %s", name, j.group)
	for i, u := range s.taken {
		if u.Group == j.group && u.Compensation == b.Command.Compensate && u.Of == of && !u.Compensated {
			s.taken = append(s.taken[:i], s.taken[i+1:]...)
			return
		}
	}
}

// joinDecided raises the join's event when the parallel step the saga
// waits for is decided (right after the step, when it sends nothing).
func (s *simulation) joinDecided(n string) error {
	j := s.join
	if j == nil {
		return nil
	}
	switch j.p.Outcome(j.total, j.succeeded, j.failed) {
	case engine.JoinDone:
		return s.apply(n, stepArg{event: j.p.Then, by: definition.Engine})
	case engine.JoinFailed:
		return s.apply(n, stepArg{event: j.p.Else, by: definition.Engine})
	}
	return nil
}

// done takes a done event of the compensations the saga waits for.
func (s *simulation) done(n int, sa stepArg) error {
	want := s.batch()
	event, by := sa.event, sa.by
	if by == "" {
		by = doneBy(s.m, event, want)
	}
	idx := -1
	for i := len(s.taken) - 1; i >= 0; i-- {
		u := s.taken[i]
		if !u.Compensated && u.Compensation.Done == event && u.Compensation.Participant == by && inBatch(want, u) {
			idx = i
			break
		}
	}
	if idx < 0 {
		var waits []string
		for _, u := range want {
			waits = append(waits, fmt.Sprintf("%s (%s)", u.Compensation.Done, u.Compensation.Participant))
		}
		first := want[0].Compensation
		if len(want) == 1 {
			return fmt.Errorf("%s (%s) refused in %s: the saga is compensating and waits for %s (%s), the done event of %s",
				event, by, s.state, first.Done, first.Participant, first.Command)
		}
		return fmt.Errorf("%s (%s) refused in %s: the saga is compensating a parallel step and waits for %s", event, by, s.state, strings.Join(dedupe(waits), ", "))
	}
	if c := s.m.Contract(event); c != nil {
		if err := c.Check(sa.payload); err != nil {
			return refused(event, by, s.state, err)
		}
	}
	if err := s.merge(sa.payload); err != nil {
		return err
	}
	s.taken[idx].Compensated = true
	s.undone++
	before := s.state + " (compensating)"
	if rest := s.batch(); len(rest) > 0 {
		if sameBatch(want, rest) {
			s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", event, by), before, "-", "-")
			return nil
		}
		s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", event, by), before, compensationsSent(rest), compensationArmed(rest[0].Compensation))
		return nil
	}
	failing := *s.failing
	s.failing = nil
	s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", event, by), s.state, commandText(failing.Send), "-")
	return nil
}

func inBatch(batch []engine.Undo, u engine.Undo) bool {
	for _, b := range batch {
		if b.Of == u.Of && b.Compensation == u.Compensation {
			return true
		}
	}
	return false
}

// sameBatch reports whether rest is what remains of batch (the batch is
// not done yet).
func sameBatch(batch, rest []engine.Undo) bool {
	for _, r := range rest {
		if !inBatch(batch, r) {
			return false
		}
	}
	return true
}

func dedupe(l []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// summary prints where the saga ended.
func (s *simulation) summary() {
	m, state := s.m, s.state
	switch {
	case s.compensating():
		var left []string
		for _, u := range engine.Plan(s.taken) {
			left = append(left, compensationText(u.Compensation))
		}
		var waits []string
		for _, u := range s.batch() {
			waits = append(waits, fmt.Sprintf("%s (%s)", u.Compensation.Done, u.Compensation.Participant))
		}
		fmt.Fprintf(s.stdout, "saga still compensating before it ends in %s, waiting for: %s; still to undo, newest first: %s\n",
			state, strings.Join(dedupe(waits), ", "), strings.Join(left, ", "))
	case m.IsFinal(state):
		fmt.Fprintf(s.stdout, "saga finished in %s (success)\n", state)
	case m.IsFailed(state) && s.undone > 0:
		fmt.Fprintf(s.stdout, "saga finished in %s (failure, %d compensations done)\n", state, s.undone)
	case m.IsFailed(state):
		fmt.Fprintf(s.stdout, "saga finished in %s (failure)\n", state)
	default:
		var waiting []string
		if j := s.join; j != nil {
			for _, b := range j.p.Branches {
				if left := j.sent[b.Index] - j.answered[b.Index]; left > 0 {
					reply := b.OK
					if b.Fail != "" {
						reply += " or " + b.Fail
					}
					waiting = append(waiting, fmt.Sprintf("%s (%s) ×%d", reply, b.Command.Participant, left))
				}
			}
		}
		seen := map[string]bool{}
		for _, a := range m.Allowed(state) {
			if !seen[a.Event+a.By] {
				seen[a.Event+a.By] = true
				waiting = append(waiting, fmt.Sprintf("%s (%s)", a.Event, a.By))
			}
		}
		fmt.Fprintf(s.stdout, "saga still running in %s, waiting for: %s\n", state, strings.Join(waiting, ", "))
	}
	if strings.TrimSpace(string(s.context)) != "{}" {
		var pretty bytes.Buffer
		_ = json.Compact(&pretty, s.context)
		fmt.Fprintf(s.stdout, "context: %s\n", pretty.String())
	}
}

// doneBy is the participant that emits event while the saga waits for the
// compensations want: the participant whose compensation in want has that
// done event, else the one of any compensation with that done event, else
// any emitter of the event (so that the refusal names who would send it).
func doneBy(m *engine.Model, event string, want []engine.Undo) string {
	for _, u := range want {
		if u.Compensation.Done == event {
			return u.Compensation.Participant
		}
	}
	for _, p := range m.Participants() {
		if _, ok := m.CompensationByDone(p, event); ok {
			return p
		}
	}
	return expectedBy(m, "", event)
}

func compensationText(c *engine.Compensation) string {
	return fmt.Sprintf("%s → %s (%s)", c.Command, c.Participant, c.Topic)
}

// compensationsSent is the COMMANDS SENT column of a batch of
// compensations.
func compensationsSent(us []engine.Undo) string {
	parts := make([]string, len(us))
	for i, u := range us {
		parts[i] = compensationText(u.Compensation) + ", undoes " + u.Of
	}
	return strings.Join(parts, "; ")
}

// compensationArmed describes the re-sends of a compensation: it never
// gives up into an event.
func compensationArmed(c *engine.Compensation) string {
	r := c.Retry
	return fmt.Sprintf("re-send %s (%d sends, backoff %s..%s) then compensation_failed", c.Command, r.Attempts, duration(r.Backoff), duration(r.MaxBackoff))
}

// expectedBy is the participant that emits event in state according to the
// definition; when the event is not allowed there, any emitter of that event
// (so that Apply explains why it is refused), or "".
func expectedBy(m *engine.Model, state, event string) string {
	for _, a := range m.Allowed(state) {
		if a.Event == event {
			return a.By
		}
	}
	for _, tr := range m.Definition().Transitions {
		if tr.On.Value == event {
			return tr.By.Value
		}
	}
	return ""
}
