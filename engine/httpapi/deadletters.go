package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// DeadLetterView is a dead letter as the API shows it: the raw record as
// text when it is UTF-8 (the usual JSON envelope), else base64.
type DeadLetterView struct {
	ID         int64       `json:"id"`
	MessageID  string      `json:"message_id,omitempty"`
	SagaID     string      `json:"saga_id,omitempty"`
	Topic      string      `json:"topic"`
	Partition  int32       `json:"partition"`
	Offset     int64       `json:"offset"`
	Raw        string      `json:"raw,omitempty"`        // the record value, if UTF-8
	RawBase64  string      `json:"raw_base64,omitempty"` // the record value, if not UTF-8
	Code       engine.Code `json:"code"`
	Reason     string      `json:"reason"`
	CreatedAt  time.Time   `json:"created_at"`
	ReplayedAt *time.Time  `json:"replayed_at,omitempty"`
	ReplayedBy string      `json:"replayed_by,omitempty"`
}

// ReplayResult is the answer of POST /dead-letters/{id}/replay.
type ReplayResult struct {
	DeadLetter DeadLetterView   `json:"dead_letter"`
	Saga       *engine.Instance `json:"saga,omitempty"` // the saga after the replay
}

func deadLetterView(d engine.DeadLetter) DeadLetterView {
	v := DeadLetterView{
		ID: d.ID, MessageID: d.MessageID, SagaID: d.SagaID, Topic: d.Topic, Partition: d.Partition, Offset: d.Offset,
		Code: d.Code, Reason: d.Reason, CreatedAt: d.CreatedAt, ReplayedAt: d.ReplayedAt, ReplayedBy: d.ReplayedBy,
	}
	if utf8.Valid(d.Raw) {
		v.Raw = string(d.Raw)
	} else {
		v.RawBase64 = base64.StdEncoding.EncodeToString(d.Raw)
	}
	return v
}

// DefaultDeadLetterLimit and MaxDeadLetterLimit bound GET /dead-letters.
const (
	DefaultDeadLetterLimit = 100
	MaxDeadLetterLimit     = 1000
)

func (s *server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	const op = "list dead letters"
	if err := onlyParams(r, op, "limit", "include_replayed"); err != nil {
		writeProblem(w, r, err)
		return
	}
	q := r.URL.Query()
	for _, k := range []string{"limit", "include_replayed"} {
		if q.Has(k) && q.Get(k) == "" {
			writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, "query parameter %q is empty: give a value or leave it out", k))
			return
		}
	}
	limit := DefaultDeadLetterLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxDeadLetterLimit {
			writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, "limit %q must be an integer from 1 to %d", l, MaxDeadLetterLimit))
			return
		}
		limit = n
	}
	incl := false
	if v := q.Get("include_replayed"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, "include_replayed %q must be true or false", v))
			return
		}
		incl = b
	}
	dls, err := s.store.DeadLetters(r.Context(), limit, incl)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	out := make([]DeadLetterView, len(dls))
	for i, d := range dls {
		out[i] = deadLetterView(d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": out})
}

// deadLetterID parses the {id} path variable.
func deadLetterID(r *http.Request, op string) (int64, error) {
	raw := mux.Vars(r)["id"]
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, engine.Errorf(engine.CodeInvalid, op, "dead letter id %q must be a positive integer", raw)
	}
	return id, nil
}

func (s *server) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	const op = "get dead letter"
	id, err := deadLetterID(r, op)
	if err == nil {
		err = onlyParams(r, op)
	}
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	d, err := s.store.GetDeadLetter(r.Context(), id)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	setSaga(r, d.SagaID)
	writeJSON(w, http.StatusOK, deadLetterView(d))
}

func (s *server) replay(w http.ResponseWriter, r *http.Request) {
	const op = "replay dead letter"
	id, err := deadLetterID(r, op)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	var body struct{}
	if err := decodeJSON(w, r, op, &body, true); err != nil {
		writeProblem(w, r, err)
		return
	}
	if err := s.orch.Replay(r.Context(), id, actor(r)); err != nil {
		switch engine.ErrorCode(err) {
		case engine.CodeInvalid, engine.CodeWrongParticipant, engine.CodeUnknownSaga, engine.CodeUnknownEvent, engine.CodeIllegal, engine.CodeFinished:
			// The dead letter's message is still refused (the request is
			// valid): 409 replay-failed with the reason, nothing changed.
			err = &engine.Error{Code: CodeReplayFailed, Op: op, Err: err}
		}
		writeProblem(w, r, err)
		return
	}
	d, err := s.store.GetDeadLetter(r.Context(), id)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	setSaga(r, d.SagaID)
	res := ReplayResult{DeadLetter: deadLetterView(d)}
	if d.SagaID != "" {
		inst, err := s.store.GetInstance(r.Context(), d.SagaID)
		if err != nil {
			// The replay is committed; only the answer lacks the saga.
			s.log.Warn("replayed dead letter, but reading its saga failed", "saga_id", d.SagaID, "dead_letter", id, "err", err)
		} else {
			res.Saga = &inst
		}
	}
	writeJSON(w, http.StatusOK, res)
}
