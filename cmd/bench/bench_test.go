package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-n", "0"}, {"-c", "-1"}, {"--reject-every", "-2"}, {"--poll", "0s"},
		{"--remote", "--postgres", "postgres://x/y"}, {"--log-level", "loud"}, {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want an error", args)
		}
	}
}

// runJSON runs the bench with args and --json and decodes its result.
func runJSON(t *testing.T, args ...string) (Result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // liveness bound only
	defer cancel()
	var out, progress bytes.Buffer
	if err := run(ctx, append(args, "--json"), func(string) string { return "" }, &out, &progress); err != nil {
		t.Fatalf("bench %v: %v\nstderr:\n%s", args, err, progress.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("--json output %q: %v", out.String(), err)
	}
	return res, progress.String()
}

func checkResult(t *testing.T, res Result, n, rejectEvery int) {
	t.Helper()
	wantRejected := n / rejectEvery
	if res.Completed != n || res.Errors != 0 || res.Failed != 0 {
		t.Errorf("completed %d errors %d failed %d, want %d, 0, 0", res.Completed, res.Errors, res.Failed, n)
	}
	if res.Rejected != wantRejected || res.Approved != n-wantRejected {
		t.Errorf("approved %d rejected %d, want %d and %d", res.Approved, res.Rejected, n-wantRejected, wantRejected)
	}
	if res.SagasPerSec <= 0 || res.LatencyMs.P50 <= 0 || res.LatencyMs.Max < res.LatencyMs.P99 || res.LatencyMs.P99 < res.LatencyMs.P50 {
		t.Errorf("inconsistent numbers: %+v", res)
	}
}

// The bench starts the system on SQLite + the embedded broker, runs every
// saga to its final state (tap and listing detection) and reports them.
func TestBenchOnEmbeddedDefaults(t *testing.T) {
	for _, mode := range []struct {
		name string
		args []string
	}{{"notification tap", nil}, {"listing", []string{"--list"}}} {
		t.Run(mode.name, func(t *testing.T) {
			res, progress := runJSON(t, append([]string{"-n", "24", "-c", "4"}, mode.args...)...)
			checkResult(t, res, 24, 4)
			if res.Mode != "sqlite+embedded" {
				t.Errorf("mode %q, want sqlite+embedded", res.Mode)
			}
			if !strings.Contains(progress, "24/24 done") || !strings.Contains(progress, "\r") {
				t.Errorf("progress line %q lacks a \\r-rewritten 24/24 done", progress)
			}
		})
	}
}

// The same on PostgreSQL and real Kafka (fresh databases and topics).
func TestBenchOnPostgresAndKafka(t *testing.T) {
	kcfg := testenv.Kafka(t)
	_ = testenv.Postgres(t) // skips (or fails under CI) without PostgreSQL
	args := []string{"-n", "24", "-c", "4", "--postgres", testenv.PostgresAdminURL(), "--brokers", strings.Join(kcfg.Brokers, ",")}
	if kcfg.SASL.Enabled() {
		args = append(args, "--kafka-user", kcfg.SASL.User, "--kafka-password", kcfg.SASL.Password)
	}
	res, _ := runJSON(t, args...)
	checkResult(t, res, 24, 4)
	if res.Mode != "postgres+kafka" {
		t.Errorf("mode %q, want postgres+kafka", res.Mode)
	}
}

// --remote drives a running system through its URLs, with tokens from its
// issuer and finality from GET /api/v1/sagas.
func TestBenchAgainstRunningSystem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, system.Config{DataDir: t.TempDir(), EphemeralPorts: true})
	if err != nil {
		t.Fatalf("start the system: %v", err)
	}
	defer sys.Close()
	res, _ := runJSON(t, "-n", "12", "-c", "3", "--remote", "--saga-machine-url", sys.URLs.SagaMachine,
		"--deals-url", sys.URLs.Deals, "--profile-url", sys.URLs.Profile, "--issuer-url", sys.URLs.Issuer)
	checkResult(t, res, 12, 4)
	if !strings.HasPrefix(res.Mode, "remote ") {
		t.Errorf("mode %q, want remote …", res.Mode)
	}
}
