package sdktest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

// TestNotify runs the package example's handler for real.
func TestNotify(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "notification"}, register, migrate)
	kit.SetSaga("MANUAL_CREATE_ORDER")
	res := kit.Send(t, "NOTIFY", map[string]any{"notification": map[string]any{"text": "deal executed"}})
	if res.Err != nil || res.DeadLettered || res.Event != "" || len(res.Emitted) != 0 {
		t.Fatalf("NOTIFY: event %q, emitted %d, err %v, dead lettered %v; want nothing emitted", res.Event, len(res.Emitted), res.Err, res.DeadLettered)
	}
	if got, want := res.Command.Saga, "MANUAL_CREATE_ORDER"; got != want {
		t.Errorf("command saga = %q, want %q", got, want)
	}
	again := kit.Redeliver(t)
	if !again.Duplicate || again.Command.ID != res.Command.ID {
		t.Errorf("redelivery: duplicate %v, id %s; want a duplicate of %s", again.Duplicate, again.Command.ID, res.Command.ID)
	}
	var texts []string
	if err := kit.DB().Select(&texts, `SELECT text FROM sent`); err != nil {
		t.Fatal(err)
	}
	if len(texts) != 1 || texts[0] != "deal executed" {
		t.Errorf("sent = %q, want one \"deal executed\"", texts)
	}
	// A handler error is a dead letter the test can see.
	bad := kit.Send(t, "NOTIFY", map[string]any{"notification": "no object"})
	if !bad.DeadLettered || bad.DeadLetter == nil || bad.DeadLetter.Command != "NOTIFY" {
		t.Errorf("malformed NOTIFY: dead lettered %v (%+v), want a NOTIFY dead letter", bad.DeadLettered, bad.DeadLetter)
	}
}

func cashOf(t *testing.T, kit *sdktest.Kit) int {
	t.Helper()
	var c int
	if err := kit.DB().Get(&c, `SELECT cash FROM account`); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRevertOrder runs ExampleKit_Compensate's flow for real.
func TestRevertOrder(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "profile"}, registerOrders, migrateOrders)
	d1 := map[string]any{"deal_id": "d1", "amount": 30}
	approved := kit.Send(t, "APPROVE_ORDER", d1)
	if approved.Event != "ORDER_APPROVED" || cashOf(t, kit) != 70 {
		t.Fatalf("APPROVE_ORDER: event %q cash %d (err %v), want ORDER_APPROVED and 70", approved.Event, cashOf(t, kit), approved.Err)
	}
	reverted := kit.Compensate(t, "REVERT_ORDER", approved.Command, d1)
	if reverted.Event != "ORDER_REVERTED" || reverted.Expired || reverted.Command.Compensates != approved.Command.ID || reverted.Command.SagaID != approved.Command.SagaID {
		t.Fatalf("REVERT_ORDER: event %q expired %v command %+v (err %v), want ORDER_REVERTED compensating %s in its saga", reverted.Event, reverted.Expired, reverted.Command, reverted.Err, approved.Command.ID)
	}
	if again := kit.Redeliver(t); !again.Duplicate || again.Reply == nil || again.Reply.ID != reverted.Reply.ID {
		t.Errorf("REVERT_ORDER redelivered: duplicate %v reply %+v, want the stored reply %s", again.Duplicate, again.Reply, reverted.Reply.ID)
	}
	if got, want := cashOf(t, kit), 100; got != want {
		t.Errorf("cash after revert = %d, want %d (credited back once)", got, want)
	}

	d2 := map[string]any{"deal_id": "d2", "amount": 50}
	late := kit.Command(t, "APPROVE_ORDER", d2)
	if first := kit.Compensate(t, "REVERT_ORDER", late, d2); first.Event != "ORDER_REVERTED" {
		t.Errorf("REVERT_ORDER before its forward command: event %q (err %v), want ORDER_REVERTED (null-safe)", first.Event, first.Err)
	}
	res := kit.SendMessage(t, late)
	if !res.Expired || res.Event != envelope.CommandExpired || !strings.HasPrefix(res.Reason, sdk.ReasonCompensated) || res.Reply.CausationID != late.ID || len(res.Payload) != 0 {
		t.Errorf("APPROVE_ORDER after its compensation: expired %v event %q reason %q reply %+v; want a refusal", res.Expired, res.Event, res.Reason, res.Reply)
	}
	if again := kit.SendMessage(t, late); !again.Duplicate || again.Event != envelope.CommandExpired {
		t.Errorf("refused APPROVE_ORDER sent again: duplicate %v event %q, want the stored refusal", again.Duplicate, again.Event)
	}
	if got, want := cashOf(t, kit), 100; got != want {
		t.Errorf("cash = %d, want %d (the late command had no effect)", got, want)
	}
}

// TestExpired runs ExampleKit_SendWithDeadline's flow for real, with the
// participant's clock pinned (Config.Now).
func TestExpired(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	kit := sdktest.New(t, sdk.Config{Name: "profile", Now: func() time.Time { return now }}, registerOrders, migrateOrders)
	d := map[string]any{"deal_id": "d1", "amount": 30}
	res := kit.SendWithDeadline(t, "APPROVE_ORDER", now.Add(-time.Second), d)
	if want := "deadline 2030-05-06T07:08:08Z passed at 2030-05-06T07:08:09Z"; !res.Expired || res.Event != envelope.CommandExpired || res.Reason != want || res.Attempts != 0 {
		t.Errorf("expired APPROVE_ORDER: expired %v event %q reason %q attempts %d; want %s %q, no attempt", res.Expired, res.Event, res.Reason, res.Attempts, envelope.CommandExpired, want)
	}
	if !res.Command.Deadline.Equal(now.Add(-time.Second)) {
		t.Errorf("command deadline = %v, want %v", res.Command.Deadline, now.Add(-time.Second))
	}
	if again := kit.Redeliver(t); !again.Duplicate || again.Reply == nil || again.Reply.ID != res.Reply.ID {
		t.Errorf("redelivery: duplicate %v reply %+v, want the stored refusal %s", again.Duplicate, again.Reply, res.Reply.ID)
	}
	if got, want := cashOf(t, kit), 100; got != want {
		t.Errorf("cash = %d, want %d (unchanged)", got, want)
	}
	if ok := kit.SendWithDeadline(t, "APPROVE_ORDER", now.Add(time.Second), d); ok.Expired || ok.Event != "ORDER_APPROVED" {
		t.Errorf("APPROVE_ORDER in time: expired %v event %q (err %v), want ORDER_APPROVED", ok.Expired, ok.Event, ok.Err)
	}
	if got, want := cashOf(t, kit), 70; got != want {
		t.Errorf("cash = %d, want %d", got, want)
	}
}
