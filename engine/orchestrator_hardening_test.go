package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// An event from the bus that names the engine's reserved participant is
// dead-lettered (it could otherwise fire a saga's timeout or exhausted
// transition); an operator cannot replay it either, nor can Start use it.
// Only an event the engine raised itself may be replayed with it.
func TestEngineParticipantIsReservedForTheEngine(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := uuid.NewString()
	h.handle(t, event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D1"}}`))
	forged := event(id, "PROFILE_UNAVAILABLE", "engine", "")
	h.handle(t, forged)
	if got := h.inst(t, id); got.State != "DRAFT" {
		t.Fatalf("state after a forged engine event = %s, want DRAFT (unchanged)", got.State)
	}
	dls, _ := h.st.DeadLetters(ctx, 10, false)
	if len(dls) != 1 {
		t.Fatalf("dead letters = %+v, want the forged event", dls)
	}
	dl := dls[0]
	if dl.Code != engine.CodeWrongParticipant || dl.MessageID != forged.ID || !strings.Contains(dl.Reason, `"engine" is reserved`) {
		t.Errorf("dead letter code %s message %s reason %q, want %s for %s saying the participant is reserved",
			dl.Code, dl.MessageID, dl.Reason, engine.CodeWrongParticipant, forged.ID)
	}
	hist, _ := h.st.History(ctx, id)
	if last := hist[len(hist)-1]; last.Kind != engine.EntryRefused || last.Code != engine.CodeWrongParticipant {
		t.Errorf("last history entry = %+v, want a refused entry with code %s", last, engine.CodeWrongParticipant)
	}
	if err := h.o.Replay(ctx, dl.ID, "alice"); engine.ErrorCode(err) != engine.CodeWrongParticipant {
		t.Errorf("Replay of the forged event: err = %v, want code %s", err, engine.CodeWrongParticipant)
	}
	if got := h.inst(t, id); got.State != "DRAFT" {
		t.Errorf("state after the refused replay = %s, want DRAFT", got.State)
	}
	if _, _, err := h.o.Start(ctx, engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", By: "engine"}); engine.ErrorCode(err) != engine.CodeWrongParticipant {
		t.Errorf("Start by engine: err = %v, want code %s", err, engine.CodeWrongParticipant)
	}

	// A dead letter of an event the engine raised itself replays.
	raised := event(id, "PROFILE_UNAVAILABLE", "engine", "")
	raw := h.record(t, raised).Value
	if err := h.st.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		return tx.AddDeadLetters(ctx, []engine.DeadLetter{{MessageID: raised.ID, SagaID: id, Topic: engine.EngineTopic, Partition: -1,
			Offset: -1, Raw: raw, Code: engine.CodeIllegal, Reason: "test", CreatedAt: h.clock.Now()}})
	}); err != nil {
		t.Fatalf("park an engine-raised event: %v", err)
	}
	dls, _ = h.st.DeadLetters(ctx, 10, false)
	if err := h.o.Replay(ctx, dls[0].ID, "alice"); err != nil {
		t.Fatalf("Replay of an engine-raised event: %v", err)
	}
	if got := h.inst(t, id); got.State != "FAILED" {
		t.Errorf("state after replaying the engine's event = %s, want FAILED", got.State)
	}
}

func TestValidTraceparent(t *testing.T) {
	tests := []struct {
		h    string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true}, // a later version may add fields
		{"", false},
		{"garbage", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false}, // version 00 has exactly 4 fields
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},       // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},       // zero parent id
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},       // upper case
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},       // forbidden version
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false},
	}
	for _, tc := range tests {
		if got := engine.ValidTraceparent(tc.h); got != tc.want {
			t.Errorf("ValidTraceparent(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
	a, b := engine.NewTraceparent(), engine.NewTraceparent()
	if !engine.ValidTraceparent(a) || !strings.HasPrefix(a, "00-") || !strings.HasSuffix(a, "-01") || a[3:35] == b[3:35] {
		t.Errorf("NewTraceparent() = %q then %q, want valid version-00 sampled traces with different trace ids", a, b)
	}
}

// An event's traceparent travels to the commands it causes, through the
// outbox to the published record's header; an event without one (or with
// a malformed one) starts a new trace. Re-sent commands and events the
// engine raises stay in the saga's trace.
func TestTraceparentTravelsToCommands(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name    string
		headers map[string]string
		want    string // the trace the commands carry; "" for a new one
	}{
		{"valid header", map[string]string{engine.HeaderTraceparent: tp}, tp},
		{"later version forwarded as 00", map[string]string{engine.HeaderTraceparent: "01" + tp[2:] + "-x"}, tp},
		{"no header", nil, ""},
		{"malformed header", map[string]string{engine.HeaderTraceparent: "not-a-trace"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fast)
			ctx := context.Background()
			id := uuid.NewString()
			rec := h.record(t, fastEvent(id, "GO"))
			rec.Headers = tc.headers
			if err := h.o.HandleRecords(ctx, []engine.Record{rec}); err != nil {
				t.Fatalf("HandleRecords: %v", err)
			}
			inst := h.inst(t, id)
			trace := inst.Traceparent
			if !engine.ValidTraceparent(trace) {
				t.Fatalf("saga traceparent %q is not a valid one", trace)
			}
			if tc.want != "" && trace != tc.want {
				t.Errorf("saga traceparent = %q, want %q", trace, tc.want)
			}
			if tc.want == "" && trace[3:35] == tp[3:35] {
				t.Errorf("saga traceparent = %q, want a new trace", trace)
			}
			// A retry re-sends the command in the same trace.
			h.clock.Advance(inst.TimerAt.Sub(h.clock.Now()))
			if _, err := h.o.FireTimers(ctx); err != nil {
				t.Fatalf("FireTimers: %v", err)
			}
			if _, err := h.o.RelayOnce(ctx); err != nil {
				t.Fatalf("RelayOnce: %v", err)
			}
			if len(h.pub.recs) != 2 {
				t.Fatalf("published %d records, want the command and its re-send", len(h.pub.recs))
			}
			for i, r := range h.pub.recs {
				if got := r.Headers[engine.HeaderTraceparent]; got != trace {
					t.Errorf("published record %d (%s) traceparent = %q, want the saga's %q", i, r.Headers[engine.HeaderName], got, trace)
				}
			}
			if got := h.inst(t, id).Traceparent; got != trace {
				t.Errorf("saga traceparent after the retry = %q, want %q", got, trace)
			}
		})
	}
	// Two events without a header start two different traces.
	h := newHarness(t)
	a, b := uuid.NewString(), uuid.NewString()
	h.handle(t, event(a, "REGISTER", "deals", ""), event(b, "REGISTER", "deals", ""))
	if ta, tb := h.inst(t, a).Traceparent, h.inst(t, b).Traceparent; ta[3:35] == tb[3:35] {
		t.Errorf("two sagas started without a trace share trace id %s", ta[3:35])
	}
}

