package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
)

// reqInfo collects what the request log line reports beyond the basics;
// handlers fill it in.
type reqInfo struct {
	route  string // path template of the matched route
	user   string // authenticated subject
	sagaID string
	err    error
}

type infoKey struct{}

// infoFrom returns the request's reqInfo, nil outside logRequests.
func infoFrom(ctx context.Context) *reqInfo {
	i, _ := ctx.Value(infoKey{}).(*reqInfo)
	return i
}

// setSaga records the saga a request is about, for the request log.
func setSaga(r *http.Request, id string) {
	if i := infoFrom(r.Context()); i != nil {
		i.sagaID = id
	}
}

// requestLogger writes one structured log line per request.
type requestLogger struct {
	next http.Handler
	log  *slog.Logger
}

func (s *server) logRequests(next http.Handler) http.Handler {
	return &requestLogger{next: next, log: s.log}
}

// statusWriter remembers the status and counts the bytes written.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

// WriteHeader remembers the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts the bytes of the body.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP serves the request and logs method, path, route, status,
// duration, size, user and, where there is one, saga_id. 5xx answers are
// logged at error level with the cause; the noisy probes /healthz,
// /readyz and /metrics at debug level when they succeed.
func (l *requestLogger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info := &reqInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	sw := &statusWriter{ResponseWriter: w}
	l.next.ServeHTTP(sw, r)
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", sw.bytes),
	}
	if info.route != "" {
		attrs = append(attrs, slog.String("route", info.route))
	}
	if info.sagaID != "" {
		attrs = append(attrs, slog.String("saga_id", info.sagaID))
	}
	if info.user != "" {
		attrs = append(attrs, slog.String("user", info.user))
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics":
		level = slog.LevelDebug
	}
	if info.err != nil {
		attrs = append(attrs, slog.String("err", info.err.Error()), slog.String("code", string(engine.ErrorCode(info.err))))
	}
	l.log.LogAttrs(r.Context(), level, "http request", attrs...)
}

// noteRoute is a mux middleware that records the matched route's template
// for the request log.
func noteRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := infoFrom(r.Context()); i != nil {
			if cur := mux.CurrentRoute(r); cur != nil {
				i.route, _ = cur.GetPathTemplate()
			}
		}
		next.ServeHTTP(w, r)
	})
}

// noteUser records the authenticated user for the request log; it runs
// inside auth.Middleware.
func noteUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := infoFrom(r.Context()); i != nil {
			if u, ok := auth.UserFrom(r.Context()); ok {
				i.user = u.Subject
			}
		}
		next.ServeHTTP(w, r)
	})
}
