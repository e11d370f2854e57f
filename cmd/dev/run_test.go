package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFlags(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantDir     string
		wantBrokers string
		wantListen  string
	}{
		{"defaults", nil, nil, "./.saga-machine", "", "127.0.0.1:8080"},
		{"env", nil, map[string]string{"SAGA_DEV_DB_DIR": "/d", "SAGA_KAFKA_BROKERS": "a:1, b:2", "SAGA_LISTEN": "127.0.0.1:9"}, "/d", "a:1,b:2", "127.0.0.1:9"},
		{"flag wins", []string{"--db-dir", "/f", "--brokers", "c:3", "--listen", "127.0.0.1:7"}, map[string]string{"SAGA_DEV_DB_DIR": "/d", "SAGA_KAFKA_BROKERS": "a:1"}, "/f", "c:3", "127.0.0.1:7"},
		{"free ports", []string{"--free-ports"}, nil, "./.saga-machine", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, envMap(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if got := strings.Join(o.cfg.Brokers, ","); o.cfg.DataDir != tt.wantDir || got != tt.wantBrokers || o.cfg.Listen != tt.wantListen {
				t.Errorf("got dir %q brokers %q listen %q, want %q %q %q", o.cfg.DataDir, got, o.cfg.Listen, tt.wantDir, tt.wantBrokers, tt.wantListen)
			}
		})
	}
	for _, args := range [][]string{{"--brokers", ","}, {"--log-level", "loud"}, {"extra"}, {"--nope"}} {
		if _, err := parseFlags(args, envMap(nil), io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want an error", args)
		}
	}
}

// The one-command run in-process: it prints both demo sagas as final, a
// token that the API accepts, and stops cleanly.
func TestRunPrintsDemoAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, logs := &syncBuf{}, &syncBuf{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--db-dir", t.TempDir(), "--free-ports"}, envMap(nil), out, logs) }()
	deadline := time.After(60 * time.Second) // liveness bound only
	for !strings.Contains(out.String(), "Serving until Ctrl-C") {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\nstdout:\n%s\nstderr:\n%s", err, out, logs)
		case <-deadline:
			t.Fatalf("no demo output:\n%s\nstderr:\n%s", out, logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^  approved .* saga [0-9a-f-]{36} +NOTIFICATION \(completed\) +deal executed$`,
		`(?m)^  rejected .* saga [0-9a-f-]{36} +NOTIFICATION \(completed\) +deal rejected: insufficient cash`,
		`(?m)^  basket +buy 5 BETA @ 40\.00 USD \+ sell 2 ACME @ 155\.00 USD +saga [0-9a-f-]{36} +EXECUTED \(completed\) +basket executed$`,
		`(?m)^export SAGA_TOKEN=\S+$`,
		`(?m)^Console: open http://127\.0\.0\.1:\d+/console/ and sign in on the issuer's login page as$`,
		`(?m)^  user demo +password demo +\(saga-operator\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("stdout lacks %s:\n%s", re, text)
		}
	}
	tok := regexp.MustCompile(`(?m)^export SAGA_TOKEN=(\S+)$`).FindStringSubmatch(text)
	api := regexp.MustCompile(`GET (http://\S+/api/v1/sagas)`).FindStringSubmatch(text)
	if tok != nil && api != nil {
		req, _ := http.NewRequest(http.MethodGet, api[1], nil)
		req.Header.Set("Authorization", "Bearer "+tok[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", api[1], err)
		}
		var page struct {
			Sagas []struct {
				ID string `json:"id"`
			} `json:"sagas"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || len(page.Sagas) != 3 {
			t.Errorf("GET %s = %d, %d sagas (decode error %v), want 200 with the 3 demo sagas (2 orders, 1 basket)", api[1], resp.StatusCode, len(page.Sagas), err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after Ctrl-C = %v, want nil", err)
	}
	if !strings.Contains(out.String(), "Stopped.") {
		t.Errorf("stdout lacks Stopped.:\n%s", out)
	}
}
