package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// FuzzUnmarshalMessage decodes every input with UnmarshalMessage and with
// encoding/json: both must fail, or both succeed with the same message.
func FuzzUnmarshalMessage(f *testing.F) {
	m := benchMessage()
	f.Add(envelope.AppendMessage(nil, &m))
	for _, s := range []string{
		`{"v":1,"id":"e-1","saga_id":"s-1","saga":"S","kind":"event","name":"GO","participant":"p","occurred_at":"2026-01-02T03:04:05.123456789+03:00","payload":{"a":[1,{"b":"}"}]}}`,
		`{"v":1,"id":"c-2","saga_id":"s","saga":"S","kind":"command","name":"UNDO","participant":"p","occurred_at":"2026-01-02T03:04:05Z","attempt":1,"deadline":"2026-01-02T03:05:07.5Z","compensates":"c-1"}`,
		`{"v":1,"id":"a\"b"}`, `{"v":1,"ID":"upper"}`, `{"v":null,"payload":null}`, `{"v":1.0}`, `{"v":-0}`, `{"v":1}{"v":2}`,
		`{"v":1,"id":"x","id":"y"}`, `[1]`, ``, "{\"id\":\"bad \xff utf8\"}", `{"occurred_at":"2026-01-02T03:04:05Z","occurred_at":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got, want envelope.Message
		gotErr := envelope.UnmarshalMessage(data, &got)
		wantErr := json.Unmarshal(data, &want)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("UnmarshalMessage(%q) err = %v, encoding/json err = %v", data, gotErr, wantErr)
		}
		if gotErr == nil && !sameMessage(got, want) {
			t.Fatalf("UnmarshalMessage(%q) = %+v, encoding/json = %+v", data, got, want)
		}
	})
}

// FuzzAppendMessage encodes messages built from the inputs with
// AppendMessage: the result must decode (with encoding/json) to what
// json.Marshal's output decodes to, and UnmarshalMessage must read the
// message back.
func FuzzAppendMessage(f *testing.F) {
	f.Add(1, "c-1", "s-1", "MANUAL_CREATE_ORDER", 2, "command", "APPROVE_ORDER", "profile", "e-1", int64(1767323045123456789), 3, "", int64(0), "", []byte(`{"deal_context":{"deal_id":"D"}}`))
	f.Add(1, "quote \" back \\ tab \t", "café ✓", "<b>&", 0, "event", "X", "p", "", int64(-62135596800), 0, "line\nbreak \u2028", int64(1), "c-0", []byte(`{}`))
	f.Add(0, "bad \xff", "", "", -1, "", "", "", "", int64(0), -5, "\x00", int64(-1), "", []byte(nil))
	f.Fuzz(func(t *testing.T, v int, id, sagaID, saga string, version int, kind, name, participant, causation string,
		at int64, attempt int, reason string, deadline int64, compensates string, payload []byte) {
		if len(payload) > 0 && !json.Valid(payload) {
			return // callers give AppendMessage valid payloads only
		}
		m := envelope.Message{V: v, ID: id, SagaID: sagaID, Saga: saga, SagaVersion: version, Kind: envelope.Kind(kind),
			Name: name, Participant: participant, CausationID: causation, OccurredAt: time.Unix(0, at).UTC(),
			Attempt: attempt, Reason: reason, Compensates: compensates, Payload: payload}
		if deadline != 0 {
			m.Deadline = time.Unix(deadline, deadline%1e9).In(time.FixedZone("", int(deadline%50400)))
		}
		got := envelope.AppendMessage(nil, &m)
		want, err := json.Marshal(&m)
		if err != nil {
			return // a time json.Marshal refuses (year outside 0-9999): AppendMessage writes its Go text
		}
		var g, w any
		if err := decodeJSON(got, &g); err != nil {
			t.Fatalf("AppendMessage(%+v) wrote invalid JSON %q: %v", m, got, err)
		}
		if err := decodeJSON(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("AppendMessage = %s, json.Marshal = %s", got, want)
		}
		var back, stdBack envelope.Message
		if err := envelope.UnmarshalMessage(got, &back); err != nil {
			t.Fatalf("UnmarshalMessage(AppendMessage(m)): %v", err)
		}
		if err := json.Unmarshal(want, &stdBack); err != nil {
			t.Fatal(err)
		}
		if !sameMessage(back, stdBack) {
			t.Fatalf("read back %+v, encoding/json reads %+v", back, stdBack)
		}
	})
}

// sameMessage compares messages, times by instant and payloads as JSON
// values (encoding/json compacts a RawMessage it marshals).
func sameMessage(a, b envelope.Message) bool {
	if !a.OccurredAt.Equal(b.OccurredAt) || !a.Deadline.Equal(b.Deadline) || a.OccurredAt.IsZero() != b.OccurredAt.IsZero() {
		return false
	}
	if !sameJSON(a.Payload, b.Payload) {
		return false
	}
	a.OccurredAt, b.OccurredAt, a.Deadline, b.Deadline, a.Payload, b.Payload = time.Time{}, time.Time{}, time.Time{}, time.Time{}, nil, nil
	return reflect.DeepEqual(a, b)
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if decodeJSON(a, &x) != nil || decodeJSON(b, &y) != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(x, y)
}

// decodeJSON decodes one JSON value into v keeping numbers as their text
// (json.Number): a payload may hold numbers no float64 holds, such as
// 1e1000, which is valid JSON that both encoders write as it is.
func decodeJSON(b []byte, v *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}
