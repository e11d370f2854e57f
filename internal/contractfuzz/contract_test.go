package contractfuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// Defaults of the bounded run of `make test` (see the package doc).
const (
	defaultExamples = 10
	defaultSeed     = 20261126
	// runTimeout bounds one schemathesis run (one spec, one identity).
	runTimeout = 15 * time.Minute
)

// Paths relative to this package.
const (
	schemathesisScript = "../../scripts/schemathesis.sh"
	specDir            = "../../schema/openapi"
	configFile         = "schemathesis.toml"
)

// The identities schemathesis calls the services as. The user owns the
// demo portfolio, its deals and notifications; the operator holds every
// operator role, so that her calls pass the role checks and reach the
// handlers.
const (
	userSubject     = system.DemoUser
	operatorSubject = "fuzz-operator"
)

// TestContract runs schemathesis against every service of a running
// system, with every check, as a user and as an operator.
func TestContract(t *testing.T) {
	prog := schemathesis(t)
	examples := envInt(t, "SAGA_CONTRACT_EXAMPLES", defaultExamples)
	seed := envInt(t, "SAGA_CONTRACT_SEED", defaultSeed)
	config, err := filepath.Abs(configFile)
	if err != nil {
		t.Fatal(err)
	}

	sys, logFile := startSystem(t)
	specs := map[string]string{
		"saga-machine": sys.URLs.SagaMachine,
		"deals":        sys.URLs.Deals,
		"profile":      sys.URLs.Profile,
		"notification": sys.URLs.Notification,
	}
	names := []string{"saga-machine", "deals", "profile", "notification"}
	if only := os.Getenv("SAGA_CONTRACT_SPECS"); only != "" {
		names = strings.Split(only, ",")
	}
	identities := []struct {
		name    string
		subject string
		roles   []string
	}{
		{"user", userSubject, nil},
		{"operator", operatorSubject, []string{auth.RoleOperator, auth.RoleFundingOperator, "support-lead"}},
	}
	t.Run("audiences", func(t *testing.T) { checkAudiences(t, sys) })
	for _, name := range names {
		base, ok := specs[name]
		if !ok {
			t.Fatalf("SAGA_CONTRACT_SPECS names %q, not one of saga-machine, deals, profile, notification", name)
		}
		spec, err := filepath.Abs(filepath.Join(specDir, name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, who := range identities {
			t.Run(name+"/"+who.name, func(t *testing.T) {
				tok, err := sys.Token(who.subject, who.roles...)
				if err != nil {
					t.Fatalf("issue a token for %s: %v", who.subject, err)
				}
				res := runSchemathesis(t, prog, config, spec, base, tok, examples, seed)
				t.Logf("%s as %s: %s in %s", name, who.name, res.summary, res.took.Round(time.Millisecond))
				if res.err != nil {
					t.Errorf("schemathesis found what the spec and the server disagree on (%v); reproduce with SAGA_CONTRACT_SPECS=%s SAGA_CONTRACT_SEED=%d SAGA_CONTRACT_EXAMPLES=%d:\n%s",
						res.err, name, seed, examples, res.failures)
					logTail(t, logFile)
				}
			})
		}
	}
}

// result is what one schemathesis run reports.
type result struct {
	err      error  // the run failed (a finding, or schemathesis itself)
	summary  string // the "Test cases: ..." line
	failures string // the failure section of its output
	took     time.Duration
}

// runSchemathesis runs schemathesis once against base with the spec and
// the bearer token tok.
func runSchemathesis(t *testing.T, prog, config, spec, base, tok string, examples, seed int) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	dir := t.TempDir()
	args := []string{
		"--config-file", config,
		"run", spec,
		"--url", base,
		"--header", "Authorization: Bearer " + tok,
		"--checks", "all",
		"--max-examples", strconv.Itoa(examples),
		"--seed", strconv.Itoa(seed),
		"--workers", "1",
		"--generation-database", "none",
		"--no-color",
		"--report", "junit",
		"--report-dir", filepath.Join(dir, "report"),
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir // hypothesis writes nothing into the repository
	cmd.Env = append(os.Environ(), "HOME="+dir, "NO_COLOR=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	res := result{err: err, took: time.Since(start)}
	text := out.String()
	if m := regexp.MustCompile(`(?m)^\s*(\d+ generated.*)$`).FindStringSubmatch(text); m != nil {
		res.summary = strings.TrimSpace(m[1])
	} else {
		res.summary = "no test case summary"
	}
	if err != nil {
		res.failures = failureSection(text)
	}
	if os.Getenv("SAGA_CONTRACT_VERBOSE") != "" {
		t.Logf("schemathesis %s:\n%s", strings.Join(args[2:4], " "), text)
	}
	return res
}

// failureSection cuts schemathesis' output to its findings (from the
// FAILURES banner on), or returns all of it if there is none.
func failureSection(out string) string {
	if i := strings.Index(out, " FAILURES "); i >= 0 {
		if j := strings.LastIndex(out[:i], "\n"); j >= 0 {
			return out[j+1:]
		}
		return out[i:]
	}
	return out
}

// startSystem starts the whole system on fresh PostgreSQL databases and the
// embedded broker, runs the demo and returns the system and its log file.
func startSystem(t *testing.T) (*system.System, string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "system.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	defs, err := definitions()
	if err != nil {
		t.Fatal(err)
	}
	cfg := system.Config{
		DataDir:        dir,
		EphemeralPorts: true,
		Sagas:          defs,
		Databases: system.Databases{
			Saga: testenv.Postgres(t), Deals: testenv.Postgres(t),
			Profile: testenv.Postgres(t), Notification: testenv.Postgres(t),
		},
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: f}, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the system: %v", err)
	}
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("stop the system: %v", err)
		}
	})
	if _, err := sys.RunDemo(ctx); err != nil {
		t.Fatalf("seed the system with the demo: %v", err)
	}
	seedDeadLetters(ctx, t, sys)
	return sys, logFile
}

