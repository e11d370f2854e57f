package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Header is the W3C trace-context header and Kafka record header
// (envelope.HeaderTraceparent).
const Header = "traceparent"

// MaxTraceparent bounds a traceparent Parse reads: a version-00 one is 55
// characters; later versions may append fields, not kilobytes.
const MaxTraceparent = 256

// Attribute keys of the spans.
const (
	AttrSagaID      = attribute.Key("saga.id")
	AttrMessageID   = attribute.Key("messaging.message.id")
	AttrMessageName = attribute.Key("saga.message.name")
	AttrMessageKind = attribute.Key("saga.message.kind")
	AttrParticipant = attribute.Key("saga.participant")
	AttrSystem      = attribute.Key("messaging.system")
	AttrTopic       = attribute.Key("messaging.destination.name")
	AttrPartition   = attribute.Key("messaging.destination.partition.id")
	AttrOffset      = attribute.Key("messaging.kafka.offset")
	AttrGroup       = attribute.Key("messaging.consumer.group.name")
	AttrOperation   = attribute.Key("messaging.operation.type")
	AttrRolledBack  = attribute.Key("saga.rolled_back") // the span's work was rolled back and is done again
)

// Parse reads a W3C traceparent into a remote span context: a known
// version (not ff; version 00 exactly 55 characters, a later version's
// further fields after a "-"), lowercase hex, and trace and parent ids
// that are not all zeros. ok is false for anything else, and for a value
// longer than MaxTraceparent. Only the sampled flag is kept.
func Parse(h string) (sc trace.SpanContext, ok bool) {
	if len(h) < 55 || len(h) > MaxTraceparent || h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return trace.SpanContext{}, false
	}
	var ver, flags [1]byte
	var tid trace.TraceID
	var sid trace.SpanID
	if !lowerHex(ver[:], h[:2]) || ver[0] == 0xff || !lowerHex(tid[:], h[3:35]) || !lowerHex(sid[:], h[36:52]) || !lowerHex(flags[:], h[53:55]) {
		return trace.SpanContext{}, false
	}
	if (ver[0] == 0 && len(h) != 55) || (len(h) > 55 && h[55] != '-') {
		return trace.SpanContext{}, false
	}
	sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true})
	return sc, sc.IsValid()
}

// lowerHex decodes s (lowercase hex, two characters a byte) into dst.
func lowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := nibble(s[2*i])
		lo, ok2 := nibble(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Format is the version-00 traceparent of sc ("" if sc is not valid).
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	if sc.IsSampled() {
		b = append(b, "-01"...)
	} else {
		b = append(b, "-00"...)
	}
	return string(b)
}

// Traceparent is the traceparent of span ("" for a span that is not
// valid, e.g. when tracing is off).
func Traceparent(span trace.Span) string { return Format(span.SpanContext()) }

// FromContext is the traceparent of the span in ctx ("" if none).
func FromContext(ctx context.Context) string { return Format(trace.SpanContextFromContext(ctx)) }

// noop is the span Start and StartRemote return when tracing is off.
var noop = trace.SpanFromContext(context.Background())

// Start starts a span named name, a child of the span in ctx (a new trace
// if ctx has none). Off, it returns ctx and a span that records nothing.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	t := tracer()
	if t == nil {
		return ctx, noop
	}
	return t.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// StartRemote starts a span named name whose parent is the traceparent
// parent, received from another process (a record or request header).
// When parent is not a valid traceparent (Parse) the span starts a new
// trace, whatever span ctx holds. Off, it returns ctx and a span that
// records nothing.
func StartRemote(ctx context.Context, parent, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	t := tracer()
	if t == nil {
		return ctx, noop
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(attrs...)}
	if sc, ok := Parse(parent); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	} else {
		opts = append(opts, trace.WithNewRoot())
	}
	return t.Start(ctx, name, opts...)
}

// WithTraceparent returns a copy of headers whose Header is tp (headers
// itself is not changed; nil gives a new map).
func WithTraceparent(headers map[string]string, tp string) map[string]string {
	h := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		h[k] = v
	}
	h[Header] = tp
	return h
}

// End ends span, marking it failed with err (nil: ok).
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Name is a span name made of op and a name that came from a message:
// names longer than 64 bytes or with bytes outside [A-Za-z0-9_.-] are
// replaced by "?" so that a hostile message cannot set span names.
func Name(op, name string) string {
	if name == "" {
		return op
	}
	if len(name) > 64 {
		return op + " ?"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return op + " ?"
		}
	}
	return op + " " + name
}
