package engine_test

import (
	"context"
	"path/filepath"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// BenchmarkHandleRecordsTracing is BenchmarkHandleRecords with tracing off
// and on (a batching provider whose exporter drops the spans: the cost of
// the handle and outbox spans, not of a collector). Run with
//
//	go test ./engine -run '^$' -bench HandleRecordsTracing -benchtime 40x
func BenchmarkHandleRecordsTracing(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"postgres", func(b *testing.B) string { return testenv.Postgres(b) }},
		{"sqlite", func(b *testing.B) string { return "sqlite:" + filepath.Join(b.TempDir(), "bench.db") }},
	} {
		for _, on := range []bool{false, true} {
			name := db.name + "/tracing=off"
			if on {
				name = db.name + "/tracing=on"
			}
			b.Run(name, func(b *testing.B) {
				if on {
					prov := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
					defer func() { _ = prov.Shutdown(context.Background()) }()
					defer tracing.Install(prov)()
				} else {
					defer tracing.Install(nil)()
				}
				benchHandle(b, db.url(b))
			})
		}
	}
}
