package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// DefinitionSummary is one loaded definition version in GET /definitions.
type DefinitionSummary struct {
	Name        string           `json:"name"`
	Version     int              `json:"version"`
	Description string           `json:"description,omitempty"`
	States      []string         `json:"states"`
	Counts      map[string]int64 `json:"counts"`    // instances per state (every state listed, 0 included)
	Running     int64            `json:"running"`   // instances not in a final or failed state
	Completed   int64            `json:"completed"` // instances in a final state
	Failed      int64            `json:"failed"`    // instances in a failed state
}

// StateView describes one state of a definition.
type StateView struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Timeout     *TimeoutView `json:"timeout,omitempty"`
	Final       bool         `json:"final"`
	Failed      bool         `json:"failed"`
	// CompensatesFirst is true for a failed state of a definition with
	// compensations: entering it first sends the compensations of the
	// steps the saga took, newest first.
	CompensatesFirst bool `json:"compensates_first"`
}

// TimeoutView is a state's time limit.
type TimeoutView struct {
	After string `json:"after"` // Go duration, e.g. 10m0s
	Event string `json:"event"`
}

// TransitionView is one transition of a definition.
type TransitionView struct {
	On    string   `json:"on"`
	By    string   `json:"by"`              // a participant, "engine" (timeouts, exhausted retries) or "api" (a start over the HTTP API)
	From  []string `json:"from"`            // empty: the event starts a saga
	To    string   `json:"to"`              // the state the saga moves to
	Roles []string `json:"roles,omitempty"` // by "api": the roles that may fire the start (any one suffices)
	// Compensate undoes what By did before it emitted On, if the saga
	// later fails; nil when nothing needs undoing.
	Compensate  *CompensationView `json:"compensate,omitempty"`
	Send        *SendView         `json:"send,omitempty"`
	Description string            `json:"description,omitempty"`
}

// SendView is the command a transition sends.
type SendView struct {
	To      string     `json:"to"`
	Command string     `json:"command"`
	Topic   string     `json:"topic"`
	Retry   *RetryView `json:"retry,omitempty"`
	// Compensate undoes what the command did, or may have done, if the
	// saga later fails; nil when nothing needs undoing.
	Compensate *CompensationView `json:"compensate,omitempty"`
}

// CompensationView is a compensating command: what saga-machine sends, to
// whom, when the saga fails after the step it belongs to.
type CompensationView struct {
	To      string                `json:"to"`      // the participant that undoes (the definition's default filled in)
	Command string                `json:"command"` // the undoing command
	Done    string                `json:"done"`    // the event To answers once the undo is done
	Topic   string                `json:"topic"`   // To's command topic
	Retry   CompensationRetryView `json:"retry"`   // the re-send policy in force (the default when the file gives none)
}

// CompensationRetryView is a compensation's re-send policy. A compensation
// has no exhausted event: past its attempts the saga stops as
// compensation_failed for an operator.
type CompensationRetryView struct {
	Attempts   int    `json:"attempts"`
	Backoff    string `json:"backoff"`
	MaxBackoff string `json:"max_backoff"`
}

// RetryView is a command's retry policy.
type RetryView struct {
	Attempts   int    `json:"attempts"`
	Backoff    string `json:"backoff"`
	MaxBackoff string `json:"max_backoff"`
	Exhausted  string `json:"exhausted"`
}

// ParticipantView is one participant of a definition.
type ParticipantView struct {
	Name        string `json:"name"`
	Topic       string `json:"topic"`
	Description string `json:"description,omitempty"`
}

// DiagramView links a definition's drawings.
type DiagramView struct {
	Mermaid string `json:"mermaid"` // Mermaid stateDiagram-v2 text
	SVG     string `json:"svg"`     // URL of the server-rendered SVG
}

// DefinitionDetail is GET /definitions/{name}.
type DefinitionDetail struct {
	DefinitionSummary
	Versions     []int             `json:"versions"` // every loaded version of this saga
	Participants []ParticipantView `json:"participants"`
	Keys         map[string]string `json:"keys,omitempty"` // business key name → context path
	StateInfo    []StateView       `json:"state_info"`
	Transitions  []TransitionView  `json:"transitions"`
	StartEvents  []string          `json:"start_events"`
	Final        []string          `json:"final"`
	FailedStates []string          `json:"failed_states"`
	// Compensable is true when some step declares a compensation: a saga
	// that fails undoes those steps before it rests in its failed state.
	Compensable bool        `json:"compensable"`
	Diagram     DiagramView `json:"diagram"`
}

