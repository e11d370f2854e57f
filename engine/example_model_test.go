package engine_test

import (
	"fmt"
	"io/fs"
	"log"
	"os"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// A saga definition is parsed, compiled once, and then every incoming event
// is checked and applied with Apply.
func ExampleModel_Apply() {
	data, err := fs.ReadFile(sagas.FS, "manual_create_order.yaml")
	if err != nil {
		log.Fatal(err)
	}
	def, problems := definition.Parse("manual_create_order.yaml", data)
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := engine.Compile(def)
	if err != nil {
		log.Fatal(err)
	}

	step, err := m.Apply("", "REGISTER", "deals") // "" = no saga yet
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(step.To, step.Send.Name, "→", step.Send.Topic)
	fmt.Println("timeout:", m.Timeout(step.To).After, m.Timeout(step.To).Event.Value)
	fmt.Println("undo:", step.Undo.Command, "for REGISTER,", step.Send.Compensate.Command, "for", step.Send.Name)

	_, err = m.Apply(step.To, "DEAL_UPDATED", "deals")
	fmt.Println(engine.ErrorCode(err))
	fmt.Println(err)
	// Output:
	// DRAFT APPROVE_ORDER → PROFILE_TOPIC
	// timeout: 10m0s APPROVAL_TIMED_OUT
	// undo: FAIL_DEAL for REGISTER, REVERT_ORDER for APPROVE_ORDER
	// illegal-transition
	// apply DEAL_UPDATED to MANUAL_CREATE_ORDER v4: event DEAL_UPDATED is not allowed in state DRAFT; allowed in DRAFT: ORDER_APPROVED (profile), ORDER_REJECTED (profile), PROFILE_UNAVAILABLE (engine), APPROVAL_TIMED_OUT (engine), CANCEL_REQUESTED (deals), ABORT (engine)
}

// The daemon loads every shipped definition into a Catalog and finds the
// model an event names; version 0 means the newest.
func ExampleLoadCatalog() {
	catalog, problems := engine.LoadCatalog(sagas.FS)
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := catalog.Get("MANUAL_CREATE_ORDER", 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m, m.States())
	fmt.Println(m.Allowed("APPROVED"))

	// Sagas started on version 1 finish on it: it stays loaded.
	old, err := catalog.Get("MANUAL_CREATE_ORDER", 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(old, "compensable:", old.Compensable(), "/", m, "compensable:", m.Compensable())

	_, err = catalog.Get("MANUAL_CREATE_ORDER", 9)
	fmt.Println(engine.ErrorCode(err))
	// Output:
	// MANUAL_CREATE_ORDER v4 [DRAFT APPROVED REJECTED NOTIFICATION FAILED CANCELLED]
	// [DEAL_UPDATED (deals) DEALS_UNAVAILABLE (engine) CANCEL_REQUESTED (deals) ABORT (engine)]
	// MANUAL_CREATE_ORDER v1 compensable: false / MANUAL_CREATE_ORDER v4 compensable: true
	// unknown-saga
}

// A starting transition `by: api` may be fired over saga-machine's HTTP API
// by a caller holding one of its roles; every other start belongs to a
// participant and is refused over HTTP.
func ExampleModel_StartRoles() {
	src := `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: PHONE_ORDER_TAKEN, by: api, roles: [shop-clerk, shop-admin], from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
final: [PAID]
`
	def, problems := definition.Parse("pay_order.yaml", []byte(src))
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := engine.Compile(def)
	if err != nil {
		log.Fatal(err)
	}
	for _, event := range m.StartEvents() {
		roles, ok := m.StartRoles(event)
		fmt.Println(event, "over HTTP:", ok, roles)
	}
	step, err := m.Apply("", "PHONE_ORDER_TAKEN", definition.API)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(step.By, "→", step.To, step.Send.Name)
	// Output:
	// ORDER_PLACED over HTTP: false []
	// PHONE_ORDER_TAKEN over HTTP: true [shop-clerk shop-admin]
	// api → PAYING CHARGE
}

// When a saga enters a failed state, the compensations of the steps it took
// are sent one at a time, newest first, each after the done event of the
// previous one; then the failing transition's own command.
func ExamplePlan() {
	data, err := os.ReadFile("definition/testdata/good/compensated_order.yaml")
	if err != nil {
		log.Fatal(err)
	}
	def, problems := definition.Parse("compensated_order.yaml", data)
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := engine.Compile(def)
	if err != nil {
		log.Fatal(err)
	}

	// The saga takes three steps; the third fails it.
	var taken []engine.Undo // what the orchestrator keeps in the instance
	state := ""
	var failing engine.Step
	for i, ev := range [][2]string{{"REGISTER", "deals"}, {"ORDER_APPROVED", "profile"}, {"DEALS_UNAVAILABLE", definition.Engine}} {
		step, err := m.Apply(state, ev[0], ev[1])
		if err != nil {
			log.Fatal(err)
		}
		taken = append(taken, step.Undos(fmt.Sprintf("event-%d", i+1), fmt.Sprintf("command-%d", i+1))...)
		state, failing = step.To, step
	}
	fmt.Println("entered", state, "failed:", failing.Failed)

	for plan := engine.Plan(taken); len(plan) > 0; plan = engine.Plan(taken) {
		c := plan[0].Compensation
		fmt.Printf("send %s to %s (undoes %s), wait for %s\n", c.Command, c.Topic, plan[0].Of, c.Done)
		// The participant answers; the done event names the compensation.
		done, _ := m.CompensationByDone(c.Participant, c.Done)
		for i := range taken {
			if taken[i].Compensation == done && taken[i].Of == plan[0].Of {
				taken[i].Compensated = true
			}
		}
	}
	fmt.Println("then send", failing.Send.Name, "to", failing.Send.Topic)
	// Output:
	// entered FAILED failed: true
	// send REVERT_ORDER to PROFILE_TOPIC (undoes command-1), wait for ORDER_REVERTED
	// send FAIL_DEAL to DEALS_TOPIC (undoes event-1), wait for DEAL_FAILED
	// then send NOTIFY_FAILURE to NOTIFICATION_TOPIC
}
