package engine

import (
	"crypto/rand"
	"encoding/hex"
)

// W3C trace context (https://www.w3.org/TR/trace-context/): an event's
// traceparent header travels to the commands it causes. The engine records
// no spans of its own, so it forwards the header unchanged (the commands are
// children of the span that sent the event); an event without a valid one
// starts a new trace, so that every saga's messages can be correlated.

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