// ValidationResult is the answer of POST /definitions/validate.
type ValidationResult struct {
	Valid    bool                 `json:"valid"`
	Saga     string               `json:"saga,omitempty"`
	Version  int                  `json:"version,omitempty"`
	Problems []definition.Problem `json:"problems"`
}

// countsByModel reads CountByState once and indexes it by "NAME vN".
func (s *server) countsByModel(ctx context.Context) (map[string]map[string]int64, error) {
	rows, err := s.store.CountByState(ctx)
	if err != nil {
		return nil, fmt.Errorf("count sagas by state: %w", err)
	}
	out := map[string]map[string]int64{}
	for _, c := range rows {
		k := fmt.Sprintf("%s v%d", c.Saga, c.SagaVersion)
		if out[k] == nil {
			out[k] = map[string]int64{}
		}
		out[k][c.State] += c.Count
	}
	return out, nil
}

func summary(m *engine.Model, counts map[string]int64) DefinitionSummary {
	d := DefinitionSummary{
		Name: m.Name(), Version: m.Version(), Description: m.Definition().Description,
		States: m.States(), Counts: map[string]int64{},
	}
	for _, st := range d.States {
		d.Counts[st] = 0
	}
	for st, n := range counts {
		d.Counts[st] = n
		switch {
		case m.IsFinal(st):
			d.Completed += n
		case m.IsFailed(st):
			d.Failed += n
		default:
			d.Running += n
		}
	}
	return d
}

func (s *server) listDefinitions(w http.ResponseWriter, r *http.Request) {
	counts, err := s.countsByModel(r.Context())
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	out := []DefinitionSummary{}
	for _, m := range s.cat.List() {
		out = append(out, summary(m, counts[m.String()]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"definitions": out})
}

// model finds the definition of the request's {name} and ?version=.
func (s *server) model(r *http.Request) (*engine.Model, error) {
	const op = "get saga definition"
	name := mux.Vars(r)["name"]
	version := 0
	if err := onlyParams(r, op, "version"); err != nil {
		return nil, err
	}
	if vs := r.URL.Query()["version"]; len(vs) > 1 {
		return nil, engine.Errorf(engine.CodeInvalid, op, "version is given %d times; give it once", len(vs))
	}
	if v := r.URL.Query().Get("version"); v != "" || r.URL.Query().Has("version") {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, engine.Errorf(engine.CodeInvalid, op, "version %q must be a positive integer", v)
		}
		version = n
	}
	m, err := s.cat.Get(name, version)
	if err != nil {
		// The definition is the resource named by the path: not found.
		return nil, &engine.Error{Code: engine.CodeNotFound, Op: op, Err: err}
	}
	return m, nil
}

func (s *server) getDefinition(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	counts, err := s.countsByModel(r.Context())
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.detail(m, counts[m.String()]))
}

func (s *server) detail(m *engine.Model, counts map[string]int64) DefinitionDetail {
	def := m.Definition()
	d := DefinitionDetail{
		DefinitionSummary: summary(m, counts),
		Keys:              m.Keys(),
		StartEvents:       m.StartEvents(),
		Final:             m.FinalStates(),
		FailedStates:      append([]string{}, m.FailedStates()...), // [] rather than null for a saga without failed states
		Compensable:       m.Compensable(),
		Diagram: DiagramView{
			Mermaid: engine.RenderMermaid(m),
			SVG:     fmt.Sprintf("/api/v1/definitions/%s/diagram.svg?version=%d", url.PathEscape(m.Name()), m.Version()),
		},
	}
	for _, other := range s.cat.List() {
		if other.Name() == m.Name() {
			d.Versions = append(d.Versions, other.Version())
		}
	}
	for _, p := range m.Participants() {
		pv := ParticipantView{Name: p, Topic: m.Topic(p)}
		if dp := def.Participants[p]; dp != nil {
			pv.Description = dp.Description
		}
		d.Participants = append(d.Participants, pv)
	}
	sort.Slice(d.Participants, func(i, j int) bool { return d.Participants[i].Name < d.Participants[j].Name })
	for _, st := range m.States() {
		sv := StateView{Name: st, Description: m.Description(st), Final: m.IsFinal(st), Failed: m.IsFailed(st),
			CompensatesFirst: m.IsFailed(st) && m.Compensable()}
		if to := m.Timeout(st); to != nil {
			sv.Timeout = &TimeoutView{After: to.After.String(), Event: to.Event.Value}
		}
		d.StateInfo = append(d.StateInfo, sv)
	}
	for _, tr := range def.Transitions {
		tv := TransitionView{On: tr.On.Value, By: tr.By.Value, To: tr.To.Value, From: []string{}, Description: tr.Description}
		for _, f := range tr.From {
			tv.From = append(tv.From, f.Value)
		}
		if roles, ok := m.StartRoles(tr.On.Value); ok && tr.By.Value == definition.API {
			tv.Roles = roles
		}
		tv.Compensate = compensationView(m, tr.Compensate)
		if sd := tr.Send; sd != nil {
			tv.Send = &SendView{To: sd.To.Value, Command: sd.Command.Value, Topic: m.Topic(sd.To.Value),
				Compensate: compensationView(m, sd.Compensate)}
			if rt := sd.Retry; rt != nil {
				tv.Send.Retry = &RetryView{Attempts: rt.Attempts, Backoff: rt.Backoff.String(),
					MaxBackoff: rt.MaxBackoff.String(), Exhausted: rt.Exhausted.Value}
			}
		}
		d.Transitions = append(d.Transitions, tv)
	}
	return d
}

