package e2e

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// An event's traceparent header reaches the command it causes on the
// participant's topic; an event without one gets a new trace, which its
// command carries and the saga keeps.
func TestTraceparentTravelsOverKafka(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be)
		_, st := e.runOrchestrator(t, testenv.Name(t, "sm"), engine.Config{})
		traced, untraced := uuid.NewString(), uuid.NewString()
		rec := scripted.Record(e.eventTopic, register(traced, false))
		rec.Headers[engine.HeaderTraceparent] = tp
		e.publishRaw(t, rec, scripted.Record(e.eventTopic, register(untraced, false)))

		// Read APPROVE_ORDER from the profile topic as a participant would.
		c, err := kafka.NewConsumer(e.kcfg, testenv.Name(t, "profile"), e.topics["PROFILE_TOPIC"])
		if err != nil {
			t.Fatalf("consumer: %v", err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		got := map[string]string{} // saga id → traceparent of its command
		for len(got) < 2 {
			recs, err := c.Fetch(ctx, 10)
			if err != nil {
				t.Fatalf("fetch commands (have %v): %v", got, err)
			}
			for _, r := range recs {
				var m engine.Message
				if err := json.Unmarshal(r.Value, &m); err != nil {
					t.Fatalf("decode command: %v", err)
				}
				if m.Name != "APPROVE_ORDER" {
					t.Errorf("command %s on the profile topic, want APPROVE_ORDER", m.Name)
				}
				got[m.SagaID] = r.Headers[engine.HeaderTraceparent]
			}
		}
		if got[traced] != tp {
			t.Errorf("command of the traced saga has traceparent %q, want the event's %q", got[traced], tp)
		}
		fresh := got[untraced]
		if !engine.ValidTraceparent(fresh) || fresh[3:35] == tp[3:35] {
			t.Errorf("command of the untraced saga has traceparent %q, want a new valid trace", fresh)
		}
		inst, err := st.GetInstance(ctx, untraced)
		if err != nil {
			t.Fatalf("GetInstance: %v", err)
		}
		if inst.Traceparent != fresh {
			t.Errorf("untraced saga keeps traceparent %q, want its command's %q", inst.Traceparent, fresh)
		}
	})
}
