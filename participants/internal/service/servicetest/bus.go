package servicetest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Dispatch sends one command (fresh message id) of saga sagaID to p through
// sdk.Participant.Dispatch, the code path of the Kafka intake, on whatever
// database p uses, and returns the outcome. It fails the test if the record
// could not be made durable.
func Dispatch(tb testing.TB, p *sdk.Participant, command, sagaID string, payload any) sdk.Outcome {
	tb.Helper()
	return DispatchMessage(tb, p, Command(tb, p, command, sagaID, payload))
}

// Command builds, without sending it, the envelope Dispatch sends: a
// MANUAL_CREATE_ORDER command to p with a fresh id. Set its Compensates
// (a compensation), Deadline or ID, then send it with DispatchMessage, as
// often as you like (the same id each time: a redelivery or a re-send).
func Command(tb testing.TB, p *sdk.Participant, command, sagaID string, payload any) engine.Message {
	tb.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		tb.Fatalf("encode %s payload: %v", command, err)
	}
	return engine.Message{
		V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
		Kind: engine.KindCommand, Name: command, Participant: p.Name(), OccurredAt: time.Now().UTC(), Attempt: 1, Payload: raw,
	}
}

// Compensation builds the compensation command `command` of forward (a
// message from Command, sent or not): same saga, a fresh id, Compensates
// set to forward's id.
func Compensation(tb testing.TB, p *sdk.Participant, command string, forward engine.Message, payload any) engine.Message {
	tb.Helper()
	msg := Command(tb, p, command, forward.SagaID, payload)
	msg.Compensates = forward.ID
	return msg
}

// DispatchMessage sends msg to p as Dispatch does.
func DispatchMessage(tb testing.TB, p *sdk.Participant, msg engine.Message) sdk.Outcome {
	tb.Helper()
	body, err := json.Marshal(msg)
	if err != nil {
		tb.Fatalf("encode %s: %v", msg.Name, err)
	}
	out, err := p.Dispatch(context.Background(), sdk.Record{
		Topic: p.Config().CommandTopic, Key: msg.SagaID, Value: body,
		Headers: map[string]string{engine.HeaderKind: string(engine.KindCommand)},
	})
	if err != nil {
		tb.Fatalf("dispatch %s: %v", msg.Name, err)
	}
	return out
}

// Flush relays p's outbox by hand and returns the messages it held, in order.
func Flush(tb testing.TB, p *sdk.Participant) []engine.Message {
	tb.Helper()
	var out []engine.Message
	publish := func(_ context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			var m engine.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	}
	for {
		n, err := p.Flush(context.Background(), publish)
		if err != nil {
			tb.Fatalf("relay the outbox of %s: %v", p.Name(), err)
		}
		if n == 0 {
			return out
		}
	}
}
