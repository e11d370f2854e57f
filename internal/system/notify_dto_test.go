package system_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
)

// TestNotifyCarriesTheDTO: on the whole system (PostgreSQL + Kafka, SQLite
// + the embedded broker), the NOTIFY of MANUAL_CREATE_ORDER v4 that goes
// over the broker is {"notificationDTO": {...}} built by the saga's
// mapping, not the saga context: read from NOTIFICATION_TOPIC, it has that
// one key and exactly the DTO's fields (no cash, no context keys), with
// the deal's values; notification stores the right message for alice from
// it, and nobody parks anything.
func TestNotifyCarriesTheDTO(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			w := newCancelWorld(ctx, t, be) // nobody paused: alice's buy of 2 ACME at 100.00 is executed
			waitFor(ctx, t, "the saga ends in NOTIFICATION", func() (bool, error) {
				inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, w.deal.SagaID)
				return err == nil && inst.State == "NOTIFICATION", nil
			})
			w.settled(ctx, t)
			inst := w.saga(ctx, t)
			if inst.SagaVersion != 4 || inst.Status != engine.StatusCompleted {
				t.Fatalf("saga: v%d %s, want v4 completed", inst.SagaVersion, inst.Status)
			}

			payload := w.notifyPayload(ctx, t)
			var top map[string]json.RawMessage
			if err := json.Unmarshal(payload, &top); err != nil {
				t.Fatalf("NOTIFY payload %s: %v", payload, err)
			}
			if keys := sortedKeys(top); !slices.Equal(keys, []string{notification.DTOKey}) {
				t.Fatalf("NOTIFY payload keys = %v, want only %s (not the context: %s)", keys, notification.DTOKey, payload)
			}
			var dto map[string]any
			if err := json.Unmarshal(top[notification.DTOKey], &dto); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"user_id": "alice", "deal_id": w.deal.ID, "portfolio_id": w.portfolio, "status": "executed",
				"reason": "", "side": "buy", "instrument": "ACME", "currency": "USD", "reverted": false}
			for k, v := range want {
				if dto[k] != v {
					t.Errorf("notificationDTO.%s = %#v, want %#v", k, dto[k], v)
				}
			}
			for k, v := range map[string]string{"quantity": "2", "price": "100", "amount": "200"} {
				s, ok := dto[k].(string)
				if d, err := decimal.NewFromString(s); !ok || err != nil || !d.Equal(decimal.RequireFromString(v)) {
					t.Errorf("notificationDTO.%s = %#v, want the decimal string %s", k, dto[k], v)
				}
			}
			wantKeys := []string{"amount", "currency", "deal_id", "instrument", "portfolio_id", "price", "quantity", "reason", "reverted", "side", "status", "user_id"}
			if keys := sortedKeys(dto); !slices.Equal(keys, wantKeys) {
				t.Errorf("notificationDTO keys = %v, want %v", keys, wantKeys)
			}
			// The context has more than the DTO shows (deal_context at least):
			// none of its top-level keys travels to notification.
			var sagaCtx map[string]json.RawMessage
			if err := json.Unmarshal(inst.Context, &sagaCtx); err != nil {
				t.Fatal(err)
			}
			for k := range sagaCtx {
				if _, ok := top[k]; ok {
					t.Errorf("NOTIFY carries the context key %q", k)
				}
			}
			if _, ok := sagaCtx["deal_context"]; !ok {
				t.Errorf("saga context %s has no deal_context: the check above proves nothing", inst.Context)
			}

			notes := w.notifications(ctx, t)
			if len(notes) != 1 || notes[0].Status != "executed" || notes[0].Text != "Your buy of 2 ACME at 100.00 USD was executed" {
				t.Errorf("notifications of the deal = %+v, want one executed %q", notes, "Your buy of 2 ACME at 100.00 USD was executed")
			}
			c, err := w.sys.Client("alice")
			if err != nil {
				t.Fatal(err)
			}
			mine, err := c.Notifications(ctx)
			if err != nil || len(mine) != 1 || mine[0].DealID != w.deal.ID {
				t.Errorf("alice's GET /notifications = %+v (err %v), want the one of deal %s", mine, err, w.deal.ID)
			}
		})
	}
}

// notifyPayload reads the NOTIFY of the deal's saga from the notification
// command topic, from its start, with a group of its own.
func (w *cancelWorld) notifyPayload(ctx context.Context, t *testing.T) json.RawMessage {
	t.Helper()
	cons, err := kafka.NewConsumer(w.sys.Kafka("test-notify-reader"),
		testenv.Name(t, "notify-reader"), w.sys.Topics.Notification)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for {
		recs, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("read %s for the NOTIFY of saga %s: %v", w.sys.Topics.Notification, w.deal.SagaID, err)
		}
		for _, r := range recs {
			var m engine.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("record on %s: %v", w.sys.Topics.Notification, err)
			}
			if m.SagaID == w.deal.SagaID && m.Name == notification.CommandNotify {
				return m.Payload
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
