package program_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/program"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStderr string
	}{
		{"ok", nil, ""},
		{"failing", errors.New("boom"), "demo: boom\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotArgs []string
			var gotEnv string
			run := func(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
				if ctx.Err() != nil {
					t.Errorf("context: got %v, want a live context", ctx.Err())
				}
				gotArgs, gotEnv = args, env("X")
				return tt.err
			}
			var stderr bytes.Buffer
			err := program.Run("demo", run, []string{"-a", "b"}, func(k string) string { return "v" + k }, io.Discard, &stderr)
			if !errors.Is(err, tt.err) {
				t.Errorf("error: got %v, want %v", err, tt.err)
			}
			if got, want := stderr.String(), tt.wantStderr; got != want {
				t.Errorf("stderr: got %q, want %q", got, want)
			}
			if len(gotArgs) != 2 || gotArgs[1] != "b" || gotEnv != "vX" {
				t.Errorf("run got args %q and env X=%q, want [-a b] and vX", gotArgs, gotEnv)
			}
		})
	}
}
