package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func noEnv(string) string { return "" }

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-n", "0"}, {"-c", "-1"}, {"--reject-every", "-2"}, {"--poll", "0s"},
		{"--remote", "--postgres", "postgres://x/y"}, {"--log-level", "loud"}, {"extra"},
	} {
		if _, err := parseFlags(args, noEnv, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want an error", args)
		}
	}
}

// The open loop's flags: hostile or contradictory values are refused
// before anything starts.
func TestOpenLoopFlags(t *testing.T) {
	o, err := parseFlags([]string{"--rate", "500", "--duration", "30s", "--warmup", "5s"}, noEnv, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	if o.n != 15000 || o.users != 500 || o.warmupSagas() != 2500 || o.c != 0 {
		t.Errorf("n %d users %d warm-up %d c %d, want 15000, 500, 2500, 0", o.n, o.users, o.warmupSagas(), o.c)
	}
	if o, err := parseFlags([]string{"--rate", "2.5", "-n", "10"}, noEnv, io.Discard); err != nil || o.n != 10 || o.users != 3 {
		t.Errorf("--rate 2.5 -n 10: n %d users %d err %v, want 10, 3, nil", o.n, o.users, err)
	}
	for _, args := range [][]string{
		{"--rate", "-1"}, {"--rate", "NaN"}, {"--rate", "+Inf"}, {"--rate", "1e9"},
		{"--rate", "10", "-c", "5"},                     // a closed-loop flag
		{"--rate", "10", "-n", "5", "--duration", "1s"}, // two sizes
		{"--rate", "10", "--duration", "0s"}, {"--rate", "10", "--warmup", "-1s"},
		{"--rate", "10", "--duration", "2s", "--warmup", "2s"}, // nothing left to measure
		{"--rate", "10", "--max-in-flight", "0"},
		{"--rate", "0.001", "--duration", "1s"},        // no saga offered
		{"--duration", "5s"}, {"--max-in-flight", "5"}, // open-loop flags without --rate
		{"--warmup", "-1s"},
		{"--cpu-pid", "x"}, {"--cpu-pid", "=5"}, {"--cpu-pid", "pg=-1"}, {"--cpu-pid", "pg=0"}, {"--cpu-pid", "pg=1;reboot"},
	} {
		if _, err := parseFlags(args, noEnv, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want an error", args)
		}
	}
	// Kafka credentials in the environment are for --brokers: without it
	// (the embedded broker) they are left out (--kafka-user given as a flag
	// is kept, and the system refuses it for the embedded broker).
	creds := func(k string) string {
		return map[string]string{"SAGA_KAFKA_USER": "admin", "SAGA_KAFKA_PASSWORD": "pw"}[k]
	}
	if o, err := parseFlags(nil, creds, io.Discard); err != nil || o.kafkaSASL.Enabled() {
		t.Errorf("no --brokers, credentials in the environment: SASL %v, %v; want none", o.kafkaSASL, err)
	}
	if o, err := parseFlags([]string{"--brokers", "127.0.0.1:1"}, creds, io.Discard); err != nil || o.kafkaSASL.User != "admin" || o.kafkaSASL.Password != "pw" {
		t.Errorf("--brokers with credentials in the environment: SASL %v, %v; want admin", o.kafkaSASL, err)
	}
	o, err = parseFlags([]string{"--cpu-pid", "pg=42", "--cpu-pid", "kafka=43"}, noEnv, io.Discard)
	if err != nil || len(o.cpuPIDs) != 2 || o.cpuPIDs[0] != (tracked{Name: "pg", PID: 42}) {
		t.Errorf("--cpu-pid: %+v, %v", o.cpuPIDs, err)
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
			if res.Mode != "sqlite+embedded" || res.KafkaTransport != transportPlaintext {
				t.Errorf("mode %q over %q, want sqlite+embedded over %s", res.Mode, res.KafkaTransport, transportPlaintext)
			}
			// Everything runs in the bench process: one entry, said so.
			if c := res.CPU; c == nil || len(c.Processes) != 1 || c.Processes[0].Name != "bench+system" ||
				c.Processes[0].PID != os.Getpid() || c.Sagas != 24 || len(c.Notes) == 0 {
				t.Errorf("CPU report %+v, want one bench+system entry for this process over 24 sagas, with a note", c)
			}
			// Every stage handled batches in the window: the intake the
			// sagas' three events each, profile and deals one command each
			// before the saga was final. NOTIFY leaves as the saga becomes
			// final, so notification may not have handled them all yet.
			// The relays: saga-machine's the commands (APPROVE_ORDER and
			// APPROVE_DEAL before the saga is final, NOTIFY perhaps not
			// yet), deals' the saga starts and its replies, profile's its
			// replies.
			records := map[string]float64{}
			for _, st := range res.Stages {
				if st.Batches <= 0 || st.Busy <= 0 || st.MsPerBatch <= 0 || st.EmptyBatches < 0 || st.EmptyBatches > st.Batches {
					t.Errorf("stage %+v: no batches, time or busy share, or impossible empty rounds", st)
				}
				records[st.Name] = st.RecordsPerBatch * float64(st.Batches)
			}
			for name, want := range map[string][2]float64{stageIntake: {72, 72}, "deals": {24, 24}, "profile": {24, 24}, "notification": {1, 24},
				stageRelay: {48, 72}, "deals" + relaySuffix: {48, 48}, "profile" + relaySuffix: {24, 24}} {
				if got := records[name]; got < want[0]-0.5 || got > want[1]+0.5 {
					t.Errorf("stage %s handled %.1f records in the window, want %.0f to %.0f (stages %+v)", name, got, want[0], want[1], res.Stages)
				}
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
	if res.Mode != "postgres+kafka" || res.KafkaTransport != kafkaTransport(kcfg.SASL, nil) {
		t.Errorf("mode %q over %q, want postgres+kafka over %s", res.Mode, res.KafkaTransport, kafkaTransport(kcfg.SASL, nil))
	}
	if len(res.Stages) != 8 {
		t.Errorf("stages %+v, want the intake, the three participants and their four relays", res.Stages)
	}
	// PostgreSQL and Kafka are reported, or a note says why not (their
	// processes belong to another user and make up's pid files are not
	// readable).
	if res.CPU == nil {
		t.Fatal("no CPU report")
	}
	names := map[string]bool{}
	for _, p := range res.CPU.Processes {
		names[p.Name] = true
	}
	notes := strings.Join(res.CPU.Notes, "\n")
	for _, want := range []string{"postgresql", "kafka"} {
		if !names[want] && !strings.Contains(notes, want+" ") {
			t.Errorf("CPU report has neither %s nor a note on it: %+v", want, res.CPU)
		}
	}
	if !names["bench+system"] {
		t.Errorf("CPU report lacks bench+system: %+v", res.CPU)
	}
}

// The open loop on the embedded defaults: every offered saga reaches its
// final state and the result carries the generator's figures.
func TestBenchOpenLoopOnEmbeddedDefaults(t *testing.T) {
	res, _ := runJSON(t, "--rate", "40", "-n", "24", "--warmup", "100ms")
	checkResult(t, res, 24, 4)
	o := res.Open
	if res.Loop != "open" || o == nil || o.OfferedPerSec != 40 || o.WarmupSagas != 4 || o.Measured != 20 || o.SentPerSec <= 0 {
		t.Fatalf("loop %q open %+v, want open, 40 offered, 4 warm-up, 20 measured", res.Loop, o)
	}
	if o.BehindScheduleMs.Max < o.BehindScheduleMs.P50 || res.LatencyMs.P999 < res.LatencyMs.P99 {
		t.Errorf("inconsistent percentiles: %+v", res)
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
	if res.Stages != nil {
		t.Errorf("stages %+v against a remote system, want none (its processes are not this one)", res.Stages)
	}
	// The system runs in this test's process: the processes found behind
	// the URLs' ports are this one, reported once under all its names.
	if c := res.CPU; c == nil || len(c.Processes) != 1 || c.Processes[0].PID != os.Getpid() ||
		!strings.Contains(c.Processes[0].Name, "saga-machine") || !strings.Contains(c.Processes[0].Name, "deals") {
		t.Errorf("CPU report %+v, want one entry for this process named after saga-machine and deals", c)
	}
}

// --cpuprofile, --memprofile, --blockprofile and --mutexprofile each write
// a pprof profile (gzipped protocol buffers) of the run, --trace an
// execution trace.
func TestProfilesAreWritten(t *testing.T) {
	dir := t.TempDir()
	paths := map[string]string{}
	var args []string
	for _, name := range []string{"cpuprofile", "memprofile", "blockprofile", "mutexprofile"} {
		paths[name] = filepath.Join(dir, name+".pb.gz")
		args = append(args, "--"+name, paths[name])
	}
	tracePath := filepath.Join(dir, "trace.out")
	args = append(args, "--trace", tracePath)
	res, _ := runJSON(t, append([]string{"-n", "8", "-c", "2"}, args...)...)
	checkResult(t, res, 8, 4)
	if b, err := os.ReadFile(tracePath); err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("--trace wrote %d bytes (%v), want an execution trace (its header is \"go 1.N trace\")", len(b), err)
	}
	for name, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("--%s: %v", name, err)
			continue
		}
		if len(b) < 20 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("--%s wrote %d bytes that are not a gzipped profile", name, len(b))
		}
	}
}
