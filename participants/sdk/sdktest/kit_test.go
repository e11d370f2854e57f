package sdktest_test

import (
	"testing"

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
