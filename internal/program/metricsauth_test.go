package program

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMetricsGuard: without the flag /metrics is served as before; with a
// token file only a request carrying that token gets it, whatever else an
// attacker sends, and the other routes need nothing.
func TestMetricsGuard(t *testing.T) {
	const token = "s3cret-scrape-token-0123456789"
	served := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		_, _ = io.WriteString(w, "saga_machine_up 1\n")
	})
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	parse := func(args []string, env map[string]string) *MetricsAuth {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		m := RegisterMetricsFlag(fs, func(k string) string { return env[k] })
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return m
	}
	get := func(h http.Handler, target string, hdr ...string) int {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") != `Bearer realm="metrics"` {
			t.Errorf("GET %s: 401 without the Bearer challenge", target)
		}
		return rec.Code
	}

	guard := func(m *MetricsAuth) (http.Handler, error) {
		mw, err := m.Middleware()
		if err != nil {
			return nil, err
		}
		return mw(next, nil), nil
	}
	open, err := guard(parse(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := get(open, "/metrics"); got != http.StatusOK {
		t.Errorf("without --metrics-token-file: GET /metrics = %d, want 200", got)
	}

	for name, m := range map[string]*MetricsAuth{
		"flag":     parse([]string{"--metrics-token-file", file("flag", token+"\n")}, nil),
		"variable": parse(nil, map[string]string{"SAGA_METRICS_TOKEN_FILE": file("env", token)}),
	} {
		t.Run(name, func(t *testing.T) {
			h, err := guard(m)
			if err != nil {
				t.Fatal(err)
			}
			served = 0
			for _, tc := range []struct {
				name, target string
				hdr          []string
			}{
				{"no token", "/metrics", nil},
				{"wrong token", "/metrics", []string{"Authorization", "Bearer " + strings.Repeat("x", len(token))}},
				{"the token's prefix", "/metrics", []string{"Authorization", "Bearer " + token[:len(token)-1]}},
				{"the token and more", "/metrics", []string{"Authorization", "Bearer " + token + "x"}},
				{"another scheme", "/metrics", []string{"Authorization", "Basic " + token}},
				{"the token without a scheme", "/metrics", []string{"Authorization", token}},
				{"in the query instead", "/metrics?token=" + token, nil},
				{"a dot segment", "/./metrics", nil},
				{"a doubled slash", "//metrics", nil},
				{"a trailing slash", "/metrics/", nil},
			} {
				if got := get(h, tc.target, tc.hdr...); got != http.StatusUnauthorized {
					t.Errorf("%s: GET %s = %d, want 401", tc.name, tc.target, got)
				}
			}
			if served != 0 {
				t.Fatalf("the refused requests reached the metrics %d times", served)
			}
			for _, scheme := range []string{"Bearer", "bearer"} {
				if got := get(h, "/metrics", "Authorization", scheme+" "+token); got != http.StatusOK {
					t.Errorf("%s <token>: GET /metrics = %d, want 200", scheme, got)
				}
			}
			if got := get(h, "/healthz"); got != http.StatusOK {
				t.Errorf("GET /healthz = %d, want 200 (only /metrics needs the token)", got)
			}
		})
	}

	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "absent"), "no such file"},
		{"empty", file("empty", "\n"), "at least 16"},
		{"short", file("short", "0123456789abcde"), "at least 16"},
		{"white space", file("space", "0123456789 abcdef0123"), "white space"},
		{"placeholder", file("placeholder", "CHANGE_ME-CHANGE_ME-1234"), "placeholder"},
	} {
		if _, err := guard(parse([]string{"--metrics-token-file", tc.path}, nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Middleware = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

// TestMetricsTokenRotation: the token file is read again when it changes,
// the way Kubernetes replaces a Secret mounted as a volume (a symlink
// swapped to a new directory) or an operator rewrites it in place. Once
// it changed only the new token is accepted; while the file is missing or
// holds a token refused at start, every scrape is refused, the old token
// too, and the reason is logged once.
func TestMetricsTokenRotation(t *testing.T) {
	const (
		first  = "first-scrape-token-0123456789"
		second = "second-scrape-token-012345678"
		third  = "third-scrape-token-0123456789"
	)
	dir := t.TempDir()
	version := 0
	// publish writes content the way the kubelet updates a Secret volume:
	// a new directory, then ..data swapped to it by a rename.
	publish := func(content string) {
		t.Helper()
		version++
		v := filepath.Join(dir, "..v"+strconv.Itoa(version))
		if err := os.Mkdir(v, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v, "token"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(v), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish(first + "\n")
	file := filepath.Join(dir, "token")
	if err := os.Symlink(filepath.Join("..data", "token"), file); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	served := 0
	scrape := guardedScrape(t, file, slog.New(slog.NewTextHandler(&logs, nil)), func() { served++ })
	// want checks which tokens get the metrics now, and that the refused
	// ones never reached them.
	want := func(step string, accepted string, refused ...string) {
		t.Helper()
		for _, tok := range refused {
			before := served
			if got := scrape(tok); got != http.StatusUnauthorized || served != before {
				t.Errorf("%s: GET /metrics with %q = %d (served %d times), want 401", step, tok, got, served-before)
			}
		}
		if accepted != "" {
			if got := scrape(accepted); got != http.StatusOK {
				t.Errorf("%s: GET /metrics with %q = %d, want 200", step, accepted, got)
			}
		}
	}
	wantLogged := func(step, text string) {
		t.Helper()
		if n := strings.Count(logs.String(), text); n != 1 {
			t.Errorf("%s: the log says %q %d times, want once:\n%s", step, text, n, logs.String())
		}
		logs.Reset()
	}

	want("at start", first, second, "")

	publish(second + "\n")
	want("Secret rotated", second, first, third)
	wantLogged("Secret rotated", "read again")

	// An operator rewrites the file in place: same file, another content
	// (the modification time is set explicitly, so that a clock with a
	// coarse resolution cannot hide the change).
	target := filepath.Join(dir, "..v"+strconv.Itoa(version), "token")
	if err := os.WriteFile(target, []byte(third), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(target, later, later); err != nil {
		t.Fatal(err)
	}
	want("rewritten in place", third, first, second)
	wantLogged("rewritten in place", "read again")

	// Replacements that would be refused at start: nothing is accepted,
	// not even the last good token or the new content itself.
	for _, tc := range []struct{ name, content, why string }{
		{"the placeholder", "CHANGE_ME-CHANGE_ME-1234", "placeholder"},
		{"a short token", "0123456789abcde", "at least 16"},
		{"white space", "0123456789 abcdef0123", "white space"},
		{"an empty file", "", "at least 16"},
	} {
		publish(tc.content)
		want(tc.name, "", third, tc.content, first, second)
		want(tc.name+" (asked again)", "", third)
		wantLogged(tc.name, tc.why)
	}

	// The file gone (the Secret deleted): refused too.
	if err := os.Remove(filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	want("file removed", "", third, first)
	want("file removed (asked again)", "", third)
	wantLogged("file removed", "no such file")

	// A valid token again: it alone is accepted.
	publish(first + "\n")
	want("restored", first, second, third)
	wantLogged("restored", "read again")
	if n := 4; served != n {
		t.Errorf("the metrics were served %d times, want %d (once per accepted scrape)", served, n)
	}
}

// TestMetricsTokenRotationConcurrent: scrapes while the token rotates
// (run with -race): each gets 200 or 401, and after the last rotation only
// the last token is accepted.
func TestMetricsTokenRotationConcurrent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	tokens := []string{"rotation-token-aaaaaaaaaaaaaa", "rotation-token-bbbbbbbbbbbbbb", "rotation-token-cccccccccccccc"}
	write := func(i int) {
		tmp := filepath.Join(dir, "token.tmp")
		if err := os.WriteFile(tmp, []byte(tokens[i%len(tokens)]), 0o600); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Error(err)
		}
	}
	write(0)
	scrape := guardedScrape(t, file, slog.New(slog.DiscardHandler), func() {})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if got := scrape(tokens[(g+i)%len(tokens)]); got != http.StatusOK && got != http.StatusUnauthorized {
					t.Errorf("GET /metrics = %d, want 200 or 401", got)
					return
				}
			}
		})
	}
	for i := 1; i <= 50; i++ {
		write(i)
	}
	wg.Wait()
	last := 50 % len(tokens)
	for i, tok := range tokens {
		want := http.StatusUnauthorized
		if i == last {
			want = http.StatusOK
		}
		if got := scrape(tok); got != want {
			t.Errorf("after the last rotation, GET /metrics with token %d = %d, want %d", i, got, want)
		}
	}
}

// guardedScrape guards a metrics handler that calls served with the token
// file file (as --metrics-token-file) and log, and returns what scrapes it
// with a bearer token and gives the status.
func guardedScrape(t *testing.T, file string, log *slog.Logger, served func()) func(token string) int {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	m := RegisterMetricsFlag(fs, func(string) string { return "" })
	if err := fs.Parse([]string{"--metrics-token-file", file}); err != nil {
		t.Fatal(err)
	}
	mw, err := m.Middleware()
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served()
		_, _ = io.WriteString(w, "saga_machine_up 1\n")
	}), log)
	return func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
}
