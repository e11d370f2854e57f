package sdk

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/problem"
)

// Dead letter states in the admin API.
const (
	// StateParked: the command has not been handled since it was parked.
	StateParked = "parked"
	// StateHandled: the command has been handled since (replayed, or
	// delivered again by saga-machine and succeeding); its inbox record is
	// there. Replaying it again only re-sends its reply.
	StateHandled = "handled"
)

// ReplayedByAdmin is what the admin API records as a dead letter's
// replayed_by when the request carries no authenticated user; with one
// (auth.UserFrom, set by the services' guard) it records "operator
// <subject>".
const ReplayedByAdmin = "admin API"

// Problem types of the admin API, in the services' style
// (urn:saga-machine:problem:<slug>).
const (
	ProblemReplayFailed = problem.TypePrefix + "replay-failed" // 409: the command still fails
	problemNotFound     = problem.TypePrefix + "not-found"
	problemValidation   = problem.TypePrefix + "validation"
	problemMethod       = problem.TypePrefix + "method-not-allowed"
	problemUnavailable  = problem.TypePrefix + "unavailable"
	problemInternal     = problem.TypePrefix + "internal"
)

// Limits of GET /admin/dead-letters.
const (
	DefaultAdminListLimit = 100
	MaxAdminListLimit     = 1000
)

// AdminRoute is one route AdminHandler serves: a method and a path
// template ({id} is one path segment).
type AdminRoute struct {
	Method string
	Path   string
}

// AdminRoutes returns the routes AdminHandler serves, for services that
// register them one by one (so that their OpenAPI document lists each).
func AdminRoutes() []AdminRoute {
	return []AdminRoute{
		{http.MethodGet, "/admin/dead-letters"},
		{http.MethodGet, "/admin/dead-letters/{id}"},
		{http.MethodPost, "/admin/dead-letters/{id}/replay"},
	}
}

// AdminHandler returns the operators' HTTP API over p's dead letters:
//
//	GET  /admin/dead-letters?state=parked|handled&limit=1..1000  newest first
//	GET  /admin/dead-letters/{id}                                 one, with the record as received
//	POST /admin/dead-letters/{id}/replay                          handle the command once more
//
// A replay goes through the same path as a delivery from Kafka (inbox,
// handler, reply in the outbox, one transaction) and answers 200 with the
// dead letter, now in state "handled", and the reply; if the command still
// fails it answers 409 (problem type ProblemReplayFailed) and the dead
// letter keeps the new reason and one more attempt. It is
// Participant.ReplayAs: the dead letter is kept (state "handled",
// replayed_at and replayed_by set) so that operators see what was
// replayed; Prune removes it with its inbox record.
// Errors are application/problem+json as in the services.
//
// The handler does NO authentication or authorization: serve it only
// behind the service's operator check, e.g.
// guard(AdminHandler(p)) with auth.Authenticator.Middleware and
// RequireRole(auth.RoleOperator, ...), registered for each of AdminRoutes
// or under /admin/. With a nil p (a service built without its participant)
// every route answers 503.
func AdminHandler(p *Participant) http.Handler {
	a := &admin{p: p}
	r := mux.NewRouter()
	if p == nil {
		r.PathPrefix("/").HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, r, http.StatusServiceUnavailable, problemUnavailable, "this service has no SDK participant configured: no dead letters to show")
		})
		return r
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, problemNotFound, "no resource at "+r.URL.Path)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusMethodNotAllowed, problemMethod, "method "+r.Method+" is not allowed on "+r.URL.Path)
	})
	handlers := []http.HandlerFunc{a.list, a.get, a.replay}
	for i, rt := range AdminRoutes() {
		r.Handle(rt.Path, handlers[i]).Methods(rt.Method)
	}
	return r
}

type admin struct{ p *Participant }

