package envelope_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// AppendMessage writes what json.Marshal writes, member for member, and the
// result decodes to the same message.
func TestAppendMessage(t *testing.T) {
	at := time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.FixedZone("UTC+3", 3*3600))
	tests := []struct {
		name string
		m    envelope.Message
	}{
		{"zero", envelope.Message{}},
		{"command", envelope.Message{V: 1, ID: "c-1", SagaID: "s-1", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2, Kind: envelope.KindCommand,
			Name: "APPROVE_ORDER", Participant: "profile", CausationID: "e-1", OccurredAt: at, Attempt: 3,
			Payload: json.RawMessage(`{"deal_context":{"deal_id":"D-1","amount":"1.5"}}`)}},
		{"event with reason", envelope.Message{V: 1, ID: "e-2", SagaID: "s-1", Saga: "S", Kind: envelope.KindEvent, Name: "ORDER_REJECTED",
			Participant: "profile", OccurredAt: at.UTC(), Reason: "balance too low: 10 < 20"}},
		{"strings that need escaping", envelope.Message{V: 1, ID: "quote \" backslash \\ tab \t", Saga: "café ✓", Reason: "line\nbreak \u2028 <b>&"}},
		{"empty payload", envelope.Message{V: 1, ID: "x", Payload: json.RawMessage{}}},
		{"command with deadline", envelope.Message{V: 1, ID: "c-2", SagaID: "s-1", Saga: "S", Kind: envelope.KindCommand, Name: "APPROVE_ORDER",
			Participant: "profile", OccurredAt: at, Attempt: 1, Deadline: at.Add(62 * time.Second)}},
		{"compensation", envelope.Message{V: 1, ID: "c-3", SagaID: "s-1", Saga: "S", Kind: envelope.KindCommand, Name: "REVERT_ORDER",
			Participant: "profile", OccurredAt: at, Attempt: 2, Compensates: "c-2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := envelope.AppendMessage(nil, &tc.m)
			want, err := json.Marshal(&tc.m)
			if err != nil {
				t.Fatal(err)
			}
			var g, w map[string]any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("AppendMessage wrote invalid JSON %s: %v", got, err)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("AppendMessage = %s, want %s", got, want)
			}
			var back envelope.Message
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !back.OccurredAt.Equal(tc.m.OccurredAt) {
				t.Errorf("occurred_at decodes to %v, want %v", back.OccurredAt, tc.m.OccurredAt)
			}
		})
	}
}

// UnmarshalMessage gives what json.Unmarshal gives, for the envelopes it
// decodes itself and for those it hands over.
func TestUnmarshalMessage(t *testing.T) {
	inputs := []string{
		`{"v":1,"id":"e-1","saga_id":"s-1","saga":"S","kind":"event","name":"GO","participant":"p","occurred_at":"2026-01-02T03:04:05.123456789+03:00","payload":{"a":[1,{"b":"}"}]}}`,
		`{"v":1,"id":"c-1","saga_id":"s","saga":"S","saga_version":2,"kind":"command","name":"DO","participant":"p","causation_id":"e","occurred_at":"2026-01-02T03:04:05Z","attempt":3,"reason":"r"}`,
		`{"v":1,"id":"c-2","saga_id":"s","saga":"S","kind":"command","name":"UNDO","participant":"p","occurred_at":"2026-01-02T03:04:05Z","attempt":1,"deadline":"2026-01-02T03:05:07.5Z","compensates":"c-1"}`,
		`{"v":1,"id":"c-3","saga_id":"s","saga":"S","kind":"command","name":"DO","participant":"p","occurred_at":"2026-01-02T03:04:05Z","deadline":"not a time"}`,
		` { "v" : 1 , "id" : "café" , "payload" : { } } `,
		`{"v":1,"id":"a\"b"}`,                 // escapes
		`{"v":1,"ID":"upper"}`,                // differently cased member
		`{"v":1,"extra":{"x":1},"id":"x"}`,    // unknown member
		`{"v":null,"id":null,"payload":null}`, // nulls
		`{"v":1.0}`,                           // not an integer
		`{"v":01}`,                            // not JSON
		`{"v":-3,"attempt":-0}`,               // negative numbers
		`{"v":99999999999999999999}`,          // too large
		`{"v":"1"}`,                           // wrong type
		`{"id":1}`,                            // wrong type
		`{"occurred_at":"yesterday"}`,         // bad time
		`{"occurred_at":1}`,                   // bad time
		`{"payload":{"a":}}`,                  // invalid payload
		`{"payload":[1,2]}`,                   // valid non-object payload
		`{"v":1}{"v":2}`,                      // trailing data
		`{"v":1,"id":"x","id":"y"}`,           // repeated member
		`[1]`,                                 // not an object
		``,                                    // empty
		"{\"id\":\"tab\there\"}",              // control character
		"{\"id\":\"bad \xff utf8\"}",          // invalid UTF-8
		`{"v":1,"kind":"command","name":"N","participant":"p","saga":"S","saga_id":"s","id":"i","occurred_at":"2026-01-02T03:04:05Z"}`,
	}
	for _, in := range inputs {
		var got, want envelope.Message
		gotErr := envelope.UnmarshalMessage([]byte(in), &got)
		wantErr := json.Unmarshal([]byte(in), &want)
		if (gotErr != nil) != (wantErr != nil) {
			t.Errorf("UnmarshalMessage(%s) err = %v, want %v", in, gotErr, wantErr)
			continue
		}
		if gotErr == nil && (!reflect.DeepEqual(got, want) || !got.OccurredAt.Equal(want.OccurredAt)) {
			t.Errorf("UnmarshalMessage(%s) = %+v, want %+v", in, got, want)
		}
	}
	// Round trip through AppendMessage.
	m := envelope.Message{V: 1, ID: "c", SagaID: "s", Saga: "S", SagaVersion: 4, Kind: envelope.KindCommand, Name: "N", Participant: "p",
		OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Attempt: 2, Payload: json.RawMessage(`{"k":"v"}`)}
	var back envelope.Message
	if err := envelope.UnmarshalMessage(envelope.AppendMessage(nil, &m), &back); err != nil || !reflect.DeepEqual(back, m) {
		t.Errorf("round trip = %+v, %v; want %+v", back, err, m)
	}
}
