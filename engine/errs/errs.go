package errs

import (
	"errors"
	"fmt"
)

// Code is a stable error code. HTTP handlers map codes to statuses and RFC
// 9457 problem types in one table (engine/httpapi).
type Code string

// Error codes.
const (
	CodeInvalid          Code = "invalid"            // malformed input (message, request, definition)
	CodeNotFound         Code = "not-found"          // unknown saga instance, definition, dead letter
	CodeUnknownSaga      Code = "unknown-saga"       // event names a definition (or version) that is not loaded
	CodeUnknownEvent     Code = "unknown-event"      // the definition has no such event
	CodeIllegal          Code = "illegal-transition" // event not allowed in the current state
	CodeWrongParticipant Code = "wrong-participant"  // event allowed, but emitted by another participant
	CodeFinished         Code = "finished"           // the saga is in a final or failed state
	CodeConflict         Code = "conflict"           // optimistic-lock conflict or duplicate
	CodeUnavailable      Code = "unavailable"        // database or broker unreachable
	CodeInternal         Code = "internal"
)

// Error codes of callers' requests (the HTTP API).
const (
	// CodeForbidden: the caller may not do this (a role is missing, or the
	// definition does not open the start to the API).
	CodeForbidden Code = "forbidden"
	// CodeKeyReused: an Idempotency-Key was sent again by the same caller
	// with a different request.
	CodeKeyReused Code = "idempotency-key-reused"
)

// Error is the one error type. Op says what was being done; Err is the
// underlying cause, if any.
type Error struct {
	Code    Code
	Op      string
	Message string
	Err     error
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Err != nil {
		if msg != "" {
			msg += ": "
		}
		msg += e.Err.Error()
	}
	if e.Op != "" {
		return e.Op + ": " + msg
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the Code of the first *Error in err's chain, CodeInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
