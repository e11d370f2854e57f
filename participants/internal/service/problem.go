package service

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/internal/problem"
)

// ProblemTypePrefix starts the type URI of every problem the services write;
// the suffix is the stable slug of the error (see the Type constants).
const ProblemTypePrefix = problem.TypePrefix

// Problem types (RFC 9457 "type" members). They are stable: clients may
// switch on them.
const (
	TypeMalformed        = ProblemTypePrefix + "malformed-request"      // 400: body is not the JSON expected
	TypeValidation       = ProblemTypePrefix + "validation"             // 422: fields fail validation; see "errors"
	TypeNotFound         = ProblemTypePrefix + "not-found"              // 404: no such object for this caller
	TypeMethodNotAllowed = ProblemTypePrefix + "method-not-allowed"     // 405
	TypeUnsupportedMedia = ProblemTypePrefix + "unsupported-media-type" // 415: Content-Type is not application/json
	TypeForbidden        = ProblemTypePrefix + "forbidden"              // 403: the caller lacks the role, or may not act on this object
	TypeIdempotencyReuse = ProblemTypePrefix + "idempotency-key-reused" // 422: same Idempotency-Key, different request
	TypeConflict         = ProblemTypePrefix + "conflict"               // 409: the object changed meanwhile
	TypeUnavailable      = ProblemTypePrefix + "unavailable"            // 503: database unreachable
	TypeInternal         = ProblemTypePrefix + "internal"               // 500
)

// FieldError is one validation failure of a request field
// (problem.FieldError).
type FieldError = problem.FieldError

// Problem is an RFC 9457 problem details document (problem.Problem).
type Problem = problem.Problem

// Error is an error that carries the problem to answer with. Handlers return
// it from their logic; WriteError renders it.
type Error struct {
	Problem
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Title + ": " + e.Detail
	}
	return e.Title
}

// NewError returns an *Error of the given status, type and detail; the
// title is the status text.
func NewError(status int, typ, detail string) *Error {
	return &Error{Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: detail}}
}

// NotFound is the 404 problem for an object the caller cannot see: it never
// tells "does not exist" from "belongs to someone else".
func NotFound(what, id string) *Error {
	return NewError(http.StatusNotFound, TypeNotFound, what+" "+quote(id)+" not found")
}

// Invalid is the 422 problem for field validation failures.
func Invalid(errs ...FieldError) *Error {
	e := NewError(http.StatusUnprocessableEntity, TypeValidation, "the request has invalid fields")
	e.Title = "Validation failed"
	if len(errs) == 1 {
		e.Detail = errs[0].Field + ": " + errs[0].Message
	}
	e.Errors = errs
	return e
}

// Malformed is the 400 problem for a body or parameter that cannot be read.
func Malformed(detail string) *Error {
	return NewError(http.StatusBadRequest, TypeMalformed, detail)
}

func quote(s string) string {
	b, _ := json.Marshal(s) // a string always encodes
	return string(b)
}

// WriteProblem writes p as application/problem+json (problem.Write).
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) { problem.Write(w, r, p) }

// WriteError answers with err's problem when it is an *Error, else with a
// 500 internal problem (the cause is logged, not shown to the client).
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if e, ok := asError(err); ok {
		WriteProblem(w, r, e.Problem)
		return
	}
	if log == nil {
		log = slog.Default()
	}
	log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	WriteProblem(w, r, NewError(http.StatusInternalServerError, TypeInternal, "internal error; the server logged the cause").Problem)
}

// WriteJSON writes v as application/json with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing left to do
}

// NotFoundHandler answers unknown paths with a 404 problem.
func NotFoundHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, r, NewError(http.StatusNotFound, TypeNotFound, "no resource at "+r.URL.Path).Problem)
	})
}

// MethodNotAllowedHandler answers a known path of router with a wrong
// method: 405 with the Allow header RFC 9110 requires, listing the methods
// router serves at that path (AllowedMethods).
func MethodNotAllowedHandler(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed := AllowedMethods(router, r)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		WriteProblem(w, r, NewError(http.StatusMethodNotAllowed, TypeMethodNotAllowed,
			"method "+r.Method+" is not allowed on "+r.URL.Path+" (allowed: "+strings.Join(allowed, ", ")+")").Problem)
	})
}

// probeMethods are the methods AllowedMethods tries.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// AllowedMethods returns the methods router serves at r's path. When
// routes of several path templates match the path (a literal segment
// beside a {variable}, e.g. /items/export and /items/{id}), the path
// belongs to the one registered first, as for routing, and only its
// methods count.
func AllowedMethods(router *mux.Router, r *http.Request) []string {
	order := map[*mux.Route]int{}
	_ = router.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		order[rt] = len(order)
		return nil
	})
	type hit struct {
		method, template string
		index            int
	}
	var hits []hit
	owner := -1
	for _, m := range probeMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if !router.Match(probe, &match) || match.MatchErr != nil || match.Route == nil {
			continue
		}
		tpl, _ := match.Route.GetPathTemplate()
		h := hit{m, tpl, order[match.Route]}
		hits = append(hits, h)
		if owner < 0 || h.index < hits[owner].index {
			owner = len(hits) - 1
		}
	}
	var out []string
	for _, h := range hits {
		if owner >= 0 && h.template == hits[owner].template {
			out = append(out, h.method)
		}
	}
	return out
}

func asError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
