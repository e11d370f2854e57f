package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFlagsWinOverEnvWinOverDefaults(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantDB  string
		wantTop string
		wantBr  []string
	}{
		{"defaults", nil, nil, defaultDB, defaultTopic, nil},
		{"env", nil, map[string]string{"SAGA_DB_URL": "sqlite:/x.db", "SAGA_SERVER_TOPIC": "EV", "SAGA_KAFKA_BROKERS": "a:1, b:2"}, "sqlite:/x.db", "EV", []string{"a:1", "b:2"}},
		{"flag wins", []string{"--db", "postgres://h/db", "--topic", "F", "--brokers", "c:3"}, map[string]string{"SAGA_DB_URL": "sqlite:/x.db", "SAGA_SERVER_TOPIC": "EV", "SAGA_KAFKA_BROKERS": "a:1"}, "postgres://h/db", "F", []string{"c:3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags("saga-machine", tt.args, envMap(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if cfg.db != tt.wantDB || cfg.topic != tt.wantTop || strings.Join(cfg.brokers, ",") != strings.Join(tt.wantBr, ",") {
				t.Errorf("got db %q topic %q brokers %v, want %q %q %v", cfg.db, cfg.topic, cfg.brokers, tt.wantDB, tt.wantTop, tt.wantBr)
			}
		})
	}
}

