package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// apiSaga opens one start to the API (PHONE_ORDER_TAKEN, for shop clerks
// and admins) beside a start that only the participant shop may fire.
const apiSaga = `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
keys:
  order_id: order.id
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: PHONE_ORDER_TAKEN, by: api, roles: [shop-clerk, shop-admin], from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
final: [PAID]
`

// An API start fires only a starting transition `by: api`, for a caller
// holding one of its roles; the event is by "api" and the caller is the
// actor of its timeline entry. Everything else is refused and stores
// nothing.
func TestStartOverAPI(t *testing.T) {
	h := newHarness(t, apiSaga)
	ctx := context.Background()
	clerk := &engine.Caller{Subject: "carol", Roles: []string{"shop-clerk"}}
	payload := json.RawMessage(`{"order":{"id":"O-1","amount":"10.00"}}`)

	inst, created, err := h.o.Start(ctx, engine.StartRequest{Saga: "PAY_ORDER", Caller: clerk, By: "shop", Payload: payload})
	if err != nil || !created {
		t.Fatalf("clerk starts PAY_ORDER: created %v, err %v; want created", created, err)
	}
	if inst.State != "PAYING" || inst.Keys["order_id"] != "O-1" {
		t.Errorf("saga = %s keys %v, want PAYING with order_id O-1", inst.State, inst.Keys)
	}
	hist, err := h.st.History(ctx, inst.ID)
	if err != nil || len(hist) != 1 {
		t.Fatalf("history = %+v, %v; want one entry", hist, err)
	}
	if got := hist[0]; got.Event != "PHONE_ORDER_TAKEN" || got.By != "api" || got.Actor != "carol" {
		t.Errorf("start entry = event %s by %s actor %q, want PHONE_ORDER_TAKEN by api, actor carol (the By field of the request is ignored)", got.Event, got.By, got.Actor)
	}
	if got := h.outboxNames(); strings.Join(got, ",") != "CHARGE" {
		t.Errorf("outbox = %v, want one CHARGE", got)
	}

	for _, tc := range []struct {
		name   string
		req    engine.StartRequest
		code   engine.Code
		detail string
	}{
		{"participant's start", engine.StartRequest{Saga: "PAY_ORDER", Event: "ORDER_PLACED", Caller: clerk},
			engine.CodeForbidden, "participant shop sends it on the bus"},
		{"participant's start with By forged", engine.StartRequest{Saga: "PAY_ORDER", Event: "ORDER_PLACED", By: "shop", Caller: clerk},
			engine.CodeForbidden, "not open to the HTTP API"},
		{"MANUAL_CREATE_ORDER opens none", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Caller: clerk},
			engine.CodeForbidden, "REGISTER is sent on the bus by participant deals"},
		{"REGISTER named", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Event: "REGISTER", Caller: &engine.Caller{Subject: "x", AllRoles: true}},
			engine.CodeForbidden, "participant deals"},
		{"moving a saga", engine.StartRequest{Saga: "PAY_ORDER", Event: "CHARGED", Caller: clerk},
			engine.CodeForbidden, "never move one"},
		{"unknown event", engine.StartRequest{Saga: "PAY_ORDER", Event: "NOPE", Caller: clerk}, engine.CodeUnknownEvent, "no event NOPE"},
		{"no roles", engine.StartRequest{Saga: "PAY_ORDER", Caller: &engine.Caller{Subject: "mallory"}},
			engine.CodeForbidden, `needs one of the roles shop-clerk, shop-admin; "mallory" has no roles`},
		{"other roles", engine.StartRequest{Saga: "PAY_ORDER", Caller: &engine.Caller{Subject: "vera", Roles: []string{"saga-viewer"}}},
			engine.CodeForbidden, `"vera" has the roles saga-viewer`},
		{"no subject", engine.StartRequest{Saga: "PAY_ORDER", Caller: &engine.Caller{Roles: []string{"shop-admin"}}}, engine.CodeInvalid, "no subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.outboxNames())
			_, _, err := h.o.Start(ctx, tc.req)
			if engine.ErrorCode(err) != tc.code || !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("Start err = %v, want code %s mentioning %q", err, tc.code, tc.detail)
			}
			if got := len(h.outboxNames()); got != before {
				t.Errorf("outbox grew from %d to %d records after a refused start", before, got)
			}
		})
	}
	page, err := h.st.ListInstances(ctx, engine.SagaFilter{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.Sagas); n != 1 {
		t.Errorf("sagas after the refusals = %d, want only the clerk's one", n)
	}
}

