package deals

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

func noEnv(string) string { return "" }

func TestMainMigrateAndFlags(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "deals.db")
	for range 2 { // migrating twice is a no-op
		var out, errOut bytes.Buffer
		if err := Main(context.Background(), []string{"migrate", "--db", db}, noEnv, &out, &errOut); err != nil {
			t.Fatalf("migrate: %v (%s)", err, errOut.String())
		}
		if !strings.Contains(out.String(), "migrated") {
			t.Errorf("migrate output: got %q, want it to say migrated", out.String())
		}
	}
	env := func(k string) string {
		if k == "DEALS_DB_URL" {
			return db
		}
		return ""
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no issuer", nil, "--issuer (or OIDC_ISSUER) is required"},
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"stray argument", []string{"--dev-header", "serve"}, "unexpected arguments"},
		{"empty brokers", []string{"--dev-header", "--brokers", " , "}, "names no broker"},
		{"bad log level", []string{"--dev-header", "--log-level", "loud"}, "--log-level"},
		{"issuer without audience", []string{"--issuer", "http://127.0.0.1:1/realms/x", "--listen", "127.0.0.1:0"}, "Audience is required"},
		{"bad database", []string{"--dev-header", "--db", "sqlite:/dev/null/x.db"}, "open SQLite"},
		{"dev header on every interface", []string{"--dev-header", "--listen", ":8082"}, "must be a loopback address"},
		{"dev header on a public address", []string{"--dev-header", "--listen", "0.0.0.0:0"}, "must be a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Main(context.Background(), tt.args, env, &out, &errOut)
			if err == nil || !strings.Contains(err.Error()+errOut.String(), tt.want) {
				t.Errorf("got error %v (stderr %q), want one containing %q", err, errOut.String(), tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestMainServes runs the service as its own process would, on the
// embedded broker and a real issuer: a deal created over HTTP reaches the
// bus as REGISTER, and the process stops gracefully.
func TestMainServes(t *testing.T) {
	broker, err := embedded.Start(embedded.Options{Partitions: 1, Topics: []string{engine.EventTopic(engine.DefaultEventTopicBase, "deals"), "DEALS_TOPIC"}}) // saga-machine creates them in a real run
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(broker.Close)
	iss := servicetest.NewIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	brokers := strings.Join(broker.Addrs(), ",")
	const scrapeToken = "deals-scrape-token-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "metrics-token")
	if err := os.WriteFile(tokenFile, []byte(scrapeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DEALS_DB_URL":            "sqlite:" + filepath.Join(t.TempDir(), "deals.db"),
		"SAGA_KAFKA_BROKERS":      brokers,
		"OIDC_ISSUER":             iss.URL(),
		"OIDC_AUDIENCE":           issuer.DefaultAudience,
		"SAGA_METRICS_TOKEN_FILE": tokenFile,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, []string{"--listen", addr}, func(k string) string { return env[k] }, &logs, &logs)
	}()

	base := "http://" + addr
	ready := false
	for range 200 {
		if res, err := http.Get(base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				ready = true
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Main returned before serving: %v\n%s", err, logs.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
	if !ready {
		t.Fatalf("the service never became ready on %s\n%s", addr, logs.String())
	}

	// /metrics needs the scrape token (SAGA_METRICS_TOKEN_FILE); a user's
	// valid token is not it. /readyz above needed nothing.
	alice := iss.Token(t, "alice")
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a user's access token", "Bearer " + alice, http.StatusUnauthorized},
		{"the scrape token", "Bearer " + scrapeToken, http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want || (tc.want == http.StatusOK) != strings.Contains(string(b), "saga_participant_dead_letters") {
			t.Errorf("GET /metrics with %s: %d, want %d (and the metrics only then)", tc.name, res.StatusCode, tc.want)
		}
	}

	raw, _ := json.Marshal(body())
	// DNS rebinding: the issuer is on loopback (a dev issuer), so the
	// service answers loopback host names only; a page on evil.example
	// resolving to 127.0.0.1 is refused before anything is created.
	evil, _ := http.NewRequest("POST", base+"/deals", bytes.NewReader(raw))
	evil.Host = "evil.example:" + evil.URL.Port()
	evil.Header.Set("Authorization", "Bearer "+alice)
	evil.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(evil); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("POST /deals with Host %s: got %d, want 421", evil.Host, res.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", base+"/deals", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+alice)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var d Deal
	if err := json.NewDecoder(res.Body).Decode(&d); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /deals: got %d (decode err %v)", res.StatusCode, err)
	}
	res.Body.Close()
	list, _ := http.NewRequest("GET", base+"/deals", nil)
	list.Header.Set("Authorization", "Bearer "+alice)
	if res, err := http.DefaultClient.Do(list); err != nil {
		t.Fatal(err)
	} else {
		var page struct{ Items []Deal }
		err := json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err != nil || len(page.Items) != 1 || page.Items[0].ID != d.ID {
			t.Errorf("alice's deals: got %+v (err %v), want only %s (the rebinding POST created nothing)", page.Items, err, d.ID)
		}
	}

	cons, err := kafka.NewConsumer(kafka.Config{Brokers: broker.Addrs()}, "test-reader", engine.EventTopic(engine.DefaultEventTopicBase, "deals"))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	var got *engine.Message
	for got == nil {
		recs, err := cons.Fetch(fctx, 10)
		if err != nil {
			t.Fatalf("no REGISTER on deals' event topic: %v\n%s", err, logs.String())
		}
		for _, r := range recs {
			var m engine.Message
			if err := json.Unmarshal(r.Value, &m); err == nil && m.SagaID == d.SagaID {
				got = &m
			}
		}
	}
	if got.Name != StartEvent || got.Saga != SagaName {
		t.Errorf("published: got %s %s, want REGISTER of MANUAL_CREATE_ORDER", got.Name, got.Saga)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Main after cancel: got %v, want a graceful nil", err)
	}
	for _, want := range []string{`"msg":"serving"`, `"msg":"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs: want %s in\n%s", want, logs.String())
		}
	}
}
