package program

import (
	"crypto/sha256"
	"crypto/subtle"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
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

// MetricsGuard puts /metrics behind the scrape token; log receives what
// the guard has to tell an operator (a token file that changed and holds
// no valid token any more, or a new valid token).
type MetricsGuard func(next http.Handler, log *slog.Logger) http.Handler

// Middleware reads the flag's token file and returns what puts /metrics
// behind that token, or leaves a handler as it is when the flag is empty.
// A file that cannot be read, or whose token (trailing newline removed) is
// shorter than MinMetricsToken, holds white space or the placeholder
// CHANGE_ME, is an error: call it when the flags are parsed, so that a bad
// setting stops the process before it starts.
//
// The token can be rotated without a restart: at every request for
// /metrics the guard looks at the file (one stat) and reads it again when
// it changed (another file, size or modification time; a Kubernetes Secret
// mounted as a volume is replaced that way). From then on only the new
// token is accepted. While the file is missing or holds a token that would
// be refused at start, every scrape is refused (401), the old token too,
// and the reason is logged once per change.
func (m *MetricsAuth) Middleware() (MetricsGuard, error) {
	if m == nil || m.file == "" {
		return func(next http.Handler, _ *slog.Logger) http.Handler { return next }, nil
	}
	f := &tokenFile{path: m.file}
	if err := f.load(); err != nil {
		return nil, fmt.Errorf("--metrics-token-file: %w", err)
	}
	return func(next http.Handler, log *slog.Logger) http.Handler {
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		return requireToken("/metrics", func() ([32]byte, bool) { return f.current(log) }, next)
	}, nil
}

// tokenFile is the scrape token of a file, read again when the file
// changes.
type tokenFile struct {
	path string

	mu   sync.Mutex
	seen os.FileInfo // the file as it was when last read; nil: never read
	want [32]byte    // SHA-256 of the token
	bad  error       // why the file holds no valid token now; nil: want is valid
}

// load reads and checks the file.
func (f *tokenFile) load() error {
	info, err := os.Stat(f.path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	token := strings.TrimRight(string(b), "\r\n")
	if err := checkToken(f.path, token); err != nil {
		return err
	}
	f.seen, f.want, f.bad = info, sha256.Sum256([]byte(token)), nil
	return nil
}

// current returns the SHA-256 of the valid token, reading the file again
// if it changed; false: the file holds no valid token now.
func (f *tokenFile) current(log *slog.Logger) ([32]byte, bool) {
	info, statErr := os.Stat(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if statErr == nil && f.seen != nil && sameFile(f.seen, info) {
		return f.want, f.bad == nil
	}
	was := f.bad
	if err := f.load(); err != nil {
		f.seen = info // nil when the stat failed: looked at again next time
		f.bad = err
		if was == nil || was.Error() != err.Error() {
			log.Error("/metrics: the scrape token file changed and holds no valid token: every scrape is refused until it does", "err", err)
		}
		return f.want, false
	}
	log.Info("/metrics: the scrape token file changed and was read again: only the token it holds now is accepted", "file", f.path)
	return f.want, true
}

// sameFile reports whether a and b describe the same file with the same
// size and modification time.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// checkToken refuses a token that protects nothing.
func checkToken(file, token string) error {
	switch {
	case len(token) < MinMetricsToken:
		return fmt.Errorf("%s: the token has %d bytes, want at least %d", file, len(token), MinMetricsToken)
	case strings.ContainsAny(token, " \t\r\n\v\f"):
		return fmt.Errorf("%s: the token holds white space", file)
	case hasPlaceholder(token):
		return fmt.Errorf("%s: the token is the placeholder %s: set a real one", file, Placeholder)
	}
	return nil
}

// RequireToken returns next with every request for route (after path
// cleaning, any method) answered 401 unless it carries "Authorization:
// Bearer <token>" (the scheme in any case, as RFC 9110 allows); other
// paths pass untouched. The comparison takes the same time whatever the
// sent token.
func RequireToken(route, token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return requireToken(route, func() ([32]byte, bool) { return want, true }, next)
}

// requireToken is RequireToken with the token's SHA-256 asked for at each
// request; false refuses every request for route.
func requireToken(route string, current func() ([32]byte, bool), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if path.Clean("/"+r.URL.Path) != route {
			next.ServeHTTP(w, r)
			return
		}
		scheme, sent, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(sent))
		want, valid := current()
		if !ok || !valid || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"type":"urn:saga-machine:problem:unauthorized","title":"Unauthorized","status":401,"detail":"%s needs the scrape token: Authorization: Bearer <token>"}`, route)
			return
		}
		next.ServeHTTP(w, r)
	})
}
