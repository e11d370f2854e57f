package program

import (
	"crypto/sha256"
	"crypto/subtle"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
)

// MinMetricsToken is the shortest scrape token accepted (bytes): a
// guessable one would protect nothing.
const MinMetricsToken = 16

// MetricsAuth is the --metrics-token-file flag of every process that
// serves /metrics (saga-machine and the participant services).
type MetricsAuth struct {
	file string
}

// RegisterMetricsFlag registers --metrics-token-file (env
// SAGA_METRICS_TOKEN_FILE) on fs.
func RegisterMetricsFlag(fs *flag.FlagSet, env func(string) string) *MetricsAuth {
	m := &MetricsAuth{}
	fs.StringVar(&m.file, "metrics-token-file", env("SAGA_METRICS_TOKEN_FILE"),
		"file holding the bearer token a scraper must send to GET /metrics (Authorization: Bearer <token>, at least 16 bytes); empty: /metrics is open and must be protected by the network (env SAGA_METRICS_TOKEN_FILE)")
	return m
}

// Middleware reads the flag's token file and returns what puts /metrics
// behind that token (RequireToken), or leaves a handler as it is when the
// flag is empty. A file that cannot be read, or whose token (trailing
// newline removed) is shorter than MinMetricsToken, holds white space or
// the placeholder CHANGE_ME, is an error: call it when the flags are
// parsed, so that a bad setting stops the process before it starts.
func (m *MetricsAuth) Middleware() (func(http.Handler) http.Handler, error) {
	if m == nil || m.file == "" {
		return func(next http.Handler) http.Handler { return next }, nil
	}
	b, err := os.ReadFile(m.file)
	if err != nil {
		return nil, fmt.Errorf("--metrics-token-file: %w", err)
	}
	token := strings.TrimRight(string(b), "\r\n")
	switch {
	case len(token) < MinMetricsToken:
		return nil, fmt.Errorf("--metrics-token-file %s: the token has %d bytes, want at least %d", m.file, len(token), MinMetricsToken)
	case strings.ContainsAny(token, " \t\r\n\v\f"):
		return nil, fmt.Errorf("--metrics-token-file %s: the token holds white space", m.file)
	case hasPlaceholder(token):
		return nil, fmt.Errorf("--metrics-token-file %s: the token is the placeholder %s: set a real one", m.file, Placeholder)
	}
	return func(next http.Handler) http.Handler { return RequireToken("/metrics", token, next) }, nil
}

// RequireToken returns next with every request for route (after path
// cleaning, any method) answered 401 unless it carries "Authorization:
// Bearer <token>" (the scheme in any case, as RFC 9110 allows); other
// paths pass untouched. The comparison takes the same time whatever the
// sent token.
func RequireToken(route, token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if path.Clean("/"+r.URL.Path) != route {
			next.ServeHTTP(w, r)
			return
		}
		scheme, sent, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(sent))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"type":"urn:saga-machine:problem:unauthorized","title":"Unauthorized","status":401,"detail":"%s needs the scrape token: Authorization: Bearer <token>"}`, route)
			return
		}
		next.ServeHTTP(w, r)
	})
}
