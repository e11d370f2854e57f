package envelope_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// AppendMessage and UnmarshalMessage are the envelope's JSON, written and
// read without reflection.
func ExampleAppendMessage() {
	m := envelope.Message{V: envelope.Version, ID: "3c5d8f0e-1b2a-4c3d-8e9f-0a1b2c3d4e5f",
		SagaID: "9d1e2f3a-4b5c-4d6e-8f7a-1b2c3d4e5f60", Saga: "MANUAL_CREATE_ORDER", Kind: envelope.KindCommand,
		Name: "APPROVE_ORDER", Participant: "profile", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Attempt: 1, Payload: json.RawMessage(`{"deal_context":{"deal_id":"D-1"}}`)}
	b := envelope.AppendMessage(nil, &m)
	fmt.Println(string(b))
	var back envelope.Message
	if err := envelope.UnmarshalMessage(b, &back); err != nil {
		fmt.Println(err)
	}
	fmt.Println(back.Name, back.Attempt, string(back.Payload))
	// Output:
	// {"v":1,"id":"3c5d8f0e-1b2a-4c3d-8e9f-0a1b2c3d4e5f","saga_id":"9d1e2f3a-4b5c-4d6e-8f7a-1b2c3d4e5f60","saga":"MANUAL_CREATE_ORDER","kind":"command","name":"APPROVE_ORDER","participant":"profile","occurred_at":"2026-01-02T03:04:05Z","attempt":1,"payload":{"deal_context":{"deal_id":"D-1"}}}
	// APPROVE_ORDER 1 {"deal_context":{"deal_id":"D-1"}}
}

// NewID gives ids that sort in the order they were made, so that rows
// keyed by them in one batch share the last pages of their indexes.
func ExampleNewID() {
	first, second := envelope.NewID(), envelope.NewID()
	fmt.Println(len(first), first[14:15], first < second)
	// Output: 36 7 true
}