// TestRetentionFlags: --inbox-retention and --saga-retention take their
// default, their variable, and the flag over the variable.
func TestRetentionFlags(t *testing.T) {
	inbox := func(c config) time.Duration { return c.inboxRetention }
	sagas := func(c config) time.Duration { return c.sagaRetention }
	tests := []struct {
		name string
		args []string
		env  map[string]string
		got  func(config) time.Duration
		want time.Duration
	}{
		{"inbox: default", nil, nil, inbox, engine.DefaultInboxRetention},
		{"inbox: env", nil, map[string]string{"SAGA_INBOX_RETENTION": "48h"}, inbox, 48 * time.Hour},
		{"inbox: flag wins", []string{"--inbox-retention", "72h"}, map[string]string{"SAGA_INBOX_RETENTION": "48h"}, inbox, 72 * time.Hour},
		{"inbox: never purge", []string{"--inbox-retention", "-1s"}, nil, inbox, -time.Second},
		{"sagas: default: forever", nil, nil, sagas, 0},
		{"sagas: env", nil, map[string]string{"SAGA_SAGA_RETENTION": "2160h"}, sagas, 2160 * time.Hour},
		{"sagas: flag wins", []string{"--saga-retention", "720h"}, map[string]string{"SAGA_SAGA_RETENTION": "2160h"}, sagas, 720 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags("saga-machine", tt.args, envMap(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if got := tt.got(cfg); got != tt.want {
				t.Errorf("retention: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--partitions", "0"},
		{"--log-level", "loud"},
		{"--kafka-session-timeout", "soon"},
		{"--inbox-retention", "a week"},
		{"--inbox-retention", "0"},
		{"--saga-retention", "-1h"},
		{"--saga-retention", "90 days"},
		{"--metrics-token-file", filepath.Join(os.TempDir(), "no-such-metrics-token")},
		{"extra-arg"},
		{"--no-such-flag"},
	} {
		if _, err := parseFlags("saga-machine", args, envMap(nil), io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want an error", args)
		}
	}
}

func TestInvalidDefinitionsArePrintedAndExit(t *testing.T) {
	dir := t.TempDir()
	bad := "saga: BROKEN\nversion: 1\nparticipants:\n  p: { topic: T }\ntransitions:\n  - { on: GO, by: nobody, from: [], to: X }\nfinal: [X]\n"
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--sagas", dir, "--db", "sqlite::memory:"}, envMap(nil), io.Discard, &stderr)
	var pe problemsError
	if err == nil || !errorsAs(err, &pe) {
		t.Fatalf("run = %v, want a problemsError", err)
	}
	line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(filepath.Join(dir, "broken.yaml")) + `:\d+:\d+: .+$`)
	if !line.MatchString(stderr.String()) {
		t.Errorf("stderr = %q, want FILE:LINE:COL: message lines", stderr.String())
	}
}

func TestMigrateSubcommand(t *testing.T) {
	url := "sqlite:" + filepath.Join(t.TempDir(), "sub", "saga.db")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "--db", url}, envMap(nil), &out, io.Discard); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	st, err := sqlstore.Open(context.Background(), url, sqlstore.WithoutMigrations())
	if err != nil {
		t.Fatalf("open migrated db: %v", err)
	}
	defer st.Close()
	if _, err := st.OutboxBacklog(context.Background()); err != nil {
		t.Errorf("outbox table missing after migrate: %v", err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The daemon starts on SQLite and an embedded broker, answers its probes and
// stops cleanly when its context ends.
func TestRunServesProbesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done, logs := runDaemon(ctx, t, envMap(nil))
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, resp.StatusCode, body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after stop = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "saga-machine stopped") {
		t.Errorf("logs lack the stop line:\n%s", logs.String())
	}
}

// TestRunGuardsMetrics: with --metrics-token-file (here from
// SAGA_METRICS_TOKEN_FILE) the daemon serves /metrics only to a scraper
// sending that token; the probes stay open; a short token is refused before
// anything starts. A rotated file takes effect without a restart, and a
// placeholder put in its place refuses every scrape.
func TestRunGuardsMetrics(t *testing.T) {
	dir := t.TempDir()
	const token = "saga-machine-scrape-token-42"
	tokenFile := filepath.Join(dir, "metrics-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short-token")
	if err := os.WriteFile(short, []byte("guessable"), 0o600); err != nil {
		t.Fatal(err)
	}
	dbFile := filepath.Join(dir, "refused.db")
	err := run(context.Background(), []string{"--db", "sqlite:" + dbFile, "--metrics-token-file", short}, envMap(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short token: run = %v, want a refusal", err)
	}
	if _, err := os.Stat(dbFile); !os.IsNotExist(err) {
		t.Errorf("the refused start created %s (stat: %v)", dbFile, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done, logs := runDaemon(ctx, t, envMap(map[string]string{"SAGA_METRICS_TOKEN_FILE": tokenFile}))
	type request struct {
		path, auth string
		want       int
	}
	check := func(step string, reqs []request) {
		t.Helper()
		for _, tc := range reqs {
			req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
			if err != nil {
				t.Fatalf("%s: GET %s: %v", step, tc.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			leaked := strings.Contains(string(body), "saga_machine_")
			if resp.StatusCode != tc.want || (tc.path == "/metrics" && leaked != (tc.want == http.StatusOK)) {
				t.Errorf("%s: GET %s with %q = %d (metrics in the body: %v), want %d", step, tc.path, tc.auth, resp.StatusCode, leaked, tc.want)
			}
		}
	}
	check("at start", []request{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer not-the-token-at-all-0000", http.StatusUnauthorized},
		{"//metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer " + token, http.StatusOK},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
	})

	// The token rotated without a restart: the old one is refused at once.
	const rotated = "saga-machine-rotated-token-43"
	replace := func(content string) {
		t.Helper()
		tmp := tokenFile + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, tokenFile); err != nil {
			t.Fatal(err)
		}
	}
	replace(rotated + "\n")
	check("rotated", []request{
		{"/metrics", "Bearer " + token, http.StatusUnauthorized},
		{"/metrics", "Bearer " + rotated, http.StatusOK},
	})
	// A placeholder put in its place: every scrape refused, and the daemon
	// says why in its log.
	replace("CHANGE_ME-CHANGE_ME-CHANGE_ME")
	check("placeholder", []request{
		{"/metrics", "Bearer " + rotated, http.StatusUnauthorized},
		{"/metrics", "Bearer CHANGE_ME-CHANGE_ME-CHANGE_ME", http.StatusUnauthorized},
		{"/healthz", "", http.StatusOK},
	})
	if !strings.Contains(logs.String(), "holds no valid token") || !strings.Contains(logs.String(), "placeholder") {
		t.Errorf("the daemon's log does not say why every scrape is refused:\n%s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after stop = %v, want nil", err)
	}
}

// runDaemon runs the daemon on a new SQLite file and a new embedded broker
// (closed with the test), with extra args and env, until ctx ends, and
// waits until it listens: it returns its base URL, the channel run's
// result arrives on, and its logs.
func runDaemon(ctx context.Context, t *testing.T, env func(string) string, extra ...string) (string, <-chan error, *syncBuf) {
	t.Helper()
	b, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	args := append([]string{"--db", "sqlite:" + filepath.Join(t.TempDir(), "saga.db"), "--brokers", strings.Join(b.Addrs(), ","), "--listen", "127.0.0.1:0"}, extra...)
	logs := &syncBuf{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env, io.Discard, logs) }()
	addr := regexp.MustCompile(`"msg":"saga-machine running","listen":"([^"]+)"`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := addr.FindStringSubmatch(logs.String()); m != nil {
			return "http://" + m[1], done, logs
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, logs.String())
		default:
		}
	}
	t.Fatalf("daemon did not start:\n%s", logs.String())
	return "", nil, nil
}

func TestLoopbackHostOnly(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := loopbackHostOnly(next)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:8080", http.StatusTeapot},
		{"localhost:8080", http.StatusTeapot},
		{"LOCALHOST", http.StatusTeapot},
		{"[::1]:8080", http.StatusTeapot},
		{"127.0.0.2", http.StatusTeapot},
		{"evil.example:8080", http.StatusMisdirectedRequest},      // DNS rebinding: a foreign name resolving to 127.0.0.1
		{"localhost.evil.example", http.StatusMisdirectedRequest}, // not the loopback name
		{"10.0.0.1:8080", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/sagas", nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Code; got != tc.want {
			t.Errorf("Host %q: status %d, want %d", tc.host, got, tc.want)
		}
		if tc.want == http.StatusMisdirectedRequest {
			var p struct{ Type, Detail string }
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Type != "urn:saga-machine:problem:misdirected" {
				t.Errorf("Host %q: body %q is not the misdirected problem (%v)", tc.host, rec.Body.String(), err)
			}
		}
	}
}
