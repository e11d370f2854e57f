package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// fuzzPayload is a command payload shaped like the services' (a nested
// object, strings, numbers, a list).
type fuzzPayload struct {
	DealContext struct {
		DealID   string `json:"deal_id"`
		Quantity string `json:"quantity"`
	} `json:"deal_context"`
	Count int      `json:"count"`
	Tags  []string `json:"tags"`
}

// FuzzDecodeCommand feeds arbitrary record values (and keys) to the SDK's
// command decoder, as the bus may deliver them, and then the accepted ones
// to a typed handler's payload decoding. Properties:
//
//   - it never panics;
//   - a refusal is a CodeInvalid error (the command is parked as a dead
//     letter at once, not retried) that keeps the record's key as the saga
//     id when the envelope has none, so the dead letter names its saga;
//   - an accepted command is a valid version-1 command addressed to this
//     participant (or to none), and it is what encoding/json reads, what
//     the engine's fast decoder envelope.UnmarshalMessage reads, and what
//     the decoder reads again after the engine's encoder
//     (envelope.AppendMessage) wrote it: saga-machine and the participant
//     agree on every command they exchange;
//   - a payload that does not fit the handler's type is a Permanent error
//     (parked), never a panic or an endless retry.
func FuzzDecodeCommand(f *testing.F) {
	valid := `{"v":1,"id":"c-1","saga_id":"s-1","saga":"MANUAL_CREATE_ORDER","saga_version":2,"kind":"command","name":"APPROVE_ORDER","participant":"profile","causation_id":"e-1","occurred_at":"2026-01-02T03:04:05.123456789Z","attempt":1,"deadline":"2026-01-02T03:05:05Z","payload":{"deal_context":{"deal_id":"D-1","quantity":"10"},"count":3,"tags":["a"]}}`
	for _, s := range []string{
		valid,
		`{"v":1,"id":"c-2","saga_id":"s-1","kind":"command","name":"REVERT_ORDER","compensates":"c-1","payload":{}}`,
		`{"v":1,"id":"c-3","saga_id":"s-1","kind":"command","name":"NOTIFY","participant":"notification"}`,
		`{"v":1,"id":"c-4","saga_id":"s-1","kind":"event","name":"ORDER_APPROVED"}`,
		`{"v":2,"id":"c-5","saga_id":"s-1","kind":"command","name":"APPROVE_ORDER"}`,
		`{"v":1,"id":"c-6","saga_id":"s-1","kind":"command","name":"approve_order"}`,
		`{"v":1,"id":"c-7","saga_id":"s-1","kind":"command","name":"X","compensates":"c-7"}`,
		`{"v":1,"id":"c-8","saga_id":"s-1","kind":"command","name":"APPROVE_ORDER","payload":{"count":"three"}}`,
		`{"v":1,"id":"c-9","saga_id":"s-1","kind":"command","name":"APPROVE_ORDER","payload":[1,2]}`,
		`{"v":1,"id":"c-10","saga_id":"","kind":"command","name":"APPROVE_ORDER"}`,
		`{"v":1,"id":"c-11","saga_id":"s","kind":"command","name":"A","id":"dup"}`,
		`{"v":1.5}`, `{"v":"1"}`, `null`, `[]`, `{}`, ``, `{"v":1,"id":"c","saga_id":"s","kind":"command","name":"A"} trailing`,
		"{\"v\":1,\"id\":\"bad \xff\",\"saga_id\":\"s\",\"kind\":\"command\",\"name\":\"A\"}",
	} {
		f.Add([]byte(s), "s-key")
	}
	f.Add([]byte(valid), "")
	p := &Participant{cfg: Config{Name: "profile"}, handlers: map[string]handlerFunc{}}
	var got fuzzPayload
	Handle(p, "APPROVE_ORDER", func(_ context.Context, _ *sqlx.Tx, cmd Command[fuzzPayload]) (Result, error) {
		got = cmd.Payload
		return NoReply(), nil
	})
	f.Fuzz(func(t *testing.T, value []byte, key string) {
		msg, err := p.decode(kafka.Record{Key: key, Value: value})
		if err != nil {
			if code := errs.ErrorCode(err); code != errs.CodeInvalid {
				t.Fatalf("decode(%q): error code %q, want %q (parked at once): %v", value, code, errs.CodeInvalid, err)
			}
			if key != "" && msg.SagaID == "" {
				t.Fatalf("decode(%q) with key %q: the refused command has no saga id (its dead letter would name no saga)", value, key)
			}
			return
		}
		switch {
		case msg.V != envelope.Version, msg.ID == "", msg.SagaID == "", msg.Kind != envelope.KindCommand, !validName(msg.Name),
			msg.Participant != "" && msg.Participant != "profile", msg.Compensates != "" && msg.Compensates == msg.ID:
			t.Fatalf("decode(%q) accepted an invalid command: %+v", value, msg)
		}
		var std envelope.Message
		if err := json.Unmarshal(value, &std); err != nil || !reflect.DeepEqual(msg, std) {
			t.Fatalf("decode(%q) = %+v; encoding/json reads %+v (err %v)", value, msg, std, err)
		}
		var fast envelope.Message
		if err := envelope.UnmarshalMessage(value, &fast); err != nil || !sameCommand(fast, msg) {
			t.Fatalf("decode(%q) = %+v; the engine's UnmarshalMessage reads %+v (err %v)", value, msg, fast, err)
		}
		again, err := p.decode(kafka.Record{Key: key, Value: envelope.AppendMessage(nil, &msg)})
		if err != nil || !sameCommand(again, msg) {
			t.Fatalf("decode(AppendMessage(%+v)) = %+v, %v; want the same command", msg, again, err)
		}
		if msg.Name != "APPROVE_ORDER" {
			return
		}
		h, _ := p.handler(msg.Name)
		got = fuzzPayload{}
		_, herr := h(context.Background(), nil, msg)
		var want fuzzPayload
		werr := json.Unmarshal(msg.Payload, &want)
		switch {
		case len(msg.Payload) == 0:
			if herr != nil {
				t.Fatalf("no payload: handler error %v", herr)
			}
		case werr != nil:
			if !IsPermanent(herr) {
				t.Fatalf("payload %s does not fit %T (%v) but the handler's error %v is not Permanent", msg.Payload, want, werr, herr)
			}
		case herr != nil || !reflect.DeepEqual(got, want):
			t.Fatalf("payload %s: handler got %+v (err %v), encoding/json reads %+v", msg.Payload, got, herr, want)
		}
	})
}

// sameCommand compares two decoded envelopes: the payload as JSON text
// without insignificant space, times by instant and offset.
func sameCommand(a, b envelope.Message) bool {
	var pa, pb bytes.Buffer
	if len(a.Payload) > 0 && json.Compact(&pa, a.Payload) != nil || len(b.Payload) > 0 && json.Compact(&pb, b.Payload) != nil {
		return false
	}
	if !bytes.Equal(pa.Bytes(), pb.Bytes()) {
		return false
	}
	_, oa := a.OccurredAt.Zone()
	_, ob := b.OccurredAt.Zone()
	_, da := a.Deadline.Zone()
	_, db := b.Deadline.Zone()
	if !a.OccurredAt.Equal(b.OccurredAt) || oa != ob || !a.Deadline.Equal(b.Deadline) || da != db {
		return false
	}
	a.Payload, b.Payload = nil, nil
	a.OccurredAt, a.Deadline = b.OccurredAt, b.Deadline
	return reflect.DeepEqual(a, b)
}
