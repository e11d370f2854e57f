package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// Command is one command delivered to a handler.
type Command[T any] struct {
	// ID is the command's message id; duplicates of it are dropped.
	ID string
	// SagaID, Saga and SagaVersion identify the saga instance.
	SagaID      string
	Saga        string
	SagaVersion int
	// Name is the command name, e.g. APPROVE_ORDER.
	Name string
	// Attempt counts the saga-machine's sends of this command (1 first).
	Attempt int
	// Deadline is when saga-machine stops waiting for this command (zero:
	// none). The SDK refuses a forward command whose deadline has passed
	// before the handler runs (Config.DeadlineMargin), so a forward handler
	// only sees commands still in time. A compensation command's deadline
	// is ignored: compensations must eventually apply.
	Deadline time.Time
	// Compensates is, on a compensation command (e.g. REVERT_ORDER), the id
	// of the message whose effect it undoes, usually the forward command's
	// id; "" on a forward command. The SDK records it in the same
	// transaction as the handler's changes, and refuses that forward command
	// if it arrives afterwards. A compensation handler must be idempotent
	// and null-safe: the effect may never have happened (the forward command
	// was refused, failed, or has not arrived yet), and then it undoes
	// nothing and still answers its usual event.
	Compensates string
	// Payload is the command payload (the saga context) decoded into T.
	Payload T
	// Message is the raw envelope.
	Message envelope.Message
}

// Result is what a handler answers: build it with Reply, Reject or NoReply.
type Result struct {
	event   string
	reason  string
	payload any
	reject  bool
}

// Reply answers with a success event. payload (a JSON object, a struct or a
// map; nil for none) is merged into the saga context by the saga-machine.
func Reply(event string, payload any) Result { return Result{event: event, payload: payload} }

// Reject answers with a business rejection event and a reason for humans,
// e.g. Reject("ORDER_REJECTED", "insufficient cash: need 100.00, have 20.00", nil).
// A rejection is a normal answer: the handler's changes commit like a Reply's.
func Reject(event, reason string, payload any) Result {
	return Result{event: event, reason: reason, payload: payload, reject: true}
}

// NoReply means the command was handled and nothing is emitted (e.g. NOTIFY).
func NoReply() Result { return Result{} }

// Event returns the event name the result emits ("" for NoReply).
func (r Result) Event() string { return r.event }

// Reason returns the rejection reason ("" unless built by Reject).
func (r Result) Reason() string { return r.reason }

// handlerFunc is a registered handler with the payload type erased.
type handlerFunc func(ctx context.Context, tx *sqlx.Tx, msg envelope.Message) (Result, error)

// Handle registers the handler for one command. The handler runs inside the
// participant's database transaction: its business changes (made through
// tx), the inbox record of the command id and the reply in the outbox commit
// together, or not at all. A returned error (or a panic) rolls the
// transaction back; the command is retried with backoff and, after
// Config.MaxAttempts, parked as a dead letter. Wrap an error with Permanent
// to park it at once.
//
// Register every handler before Run. Handle panics if command is empty or
// already registered (by Handle or HandleBatch), like http.Handle.
func Handle[T any](p *Participant, command string, h func(ctx context.Context, tx *sqlx.Tx, cmd Command[T]) (Result, error)) {
	if command == "" {
		panic("sdk.Handle: empty command name")
	}
	if h == nil {
		panic("sdk.Handle: nil handler for " + command)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.handlers[command]; dup {
		panic("sdk.Handle: command " + command + " registered twice")
	}
	p.handlers[command] = func(ctx context.Context, tx *sqlx.Tx, msg envelope.Message) (Result, error) {
		cmd, err := newCommand[T](msg) // batchhandler.go
		if err != nil {
			return Result{}, err
		}
		return h(ctx, tx, cmd)
	}
}

func (p *Participant) handler(command string) (handlerFunc, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	h, ok := p.handlers[command]
	return h, ok
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks a handler error as not worth retrying: the command is
// parked as a dead letter after this attempt. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}

// encodeMessage is the envelope of m as written to the outbox and kept in
// the inbox: envelope.AppendMessage, what json.Marshal writes without
// reflection (BenchmarkCodec in engine/envelope).
func encodeMessage(m *envelope.Message) []byte {
	return envelope.AppendMessage(make([]byte, 0, 320+len(m.Payload)), m)
}

// marshalObject encodes a payload that must be a JSON object (or nothing).
func marshalObject(what string, payload any) (json.RawMessage, error) {
	if payload == nil {
		return nil, nil
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", what, err)
	}
	t := bytes.TrimSpace(b)
	if bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	if len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("encode %s payload: must be a JSON object, got %.40s", what, t)
	}
	return b, nil
}

// validName reports whether s looks like a command or event name
// (^[A-Z][A-Z0-9_]*$, as in the envelope schema).
func validName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
