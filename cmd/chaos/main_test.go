package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunRefuses: arguments the program cannot run with exit 2 with a
// reason, before anything is started (the configuration is checked before
// the servers, the build or the stack).
func TestRunRefuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-kill-them-all"}, "flag provided but not defined"},
		{"positional argument", []string{"now"}, "unexpected arguments"},
		{"bad number", []string{"-sagas", "many"}, "invalid value"},
		{"traffic shorter than warm-up and tail", []string{"-sagas", "10", "-rate", "10"}, "shorter than Warmup + Tail"},
		{"pause too short to move partitions", []string{"-pause", "500ms"}, "past the session timeout"},
		{"aborts and cancels over 100 per cent", []string{"-aborts", "70", "-cancels", "40"}, "more than 100 per cent"},
		{"aborts not a number", []string{"-aborts", "some"}, "invalid value"},
		{"with baskets over 100 per cent", []string{"-aborts", "50", "-baskets", "51", "-cancels", "-1"}, "more than 100 per cent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(context.Background(), tt.args, &stdout, &stderr); got != 2 {
				t.Errorf("run(%q) = %d, want 2", tt.args, got)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("run(%q) stderr = %q, want it to say %q", tt.args, stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("run(%q) printed a report: %q", tt.args, stdout.String())
			}
		})
	}
}
