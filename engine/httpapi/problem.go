package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/problem"
)

// ProblemTypePrefix starts the type URI of every problem this API returns;
// the engine.Code (or one of the HTTP-level codes below) follows it, e.g.
// urn:saga-machine:problem:not-found. docs/http-api.md lists them all.
const ProblemTypePrefix = problem.TypePrefix

// HTTP-level problem codes, for errors that happen before the engine is
// involved. They share the table with the engine's codes.
const (
	CodeMethodNotAllowed engine.Code = "method-not-allowed"
	CodeTooLarge         engine.Code = "too-large"
	CodeMediaType        engine.Code = "unsupported-media-type"
	// CodeCrossOrigin refuses a state-changing request a browser sent from
	// another origin (CSRF), e.g. a web page posting to a loopback API that
	// runs without authentication.
	CodeCrossOrigin engine.Code = "cross-origin"
	// CodeReplayFailed answers a replay of a dead letter whose message is
	// still refused (still undecodable, from the wrong participant, not
	// allowed in the saga's state, ...): the request was right, the dead
	// letter is not, as for the participants' replay-failed.
	CodeReplayFailed engine.Code = "replay-failed"
)

// problemKind is one row of the code table.
type problemKind struct {
	status int
	title  string
}

// problemKinds maps every code to its HTTP status and title: the one table
// mapping engine codes to HTTP.
var problemKinds = map[engine.Code]problemKind{
	engine.CodeInvalid:          {http.StatusBadRequest, "Invalid request"},
	engine.CodeNotFound:         {http.StatusNotFound, "Not found"},
	engine.CodeUnknownSaga:      {http.StatusUnprocessableEntity, "Unknown saga definition"},
	engine.CodeUnknownEvent:     {http.StatusUnprocessableEntity, "Unknown event"},
	engine.CodeIllegal:          {http.StatusConflict, "Event not allowed in the current state"},
	engine.CodeWrongParticipant: {http.StatusUnprocessableEntity, "Event emitted by the wrong participant"},
	engine.CodeFinished:         {http.StatusConflict, "Saga already finished"},
	engine.CodeConflict:         {http.StatusConflict, "Conflict"},
	engine.CodeForbidden:        {http.StatusForbidden, "Forbidden"},
	engine.CodeKeyReused:        {http.StatusUnprocessableEntity, "Idempotency-Key reused with a different request"},
	engine.CodeUnavailable:      {http.StatusServiceUnavailable, "Service unavailable"},
	engine.CodeInternal:         {http.StatusInternalServerError, "Internal error"},
	CodeMethodNotAllowed:        {http.StatusMethodNotAllowed, "Method not allowed"},
	CodeTooLarge:                {http.StatusRequestEntityTooLarge, "Request body too large"},
	CodeMediaType:               {http.StatusUnsupportedMediaType, "Unsupported media type"},
	CodeCrossOrigin:             {http.StatusForbidden, "Cross-origin request refused"},
	CodeReplayFailed:            {http.StatusConflict, "Replay failed: the message is still refused"},
	CodeUnknownMigration:        {http.StatusUnprocessableEntity, "Unknown migration"},
}

// ProblemType returns the type URI of code.
func ProblemType(code engine.Code) string { return ProblemTypePrefix + string(code) }

// StatusOf returns the HTTP status for code (500 for a code not in the table).
func StatusOf(code engine.Code) int {
	if k, ok := problemKinds[code]; ok {
		return k.status
	}
	return http.StatusInternalServerError
}

// Problem is an RFC 9457 problem details body, the one every service
// writes (internal/problem). The API always sets Code, the last segment of
// Type, for clients that prefer a short string.
type Problem = problem.Problem

// problemFor builds the problem for err on a request to instance.
func problemFor(err error, instance string) Problem {
	code := engine.ErrorCode(err)
	k, ok := problemKinds[code]
	if !ok {
		code, k = engine.CodeInternal, problemKinds[engine.CodeInternal]
	}
	return Problem{Type: ProblemType(code), Title: k.title, Status: k.status, Detail: publicDetail(err, code, k), Instance: instance, Code: string(code)}
}

// publicDetail is what a client reads of err: the Messages of the
// engine.Errors in its chain, outermost first, each once. The Op of each
// (what was being done, layer by layer: "get saga definition: find saga
// definition", "sqlstore: get saga x") stays in the server log, which has
// the whole error. A cause that is not an engine.Error (a driver's, a
// decoder's, an I/O error) is shown only after an engine.Error with a
// Message of its own, on a 4xx answer: there its author chose to show it
// ("read the request body: unexpected EOF"). An internal error, or one
// with no Message at all (a store's bare wrap of a driver error), shows
// only a generic sentence.
func publicDetail(err error, code engine.Code, k problemKind) string {
	const seeLog = "; the server log has the details"
	if code == engine.CodeInternal {
		return "internal error" + seeLog
	}
	var msgs []string
	var last *engine.Error
	cur := err
	for cur != nil {
		var e *engine.Error
		if !errors.As(cur, &e) {
			break
		}
		if e.Message != "" && (len(msgs) == 0 || msgs[len(msgs)-1] != e.Message) {
			msgs = append(msgs, e.Message)
		}
		last, cur = e, e.Err
	}
	if cur != nil && last != nil && last.Message != "" && k.status < http.StatusInternalServerError {
		msgs = append(msgs, cur.Error())
	}
	if len(msgs) == 0 {
		return k.title + seeLog
	}
	return strings.Join(msgs, ": ")
}

// writeProblem answers with err as application/problem+json.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err, r.URL.RequestURI())
	if info := infoFrom(r.Context()); info != nil {
		info.err = err
	}
	problem.Write(w, r, p)
}
