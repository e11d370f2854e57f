package envelope_test

import (
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// A MANUAL_CREATE_ORDER command with its whole context, as the relay
// publishes it and the SDK decodes it.
var (
	benchContext = []byte(`{"deal_context":{"deal_id":"6f1c2c1e-8d7a-4d3e-9a55-0b5b8f6c1a21","user_id":"alice","portfolio_id":"0b5b8f6c-1a21-4d3e-9a55-6f1c2c1e8d7a","side":"buy","instrument":"AAPL","quantity":"10","price":"187.25","amount":"1872.50","currency":"USD","status":"draft","reason":""}}`)
	benchPatch   = []byte(`{"deal_context":{"deal_id":"6f1c2c1e-8d7a-4d3e-9a55-0b5b8f6c1a21","user_id":"alice","portfolio_id":"0b5b8f6c-1a21-4d3e-9a55-6f1c2c1e8d7a","side":"buy","instrument":"AAPL","quantity":"10","price":"187.25","amount":"1872.50","currency":"USD","status":"approved","reason":""}}`)
)

func benchMessage() envelope.Message {
	return envelope.Message{V: 1, ID: "0b5b8f6c-1a21-4d3e-9a55-6f1c2c1e8d7a", SagaID: "6f1c2c1e-8d7a-4d3e-9a55-0b5b8f6c1a21",
		Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2, Kind: envelope.KindCommand, Name: "APPROVE_ORDER", Participant: "profile",
		CausationID: "8d7a6f1c-2c1e-4d3e-9a55-0b5b8f6c1a21", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Attempt: 1, Deadline: time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC), Payload: benchContext}
}

// BenchmarkCodec compares each hand-written path with encoding/json doing
// the same work; the hand-written ones are kept because they pay:
//
//	go test ./engine/envelope -run '^$' -bench Codec -benchmem
func BenchmarkCodec(b *testing.B) {
	m := benchMessage()
	raw := envelope.AppendMessage(nil, &m)
	b.Run("encode/AppendMessage", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = envelope.AppendMessage(make([]byte, 0, 512), &m)
		}
	})
	b.Run("encode/json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/UnmarshalMessage", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x envelope.Message
			if err := envelope.UnmarshalMessage(raw, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x envelope.Message
			if err := json.Unmarshal(raw, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("merge/Merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := envelope.Merge(benchContext, benchPatch); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("merge/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			doc, patch := map[string]json.RawMessage{}, map[string]json.RawMessage{}
			if err := json.Unmarshal(benchContext, &doc); err != nil {
				b.Fatal(err)
			}
			if err := json.Unmarshal(benchPatch, &patch); err != nil {
				b.Fatal(err)
			}
			maps.Copy(doc, patch)
			if _, err := json.Marshal(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lookup/Lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, p := range []string{"deal_context.deal_id", "deal_context.user_id"} {
				if _, found, _ := envelope.Lookup(benchContext, p); !found {
					b.Fatal("not found")
				}
			}
		}
	})
	b.Run("lookup/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(benchContext, &doc); err != nil {
				b.Fatal(err)
			}
			var dc map[string]json.RawMessage
			if err := json.Unmarshal(doc["deal_context"], &dc); err != nil {
				b.Fatal(err)
			}
			if dc["deal_id"] == nil || dc["user_id"] == nil {
				b.Fatal("not found")
			}
		}
	})
}
