package engine_test

import (
	"fmt"
	"log"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// A saga definition is parsed, compiled once, and then every incoming event
// is checked and applied with Apply.
func ExampleModel_Apply() {
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	m, err := engine.Compile(defs[0])
	if err != nil {
		log.Fatal(err)
	}

	step, err := m.Apply("", "REGISTER", "deals") // "" = no saga yet
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(step.To, step.Send.Name, "→", step.Send.Topic)
	fmt.Println("timeout:", m.Timeout(step.To).After, m.Timeout(step.To).Event.Value)

	_, err = m.Apply(step.To, "DEAL_UPDATED", "deals")
	fmt.Println(engine.ErrorCode(err))
	fmt.Println(err)
	// Output:
	// DRAFT APPROVE_ORDER → PROFILE_TOPIC
	// timeout: 10m0s APPROVAL_TIMED_OUT
	// illegal-transition
	// apply DEAL_UPDATED to MANUAL_CREATE_ORDER v1: event DEAL_UPDATED is not allowed in state DRAFT; allowed in DRAFT: ORDER_APPROVED (profile), ORDER_REJECTED (profile), PROFILE_UNAVAILABLE (engine), APPROVAL_TIMED_OUT (engine)
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

	_, err = catalog.Get("MANUAL_CREATE_ORDER", 9)
	fmt.Println(engine.ErrorCode(err))
	// Output:
	// MANUAL_CREATE_ORDER v1 [DRAFT APPROVED REJECTED NOTIFICATION FAILED]
	// [DEAL_UPDATED (deals) DEALS_UNAVAILABLE (engine)]
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
