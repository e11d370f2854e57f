package engine

import "github.com/portfolio-counselor/sagamachine/engine/errs"

// The error type lives in package engine/errs, shared with the stores and
// the participant SDK; these are its names in the engine.

// Code is errs.Code, a stable error code. HTTP handlers map codes to
// statuses and RFC 9457 problem types in one table (engine/httpapi).
type Code = errs.Code

// Error codes.
const (
	CodeInvalid          = errs.CodeInvalid          // malformed input (message, request, definition)
	CodeNotFound         = errs.CodeNotFound         // unknown saga instance, definition, dead letter
	CodeUnknownSaga      = errs.CodeUnknownSaga      // event names a definition (or version) that is not loaded
	CodeUnknownEvent     = errs.CodeUnknownEvent     // the definition has no such event
	CodeIllegal          = errs.CodeIllegal          // event not allowed in the current state
	CodeWrongParticipant = errs.CodeWrongParticipant // event allowed, but emitted by another participant
	CodeFinished         = errs.CodeFinished         // the saga is in a final or failed state
	CodeConflict         = errs.CodeConflict         // optimistic-lock conflict or duplicate
	CodeUnavailable      = errs.CodeUnavailable      // database or broker unreachable
	CodeInternal         = errs.CodeInternal
	// CodeForbidden: the caller may not do this (a role is missing, or the
	// definition does not open the start to the API).
	CodeForbidden = errs.CodeForbidden
	// CodeKeyReused: an Idempotency-Key was sent again by the same caller
	// with a different request.
	CodeKeyReused = errs.CodeKeyReused
)

// Error is errs.Error, the one error type. Op says what was being done;
// Err is the underlying cause, if any.
type Error = errs.Error

// Errorf builds an *Error with a formatted message (errs.Errorf).
func Errorf(code Code, op, format string, args ...any) *Error {
	return errs.Errorf(code, op, format, args...)
}

// ErrorCode returns the Code of the first *Error in err's chain,
// CodeInternal for any other non-nil error, and "" for nil (errs.ErrorCode).
func ErrorCode(err error) Code { return errs.ErrorCode(err) }
