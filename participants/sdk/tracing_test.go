package sdk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

const parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// tracedParticipant is a profile participant whose APPROVE_ORDER handler
// fails the first failFirst runs and records the span its ctx carries.
type tracedParticipant struct {
	p         *sdk.Participant
	mu        sync.Mutex
	failFirst int
	runs      int
	seen      []trace.SpanContext
}

func newTracedParticipant(t *testing.T, failFirst int) *tracedParticipant {
	t.Helper()
	db := openSQLite(t)
	if err := sdk.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tp := &tracedParticipant{p: p, failFirst: failFirst}
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		tp.runs++
		tp.seen = append(tp.seen, trace.SpanContextFromContext(ctx))
		if tp.runs <= tp.failFirst {
			return sdk.Result{}, errors.New("not yet")
		}
		return sdk.Reply("ORDER_APPROVED", nil), nil
	})
	return tp
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	t.Helper()
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// flushHeaders relays p's outbox and returns the traceparents published.
func flushHeaders(t *testing.T, p *sdk.Participant) []string {
	t.Helper()
	var tps []string
	if _, err := p.Flush(context.Background(), func(_ context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			tps = append(tps, r.Headers[envelope.HeaderTraceparent])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return tps
}

// With tracing on, a command gets a "handle <COMMAND>" span, a child of
// the record's traceparent, which the handler's ctx carries; its reply's
// "outbox <EVENT>" span is the handle span's child, and the record the
// relay publishes carries the outbox span's traceparent. A handler that
// fails once leaves a failed handle span and a second one (the slow path's
// retry) that its reply descends from.
func TestTracingHandlerSpans(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failFirst int
		handles   int
	}{
		{"batch", 0, 1},
		{"retried", 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			prov := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			defer tracing.Install(prov)()
			tp := newTracedParticipant(t, tc.failFirst)
			sagaID := uuid.NewString()
			_, rec := command(t, "APPROVE_ORDER", sagaID, orderPayload("d1", 1))
			rec.Headers[envelope.HeaderTraceparent] = parentTP
			out, err := tp.p.Dispatch(context.Background(), rec)
			if err != nil || out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" {
				t.Fatalf("Dispatch: %+v, %v; want ORDER_APPROVED", out, err)
			}
			published := flushHeaders(t, tp.p)
			spans := exp.GetSpans()
			handles := spanNamed(t, spans, "handle APPROVE_ORDER")
			outboxes := spanNamed(t, spans, "outbox ORDER_APPROVED")
			if len(handles) != tc.handles || len(outboxes) != 1 || len(published) != 1 {
				t.Fatalf("%d handle spans, %d outbox spans, %d records; want %d, 1, 1", len(handles), len(outboxes), len(published), tc.handles)
			}
			for i, h := range handles {
				if h.Parent.SpanID().String() != parentTP[36:52] || h.SpanContext.TraceID().String() != parentTP[3:35] {
					t.Errorf("handle span %d: parent %v, want the record's %s", i, h.Parent, parentTP)
				}
				if failed := h.Status.Code.String() == "Error"; failed != (i < tc.failFirst) {
					t.Errorf("handle span %d: status %v, want failed %v", i, h.Status, i < tc.failFirst)
				}
				for k, v := range map[string]string{"saga.id": sagaID, "saga.participant": "profile", "saga.message.name": "APPROVE_ORDER"} {
					if got := attrOf(h, k); got != v {
						t.Errorf("handle span %d: %s = %q, want %q", i, k, got, v)
					}
				}
				if !tp.seen[i].Equal(h.SpanContext) {
					t.Errorf("handler run %d saw span %v in ctx, want %v", i, tp.seen[i], h.SpanContext)
				}
			}
			last := handles[len(handles)-1]
			if outboxes[0].Parent.SpanID() != last.SpanContext.SpanID() {
				t.Errorf("reply's outbox span has parent %s, want the successful handle span %s", outboxes[0].Parent.SpanID(), last.SpanContext.SpanID())
			}
			if want := tracing.Format(outboxes[0].SpanContext); published[0] != want {
				t.Errorf("published reply carries traceparent %q, want the outbox span's %q", published[0], want)
			}
		})
	}
}