// Idempotency-Keys are scoped to the caller, and the same caller reusing
// a key with a different request is refused with CodeKeyReused.
func TestStartIdempotencyKeyPerCaller(t *testing.T) {
	h := newHarness(t, apiSaga)
	ctx := context.Background()
	alice := &engine.Caller{Subject: "alice", Roles: []string{"shop-clerk"}}
	bob := &engine.Caller{Subject: "bob", Roles: []string{"shop-clerk"}}
	req := func(c *engine.Caller, payload string) engine.StartRequest {
		return engine.StartRequest{Saga: "PAY_ORDER", Caller: c, IdempotencyKey: "order-1", Payload: json.RawMessage(payload)}
	}
	a, created, err := h.o.Start(ctx, req(alice, `{"order":{"id":"A","amount":"1"}}`))
	if err != nil || !created {
		t.Fatalf("alice: created %v, %v", created, err)
	}
	again, created, err := h.o.Start(ctx, req(alice, "{ \"order\" : {\"amount\":\"1\", \"id\":\"A\"} }"))
	if err != nil || created || again.ID != a.ID {
		t.Errorf("alice again, same JSON re-encoded: saga %s created %v err %v; want %s, not created", again.ID, created, err, a.ID)
	}
	b, created, err := h.o.Start(ctx, req(bob, `{"order":{"id":"A","amount":"1"}}`))
	if err != nil || !created || b.ID == a.ID {
		t.Errorf("bob with alice's key: saga %s created %v err %v; want a new saga of his own", b.ID, created, err)
	}
	_, _, err = h.o.Start(ctx, req(alice, `{"order":{"id":"A","amount":"1000"}}`))
	if engine.ErrorCode(err) != engine.CodeKeyReused || !strings.Contains(err.Error(), a.ID) {
		t.Errorf("alice, same key, other payload: err %v, want %s naming saga %s", err, engine.CodeKeyReused, a.ID)
	}
	other := req(alice, `{"order":{"id":"A","amount":"1"}}`)
	other.Version = 1
	if _, _, err := h.o.Start(ctx, other); engine.ErrorCode(err) != engine.CodeKeyReused {
		t.Errorf("alice, same key, version pinned: err %v, want %s", err, engine.CodeKeyReused)
	}
	got, err := h.st.GetInstance(ctx, a.ID)
	if err != nil || !strings.Contains(string(got.Context), `"amount":"1"`) {
		t.Errorf("alice's saga after the refused reuse: %s, %v; want its first payload", got.Context, err)
	}
	if n := len(h.outboxNames()); n != 2 {
		t.Errorf("outbox has %d commands, want 2 (alice's and bob's sagas)", n)
	}
}

// An event from the bus that names the reserved participant api (which
// would fire a start `by: api` without any role) is refused and
// dead-lettered; an operator's replay of it is refused too.
func TestBusEventByAPIRefused(t *testing.T) {
	h := newHarness(t, apiSaga)
	ctx := context.Background()
	forged := event(uuid.NewString(), "PHONE_ORDER_TAKEN", "api", `{"order":{"id":"O-9"}}`)
	forged.Saga = "PAY_ORDER"
	h.handle(t, forged)
	if _, err := h.st.GetInstance(ctx, forged.SagaID); engine.ErrorCode(err) != engine.CodeNotFound {
		t.Errorf("saga of the forged start: err %v, want not found", err)
	}
	if got := h.outboxNames(); len(got) != 0 {
		t.Errorf("outbox = %v after a forged start, want empty", got)
	}
	dls, err := h.st.DeadLetters(ctx, 10, false)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters = %d (%v), want the forged start", len(dls), err)
	}
	if dl := dls[0]; dl.Code != engine.CodeWrongParticipant || !strings.Contains(dl.Reason, `"api" is reserved`) {
		t.Errorf("dead letter %s %q, want %s saying api is reserved", dl.Code, dl.Reason, engine.CodeWrongParticipant)
	}
	if err := h.o.Replay(ctx, dls[0].ID, "olga"); engine.ErrorCode(err) != engine.CodeWrongParticipant {
		t.Errorf("Replay of the forged start: err %v, want %s", err, engine.CodeWrongParticipant)
	}
	if _, err := h.st.GetInstance(ctx, forged.SagaID); engine.ErrorCode(err) != engine.CodeNotFound {
		t.Errorf("saga after the refused replay: err %v, want not found", err)
	}
}
