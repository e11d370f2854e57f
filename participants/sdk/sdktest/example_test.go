package sdktest_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

type notification struct {
	Notification struct {
		Text string `json:"text"`
	} `json:"notification"`
}

// register is what a service exports to wire its handlers.
func register(p *sdk.Participant) {
	sdk.Handle(p, "NOTIFY", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[notification]) (sdk.Result, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO sent (saga_id, text) VALUES (?, ?)`, cmd.SagaID, cmd.Payload.Notification.Text)
		return sdk.NoReply(), err
	})
}

// migrate is the service's own schema.
func migrate(db *sqlx.DB) error {
	_, err := db.Exec(`CREATE TABLE sent (saga_id TEXT NOT NULL, text TEXT NOT NULL)`)
	return err
}

// A handler test: send a command, check the reply and the database, then
// redeliver it and check nothing ran twice.
func Example() {
	testNotify := func(t *testing.T) {
		kit := sdktest.New(t, sdk.Config{Name: "notification"}, register, migrate)

		res := kit.Send(t, "NOTIFY", map[string]any{"notification": map[string]any{"text": "deal executed"}})
		if res.Err != nil || res.DeadLettered || res.Event != "" {
			t.Fatalf("NOTIFY: event %q, err %v, dead lettered %v; want no reply", res.Event, res.Err, res.DeadLettered)
		}
		if again := kit.Redeliver(t); !again.Duplicate {
			t.Fatal("redelivered NOTIFY was not seen as a duplicate")
		}
		var n int
		if err := kit.DB().Get(&n, `SELECT COUNT(*) FROM sent`); err != nil {
			t.Fatal(err)
		}
		if got, want := n, 1; got != want {
			t.Errorf("sent notifications = %d, want %d", got, want)
		}
	}
	_ = testNotify // in a _test.go file: func TestNotify(t *testing.T) { ... }
}
