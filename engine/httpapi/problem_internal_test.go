package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// TestPublicDetail: what a client reads of an error. Contract fuzzing
// found details that repeated every layer's prefix and named internals
// ("sqlstore: list sagas: bad cursor ...: illegal base64 data").
func TestPublicDetail(t *testing.T) {
	driver := errors.New(`pq: invalid byte sequence for encoding "UTF8": 0x00`)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"ops are not shown", &engine.Error{Code: engine.CodeNotFound, Op: "get saga definition",
			Err: engine.Errorf(engine.CodeNotFound, "find saga definition", "no saga X is loaded")}, "no saga X is loaded"},
		{"store wrap of a store error", fmt.Errorf("sqlstore: get saga x: %w", engine.Errorf(engine.CodeNotFound, "sqlstore: get saga x", "no saga x")), "no saga x"},
		{"a bare wrap of a driver error shows no driver text", &engine.Error{Code: engine.CodeInvalid, Op: "sqlstore: insert", Err: driver},
			"Invalid request; the server log has the details"},
		{"a message with its cause, on a 4xx", &engine.Error{Code: engine.CodeInvalid, Op: "read", Message: "read the request body", Err: errors.New("unexpected EOF")},
			"read the request body: unexpected EOF"},
		{"messages outermost first, the same one once", &engine.Error{Code: engine.CodeWrongParticipant, Op: "replay", Message: "the event is still refused",
			Err: &engine.Error{Code: engine.CodeWrongParticipant, Op: "apply", Message: "the event is still refused",
				Err: engine.Errorf(engine.CodeWrongParticipant, "apply X", "X comes from deals, not profile")}},
			"the event is still refused: X comes from deals, not profile"},
		{"unavailable hides its cause", &engine.Error{Code: engine.CodeUnavailable, Op: "sqlstore: ping", Message: "the database does not answer", Err: errors.New("dial tcp 10.0.0.5:5432: i/o timeout")},
			"the database does not answer"},
		{"unavailable without a message", &engine.Error{Code: engine.CodeUnavailable, Op: "sqlstore: ping", Err: errors.New("dial tcp 10.0.0.5:5432: i/o timeout")},
			"Service unavailable; the server log has the details"},
		{"internal with a message", engine.Errorf(engine.CodeInternal, "apply", "invariant broken in saga x"), "internal error; the server log has the details"},
		{"not an engine error", driver, "internal error; the server log has the details"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := problemFor(tt.err, "/x")
			if p.Detail != tt.want {
				t.Errorf("detail:\n got %q\nwant %q", p.Detail, tt.want)
			}
			if p.Status != StatusOf(engine.ErrorCode(tt.err)) {
				t.Errorf("status %d, want %d", p.Status, StatusOf(engine.ErrorCode(tt.err)))
			}
		})
	}
}