// startableSaga is a definition that opens a start to the API (by: api,
// roles support-agent or support-lead), from httpapi's tests: with it
// POST /api/v1/sagas can succeed and the stateful phase reaches real
// sagas (get, re-send, abort). The shipped MANUAL_CREATE_ORDER is started
// by deals only.
const startableSaga = "../../engine/httpapi/testdata/sagas/support_callback.yaml"

// definitions are the shipped saga definitions and startableSaga.
func definitions() (fs.FS, error) {
	defs := fstest.MapFS{}
	shipped, err := fs.Glob(sagas.FS, "*.yaml")
	if err != nil {
		return nil, err
	}
	for _, name := range shipped {
		b, err := fs.ReadFile(sagas.FS, name)
		if err != nil {
			return nil, err
		}
		defs[name] = &fstest.MapFile{Data: b}
	}
	b, err := os.ReadFile(startableSaga)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", startableSaga, err)
	}
	defs[filepath.Base(startableSaga)] = &fstest.MapFile{Data: b}
	return defs, nil
}

// seedDeadLetters publishes records no service can read to every command
// topic and to saga-machine's event topic (one JSON that is no envelope,
// one value that is not UTF-8) and waits until each service lists them as
// dead letters, so that schemathesis reads and replays real ones (the
// specs link the lists to GET and replay by id).
func seedDeadLetters(ctx context.Context, t *testing.T, sys *system.System) {
	t.Helper()
	prod, err := kafka.NewProducer(kafka.Config{Brokers: sys.Brokers, ClientID: "contractfuzz"})
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer prod.Close()
	var recs []kafka.Record
	for _, topic := range []string{sys.Topics.Deals, sys.Topics.Profile, sys.Topics.Notification, envelope.EventTopic(sys.Topics.Events, system.Deals)} {
		recs = append(recs,
			kafka.Record{Topic: topic, Key: "fuzz-saga-1", Value: []byte(`{"v":1,"id":"fuzz-1","kind":"command"}`), Headers: map[string]string{"origin": "contractfuzz"}},
			kafka.Record{Topic: topic, Key: "fuzz-saga-2", Value: []byte("\xff\xfe not UTF-8")})
	}
	if err := prod.Publish(ctx, recs); err != nil {
		t.Fatalf("publish unreadable records: %v", err)
	}
	tok, err := sys.Token(operatorSubject, auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]string{
		"saga-machine": sys.URLs.SagaMachine + "/api/v1/dead-letters",
		"deals":        sys.URLs.Deals + "/admin/dead-letters",
		"profile":      sys.URLs.Profile + "/admin/dead-letters",
		"notification": sys.URLs.Notification + "/admin/dead-letters",
	}
	for name, target := range lists {
		for n := 0; n < 2; {
			if ctx.Err() != nil {
				t.Fatalf("%s lists %d dead letters, want 2: %v", name, n, ctx.Err())
			}
			n = countDeadLetters(ctx, t, target, tok)
			if n < 2 {
				time.Sleep(50 * time.Millisecond) // polling the service, not timing it
			}
		}
	}
}

