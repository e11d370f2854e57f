package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"

	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// W3C trace context (https://www.w3.org/TR/trace-context/): an event's
// traceparent header travels to the commands it causes. With tracing off
// (internal/tracing) the engine records no spans, so it forwards the header
// unchanged (the commands are children of the span that sent the event); an
// event without a valid one starts a new trace, so that every saga's
// messages can be correlated. With tracing on, each event of a batch gets a
// "handle <EVENT>" span (traceBatch), a child of the event's traceparent
// (the consumer's "receive" span), and the commands it causes carry that
// span's traceparent instead.

// noTrace is traceBatch's end function when tracing is off.
func noTrace(error) {}

// traceBatch starts a "handle <EVENT>" span for each inbound event of a
// batch, a child of the record's traceparent (a new trace if the record had
// no valid one), and makes the span's traceparent the one the event's
// commands and instance carry. The returned function ends the spans once
// the batch is committed (err nil) or failed. Off, it changes nothing.
func traceBatch(ins []inbound) (end func(err error)) {
	if !tracing.Enabled() {
		return noTrace
	}
	spans := make([]trace.Span, len(ins))
	for i := range ins {
		in := &ins[i]
		parent := in.rec.Headers[HeaderTraceparent]
		if !ValidTraceparent(parent) {
			parent = "" // traceOf made in.trace up: no span of that id exists
		}
		name := "handle"
		if in.bad == nil {
			name = tracing.Name("handle", in.msg.Name)
		}
		_, span := tracing.StartRemote(context.Background(), parent, name, trace.SpanKindConsumer,
			tracing.AttrOperation.String("process"),
			tracing.AttrTopic.String(in.rec.Topic),
			tracing.AttrPartition.String(strconv.Itoa(int(in.rec.Partition))),
			tracing.AttrOffset.Int64(in.rec.Offset),
			tracing.AttrSagaID.String(in.msg.SagaID),
			tracing.AttrMessageID.String(in.msg.ID),
			tracing.AttrMessageName.String(in.msg.Name),
			tracing.AttrParticipant.String(in.msg.Participant))
		if in.bad != nil {
			span.RecordError(in.bad)
		}
		if tp := tracing.Traceparent(span); tp != "" {
			in.trace = tp
		}
		spans[i] = span
	}
	return func(err error) {
		for _, s := range spans {
			tracing.End(s, err)
		}
	}
}

// traceparentLen is the length of a version-00 traceparent:
// 2 + 1 + 32 + 1 + 16 + 1 + 2.
const traceparentLen = 55

// ValidTraceparent reports whether h is a W3C traceparent the engine
// forwards: version 00 (or a later version's first 55 characters followed by
// "-"), lowercase hex, and a trace id and parent id that are not all zeros.
func ValidTraceparent(h string) bool {
	if len(h) < traceparentLen || (len(h) > traceparentLen && (h[:2] == "00" || h[traceparentLen] != '-')) {
		return false
	}
	if h[2] != '-' || h[35] != '-' || h[52] != '-' || h[:2] == "ff" {
		return false
	}
	hexOK := func(s string) (nonZero bool, ok bool) {
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '0':
			case c >= '1' && c <= '9', c >= 'a' && c <= 'f':
				nonZero = true
			default:
				return false, false
			}
		}
		return nonZero, true
	}
	_, vOK := hexOK(h[:2])
	traceNZ, tOK := hexOK(h[3:35])
	spanNZ, sOK := hexOK(h[36:52])
	_, fOK := hexOK(h[53:55])
	return vOK && tOK && sOK && fOK && traceNZ && spanNZ
}

// NewTraceparent starts a new trace: version 00, a random 16-byte trace id,
// a random 8-byte parent (span) id and the sampled flag 01.
func NewTraceparent() string {
	var id [24]byte
	for {
		_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
		if !allZero(id[:16]) && !allZero(id[16:]) {
			break
		}
	}
	b := make([]byte, 0, traceparentLen)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, id[:16])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[16:])
	b = append(b, "-01"...)
	return string(b)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// traceOf returns h if it is a valid traceparent (a later version's is
// forwarded as version 00, as the specification asks), and a new trace
// otherwise.
func traceOf(h string) string {
	switch {
	case !ValidTraceparent(h):
		return NewTraceparent()
	case h[:2] != "00":
		return "00" + h[2:traceparentLen]
	}
	return h
}
