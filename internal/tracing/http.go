package tracing

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Handler records a server span for every request next serves, named
// after the method and the route template router matches ("POST /deals",
// "GET /deals/{id}"; the method alone when no route matches, so that
// request paths never become span names). The request's traceparent
// header, if valid (Parse), is the span's parent; otherwise the span
// starts a new trace. next sees the span in the request's context and the
// span's own traceparent in the request's header (code that reads the
// header, such as saga-machine's POST /sagas, continues the trace); a
// tracestate header is dropped. Off (Enabled false), requests go to next
// untouched.
func Handler(router *mux.Router, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Enabled() {
			next.ServeHTTP(w, r)
			return
		}
		method := knownMethod(r.Method)
		name := method
		attrs := []attribute.KeyValue{attribute.String("http.request.method", method)}
		if router != nil {
			var m mux.RouteMatch
			if router.Match(r, &m) && m.Route != nil {
				if tmpl, err := m.Route.GetPathTemplate(); err == nil {
					name += " " + tmpl
					attrs = append(attrs, attribute.String("http.route", tmpl))
				}
			}
		}
		ctx, span := StartRemote(r.Context(), r.Header.Get(Header), name, trace.SpanKindServer, attrs...)
		defer span.End()
		r = r.WithContext(ctx)
		r.Header.Set(Header, Traceparent(span))
		r.Header.Del("tracestate")
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	})
}

// knownMethod is m if it is a standard method, else "_OTHER" (the
// OpenTelemetry convention: a client cannot invent span names).
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
