package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// MaxIdempotencyKey is the longest Idempotency-Key header accepted.
const MaxIdempotencyKey = 200

// StartSagaRequest is the body of POST /sagas. The caller speaks for
// herself only: the starting event is attributed to the reserved
// participant "api" and she is its actor in the timeline; there is no way
// to name a participant.
type StartSagaRequest struct {
	// Saga is the definition name. Required.
	Saga string `json:"saga"`
	// Version pins the definition version; 0 or absent means the newest.
	Version int `json:"version,omitempty"`
	// Event is the starting event, which the definition must open to the
	// API (`by: api`); absent means the definition's one such event.
	Event string `json:"event,omitempty"`
	// Payload is the starting event's payload, a JSON object.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// SagaDetail is GET /sagas/{id}: the instance and its whole timeline.
type SagaDetail struct {
	Saga     engine.Instance       `json:"saga"`
	Timeline []engine.HistoryEntry `json:"timeline"`
}

// ResendRequest is the body of POST /sagas/{id}/resend.
type ResendRequest struct {
	Reason string `json:"reason"` // why, recorded in the timeline. Required.
}

// AbortRequest is the body of POST /sagas/{id}/abort.
type AbortRequest struct {
	State  string `json:"state,omitempty"` // failed state to move to; "" = the definition's first
	Reason string `json:"reason"`          // why, recorded in the timeline. Required.
}

func (s *server) startSaga(w http.ResponseWriter, r *http.Request) {
	const op = "start saga"
	if err := onlyParams(r, op); err != nil {
		writeProblem(w, r, err)
		return
	}
	var req StartSagaRequest
	if err := decodeJSON(w, r, op, &req, false); err != nil {
		writeProblem(w, r, err)
		return
	}
	if strings.TrimSpace(req.Saga) == "" {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "saga" is required: the definition name, e.g. MANUAL_CREATE_ORDER`))
		return
	}
	if req.Version < 0 {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "version" must be positive (or absent for the newest), got %d`, req.Version))
		return
	}
	if p := strings.TrimSpace(string(req.Payload)); p != "" && p != "null" && !strings.HasPrefix(p, "{") {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "payload" must be a JSON object, got %s`, abbreviate(p, 40)))
		return
	}
	if string(req.Payload) == "null" {
		req.Payload = nil
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKey {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, "Idempotency-Key is longer than %d characters", MaxIdempotencyKey))
		return
	}
	inst, created, err := s.orch.Start(r.Context(), engine.StartRequest{
		Saga: req.Saga, Version: req.Version, Event: req.Event, IdempotencyKey: key, Payload: req.Payload,
		// Only starting transitions `by: api` whose roles the caller
		// holds; she is the actor; her keys are hers alone.
		Caller: s.caller(r),
		// A caller's W3C trace context continues into the saga's commands;
		// the orchestrator starts a new trace when it is absent or invalid.
		Traceparent: r.Header.Get(engine.HeaderTraceparent),
	})
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	setSaga(r, inst.ID)
	w.Header().Set("Location", "/api/v1/sagas/"+url.PathEscape(inst.ID))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, inst)
}

func (s *server) getSaga(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	if err := onlyParams(r, "get saga"); err != nil {
		writeProblem(w, r, err)
		return
	}
	inst, err := s.store.GetInstance(r.Context(), id)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	hist, err := s.store.History(r.Context(), id)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	if hist == nil {
		hist = []engine.HistoryEntry{}
	}
	writeJSON(w, http.StatusOK, SagaDetail{Saga: inst, Timeline: hist})
}

// listParams are the query parameters of GET /sagas.
var listParams = []string{"saga", "state", "status", "from", "to", "key", "cursor", "limit"}

// parseSagaFilter reads GET /sagas's query into a filter, refusing bad values.
func parseSagaFilter(q url.Values) (engine.SagaFilter, error) {
	const op = "list sagas"
	for k, vs := range q {
		if len(vs) > 1 {
			return engine.SagaFilter{}, engine.Errorf(engine.CodeInvalid, op, "query parameter %q is given %d times; give it once", k, len(vs))
		}
	}
	// A typed parameter given with no value is refused rather than read
	// as absent: the spec has no empty date-time, status, limit or key.
	for _, k := range []string{"status", "from", "to", "key", "limit"} {
		if q.Has(k) && q.Get(k) == "" {
			return engine.SagaFilter{}, engine.Errorf(engine.CodeInvalid, op, "query parameter %q is empty: give a value or leave it out", k)
		}
	}
	f := engine.SagaFilter{Saga: q.Get("saga"), State: q.Get("state"), Cursor: q.Get("cursor")}
	if st := engine.Status(q.Get("status")); st == "" || slices.Contains(engine.Statuses(), st) {
		f.Status = st
	} else {
		return f, engine.Errorf(engine.CodeInvalid, op, "status %q is not one of %s", st, statusList())
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := q.Get(t.name)
		if v == "" {
			continue
		}
		tm, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, engine.Errorf(engine.CodeInvalid, op, "%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", t.name, v)
		}
		*t.dst = tm
	}
	// from at or after to is an empty range: it finds no saga (the store
	// takes created_at >= from and < to), it is not an error.
	if k := q.Get("key"); k != "" {
		name, value, ok := strings.Cut(k, ":")
		if !ok || name == "" || value == "" {
			return f, engine.Errorf(engine.CodeInvalid, op, "key %q must be NAME:VALUE, e.g. deal_id:42", k)
		}
		f.KeyName, f.KeyValue = name, value
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return f, engine.Errorf(engine.CodeInvalid, op, "limit %q must be an integer from 1 to 500", l)
		}
		f.Limit = n
	}
	return f, nil
}

func (s *server) listSagas(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "list sagas", listParams...); err != nil {
		writeProblem(w, r, err)
		return
	}
	f, err := parseSagaFilter(r.URL.Query())
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	if f.Saga != "" && s.cat.Latest(f.Saga) == nil {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, "list sagas", "saga %q is not a loaded definition", f.Saga))
		return
	}
	page, err := s.store.ListInstances(r.Context(), f)
	if err != nil {
		if f.Cursor != "" && engine.ErrorCode(err) == engine.CodeInvalid {
			// The filter is checked above; what the store refuses is the
			// cursor, which only it can read. Say so without its internals.
			err = &engine.Error{Code: engine.CodeInvalid, Op: "list sagas",
				Message: fmt.Sprintf("cursor %q is not one this API returned: pass the next of the previous page, or no cursor for the first page", abbreviate(f.Cursor, 40)), Err: err}
		}
		writeProblem(w, r, err)
		return
	}
	if page.Sagas == nil {
		page.Sagas = []engine.Instance{}
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *server) resend(w http.ResponseWriter, r *http.Request) {
	const op = "re-send pending command"
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	var req ResendRequest
	if !decodeOperatorRequest(w, r, op, &req, &req.Reason) {
		return
	}
	inst, err := s.orch.Resend(r.Context(), id, actor(r), req.Reason)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

func (s *server) abort(w http.ResponseWriter, r *http.Request) {
	const op = "abort saga"
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	var req AbortRequest
	if !decodeOperatorRequest(w, r, op, &req, &req.Reason) {
		return
	}
	inst, err := s.orch.Abort(r.Context(), id, req.State, actor(r), req.Reason)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

// decodeOperatorRequest decodes an operator action's body into req and
// checks that the reason (a field of req) is given: it goes into the
// saga's timeline. On failure it has written the problem and returns false.
func decodeOperatorRequest(w http.ResponseWriter, r *http.Request, op string, req any, reason *string) bool {
	if err := decodeJSON(w, r, op, req, false); err != nil {
		writeProblem(w, r, err)
		return false
	}
	if strings.TrimSpace(*reason) == "" {
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "reason" is required: say why, it goes into the saga's timeline`))
		return false
	}
	return true
}

// statusList names every status, for a refusal.
func statusList() string {
	names := make([]string, 0, len(engine.Statuses()))
	for _, st := range engine.Statuses() {
		names = append(names, string(st))
	}
	return strings.Join(names, ", ")
}

// abbreviate cuts s to at most n runes with an ellipsis.
func abbreviate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
