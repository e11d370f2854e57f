package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Exit codes.
const (
	exitOK      = 0 // everything valid, saga simulated to the end of the events
	exitInvalid = 1 // a definition has problems, or the simulation was refused an event
	exitUsage   = 2 // bad command line or unreadable file
)

const usage = `sagactl checks, draws and dry-runs saga definitions (sagas/*.yaml).

Usage:
  sagactl validate [--format text|json] FILE...
        Check every file. Prints "FILE: ok (SAGA vN, N states, M transitions)"
        for a valid file, and every problem as FILE:LINE:COL: message.
        --format json prints one JSON array of problems instead.
  sagactl render [--format mermaid|dot] FILE
        Print the state machine as a Mermaid stateDiagram-v2 (default) or a
        Graphviz digraph.
  sagactl simulate FILE EVENT[@participant]...
        Start a saga and apply the events in order, each emitted by the
        participant the definition expects in the current state (or the one
        written after @). Prints one line per step with the commands sent and
        the timeouts and retries armed in the new state. When an event leads
        into a failed state, prints the compensations to send, newest first;
        the next EVENTs are then their done events, in that order.
  sagactl help
        Print this text.

Exit status: 0 all valid / simulation done, 1 invalid definition or refused
event, 2 usage error or unreadable file.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is sagactl with its arguments (without the program name) and its
// output streams; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "validate":
		return validate(rest, stdout, stderr)
	case "render":
		return render(rest, stdout, stderr)
	case "simulate":
		return simulate(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sagactl: unknown command %q (commands: validate, render, simulate, help)\n", cmd)
		return exitUsage
	}
}

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments (sagactl validate a.yaml --format json). "--"
// ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rem := fs.Args()
		if len(rem) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rem); i > 0 && args[i-1] == "--" {
			return append(pos, rem...), nil // the flag package consumed "--"
		}
		pos = append(pos, rem[0])
		args = rem[1:]
	}
}

// newFlagSet returns a flag set for a sub-command whose errors and help go to
// stderr with the sub-command's usage line.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sagactl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sagactl %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// flagExit maps a flag parsing error to an exit status: -h is not an error.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// load reads and parses one file, reading no more than the parser accepts
// (definition.ReadAll). A read error is reported to stderr and gives
// ok=false with no problems.
func load(cmd, file string, stderr io.Writer) (def *definition.Definition, problems definition.Problems, ok bool) {
	data, err := readFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "sagactl %s: cannot read %s: %v\n", cmd, file, unwrapPathError(err))
		return nil, nil, false
	}
	def, problems = definition.Parse(file, data)
	return def, problems, true
}

func readFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return definition.ReadAll(f)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// compile parses and compiles one file, printing problems to stderr. It
// returns the exit status to use when m is nil.
func compile(cmd, file string, stderr io.Writer) (*engine.Model, int) {
	def, problems, ok := load(cmd, file, stderr)
	if !ok {
		return nil, exitUsage
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "sagactl %s: %s is not a valid saga definition (%d problems); see sagactl validate\n", cmd, file, len(problems))
		return nil, exitInvalid
	}
	m, err := engine.Compile(def)
	if err != nil {
		fmt.Fprintf(stderr, "%s:%d:%d: %v\n", file, def.Pos.Line, def.Pos.Col, err)
		return nil, exitInvalid
	}
	return m, exitOK
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", "[--format text|json] FILE...", stderr)
	format := fs.String("format", "text", "output format: text or json")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "sagactl validate: unknown format %q (want text or json)\n", *format)
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "sagactl validate: no FILE given")
		fs.Usage()
		return exitUsage
	}
	all := definition.Problems{}
	unreadable := false
	for _, file := range files {
		def, problems, ok := load("validate", file, stderr)
		if !ok {
			unreadable = true
			continue
		}
		if len(problems) == 0 {
			if _, err := engine.Compile(def); err != nil {
				problems = definition.Problems{{File: file, Line: def.Pos.Line, Col: def.Pos.Col, Rule: "compile", Message: err.Error()}}
			}
		}
		all = append(all, problems...)
		if *format == "text" {
			for _, p := range problems {
				fmt.Fprintln(stdout, p)
			}
			if len(problems) == 0 {
				fmt.Fprintf(stdout, "%s: ok (%s v%d, %d states, %d transitions)\n",
					file, def.Saga, def.Version, len(def.States), len(def.Transitions))
			}
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			fmt.Fprintf(stderr, "sagactl validate: write JSON: %v\n", err)
			return exitUsage
		}
	}
	switch {
	case unreadable:
		return exitUsage
	case len(all) > 0:
		return exitInvalid
	}
	return exitOK
}

func render(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("render", "[--format mermaid|dot] FILE", stderr)
	format := fs.String("format", "mermaid", "output format: mermaid or dot")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	renderers := map[string]func(*engine.Model) string{"mermaid": engine.RenderMermaid, "dot": engine.RenderDOT}
	r, ok := renderers[*format]
	if !ok {
		fmt.Fprintf(stderr, "sagactl render: unknown format %q (want mermaid or dot)\n", *format)
		return exitUsage
	}
	if len(files) != 1 {
		fmt.Fprintf(stderr, "sagactl render: want exactly one FILE, got %d\n", len(files))
		fs.Usage()
		return exitUsage
	}
	m, code := compile("render", files[0], stderr)
	if m == nil {
		return code
	}
	fmt.Fprint(stdout, r(m))
	return exitOK
}

func simulate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("simulate", "FILE EVENT[@participant]...", stderr)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
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
	type stepArg struct{ event, by string }
	var steps []stepArg
	for i, arg := range rest[1:] {
		event, by, explicit := strings.Cut(arg, "@")
		if event == "" || (explicit && by == "") {
			fmt.Fprintf(stderr, "sagactl simulate: event %d: %q is not EVENT or EVENT@participant\n", i+1, arg)
			return exitUsage
		}
		steps = append(steps, stepArg{event, by})
	}
	sim := &simulation{m: m, stdout: stdout}
	for i, sa := range steps {
		var err error
		if sim.compensating() {
			err = sim.done(i+1, sa.event, sa.by)
		} else {
			err = sim.apply(i+1, sa.event, sa.by)
		}
		if err != nil {
			sim.flush()
			fmt.Fprintf(stderr, "sagactl simulate: step %d: %v\n", i+1, err)
			return exitInvalid
		}
	}
	sim.flush()
	state := sim.state
	switch {
	case sim.compensating():
		var left []string
		for _, u := range engine.Plan(sim.taken) {
			left = append(left, compensationText(u.Compensation))
		}
		fmt.Fprintf(stdout, "saga still compensating before it ends in %s, waiting for: %s (%s); still to undo, newest first: %s\n",
			state, sim.next().Done, sim.next().Participant, strings.Join(left, ", "))
	case m.IsFinal(state):
		fmt.Fprintf(stdout, "saga finished in %s (success)\n", state)
	case m.IsFailed(state) && sim.undone > 0:
		fmt.Fprintf(stdout, "saga finished in %s (failure, %d compensations done)\n", state, sim.undone)
	case m.IsFailed(state):
		fmt.Fprintf(stdout, "saga finished in %s (failure)\n", state)
	default:
		var waiting []string
		for _, a := range m.Allowed(state) {
			waiting = append(waiting, a.String())
		}
		fmt.Fprintf(stdout, "saga still running in %s, waiting for: %s\n", state, strings.Join(waiting, ", "))
	}
	return exitOK
}

// simulation is one saga run by sagactl simulate: its state, the
// compensable effects of its steps, and the table printed so far.
type simulation struct {
	m      *engine.Model
	stdout io.Writer
	tw     *tabwriter.Writer // nil when no row is pending

	state   string
	taken   []engine.Undo
	failing *engine.Step // the step into a failed state, while compensating
	undone  int          // compensations done
}

func (s *simulation) row(cols ...string) {
	if s.tw == nil {
		s.tw = tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(s.tw, "#\tSTATE BEFORE\tEVENT (by)\tSTATE AFTER\tCOMMANDS SENT\tARMED IN NEW STATE")
	}
	fmt.Fprintln(s.tw, strings.Join(cols, "\t"))
}

func (s *simulation) flush() {
	if s.tw != nil {
		s.tw.Flush()
		s.tw = nil
	}
}

// compensating reports whether the saga entered a failed state and still
// has compensations to send.
func (s *simulation) compensating() bool { return s.failing != nil }

// next is the compensation the saga waits for while compensating.
func (s *simulation) next() *engine.Compensation { return engine.Plan(s.taken)[0].Compensation }

// apply applies a participant's or the engine's event to the saga.
func (s *simulation) apply(n int, event, by string) error {
	if by == "" {
		by = expectedBy(s.m, s.state, event)
	}
	step, err := s.m.Apply(s.state, event, by)
	if err != nil {
		who := event
		if by != "" {
			who += " (" + by + ")"
		}
		return fmt.Errorf("%s refused in %s [%s]: %s", who, stateName(s.state), engine.ErrorCode(err), errMessage(err))
	}
	of := func(what string) string { return fmt.Sprintf("%s of step %d", what, n) }
	cmd := ""
	if step.Send != nil {
		cmd = step.Send.Name
	}
	s.taken = append(s.taken, step.Undos(of(step.Event), of(cmd))...)
	s.state = step.To
	plan := engine.Plan(s.taken)
	if !step.Failed || len(plan) == 0 {
		s.row(fmt.Sprint(n), stateName(step.From), fmt.Sprintf("%s (%s)", step.Event, step.By), step.To, commandText(step.Send), armedText(s.m, step))
		return nil
	}
	// Entering a failed state: the compensations go first, newest first,
	// one at a time; the transition's own command waits for them.
	s.failing = &step
	first := plan[0].Compensation
	s.row(fmt.Sprint(n), stateName(step.From), fmt.Sprintf("%s (%s)", step.Event, step.By), step.To+" (compensating)",
		compensationSent(plan[0]), compensationArmed(first))
	s.flush()
	fmt.Fprintf(s.stdout, "%s is a failed state: %d compensations to send first, one at a time, newest first, each after the done event of the one before:\n", step.To, len(plan))
	for i, u := range plan {
		fmt.Fprintf(s.stdout, "  %d. %s, undoes %s; done: %s (%s)\n", i+1, compensationText(u.Compensation), u.Of, u.Compensation.Done, u.Compensation.Participant)
	}
	fmt.Fprintf(s.stdout, "  then: %s\n", commandText(step.Send))
	return nil
}

// done takes the done event of the compensation the saga waits for.
func (s *simulation) done(n int, event, by string) error {
	want := s.next()
	if by == "" {
		by = doneBy(s.m, event, want)
	}
	if c, ok := s.m.CompensationByDone(by, event); !ok || c != want {
		return fmt.Errorf("%s (%s) refused in %s: the saga is compensating and waits for %s (%s), the done event of %s",
			event, by, s.state, want.Done, want.Participant, want.Command)
	}
	for i := len(s.taken) - 1; i >= 0; i-- {
		if !s.taken[i].Compensated {
			s.taken[i].Compensated = true
			break
		}
	}
	s.undone++
	before := s.state + " (compensating)"
	if plan := engine.Plan(s.taken); len(plan) > 0 {
		s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", event, by), before, compensationSent(plan[0]), compensationArmed(plan[0].Compensation))
		return nil
	}
	failing := *s.failing
	s.failing = nil
	s.row(fmt.Sprint(n), before, fmt.Sprintf("%s (%s)", event, by), s.state, commandText(failing.Send), "-")
	return nil
}

// doneBy is the participant that emits event while the saga waits for
// compensation want: want's participant for its done event, else the one
// whose compensation has that done event, else any emitter of the event (so
// that the refusal names who would send it).
func doneBy(m *engine.Model, event string, want *engine.Compensation) string {
	if event == want.Done {
		return want.Participant
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

func compensationSent(u engine.Undo) string {
	return compensationText(u.Compensation) + ", undoes " + u.Of
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

func errMessage(err error) string {
	var e *engine.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

func stateName(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func commandText(c *engine.CommandSpec) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%s → %s (%s)", c.Name, c.Participant, c.Topic)
}

// armedText describes the timers the engine starts when the saga enters
// step.To: the state's timeout and the re-sends of the command just sent.
func armedText(m *engine.Model, step engine.Step) string {
	var parts []string
	if t := m.Timeout(step.To); t != nil {
		parts = append(parts, fmt.Sprintf("timeout %s → %s", duration(t.After), t.Event.Value))
	}
	if step.Send != nil && step.Send.Retry != nil {
		r := step.Send.Retry
		parts = append(parts, fmt.Sprintf("re-send %s (%d sends, backoff %s..%s) then %s", step.Send.Name, r.Attempts, duration(r.Backoff), duration(r.MaxBackoff), r.Exhausted.Value))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// duration formats d without trailing zero units: 10m, 2s, 1h30m.
func duration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "m0s")
	if s != d.String() {
		s += "m"
	}
	if t := strings.TrimSuffix(s, "h0m"); t != s {
		s = t + "h"
	}
	return s
}
