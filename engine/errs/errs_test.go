package errs_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/errs"
)

func TestErrorCode(t *testing.T) {
	wrapped := fmt.Errorf("outer: %w", errs.Errorf(errs.CodeNotFound, "get", "no saga %s", "s-1"))
	tests := []struct {
		name string
		err  error
		want errs.Code
	}{
		{"nil", nil, ""},
		{"plain", io.EOF, errs.CodeInternal},
		{"direct", errs.Errorf(errs.CodeConflict, "op", "x"), errs.CodeConflict},
		{"wrapped", wrapped, errs.CodeNotFound},
	}
	for _, tc := range tests {
		if got := errs.ErrorCode(tc.err); got != tc.want {
			t.Errorf("%s: ErrorCode = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  *errs.Error
		want string
	}{
		{&errs.Error{Code: errs.CodeInvalid, Op: "parse", Message: "bad", Err: io.EOF}, "parse: bad: EOF"},
		{&errs.Error{Code: errs.CodeInvalid, Message: "bad"}, "bad"},
		{&errs.Error{Code: errs.CodeInvalid, Op: "read", Err: io.EOF}, "read: EOF"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	if e := (&errs.Error{Err: io.EOF}); !errors.Is(e, io.EOF) {
		t.Error("errors.Is does not see the cause")
	}
}
