package tracing_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// hop is what the hooks do for one message crossing one service boundary:
// outbox, publish, receive and handle spans, each a child of the
// traceparent the one before wrote into the headers.
func hop(headers map[string]string) map[string]string {
	for _, name := range []string{"outbox X", "publish T", "receive T", "handle X"} {
		if !tracing.Enabled() {
			continue
		}
		_, span := tracing.StartRemote(context.Background(), headers[tracing.Header], name, trace.SpanKindInternal,
			tracing.AttrSagaID.String("8b1f5f9e-4d5c-4b7a-9d1e-2f3a4b5c6d7e"), tracing.AttrTopic.String("T"))
		headers = tracing.WithTraceparent(headers, tracing.Traceparent(span))
		span.End()
	}
	return headers
}

// BenchmarkHop measures the hooks' CPU cost per message and hop (four
// spans) with tracing off (four Enabled checks) and on (a batching
// provider whose exporter drops the spans). Run with
//
//	go test ./internal/tracing -run '^$' -bench Hop -benchmem
func BenchmarkHop(b *testing.B) {
	h := map[string]string{tracing.Header: validTP, "name": "X", "kind": "command"}
	b.Run("off", func(b *testing.B) {
		defer tracing.Install(nil)()
		b.ReportAllocs()
		for b.Loop() {
			hop(h)
		}
	})
	b.Run("on", func(b *testing.B) {
		prov := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = prov.Shutdown(context.Background()) }()
		defer tracing.Install(prov)()
		b.ReportAllocs()
		for b.Loop() {
			hop(h)
		}
	})
}
