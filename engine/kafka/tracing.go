package kafka

import (
	"context"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// Header names the envelope puts beside the traceparent (envelope.HeaderKind,
// envelope.HeaderName); this package does not import the envelope.
const (
	headerKind = "kind"
	headerName = "name"
)

// traceProduce starts a "publish <topic>" producer span for each record
// whose traceparent header is valid (the span of the outbox write), and
// returns copies of the records carrying the span's traceparent instead
// (the caller's headers are not changed, so a retried Publish starts new
// spans from the same parents). Records without a valid traceparent get
// no span and keep their headers. Call only when tracing.Enabled.
func traceProduce(ctx context.Context, recs []Record) ([]Record, []trace.Span) {
	out := make([]Record, len(recs))
	spans := make([]trace.Span, len(recs))
	for i, r := range recs {
		out[i] = r
		parent := r.Headers[tracing.Header]
		if _, ok := tracing.Parse(parent); !ok {
			continue
		}
		_, span := tracing.StartRemote(ctx, parent, "publish "+r.Topic, trace.SpanKindProducer,
			tracing.AttrSystem.String("kafka"),
			tracing.AttrOperation.String("send"),
			tracing.AttrTopic.String(r.Topic),
			tracing.AttrSagaID.String(r.Key),
			tracing.AttrMessageName.String(r.Headers[headerName]),
			tracing.AttrMessageKind.String(r.Headers[headerKind]))
		out[i].Headers = tracing.WithTraceparent(r.Headers, tracing.Traceparent(span))
		spans[i] = span
	}
	return out, spans
}

// endProduce ends the producer spans of krs (spans[i] belongs to krs[i])
// with the records' results (ProduceSync may list them in another order).
func endProduce(spans []trace.Span, krs []*kgo.Record, results kgo.ProduceResults) {
	at := make(map[*kgo.Record]int, len(krs))
	for i, kr := range krs {
		at[kr] = i
	}
	done := make([]bool, len(spans))
	for _, res := range results {
		i, ok := at[res.Record]
		if !ok || spans[i] == nil || done[i] {
			continue
		}
		done[i] = true
		if res.Err == nil {
			spans[i].SetAttributes(tracing.AttrPartition.String(strconv.Itoa(int(res.Record.Partition))),
				tracing.AttrOffset.Int64(res.Record.Offset))
		}
		tracing.End(spans[i], res.Err)
	}
	for i, s := range spans {
		if s != nil && !done[i] {
			s.End()
		}
	}
}

// traceReceive records a "receive <topic>" consumer span for each fetched
// record, a child of the record's traceparent header when that is valid
// (tracing.Parse) and a new trace otherwise, and replaces the header with
// the span's traceparent: the handler's span is the receive span's child,
// and a hostile header is never passed on. Call only when tracing.Enabled.
func (c *Consumer) traceReceive(ctx context.Context, recs []Record) {
	for i := range recs {
		r := &recs[i]
		_, span := tracing.StartRemote(ctx, r.Headers[tracing.Header], "receive "+r.Topic, trace.SpanKindConsumer,
			tracing.AttrSystem.String("kafka"),
			tracing.AttrOperation.String("receive"),
			tracing.AttrTopic.String(r.Topic),
			tracing.AttrPartition.String(strconv.Itoa(int(r.Partition))),
			tracing.AttrOffset.Int64(r.Offset),
			tracing.AttrGroup.String(c.group),
			tracing.AttrSagaID.String(r.Key),
			tracing.AttrMessageName.String(r.Headers[headerName]),
			tracing.AttrMessageKind.String(r.Headers[headerKind]))
		if r.Headers == nil {
			r.Headers = make(map[string]string, 1)
		}
		r.Headers[tracing.Header] = tracing.Traceparent(span)
		span.End()
	}
}
