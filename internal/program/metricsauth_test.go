package program

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		return mw(next), nil
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
