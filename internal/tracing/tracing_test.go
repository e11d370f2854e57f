package tracing_test

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

const (
	validTP   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	validTID  = "4bf92f3577b34da6a3ce929d0e0e4736"
	validSpan = "00f067aa0ba902b7"
)

// hostile are traceparents a client or a forged record may carry; none of
// them may become a parent or travel on.
var hostile = []struct{ name, tp string }{
	{"malformed", "not-a-traceparent"},
	{"too short", "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01"},
	{"huge", "00-" + validTID + "-" + validSpan + "-01-" + strings.Repeat("a", 64<<10)},
	{"all-zero trace id", "00-00000000000000000000000000000000-" + validSpan + "-01"},
	{"all-zero parent id", "00-" + validTID + "-0000000000000000-01"},
	{"version ff", "ff-" + validTID + "-" + validSpan + "-01"},
	{"upper-case hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + validSpan + "-01"},
	{"version 00 with more fields", validTP + "-extra"},
	{"control bytes", "00-" + validTID + "-" + validSpan + "-01\x00\r\n"},
}

// install puts an in-memory exporter in place for the test.
func install(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	restore := tracing.Install(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})
	return exp
}

func TestParse(t *testing.T) {
	sc, ok := tracing.Parse(validTP)
	if !ok || sc.TraceID().String() != validTID || sc.SpanID().String() != validSpan || !sc.IsSampled() || !sc.IsRemote() {
		t.Errorf("Parse(%q) = %v, %v; want the remote sampled span %s of trace %s", validTP, sc, ok, validSpan, validTID)
	}
	if got := tracing.Format(sc); got != validTP {
		t.Errorf("Format(Parse(%q)) = %q", validTP, got)
	}
	unsampled := "00-" + validTID + "-" + validSpan + "-00"
	if sc, ok := tracing.Parse(unsampled); !ok || sc.IsSampled() || tracing.Format(sc) != unsampled {
		t.Errorf("Parse(%q) = %v, %v; want a valid unsampled span context", unsampled, sc, ok)
	}
	future := "01-" + validTID + "-" + validSpan + "-01-more-fields"
	if sc, ok := tracing.Parse(future); !ok || sc.TraceID().String() != validTID || tracing.Format(sc) != validTP {
		t.Errorf("Parse(%q) = %v, %v; want the span of a later version, formatted as version 00", future, sc, ok)
	}
	for _, h := range append(hostile, struct{ name, tp string }{"empty", ""}, struct{ name, tp string }{"later version without dash", "01-" + validTID + "-" + validSpan + "-01x"}) {
		if sc, ok := tracing.Parse(h.tp); ok || sc.IsValid() {
			t.Errorf("%s: Parse = %v, true; want refused", h.name, sc)
		}
	}
	if got := tracing.Format(trace.SpanContext{}); got != "" {
		t.Errorf("Format(zero) = %q, want empty", got)
	}
}

func TestName(t *testing.T) {
	for _, tc := range []struct{ op, name, want string }{
		{"handle", "APPROVE_ORDER", "handle APPROVE_ORDER"},
		{"handle", "", "handle"},
		{"handle", "X Y", "handle ?"},
		{"handle", "<script>", "handle ?"},
		{"handle", strings.Repeat("A", 65), "handle ?"},
	} {
		if got := tracing.Name(tc.op, tc.name); got != tc.want {
			t.Errorf("Name(%q, %q) = %q, want %q", tc.op, tc.name, got, tc.want)
		}
	}
}

// server is a router with /deals and /deals/{id} behind tracing.Handler;
// it records the traceparent header and the span each request saw.
type seen struct {
	mu     sync.Mutex
	header []string
	span   []trace.SpanContext
}

func server(s *seen) http.Handler {
	r := mux.NewRouter()
	h := func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.header = append(s.header, r.Header.Get(tracing.Header))
		s.span = append(s.span, trace.SpanContextFromContext(r.Context()))
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}
	r.HandleFunc("/deals", h).Methods(http.MethodPost)
	r.HandleFunc("/deals/{id}", h).Methods(http.MethodGet)
	r.NotFoundHandler = http.HandlerFunc(h)
	return tracing.Handler(r, r)
}

