package tracing_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// guard bounds each test's waits (never asserted on).
const guard = 90 * time.Second

// backends are the in-process systems the saga tests run on: the embedded
// defaults, and real PostgreSQL and Kafka.
var backends = []struct {
	name   string
	config func(t *testing.T) system.Config
}{
	{"sqlite+embedded", func(t *testing.T) system.Config { return system.Config{DataDir: t.TempDir()} }},
	{"postgres+kafka", func(t *testing.T) system.Config {
		return system.Config{
			Databases: system.Databases{
				Saga: testenv.Postgres(t), Deals: testenv.Postgres(t),
				Profile: testenv.Postgres(t), Notification: testenv.Postgres(t),
			},
			Brokers:   testenv.KafkaBrokers(t),
			KafkaSASL: testenv.KafkaSASLFor(testenv.KafkaBrokers(t)),
			Topics: system.Topics{
				Events: testenv.Name(t, "SAGA_SERVER_TOPIC"), Deals: testenv.Name(t, "DEALS_TOPIC"),
				Profile: testenv.Name(t, "PROFILE_TOPIC"), Notification: testenv.Name(t, "NOTIFICATION_TOPIC"),
			},
			GroupPrefix: testenv.Name(t, "trace") + ".",
			DataDir:     t.TempDir(),
		}
	}},
}