// countDeadLetters returns how many dead letters a service lists.
func countDeadLetters(ctx context.Context, t *testing.T, target, tok string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer res.Body.Close()
	var page struct {
		Items       []json.RawMessage `json:"items"`
		DeadLetters []json.RawMessage `json:"dead_letters"`
	}
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", target, res.StatusCode, err)
	}
	return len(page.Items) + len(page.DeadLetters)
}

// lockedWriter serialises the system's log lines into one file.
type lockedWriter struct {
	mu sync.Mutex
	w  *os.File
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// logTail logs the last lines of the system's log (errors).
func logTail(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("read the system log: %v", err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("the system's last errors:\n%s", strings.Join(lines, "\n"))
}

// schemathesis returns the pinned schemathesis program, or skips (fails
// under CI=true) when it is not installed.
func schemathesis(t *testing.T) string {
	t.Helper()
	prog, missing, err := findSchemathesis()
	if err != nil {
		t.Fatal(err)
	}
	if missing != "" {
		if testenv.InCI() {
			t.Fatal(missing + " [CI=true: a missing schemathesis fails the test]")
		}
		t.Skip(missing)
	}
	return prog
}

// findSchemathesis returns the program of the version scripts/schemathesis.sh
// pins, or why it is missing, or an error in the repository.
func findSchemathesis() (prog, missing string, err error) {
	script, err := os.ReadFile(schemathesisScript)
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", schemathesisScript, err)
	}
	m := regexp.MustCompile(`(?m)^SCHEMATHESIS_VERSION=(\d+\.\d+\.\d+)$`).FindSubmatch(script)
	if m == nil {
		return "", "", fmt.Errorf("%s pins no SCHEMATHESIS_VERSION=X.Y.Z", schemathesisScript)
	}
	version := string(m[1])
	var candidates []string
	if p := os.Getenv("SAGA_SCHEMATHESIS"); p != "" {
		candidates = append(candidates, p)
	} else {
		candidates = append(candidates, filepath.Join(runDir(), "schemathesis", "bin", "schemathesis"))
	}
	var tried []string
	for _, c := range candidates {
		out, err := exec.Command(c, "--version").Output()
		got := strings.TrimSpace(string(out))
		if err == nil && strings.HasSuffix(got, " "+version) {
			return c, "", nil
		}
		tried = append(tried, fmt.Sprintf("%s: version %q, err %v", c, got, err))
	}
	return "", fmt.Sprintf("schemathesis %s not found (%s); scripts/schemathesis.sh installs it (make test runs it)",
		version, strings.Join(tried, "; ")), nil
}

// runDir is scripts/lib.sh's $SAGA_RUN_DIR.
func runDir() string {
	if d := os.Getenv("SAGA_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 || os.Getenv("HOME") == "" {
		return "/var/tmp/saga-machine"
	}
	return filepath.Join(os.Getenv("HOME"), ".cache", "saga-machine")
}

// envInt reads a positive integer setting from the environment.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// checkAudiences pins what docs/auth.md says of the one-process system:
// every service wants aud saga-machine, and a token made for another
// audience (even a service's own name) is refused by all of them with 401.
func checkAudiences(t *testing.T, sys *system.System) {
	t.Helper()
	paths := map[string]string{
		"saga-machine": sys.URLs.SagaMachine + "/api/v1/me",
		"deals":        sys.URLs.Deals + "/deals",
		"profile":      sys.URLs.Profile + "/portfolios",
		"notification": sys.URLs.Notification + "/notifications",
	}
	for service, target := range paths {
		for _, aud := range []string{issuer.DefaultAudience, "deals", "profile", "notification", "account"} {
			tok, err := sys.Issuer.Token(userSubject, issuer.TokenOptions{Audience: aud})
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, target, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			want := http.StatusUnauthorized
			if aud == issuer.DefaultAudience {
				want = http.StatusOK
			}
			if res.StatusCode != want {
				t.Errorf("%s with a token for audience %q: got %d, want %d", service, aud, res.StatusCode, want)
			}
		}
	}
}