// compensationView describes c as the model runs it (the default retry
// policy filled in), nil for nil.
func compensationView(m *engine.Model, c *definition.Compensation) *CompensationView {
	if c == nil {
		return nil
	}
	v := &CompensationView{To: c.To.Value, Command: c.Command.Value, Done: c.Done.Value, Topic: m.Topic(c.To.Value)}
	retry := c.Retry
	if comp, ok := m.CompensationByDone(c.To.Value, c.Done.Value); ok {
		retry = comp.Retry // the policy in force: the default when the file gives none
	}
	if retry == nil {
		retry = definition.DefaultCompensationRetry()
	}
	v.Retry = CompensationRetryView{Attempts: retry.Attempts, Backoff: retry.Backoff.String(), MaxBackoff: retry.MaxBackoff.String()}
	return v
}

func (s *server) diagramSVG(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	counts, err := s.countsByModel(r.Context())
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write([]byte(RenderSVG(m, counts[m.String()]))) // the client went away
}

// maxFileParam is the longest ?file= name validate accepts: the name is
// repeated in every problem of the answer.
const maxFileParam = 255

// validations bounds how many definitions are parsed at once. Parsing is
// linear in the body (definition.Parse enforces its limits), but the YAML
// reader holds up to about 130 MB for a hostile 1 MiB body: two at a time
// keeps any number of callers within a few hundred MB.
var validations = make(chan struct{}, 2)

// validateDefinition parses and compiles the YAML body and reports every
// problem, as `sagactl validate` does. The answer is bounded: at most
// definition.MaxProblems problems (and one line saying how many more), each
// message at most definition.MaxMessageBytes, the file name at most
// maxFileParam bytes.
func (s *server) validateDefinition(w http.ResponseWriter, r *http.Request) {
	const op = "validate saga definition"
	if err := onlyParams(r, op, "file"); err != nil {
		writeProblem(w, r, err)
		return
	}
	if err := checkMediaType(r, op, "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"); err != nil {
		writeProblem(w, r, err)
		return
	}
	file := r.URL.Query().Get("file")
	if file == "" {
		file = "definition.yaml"
	}
	if len(file) > maxFileParam || !utf8.ValidString(file) || strings.ContainsFunc(file, unicode.IsControl) {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, "file must be a name of at most %d bytes without control characters", maxFileParam))
		return
	}
	select {
	case validations <- struct{}{}:
		defer func() { <-validations }()
	case <-r.Context().Done():
		writeProblem(w, r, engine.Errorf(engine.CodeUnavailable, op, "gave up waiting for a free validation slot: %v", r.Context().Err()))
		return
	}
	body, err := readBody(w, r, op, MaxDefinitionBody)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	res := ValidationResult{Problems: []definition.Problem{}}
	def, problems := definition.Parse(file, body)
	if len(problems) == 0 && def != nil {
		if _, err := engine.Compile(def); err != nil {
			problems = append(problems, definition.Problem{File: file, Line: def.Pos.Line, Col: def.Pos.Col, Rule: "compile", Message: err.Error()})
		}
	}
	res.Problems = append(res.Problems, problems...)
	res.Valid = len(res.Problems) == 0
	if res.Valid {
		res.Saga, res.Version = def.Saga, def.Version
	}
	writeJSON(w, http.StatusOK, res)
}

// onlyParams refuses query parameters other than allowed, so a misspelt
// filter is an error rather than silently ignored.
func onlyParams(r *http.Request, op string, allowed ...string) error {
	for k := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			if len(allowed) == 0 {
				return engine.Errorf(engine.CodeInvalid, op, "unknown query parameter %q: this endpoint takes none", k)
			}
			return engine.Errorf(engine.CodeInvalid, op, "unknown query parameter %q (allowed: %v)", k, allowed)
		}
	}
	return nil
}