// Inbox records older than the retention are pruned: the message ids are
// forgotten, newer ones stay; Run prunes at once when it starts.
func TestPrune(t *testing.T) {
	h := newHarness(t)
	h.reconfigure(func(c *engine.Config) { c.InboxRetention = 24 * time.Hour })
	ctx := context.Background()
	old := event(uuid.NewString(), "REGISTER", "deals", "")
	h.handle(t, old)
	h.clock.Advance(23 * time.Hour)
	fresh := event(uuid.NewString(), "REGISTER", "deals", "")
	h.handle(t, fresh)
	if n, err := h.o.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("Prune within the retention = %d, %v; want 0, nil", n, err)
	}
	h.clock.Advance(2 * time.Hour)
	if n, err := h.o.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want the 1 record older than a day", n, err)
	}
	oldKept, freshKept := h.st.inInbox(t, old.ID), h.st.inInbox(t, fresh.ID)
	if oldKept || !freshKept {
		t.Errorf("inbox keeps old %v fresh %v, want only the fresh one", oldKept, freshKept)
	}

	_, purgesBefore := h.st.counts()
	c := &fakeConsumer{done: make(chan struct{})}
	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- h.o.Run(runCtx, c) }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, n := h.st.counts(); n > purgesBefore {
			break
		}
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, n := h.st.counts(); n <= purgesBefore {
		t.Errorf("Run did not purge the inbox when it started")
	}

	// A negative retention keeps everything.
	h.reconfigure(func(c *engine.Config) { c.InboxRetention = -1 })
	h.clock.Advance(1000 * time.Hour)
	if n, err := h.o.Prune(ctx); err != nil || n != 0 {
		t.Errorf("Prune with a negative retention = %d, %v; want 0, nil", n, err)
	}
	if !h.st.inInbox(t, fresh.ID) {
		t.Errorf("a negative retention purged the inbox")
	}
}

// TestPruneSagas: with SagaRetention, PruneSagas removes a saga that
// finished longer ago than the retention, with its timeline; a saga still
// running, however old, and one that finished within the retention stay.
// Without a retention nothing is removed; a negative one, or one on a
// store that cannot remove sagas, is refused by New.
func TestPruneSagas(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	done, running := uuid.NewString(), uuid.NewString()
	h.handle(t, event(done, "REGISTER", "deals", `{"deal_context":{"deal_id":"D-1"}}`), event(running, "REGISTER", "deals", ""))
	h.handle(t, event(done, "ORDER_APPROVED", "profile", ""))
	h.handle(t, event(done, "DEAL_UPDATED", "deals", ""))
	if in := h.inst(t, done); in.Status != engine.StatusCompleted {
		t.Fatalf("saga %s: %s, want completed", done, in.Status)
	}
	h.clock.Advance(48 * time.Hour)
	if n, err := h.o.PruneSagas(ctx); err != nil || n != 0 {
		t.Fatalf("PruneSagas without a retention = %d, %v; want 0", n, err)
	}
	h.reconfigure(func(c *engine.Config) { c.SagaRetention = 72 * time.Hour })
	if n, err := h.o.PruneSagas(ctx); err != nil || n != 0 {
		t.Fatalf("PruneSagas within the retention = %d, %v; want 0", n, err)
	}
	h.clock.Advance(25 * time.Hour)
	if n, err := h.o.PruneSagas(ctx); err != nil || n != 1 {
		t.Fatalf("PruneSagas past the retention = %d, %v; want the finished saga", n, err)
	}
	if _, err := h.st.GetInstance(ctx, done); engine.ErrorCode(err) != engine.CodeNotFound {
		t.Errorf("the finished saga: err %v, want it removed", err)
	}
	if hist, err := h.st.History(ctx, done); err != nil || len(hist) != 0 {
		t.Errorf("the finished saga's timeline: %d entries, %v; want none", len(hist), err)
	}
	if in := h.inst(t, running); in.Status != engine.StatusRunning {
		t.Errorf("the running saga: %s, want it kept, running", in.Status)
	}

	for _, tc := range []struct {
		name string
		cfg  engine.Config
		st   engine.Store
	}{
		{"negative retention", engine.Config{SagaRetention: -time.Hour}, h.st},
		{"a store that cannot remove sagas", engine.Config{SagaRetention: time.Hour}, struct{ engine.Store }{h.st}},
	} {
		if _, err := engine.New(tc.cfg, h.cat, tc.st, h.pub); engine.ErrorCode(err) != engine.CodeInvalid {
			t.Errorf("%s: New err %v, want invalid", tc.name, err)
		}
	}
}