func attrOf(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// StartSaga writes the traceparent of the span in its ctx (the HTTP
// request's) with the start event, under an outbox span; off, it writes
// none (saga-machine starts the trace, as before).
func TestTracingStartSaga(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	prov := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	restore := tracing.Install(prov)
	defer restore()
	tp := newTracedParticipant(t, 0)
	start := func(ctx context.Context) {
		t.Helper()
		tx, err := tp.p.DB().BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
		if _, err := tp.p.StartSaga(ctx, tx, "MANUAL_CREATE_ORDER", "REGISTER", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, req := tracing.Start(context.Background(), "POST /deals", trace.SpanKindServer)
	start(ctx)
	req.End()
	published := flushHeaders(t, tp.p)
	outbox := spanNamed(t, exp.GetSpans(), "outbox REGISTER")
	if len(outbox) != 1 || outbox[0].Parent.SpanID() != req.SpanContext().SpanID() {
		t.Fatalf("outbox REGISTER spans %v, want one, child of the request span %s", outbox, req.SpanContext().SpanID())
	}
	if len(published) != 1 || published[0] != tracing.Format(outbox[0].SpanContext) {
		t.Errorf("published %q, want the outbox span's traceparent", published)
	}
	restore()
	start(context.Background())
	if published := flushHeaders(t, tp.p); len(published) != 1 || published[0] != "" {
		t.Errorf("off: published traceparents %q, want none", published)
	}
}

// BenchmarkDispatchTracing is BenchmarkDispatch with tracing off and on
// (a batching provider whose exporter drops the spans: the cost of
// recording, not of a collector). Run with
//
//	go test ./participants/sdk -run '^$' -bench DispatchTracing -benchtime 5000x
func BenchmarkDispatchTracing(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		for _, on := range []bool{false, true} {
			name := kind + "/tracing=off"
			if on {
				name = kind + "/tracing=on"
			}
			b.Run(name, func(b *testing.B) {
				if on {
					prov := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
					defer func() { _ = prov.Shutdown(context.Background()) }()
					defer tracing.Install(prov)()
				} else {
					defer tracing.Install(nil)()
				}
				benchDispatch(b, kind)
			})
		}
	}
}

// Attack: a command handed to Dispatch (a custom transport, no Kafka
// consumer in front) with a hostile traceparent. With tracing on, its
// handle span starts a new trace and the reply carries the outbox span's
// traceparent, never the hostile text; the handler runs once and replies
// as it would without the header.
func TestTracingHostileTraceparentDispatch(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	prov := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tracing.Install(prov)()
	for _, hostile := range []string{"garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		parentTP + "-" + string(make([]byte, 4096))} {
		exp.Reset()
		tp := newTracedParticipant(t, 0)
		_, rec := command(t, "APPROVE_ORDER", uuid.NewString(), orderPayload("d1", 1))
		rec.Headers[envelope.HeaderTraceparent] = hostile
		out, err := tp.p.Dispatch(context.Background(), rec)
		if err != nil || out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" || tp.runs != 1 {
			t.Fatalf("Dispatch: %+v, %v, %d runs; want ORDER_APPROVED after one run", out, err, tp.runs)
		}
		published := flushHeaders(t, tp.p)
		handles := spanNamed(t, exp.GetSpans(), "handle APPROVE_ORDER")
		if len(handles) != 1 || handles[0].Parent.IsValid() {
			t.Fatalf("handle spans %v, want one starting a new trace", handles)
		}
		if len(published) != 1 || published[0] == hostile || !strings.Contains(published[0], handles[0].SpanContext.TraceID().String()) {
			t.Errorf("reply published with traceparent %.60q, want one of the new trace %s", published, handles[0].SpanContext.TraceID())
		}
	}
}
