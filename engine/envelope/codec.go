package envelope

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendMessage appends the JSON envelope of m to dst: the document
// json.Marshal(m) gives, with the same members in the same order, written
// without reflection (the orchestrator, the stores and the SDK encode a
// message per event or command). Two differences in form, none in meaning:
// strings are not HTML-escaped, and Payload is copied as it is (it must be
// valid JSON, as json.Marshal would check; the callers' payloads always
// are: they come from json.Marshal, json.Valid or Merge).
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(m.V), 10)
	dst = appendField(dst, `,"id":`, m.ID)
	dst = appendField(dst, `,"saga_id":`, m.SagaID)
	dst = appendField(dst, `,"saga":`, m.Saga)
	if m.SagaVersion != 0 {
		dst = append(dst, `,"saga_version":`...)
		dst = strconv.AppendInt(dst, int64(m.SagaVersion), 10)
	}
	dst = appendField(dst, `,"kind":`, string(m.Kind))
	dst = appendField(dst, `,"name":`, m.Name)
	dst = appendField(dst, `,"participant":`, m.Participant)
	if m.CausationID != "" {
		dst = appendField(dst, `,"causation_id":`, m.CausationID)
	}
	dst = append(dst, `,"occurred_at":`...)
	dst = appendTime(dst, m.OccurredAt)
	if m.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = strconv.AppendInt(dst, int64(m.Attempt), 10)
	}
	if m.Reason != "" {
		dst = appendField(dst, `,"reason":`, m.Reason)
	}
	if !m.Deadline.IsZero() {
		dst = append(dst, `,"deadline":`...)
		dst = appendTime(dst, m.Deadline)
	}
	if m.Compensates != "" {
		dst = appendField(dst, `,"compensates":`, m.Compensates)
	}
	if len(m.Payload) > 0 {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, m.Payload...)
	}
	return append(dst, '}')
}

func appendField(dst []byte, name, v string) []byte {
	return AppendJSONString(append(dst, name...), v)
}

// AppendJSONString appends s as a JSON string. Printable ASCII is copied;
// any other string is encoded by encoding/json. The stores use it for the
// JSON they build by hand.
func AppendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds), or as its Go text for a year outside 0-9999, which
// MarshalJSON refuses.
func appendTime(dst []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		return AppendJSONString(dst, t.String())
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// UnmarshalMessage decodes a JSON envelope into m with the result of
// json.Unmarshal(data, m): the envelopes the engine and the SDK write
// (known members, plain strings, integers, an object payload) are decoded
// without reflection; anything else (escapes, unknown or differently
// cased members, nulls, malformed input) goes to json.Unmarshal, which
// also gives the errors.
func UnmarshalMessage(data []byte, m *Message) error {
	tmp := *m
	if fastUnmarshal(data, &tmp) {
		*m = tmp
		return nil
	}
	return json.Unmarshal(data, m)
}

// fastUnmarshal decodes data into m and reports whether it could; when it
// could not, m is partly written and must be discarded.
func fastUnmarshal(data []byte, m *Message) bool {
	var buf [16]member
	ms, ok := scanObject(buf[:0], data)
	if !ok {
		return false
	}
	for _, f := range ms {
		v := f.val
		var ok bool
		switch string(f.key) {
		case "v":
			m.V, ok = plainInt(v)
		case "id":
			m.ID, ok = plainString(v)
		case "saga_id":
			m.SagaID, ok = plainString(v)
		case "saga":
			m.Saga, ok = plainString(v)
		case "saga_version":
			m.SagaVersion, ok = plainInt(v)
		case "kind":
			var s string
			s, ok = plainString(v)
			m.Kind = Kind(s)
		case "name":
			m.Name, ok = plainString(v)
		case "participant":
			m.Participant, ok = plainString(v)
		case "causation_id":
			m.CausationID, ok = plainString(v)
		case "occurred_at":
			ok = len(v) > 0 && v[0] == '"' && m.OccurredAt.UnmarshalJSON(v) == nil
		case "attempt":
			m.Attempt, ok = plainInt(v)
		case "reason":
			m.Reason, ok = plainString(v)
		case "deadline":
			ok = len(v) > 0 && v[0] == '"' && m.Deadline.UnmarshalJSON(v) == nil
		case "compensates":
			m.Compensates, ok = plainString(v)
		case "payload":
			ok = len(v) > 0 && v[0] != 'n' && json.Valid(v)
			m.Payload = append(json.RawMessage(nil), v...)
		}
		if !ok {
			return false
		}
	}
	return true
}

// plainString decodes a JSON string without escapes or control characters
// whose bytes are valid UTF-8.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	ascii := true
	for _, c := range body {
		if c < 0x20 || c == '\\' || c == '"' {
			return "", false
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(body) {
		return "", false
	}
	return string(body), true
}

// plainInt decodes a JSON integer (no fraction or exponent) that fits an int.
func plainInt(v []byte) (int, bool) {
	s := v
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	if len(s) == 0 || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if v[0] == '-' {
		n = -n
	}
	return n, true
}