// traced starts the system of cfg with an in-memory exporter installed as
// the process's tracer (so these tests do not run in parallel).
func traced(t *testing.T, cfg system.Config) (*system.System, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	restore := tracing.Install(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	cfg.EphemeralPorts = true
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("system.Start: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys, exp
}

// headerTransport adds a traceparent header to every request.
type headerTransport struct{ traceparent string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(tracing.Header, h.traceparent)
	return http.DefaultTransport.RoundTrip(r)
}

// fundedClient is a client of a new user ("" traceparent: none sent) with
// a funded portfolio.
func fundedClient(ctx context.Context, t *testing.T, sys *system.System, user, traceparent string) (*system.Client, string) {
	t.Helper()
	tok, err := sys.Token(user)
	if err != nil {
		t.Fatal(err)
	}
	var hc *http.Client
	if traceparent != "" {
		hc = &http.Client{Transport: headerTransport{traceparent}}
	}
	c := system.NewClient(sys.URLs, tok, hc)
	if _, err := c.Login(ctx); err != nil {
		t.Fatalf("login: %v", err)
	}
	pf, err := c.CreatePortfolio(ctx, "Main", "USD")
	if err != nil {
		t.Fatalf("create portfolio: %v", err)
	}
	if _, _, err := sys.Fund(ctx, pf.ID, "1000.00", "USD", "trace test", "trace-"+pf.ID); err != nil {
		t.Fatalf("fund: %v", err)
	}
	return c, pf.ID
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// waitSpan polls the exporter until a span named name with saga.id sagaID
// has ended, and returns every span exported so far.
func waitSpan(ctx context.Context, t *testing.T, exp *tracetest.InMemoryExporter, name, sagaID string) (tracetest.SpanStub, tracetest.SpanStubs) {
	t.Helper()
	for {
		spans := exp.GetSpans()
		for _, s := range spans {
			if s.Name == name && attr(s, string(tracing.AttrSagaID)) == sagaID {
				return s, spans
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no span %q of saga %s among %d spans: %v", name, sagaID, len(spans), ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chain is leaf and its ancestors among spans, root first.
func chain(spans tracetest.SpanStubs, leaf tracetest.SpanStub) []tracetest.SpanStub {
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	out := []tracetest.SpanStub{leaf}
	for cur := leaf; cur.Parent.IsValid(); {
		p, ok := byID[cur.Parent.SpanID()]
		if !ok || len(out) > 100 {
			break
		}
		out = append(out, p)
		cur = p
	}
	slices.Reverse(out)
	return out
}

func names(ss []tracetest.SpanStub) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Name
	}
	return out
}

// wantChain is the span path of an approved MANUAL_CREATE_ORDER saga from
// POST /deals to the notification service's handler.
func wantChain(tp system.Topics) []string {
	hop := func(msg, topic, handled string) []string {
		return []string{"outbox " + msg, "publish " + topic, "receive " + topic, "handle " + handled}
	}
	fromDeals, fromProfile := engine.EventTopic(tp.Events, system.Deals), engine.EventTopic(tp.Events, system.Profile)
	out := []string{"POST /deals"}
	out = append(out, hop("REGISTER", fromDeals, "REGISTER")...)               // deals → saga-machine
	out = append(out, hop("APPROVE_ORDER", tp.Profile, "APPROVE_ORDER")...)    // saga-machine → profile
	out = append(out, hop("ORDER_APPROVED", fromProfile, "ORDER_APPROVED")...) // profile's reply
	out = append(out, hop("APPROVE_DEAL", tp.Deals, "APPROVE_DEAL")...)        // saga-machine → deals
	out = append(out, hop("DEAL_UPDATED", fromDeals, "DEAL_UPDATED")...)       // deals' reply
	out = append(out, hop("NOTIFY", tp.Notification, "NOTIFY")...)             // saga-machine → notification
	return out
}

// One saga, from POST /deals to the notification service's NOTIFY
// handler, is one trace: each hop is outbox → publish → receive → handle,
// each span the child of the one before, with the saga id, message names
// and topics as attributes; and no span of the saga is in another trace.
func TestSagaIsOneTrace(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			sys, exp := traced(t, be.config(t))
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			c, pf := fundedClient(ctx, t, sys, "alice", "")
			d, _, err := c.CreateDeal(ctx, system.DealRequest{PortfolioID: pf, Side: "buy", Instrument: "ACME", Quantity: "2", Price: "100.00", Currency: "USD"}, "")
			if err != nil {
				t.Fatalf("POST /deals: %v", err)
			}
			inst, err := sys.WaitFinal(ctx, d.SagaID)
			if err != nil {
				t.Fatal(err)
			}
			if inst.Status != engine.StatusCompleted {
				t.Fatalf("saga %s: status %s, want completed", d.SagaID, inst.Status)
			}
			leaf, spans := waitSpan(ctx, t, exp, "handle NOTIFY", d.SagaID)
			path := chain(spans, leaf)
			if got, want := names(path), wantChain(sys.Topics); !slices.Equal(got, want) {
				t.Fatalf("span path to handle NOTIFY:\n got %q\nwant %q", got, want)
			}
			root := path[0]
			if root.Parent.IsValid() || root.SpanKind != trace.SpanKindServer {
				t.Errorf("root %q: parent %v kind %v, want a server span without parent", root.Name, root.Parent, root.SpanKind)
			}
			if got := attr(root, "http.route"); got != "/deals" {
				t.Errorf("root http.route %q, want /deals", got)
			}
			tid := root.SpanContext.TraceID()
			handlers := map[string]string{"handle REGISTER": "", "handle APPROVE_ORDER": "profile", "handle ORDER_APPROVED": "",
				"handle APPROVE_DEAL": "deals", "handle DEAL_UPDATED": "", "handle NOTIFY": "notification"}
			for i, s := range path {
				if s.SpanContext.TraceID() != tid {
					t.Errorf("span %d %q in trace %s, want %s", i, s.Name, s.SpanContext.TraceID(), tid)
				}
				if i > 0 && attr(s, string(tracing.AttrSagaID)) != d.SagaID {
					t.Errorf("span %q: saga.id %q, want %s", s.Name, attr(s, string(tracing.AttrSagaID)), d.SagaID)
				}
				verb, rest, _ := strings.Cut(s.Name, " ")
				switch verb {
				case "publish", "receive":
					if got := attr(s, string(tracing.AttrTopic)); got != rest {
						t.Errorf("span %q: topic attribute %q, want %q", s.Name, got, rest)
					}
					kind := trace.SpanKindProducer
					if verb == "receive" {
						kind = trace.SpanKindConsumer
					}
					if s.SpanKind != kind {
						t.Errorf("span %q: kind %v, want %v", s.Name, s.SpanKind, kind)
					}
				case "outbox", "handle":
					if got := attr(s, string(tracing.AttrMessageName)); got != rest {
						t.Errorf("span %q: message name %q, want %q", s.Name, got, rest)
					}
				}
				if verb == "handle" {
					if got := attr(s, string(tracing.AttrParticipant)); handlers[s.Name] != "" && got != handlers[s.Name] {
						t.Errorf("span %q: participant %q, want %q", s.Name, got, handlers[s.Name])
					}
				}
				if s.Status.Code.String() == "Error" {
					t.Errorf("span %q failed: %s", s.Name, s.Status.Description)
				}
			}
			for _, s := range spans {
				if attr(s, string(tracing.AttrSagaID)) == d.SagaID && s.SpanContext.TraceID() != tid {
					t.Errorf("span %q of the saga is in trace %s, want %s", s.Name, s.SpanContext.TraceID(), tid)
				}
			}
			// The saga keeps the trace: its instance's traceparent is a
			// span of this trace (timers and operators continue it).
			if sc, ok := tracing.Parse(inst.Traceparent); !ok || sc.TraceID() != tid {
				t.Errorf("instance traceparent %q, want one in trace %s", inst.Traceparent, tid)
			}
		})
	}
}

// Attack: POST /deals with a hostile traceparent header. The request's
// span starts a new trace (no parent, not the header's trace id), the saga
// runs in that trace (its instance keeps a traceparent of it, never the
// header), and nothing else changes: the deal is executed and the saga
// completed as without the header.
func TestHostileTraceparentStartsANewTrace(t *testing.T) {
	sys, exp := traced(t, system.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	for i, h := range []struct{ name, tp string }{
		{"malformed", "00-xyz"},
		{"huge", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + strings.Repeat("a", 4000)},
		{"all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"all-zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
	} {
		t.Run(h.name, func(t *testing.T) {
			c, pf := fundedClient(ctx, t, sys, "mallory"+string(rune('a'+i)), h.tp)
			d, _, err := c.CreateDeal(ctx, system.DealRequest{PortfolioID: pf, Side: "buy", Instrument: "ACME", Quantity: "1", Price: "10.00", Currency: "USD"}, "")
			if err != nil {
				t.Fatalf("POST /deals with traceparent %.40q: %v", h.tp, err)
			}
			inst, err := sys.WaitFinal(ctx, d.SagaID)
			if err != nil {
				t.Fatal(err)
			}
			if inst.Status != engine.StatusCompleted || inst.State != "NOTIFICATION" {
				t.Errorf("saga %s: %s %s, want NOTIFICATION completed", d.SagaID, inst.State, inst.Status)
			}
			got, err := c.Deal(ctx, d.ID)
			if err != nil || got.Status != "executed" {
				t.Errorf("deal %s: status %q (%v), want executed", d.ID, got.Status, err)
			}
			leaf, spans := waitSpan(ctx, t, exp, "outbox REGISTER", d.SagaID)
			path := chain(spans, leaf)
			root := path[0]
			if root.Name != "POST /deals" || root.Parent.IsValid() {
				t.Fatalf("REGISTER's root span %q parent %v, want POST /deals without parent", root.Name, root.Parent)
			}
			tid := root.SpanContext.TraceID()
			if strings.Contains(h.tp, tid.String()) {
				t.Errorf("the request's trace id %s comes from the hostile header", tid)
			}
			if inst.Traceparent == h.tp || !strings.Contains(inst.Traceparent, tid.String()) {
				t.Errorf("instance traceparent %.60q, want one of trace %s", inst.Traceparent, tid)
			}
		})
	}
}

// saga-machine's API records a server span per request named after its
// route: the child of a valid traceparent header, a new trace for a
// hostile one.
func TestSagaMachineAPISpans(t *testing.T) {
	sys, exp := traced(t, system.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	tok, err := sys.Token("olivia", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tp string
		child    bool
	}{
		{"valid", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"hostile", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp.Reset()
			c := system.NewClient(sys.URLs, tok, &http.Client{Transport: headerTransport{tc.tp}})
			if _, err := c.Sagas(ctx, engine.SagaFilter{}); err != nil {
				t.Fatalf("GET /api/v1/sagas: %v", err)
			}
			var found bool
			for _, s := range exp.GetSpans() {
				if s.Name != "GET /api/v1/sagas" {
					continue
				}
				found = true
				if s.SpanKind != trace.SpanKindServer || attr(s, "http.response.status_code") != "200" {
					t.Errorf("span kind %v status %s, want a server span of a 200", s.SpanKind, attr(s, "http.response.status_code"))
				}
				if got := s.Parent.IsValid() && s.Parent.SpanID().String() == tc.tp[36:52]; got != tc.child {
					t.Errorf("span parent %v: child of the header %v, want %v", s.Parent, got, tc.child)
				}
			}
			if !found {
				t.Errorf("no span GET /api/v1/sagas among %d", len(exp.GetSpans()))
			}
		})
	}
}
