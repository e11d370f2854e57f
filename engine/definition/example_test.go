package definition_test

import (
	"fmt"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

func ExampleParse() {
	src := `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
states:
  PAYING:
    timeout: { after: 10m, event: PAYMENT_TIMED_OUT }
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
  - { on: PAYMENT_TIMED_OUT, by: engine, from: [PAYING], to: CANCELLED }
final: [PAID]
failed: [CANCELLED]
`
	def, problems := definition.Parse("pay_order.yaml", []byte(src))
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	fmt.Printf("%s v%d, PAYING times out after %v\n", def.Saga, def.Version, def.States["PAYING"].Timeout.After)
	for _, t := range def.Transitions {
		from := "(start)"
		if !t.Starts() {
			var names []string
			for _, f := range t.From {
				names = append(names, f.Value)
			}
			from = strings.Join(names, "|")
		}
		fmt.Printf("line %d: %s --%s by %s--> %s\n", t.Pos.Line, from, t.On.Value, t.By.Value, t.To.Value)
	}
	// Output:
	// PAY_ORDER v1, PAYING times out after 10m0s
	// line 10: (start) --ORDER_PLACED by shop--> PAYING
	// line 11: PAYING --CHARGED by bank--> PAID
	// line 12: PAYING --PAYMENT_TIMED_OUT by engine--> CANCELLED
}

// Parse reports every problem, each at its place in the file, sorted.
func ExampleParse_problems() {
	src := `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PAYING, send: { to: bnak, command: CHARGE } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAYED, descripton: The bank took the money. }
final: [PAID]
`
	_, problems := definition.Parse("pay_order.yaml", []byte(src))
	for _, p := range problems {
		fmt.Println(p)
	}
	// Output:
	// pay_order.yaml:7:69: send.to: participant `bnak` is not declared under participants; did you mean `bank`?
	// pay_order.yaml:8:50: state PAYED is a dead end: no transition leaves it and it is not listed in final or failed (did you mean PAID?)
	// pay_order.yaml:8:57: unknown key `descripton` in the transition; did you mean `description`?
	// pay_order.yaml:9:9: state PAID is never entered: no transition has to: PAID (did you mean PAYED?)
}

func ExampleLoadDir() {
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	for _, def := range defs {
		fmt.Printf("%s: %s v%d, %d transitions\n", def.File, def.Saga, def.Version, len(def.Transitions))
	}
	// Output:
	// basket_order.v1.yaml: BASKET_ORDER v1, 11 transitions
	// basket_order.v2.yaml: BASKET_ORDER v2, 12 transitions
	// basket_order.v3.yaml: BASKET_ORDER v3, 12 transitions
	// basket_order.yaml: BASKET_ORDER v4, 13 transitions
	// manual_create_order.v1.yaml: MANUAL_CREATE_ORDER v1, 7 transitions
	// manual_create_order.v2.yaml: MANUAL_CREATE_ORDER v2, 7 transitions
	// manual_create_order.v3.yaml: MANUAL_CREATE_ORDER v3, 8 transitions
	// manual_create_order.yaml: MANUAL_CREATE_ORDER v4, 9 transitions
}

// An event's contract: its payload must satisfy a JSON Schema.
func ExampleSchema_Validate() {
	src := `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
events:
  ORDER_PLACED:
    schema: { type: object, required: [order], properties: { order: { type: object, required: [amount] } } }
    writes: [order]
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PLACED }
final: [PLACED]
`
	def, problems := definition.Parse("pay_order.yaml", []byte(src))
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	ev := def.Events["ORDER_PLACED"]
	fmt.Println(ev.Writes[0].Value, ev.Schema.Validate([]byte(`{"order": {"amount": 12}}`)))
	fmt.Println(ev.Schema.Validate([]byte(`{"order": {}}`)))
	// Output:
	// order <nil>
	// at /order: missing property 'amount'
}
