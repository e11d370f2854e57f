package kafka_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

const parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// fetchN fetches n records from topic with a new consumer group.
func fetchN(ctx context.Context, t *testing.T, cfg kafka.Config, topic string, n int) []kafka.Record {
	t.Helper()
	c, err := kafka.NewConsumer(cfg, testenv.Name(t, "trace"), topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []kafka.Record
	for len(got) < n {
		recs, err := c.Fetch(ctx, n-len(got))
		if err != nil {
			t.Fatalf("fetch (have %d of %d): %v", len(got), n, err)
		}
		got = append(got, recs...)
	}
	return got
}

func installExporter(t *testing.T) *tracetest.InMemoryExporter {
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

// With tracing on, Publish records a producer span per record that has a
// valid traceparent, a child of it, and the record on the bus carries the
// producer span's traceparent (the caller's headers are left alone);
// Fetch records a consumer span, a child of the record's traceparent, and
// hands on the consumer span's traceparent.
func TestTracingSpans(t *testing.T) {
	cfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testenv.Name(t, "TRACE_TOPIC")
	if err := kafka.EnsureTopics(ctx, cfg, 1, topic); err != nil {
		t.Fatal(err)
	}
	exp := installExporter(t)
	prod, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	headers := map[string]string{tracing.Header: parentTP, "name": "APPROVE_ORDER", "kind": "command"}
	sent := maps.Clone(headers)
	if err := prod.Publish(ctx, []kafka.Record{{Topic: topic, Key: "saga-1", Value: []byte(`{}`), Headers: headers}}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(headers, sent) {
		t.Errorf("Publish changed the caller's headers: %v, want %v", headers, sent)
	}
	pub := exp.GetSpans()
	if len(pub) != 1 || pub[0].Name != "publish "+topic || pub[0].SpanKind != trace.SpanKindProducer || pub[0].Parent.SpanID().String() != parentTP[36:52] {
		t.Fatalf("publish spans %v, want one producer span, child of %s", pub, parentTP)
	}
	recs := fetchN(ctx, t, cfg, topic, 1)
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want publish and receive", len(spans))
	}
	recv := spans[1]
	if recv.Name != "receive "+topic || recv.SpanKind != trace.SpanKindConsumer || recv.Parent.SpanID() != pub[0].SpanContext.SpanID() ||
		recv.SpanContext.TraceID() != pub[0].SpanContext.TraceID() {
		t.Errorf("receive span %q kind %v parent %s, want a consumer span, child of the publish span %s", recv.Name, recv.SpanKind, recv.Parent.SpanID(), pub[0].SpanContext.SpanID())
	}
	if got, want := recs[0].Headers[tracing.Header], tracing.Format(recv.SpanContext); got != want {
		t.Errorf("fetched record's traceparent %q, want the receive span's %q", got, want)
	}
	if recs[0].Headers["name"] != "APPROVE_ORDER" {
		t.Errorf("other headers changed: %v", recs[0].Headers)
	}
}

// Attack: records written to a topic by someone else with a hostile
// traceparent header (malformed, huge, all-zero ids, unknown version) or
// none. Fetch starts a new trace for each, and the header handed on is the
// new span's traceparent, never the hostile text; key, value and other
// headers are unchanged and every record is delivered.
func TestTracingHostileRecordHeaders(t *testing.T) {
	cfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testenv.Name(t, "TRACE_HOSTILE")
	if err := kafka.EnsureTopics(ctx, cfg, 1, topic); err != nil {
		t.Fatal(err)
	}
	hostile := []string{
		"", // no traceparent at all
		"garbage",
		parentTP + "-" + strings.Repeat("f", 32<<10),
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	var recs []kafka.Record
	for i, h := range hostile {
		r := kafka.Record{Topic: topic, Key: "k", Value: []byte{byte('a' + i)}, Headers: map[string]string{"name": "X"}}
		if h != "" {
			r.Headers[tracing.Header] = h
		}
		recs = append(recs, r)
	}
	prod, err := kafka.NewProducer(cfg) // tracing off: the records go out as given
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, recs); err != nil {
		t.Fatal(err)
	}
	exp := installExporter(t)
	got := fetchN(ctx, t, cfg, topic, len(hostile))
	spans := exp.GetSpans()
	if len(spans) != len(hostile) {
		t.Fatalf("%d spans, want one per record (%d)", len(spans), len(hostile))
	}
	traces := map[trace.TraceID]bool{}
	for i, r := range got {
		sp := spans[i]
		if sp.Parent.IsValid() {
			t.Errorf("record %d (%.60q): receive span has parent %v, want a new trace", i, hostile[i], sp.Parent)
		}
		traces[sp.SpanContext.TraceID()] = true
		if tp := r.Headers[tracing.Header]; tp != tracing.Format(sp.SpanContext) || tp == hostile[i] {
			t.Errorf("record %d: traceparent handed on %.60q, want the new span's %q", i, tp, tracing.Format(sp.SpanContext))
		}
		if r.Key != "k" || string(r.Value) != string([]byte{byte('a' + i)}) || r.Headers["name"] != "X" {
			t.Errorf("record %d changed: key %q value %q headers %v", i, r.Key, r.Value, r.Headers)
		}
	}
	if len(traces) != len(hostile) {
		t.Errorf("%d distinct traces for %d records, want one each", len(traces), len(hostile))
	}
}

// Off, a fetched record's traceparent is exactly what was published.
func TestTracingOffKeepsHeaders(t *testing.T) {
	cfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	restore := tracing.Install(nil)
	defer restore()
	topic := testenv.Name(t, "TRACE_OFF")
	if err := kafka.EnsureTopics(ctx, cfg, 1, topic); err != nil {
		t.Fatal(err)
	}
	prod, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, []kafka.Record{{Topic: topic, Key: "k", Value: []byte("v"), Headers: map[string]string{tracing.Header: "garbage"}}}); err != nil {
		t.Fatal(err)
	}
	if got := fetchN(ctx, t, cfg, topic, 1)[0].Headers[tracing.Header]; got != "garbage" {
		t.Errorf("off: traceparent %q, want the published one unchanged", got)
	}
}
