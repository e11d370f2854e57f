package engine_test

import (
	"encoding/json"
	"fmt"
	"log"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// shipOrder uses the constructs of the language's second version: a
// decision on the payload, a payload mapping, an event contract and a
// parallel step.
const shipOrder = `saga: SHIP_ORDER
version: 1
participants:
  shop:      { topic: SHOP_TOPIC }
  bank:      { topic: BANK_TOPIC }
  warehouse: { topic: WAREHOUSE_TOPIC }
events:
  ORDER_PLACED:
    schema: { type: object, required: [order], properties: { order: { type: object, required: [id, amount] } } }
    writes: [order]
transitions:
  - on: ORDER_PLACED
    by: shop
    from: []
    when: event.order.amount > 1000
    to: REVIEW
    send: { to: shop, command: REVIEW_ORDER, payload: { id: context.order.id } }
  - on: ORDER_PLACED
    by: shop
    from: []
    to: PREPARING
    send:
      - { to: bank, command: CHARGE, ok: CHARGED, fail: DECLINED, compensate: { command: REFUND, done: REFUNDED } }
      - { to: warehouse, command: PICK, for_each: context.order.lines, payload: { line: item }, ok: PICKED }
    join: { policy: all, then: PREPARED, else: PREPARATION_FAILED }
  - { on: REVIEWED, by: shop, from: [REVIEW], to: SHIPPED }
  - { on: PREPARED, by: engine, from: [PREPARING], to: SHIPPED }
  - { on: PREPARATION_FAILED, by: engine, from: [PREPARING], to: FAILED }
final: [SHIPPED]
failed: [FAILED]
`

func shipOrderModel() *engine.Model {
	def, problems := definition.Parse("ship_order.yaml", []byte(shipOrder))
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := engine.Compile(def)
	if err != nil {
		log.Fatal(err)
	}
	return m
}

// ApplyWith checks the event's contract and decides on its payload; Apply
// cannot decide without it.
func ExampleModel_ApplyWith() {
	m := shipOrderModel()
	big := json.RawMessage(`{"order": {"id": "o-1", "amount": 5000}}`)
	step, err := m.ApplyWith("", "ORDER_PLACED", "shop", engine.Data{SagaID: "s-1", Payload: big})
	if err != nil {
		log.Fatal(err)
	}
	// The command's payload is built from the context the payload joined.
	payload, err := step.Send.BuildPayload("s-1", big)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(step.To, "when", step.Condition, "→", step.Send.Name, string(payload))

	small := json.RawMessage(`{"order": {"id": "o-2", "amount": 20, "lines": ["a", "b"]}}`)
	step, _ = m.ApplyWith("", "ORDER_PLACED", "shop", engine.Data{Payload: small})
	fmt.Println(step.To, "(default), parallel step", step.Parallel.ID, "join", step.Parallel.Policy)

	_, err = m.ApplyWith("", "ORDER_PLACED", "shop", engine.Data{Payload: json.RawMessage(`{"order": {"id": "o-3"}, "note": "x"}`)})
	fmt.Println(engine.ErrorCode(err), err)

	_, err = m.Apply("", "ORDER_PLACED", "shop")
	fmt.Println(err)
	// Output:
	// REVIEW when event.order.amount > 1000 → REVIEW_ORDER {"id":"o-1"}
	// PREPARING (default), parallel step 0 join all
	// invalid check the contract of ORDER_PLACED: ORDER_PLACED may write only order into the saga context, not note
	// apply ORDER_PLACED to SHIP_ORDER v1: event ORDER_PLACED in state (none) is a decision on data: its conditions need the payload and the context (ApplyWith): a decision on data needs the payload and the context
}

// The runtime sends a parallel step's commands (Expand gives a fan-out's),
// counts the replies of each branch and asks the join's outcome.
func ExampleParallel_Outcome() {
	m := shipOrderModel()
	ctx := json.RawMessage(`{"order": {"id": "o-2", "amount": 20, "lines": ["a", "b"]}}`)
	step, _ := m.ApplyWith("", "ORDER_PLACED", "shop", engine.Data{Payload: ctx})
	p := step.Parallel
	total := 0
	for _, b := range p.Branches {
		payloads, err := b.Command.Expand("s-2", ctx)
		if err != nil {
			log.Fatal(err)
		}
		total += len(payloads)
		fmt.Println(b.Command.Name, "→", b.Command.Participant, len(payloads), "command(s)")
	}
	b, ok, found := p.Reply("bank", "DECLINED")
	fmt.Println("DECLINED answers", b.Command.Name, "ok:", ok, "found:", found)
	fmt.Println(p.Outcome(total, 2, 0), p.Outcome(total, 3, 0), p.Outcome(total, 2, 1), "→ raise", p.Else)
	// Output:
	// CHARGE → bank 1 command(s)
	// PICK → warehouse 2 command(s)
	// DECLINED answers CHARGE ok: false found: true
	// pending done failed → raise PREPARATION_FAILED
}

// A migration moves a running saga to another version of its definition;
// PlanMigration says how, without changing anything.
func ExamplePlanMigration() {
	v1, v2 := shipOrderModel(), func() *engine.Model {
		def, _ := definition.Parse("ship_order.yaml", []byte(shipOrder))
		def.Version = 2
		m, err := engine.Compile(def)
		if err != nil {
			log.Fatal(err)
		}
		return m
	}()
	mig, problems := definition.ParseMigration("ship_order.1-2.yaml", []byte(`migration: SHIP_ORDER
from: 1
to: 2
states: { REVIEW: REVIEW, PREPARING: PREPARING }
context: '{"order": context.order, "migrated": true}'
`))
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	inst := engine.Instance{ID: "s-3", Saga: "SHIP_ORDER", SagaVersion: 1, State: "REVIEW", Status: engine.StatusRunning,
		Context: json.RawMessage(`{"order": {"id": "o-3"}}`)}
	out, err := engine.PlanMigration(v1, v2, mig, inst)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.Saga, out.SagaVersion, out.State, string(out.Context))
	// Output:
	// SHIP_ORDER 2 REVIEW {"migrated":true,"order":{"id":"o-3"}}
}
