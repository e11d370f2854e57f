package sdk

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// Tracing (internal/tracing, on when the service was given an OTLP
// endpoint): each command handled gets a "handle <COMMAND>" span, a child
// of the record's traceparent (the consumer's "receive" span); the
// handler's ctx carries it, so a handler may record spans of its own with
// the OpenTelemetry API, and the reply's outbox row carries its
// traceparent. StartSaga's row carries the traceparent of the span in its
// ctx (the HTTP request's). Off, the command's traceparent is forwarded
// to the reply unchanged, as it always was.

// startHandle starts the handler span of m and returns the ctx for the
// handler and the headers its reply is written with. Call only when
// tracing.Enabled.
func (p *Participant) startHandle(ctx context.Context, m envelope.Message, headers map[string]string) (context.Context, map[string]string, trace.Span) {
	ctx, span := tracing.StartRemote(ctx, headers[envelope.HeaderTraceparent], tracing.Name("handle", m.Name), trace.SpanKindConsumer,
		tracing.AttrOperation.String("process"),
		tracing.AttrParticipant.String(p.cfg.Name),
		tracing.AttrSagaID.String(m.SagaID),
		tracing.AttrMessageID.String(m.ID),
		tracing.AttrMessageName.String(m.Name),
		tracing.AttrMessageKind.String(string(m.Kind)))
	return ctx, tracing.WithTraceparent(headers, tracing.Traceparent(span)), span
}

// startHeaders are the headers StartSaga passes to outRowFor: the
// traceparent of the span in ctx when tracing is on, none otherwise.
func startHeaders(ctx context.Context) map[string]string {
	if !tracing.Enabled() {
		return nil
	}
	if tp := tracing.FromContext(ctx); tp != "" {
		return map[string]string{envelope.HeaderTraceparent: tp}
	}
	return nil
}
