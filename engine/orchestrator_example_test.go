package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// ExampleOrchestrator_HandleRecords applies one consumed REGISTER event: the
// saga is created in DRAFT and its APPROVE_ORDER command waits in the outbox
// for the relay.
func ExampleOrchestrator_HandleRecords() {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	defs, _ := definition.LoadDir(sagas.FS)
	cat, _ := engine.NewCatalog(defs...)
	o, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := engine.Message{
		V: engine.EnvelopeVersion, ID: "6f1c1a52-4a39-4d5c-9d57-7f0f7a3a0a01", SagaID: "saga-1",
		Saga: "MANUAL_CREATE_ORDER", Kind: engine.KindEvent, Name: "REGISTER", Participant: "deals",
		OccurredAt: time.Now(), Payload: json.RawMessage(`{"deal_context":{"deal_id":"D-1","user_id":"U-7"}}`),
	}
	raw, _ := json.Marshal(ev)
	rec := engine.Record{Topic: "SAGA_SERVER_TOPIC", Key: ev.SagaID, Value: raw}
	if err := o.HandleRecords(ctx, []engine.Record{rec}); err != nil {
		fmt.Println(err)
		return
	}
	// Delivered again: a duplicate, dropped by the inbox.
	if err := o.HandleRecords(ctx, []engine.Record{rec}); err != nil {
		fmt.Println(err)
		return
	}
	inst, _ := st.GetInstance(ctx, "saga-1")
	backlog, _ := st.OutboxBacklog(ctx)
	fmt.Println(inst.State, inst.Keys["deal_id"], inst.Pending.Name, backlog)
	// Output: DRAFT D-1 APPROVE_ORDER 1
}

// A participant answering a command keeps the command's trace: it copies
// the traceparent header to its event, or starts a trace when there is
// none (or it is malformed).
func ExampleValidTraceparent() {
	incoming := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, h := range []string{incoming, "", "not-a-trace"} {
		out := h
		if !engine.ValidTraceparent(out) {
			out = engine.NewTraceparent()
		}
		fmt.Println(out == incoming, engine.ValidTraceparent(out))
	}
	// Output:
	// true true
	// false true
	// false true
}