func do(t *testing.T, h http.Handler, method, path, tp string) int {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if tp != "" {
		req.Header.Set(tracing.Header, tp)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// A request with a valid traceparent gets a server span that is its
// child; the handler sees the span, and the span's own traceparent in the
// header. Span names are method and route template, never the path.
func TestHandler(t *testing.T) {
	exp := install(t)
	s := &seen{}
	h := server(s)
	if code := do(t, h, http.MethodPost, "/deals", validTP); code != http.StatusAccepted {
		t.Fatalf("status %d", code)
	}
	do(t, h, http.MethodGet, "/deals/secret-id-123", "")
	do(t, h, http.MethodGet, "/no/such/path/with-user-data", "")
	do(t, h, "BREW", "/deals", "")
	spans := exp.GetSpans()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	var names []string
	for _, sp := range spans {
		names = append(names, sp.Name)
		if sp.SpanKind != trace.SpanKindServer {
			t.Errorf("span %q kind %v, want server", sp.Name, sp.SpanKind)
		}
	}
	if got, want := strings.Join(names, ","), "POST /deals,GET /deals/{id},GET,_OTHER"; got != want {
		t.Errorf("span names %s, want %s", got, want)
	}
	post := spans[0]
	if post.Parent.SpanID().String() != validSpan || post.SpanContext.TraceID().String() != validTID || !post.Parent.IsRemote() {
		t.Errorf("POST span: parent %v trace %s, want the caller's span %s of trace %s", post.Parent, post.SpanContext.TraceID(), validSpan, validTID)
	}
	if s.header[0] != tracing.Format(post.SpanContext) || !s.span[0].Equal(post.SpanContext) {
		t.Errorf("handler saw header %q and span %v, want the server span %v", s.header[0], s.span[0], post.SpanContext)
	}
	if spans[1].Parent.IsValid() {
		t.Errorf("a request without traceparent got parent %v, want a new trace", spans[1].Parent)
	}
}

// Attack: a hostile traceparent header (malformed, huge, all-zero ids,
// unknown version, ...) starts a new trace; the handler never sees the
// hostile text (it sees the new span's traceparent), and the request is
// answered as it would be without the header.
func TestHandlerHostileTraceparent(t *testing.T) {
	exp := install(t)
	for _, hc := range hostile {
		t.Run(hc.name, func(t *testing.T) {
			exp.Reset()
			s := &seen{}
			if code := do(t, server(s), http.MethodPost, "/deals", hc.tp); code != http.StatusAccepted {
				t.Errorf("status %d, want the handler's 202", code)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			sp := spans[0]
			if sp.Parent.IsValid() {
				t.Errorf("span has parent %v, want a new trace", sp.Parent)
			}
			if sp.SpanContext.TraceID().String() == validTID {
				t.Errorf("span continues the hostile header's trace id")
			}
			if s.header[0] == hc.tp || s.header[0] != tracing.Format(sp.SpanContext) {
				t.Errorf("handler saw traceparent %.80q, want the new span's %q", s.header[0], tracing.Format(sp.SpanContext))
			}
		})
	}
}

// Off, the handler is a pass-through: no span, the header untouched (the
// engine validates it itself, as before tracing existed).
func TestHandlerOff(t *testing.T) {
	restore := tracing.Install(nil)
	defer restore()
	if tracing.Enabled() {
		t.Fatal("Enabled after Install(nil)")
	}
	s := &seen{}
	do(t, server(s), http.MethodPost, "/deals", "garbage")
	if s.header[0] != "garbage" || s.span[0].IsValid() {
		t.Errorf("off: handler saw header %q span %v, want the request's header and no span", s.header[0], s.span[0])
	}
	ctx, span := tracing.StartRemote(context.Background(), validTP, "x", trace.SpanKindInternal)
	if span.SpanContext().IsValid() || trace.SpanContextFromContext(ctx).IsValid() || span.IsRecording() {
		t.Errorf("off: StartRemote gave a recording span %v", span.SpanContext())
	}
}

// Setup without an endpoint leaves tracing off; bad endpoints are refused
// with the reason; with an endpoint it exports the spans over OTLP/HTTP to
// /v1/traces with the service name, and shutdown flushes them and turns
// tracing off.
func TestSetup(t *testing.T) {
	restore := tracing.Install(nil)
	defer restore()
	noEnv := func(string) string { return "" }
	stop, err := tracing.Setup(context.Background(), tracing.Config{ServiceName: "deals", Env: noEnv})
	if err != nil || tracing.Enabled() {
		t.Fatalf("Setup without endpoint: err %v, enabled %v; want off", err, tracing.Enabled())
	}
	_ = stop(context.Background())
	for _, bad := range []string{"ftp://collector:4318", "http://user:secret@collector:4318", "collector:4318", "http://", "http://%zz"} {
		_, err := tracing.Setup(context.Background(), tracing.Config{Endpoint: bad, ServiceName: "deals", Env: noEnv})
		if err == nil || tracing.Enabled() {
			t.Errorf("Setup(%q): err %v, enabled %v; want refused", bad, err, tracing.Enabled())
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("Setup(%q): error %q shows the password", bad, err)
		}
	}

	var mu sync.Mutex
	var paths []string
	var bodies [][]byte
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths, bodies = append(paths, r.URL.Path), append(bodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer col.Close()
	for _, tc := range []struct {
		name string
		cfg  tracing.Config
	}{
		{"flag", tracing.Config{Endpoint: col.URL, ServiceName: "deals", Env: noEnv}},
		{"env base URL", tracing.Config{ServiceName: "deals", Env: func(k string) string {
			if k == tracing.EnvEndpoint {
				return col.URL
			}
			return ""
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			paths, bodies = nil, nil
			mu.Unlock()
			stop, err := tracing.Setup(context.Background(), tc.cfg)
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			if !tracing.Enabled() {
				t.Fatal("Setup with an endpoint left tracing off")
			}
			_, span := tracing.Start(context.Background(), "handle APPROVE_ORDER", trace.SpanKindConsumer)
			span.End()
			if err := stop(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if tracing.Enabled() {
				t.Error("tracing still on after shutdown")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 || paths[0] != "/v1/traces" {
				t.Fatalf("collector got %v, want one POST to /v1/traces", paths)
			}
			for _, want := range []string{"deals", "handle APPROVE_ORDER"} {
				if !bytes.Contains(bodies[0], []byte(want)) {
					t.Errorf("exported spans do not contain %q", want)
				}
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	fs := flag.NewFlagSet("deals", flag.ContinueOnError)
	cfg := tracing.RegisterFlags(fs, "deals", func(string) string { return "" })
	if cfg.On() {
		t.Error("On without flag or environment")
	}
	if err := fs.Parse([]string{"--otlp-endpoint", "http://collector:4318"}); err != nil {
		t.Fatal(err)
	}
	if !cfg.On() || cfg.Endpoint != "http://collector:4318" || cfg.ServiceName != "deals" {
		t.Errorf("after parse: %+v", cfg)
	}
}
