package scripted

import (
	"encoding/json"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
)

func TestAnswer(t *testing.T) {
	cmd := func(name string, attempt int, payload string) engine.Message {
		return engine.Message{V: 1, ID: "c-" + name, SagaID: "s1", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1,
			Kind: engine.KindCommand, Name: name, Participant: "profile", Attempt: attempt, Payload: json.RawMessage(payload)}
	}
	tests := []struct {
		name string
		cfg  Config
		cmd  engine.Message
		want []string // event names of the replies
	}{
		{"approve", Config{}, cmd("APPROVE_ORDER", 1, `{"deal_context":{}}`), []string{"ORDER_APPROVED"}},
		{"reject", Config{}, cmd("APPROVE_ORDER", 1, `{"deal_context":{"reject":true}}`), []string{"ORDER_REJECTED"}},
		{"unreadable payload is rejected", Config{}, cmd("APPROVE_ORDER", 1, `{"deal_context":[1]}`), []string{"ORDER_REJECTED"}},
		{"deal", Config{}, cmd("REJECT_DEAL", 1, `{}`), []string{"DEAL_UPDATED"}},
		{"notify says nothing", Config{}, cmd("NOTIFY", 1, `{}`), nil},
		{"revert", Config{}, cmd("REVERT_ORDER", 1, `{}`), []string{"ORDER_REVERTED"}},
		{"fail deal", Config{}, cmd("FAIL_DEAL", 1, `{}`), []string{"DEAL_FAILED"}},
		{"silent compensation", Config{Silent: map[string]bool{"REVERT_ORDER": true}}, cmd("REVERT_ORDER", 2, `{}`), nil},
		{"dropped first send", Config{DropFirst: map[string]int{"APPROVE_DEAL": 1}}, cmd("APPROVE_DEAL", 1, `{}`), nil},
		{"answered second send", Config{DropFirst: map[string]int{"APPROVE_DEAL": 1}}, cmd("APPROVE_DEAL", 2, `{}`), []string{"DEAL_UPDATED"}},
		{"silent", Config{Silent: map[string]bool{"APPROVE_DEAL": true}}, cmd("APPROVE_DEAL", 3, `{}`), nil},
		{"duplicated", Config{Duplicate: true}, cmd("APPROVE_DEAL", 1, `{}`), []string{"DEAL_UPDATED", "DEAL_UPDATED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.EventTopic = "EV"
			tt.cfg.Rules = ManualCreateOrder()
			p := &Participant{cfg: tt.cfg}
			recs := p.answer(tt.cmd)
			if len(recs) != len(tt.want) {
				t.Fatalf("got %d replies, want %v", len(recs), tt.want)
			}
			for i, r := range recs {
				var ev engine.Message
				if err := json.Unmarshal(r.Value, &ev); err != nil {
					t.Fatal(err)
				}
				if ev.Name != tt.want[i] || ev.Kind != engine.KindEvent || ev.CausationID != tt.cmd.ID || ev.SagaID != "s1" || r.Topic != "EV" || r.Key != "s1" {
					t.Errorf("reply %d = %+v on %s, want %s answering %s", i, ev, r.Topic, tt.want[i], tt.cmd.ID)
				}
				// The same command always gets the same reply id.
				again := p.answer(tt.cmd)
				var ev2 engine.Message
				_ = json.Unmarshal(again[i].Value, &ev2)
				if ev2.ID != ev.ID {
					t.Errorf("reply ids differ for one command: %s and %s", ev.ID, ev2.ID)
				}
			}
		})
	}
}