// deadLetterView is a dead letter as the admin API shows it.
type deadLetterView struct {
	ID        string    `json:"id"`
	MessageID string    `json:"message_id"`
	SagaID    string    `json:"saga_id"`
	Command   string    `json:"command"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// State is StateParked or StateHandled; HandledAt and ReplyID come
	// from the inbox record of a handled command.
	State     string     `json:"state"`
	HandledAt *time.Time `json:"handled_at,omitempty"`
	ReplyID   string     `json:"reply_id,omitempty"`
	// ReplayedAt and ReplayedBy are set once a replay succeeded.
	ReplayedAt *time.Time `json:"replayed_at,omitempty"`
	ReplayedBy string     `json:"replayed_by,omitempty"`
	// Headers and Body (or BodyBase64 when it is not UTF-8) are the record
	// as received; only GET /admin/dead-letters/{id} shows them.
	Headers    map[string]string `json:"headers,omitempty"`
	Body       *string           `json:"body,omitempty"`
	BodyBase64 *string           `json:"body_base64,omitempty"`
}

// deadLetterStateRow is a dead letter joined with its inbox record.
type deadLetterStateRow struct {
	deadLetterRow
	HandledAt sql.NullTime   `db:"handled_at"`
	ReplyID   sql.NullString `db:"reply_id"`
}

const deadLetterStateSelect = `SELECT d.*, i.processed_at AS handled_at, i.reply_id AS reply_id
	FROM sdk_dead_letters d LEFT JOIN sdk_inbox i ON i.message_id = d.message_id AND d.message_id <> ''`

func (r deadLetterStateRow) view(full bool) (deadLetterView, error) {
	dl, err := r.deadLetter()
	if err != nil {
		return deadLetterView{}, err
	}
	v := deadLetterView{
		ID: dl.ID, MessageID: dl.MessageID, SagaID: dl.SagaID, Command: dl.Command, Reason: dl.Reason,
		Attempts: dl.Attempts, Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset,
		CreatedAt: dl.CreatedAt, UpdatedAt: dl.UpdatedAt, State: StateParked,
	}
	if !dl.ReplayedAt.IsZero() {
		t := dl.ReplayedAt
		v.ReplayedAt, v.ReplayedBy = &t, dl.ReplayedBy
	}
	if r.HandledAt.Valid {
		t := r.HandledAt.Time.UTC()
		v.State, v.HandledAt, v.ReplyID = StateHandled, &t, r.ReplyID.String
	}
	if full {
		v.Headers = dl.Headers
		if utf8.Valid(dl.Body) {
			s := string(dl.Body)
			v.Body = &s
		} else {
			s := base64.StdEncoding.EncodeToString(dl.Body)
			v.BodyBase64 = &s
		}
	}
	return v, nil
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var bad []fieldError
	state := q.Get("state")
	where := ""
	switch state {
	case "":
		if q.Has("state") { // ?state= names no state
			bad = append(bad, fieldError{Field: "state", Message: fmt.Sprintf("must be %s or %s (or left out), got \"\"", StateParked, StateHandled)})
		}
	case StateParked:
		where = " WHERE i.message_id IS NULL"
	case StateHandled:
		where = " WHERE i.message_id IS NOT NULL"
	default:
		bad = append(bad, fieldError{Field: "state", Message: fmt.Sprintf("must be %s or %s, got %q", StateParked, StateHandled, state)})
	}
	limit := DefaultAdminListLimit
	if s := q.Get("limit"); s != "" || q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAdminListLimit {
			bad = append(bad, fieldError{Field: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d, got %q", MaxAdminListLimit, s)})
		}
		limit = n
	}
	if len(bad) > 0 {
		writeInvalid(w, r, bad)
		return
	}
	var rows []deadLetterStateRow
	query := a.p.db.Rebind(deadLetterStateSelect + where + ` ORDER BY d.created_at DESC, d.id DESC LIMIT ?`)
	if err := a.p.db.SelectContext(r.Context(), &rows, query, limit); err != nil {
		a.fail(w, r, fmt.Errorf("list dead letters of %s: %w", a.p.cfg.Name, err))
		return
	}
	items := make([]deadLetterView, 0, len(rows))
	for _, row := range rows {
		v, err := row.view(false)
		if err != nil {
			a.fail(w, r, fmt.Errorf("list dead letters of %s: %w", a.p.cfg.Name, err))
			return
		}
		items = append(items, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// find reads one dead letter with its state; a missing one is an
// *errs.Error with code errs.CodeNotFound.
func (a *admin) find(ctx context.Context, id string) (deadLetterView, error) {
	var row deadLetterStateRow
	err := a.p.db.GetContext(ctx, &row, a.p.db.Rebind(deadLetterStateSelect+` WHERE d.id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) {
		return deadLetterView{}, errs.Errorf(errs.CodeNotFound, "read dead letter", "no dead letter %q in %s", id, a.p.cfg.Name)
	}
	if err != nil {
		return deadLetterView{}, fmt.Errorf("read dead letter %s of %s: %w", id, a.p.cfg.Name, err)
	}
	return row.view(true)
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.find(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// replyView is the reply a replay emitted.
type replyView struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Reason  string          `json:"reason,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// replayView is the answer of a successful replay.
type replayView struct {
	DeadLetter deadLetterView `json:"dead_letter"`
	// Duplicate is true when the command had been handled already: the
	// handler did not run and the stored reply was sent again.
	Duplicate bool       `json:"duplicate"`
	Reply     *replyView `json:"reply,omitempty"`
}

func (a *admin) replay(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	by := ReplayedByAdmin
	if u, ok := auth.UserFrom(r.Context()); ok && u.Subject != "" {
		by = "operator " + u.Subject
	}
	out, err := a.p.ReplayAs(r.Context(), id, by)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.find(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res := replayView{DeadLetter: v, Duplicate: out.Duplicate}
	if m := out.Reply; m != nil {
		res.Reply = &replyView{ID: m.ID, Name: m.Name, Reason: m.Reason, Payload: m.Payload}
	}
	writeJSON(w, http.StatusOK, res)
}

// fail answers with the problem matching err.
func (a *admin) fail(w http.ResponseWriter, r *http.Request, err error) {
	var rf *errReplayFailed
	switch {
	case errors.As(err, &rf):
		writeProblem(w, r, http.StatusConflict, ProblemReplayFailed, rf.err.Error())
	case errs.ErrorCode(err) == errs.CodeNotFound:
		writeProblem(w, r, http.StatusNotFound, problemNotFound, "dead letter "+strconv.Quote(mux.Vars(r)["id"])+" not found")
	case r.Context().Err() != nil:
		// The client went away; nothing useful to answer.
		writeProblem(w, r, http.StatusServiceUnavailable, problemUnavailable, "request canceled")
	default:
		a.p.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		if pingErr := a.p.db.PingContext(r.Context()); pingErr != nil {
			writeProblem(w, r, http.StatusServiceUnavailable, problemUnavailable, "database unreachable; the server logged the cause")
			return
		}
		writeProblem(w, r, http.StatusInternalServerError, problemInternal, "internal error; the server logged the cause")
	}
}

// fieldError is one invalid query parameter.
type fieldError = problem.FieldError

func writeProblem(w http.ResponseWriter, r *http.Request, status int, typ, detail string) {
	problem.Write(w, r, problem.Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeInvalid(w http.ResponseWriter, r *http.Request, errs []fieldError) {
	p := problem.Problem{Type: problemValidation, Title: "Validation failed", Status: http.StatusUnprocessableEntity,
		Detail: "the request has invalid fields", Errors: errs}
	if len(errs) == 1 {
		p.Detail = errs[0].Field + ": " + errs[0].Message
	}
	problem.Write(w, r, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing left to do
}
