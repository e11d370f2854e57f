package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// fakeClock is a settable clock for timer tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testCatalog loads the shipped MANUAL_CREATE_ORDER definitions as
// saga-machine does (version 2, where new sagas start, and version 1, kept
// for the sagas started on it) plus extra YAML documents (one definition
// each).
func testCatalog(tb testing.TB, extra ...string) *engine.Catalog {
	tb.Helper()
	defs, probs := definition.LoadDir(sagas.FS)
	if len(probs) > 0 {
		tb.Fatalf("load shipped definitions: %v", probs)
	}
	for i, y := range extra {
		d, probs := definition.Parse(fmt.Sprintf("extra%d.yaml", i), []byte(y))
		if len(probs) > 0 {
			tb.Fatalf("parse extra definition %d: %v", i, probs)
		}
		defs = append(defs, d)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		tb.Fatalf("new catalog: %v", err)
	}
	return cat
}

type harness struct {
	tb    testing.TB
	o     *engine.Orchestrator
	cfg   engine.Config
	cat   *engine.Catalog
	st    *testStore
	pub   *memPublisher
	clock *fakeClock
	obs   *countingObserver
	off   int64
}

// newHarness is an orchestrator on a fresh SQLite store whose clock is the
// harness's.
func newHarness(tb testing.TB, extra ...string) *harness {
	tb.Helper()
	h := &harness{tb: tb, pub: &memPublisher{}, clock: &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, obs: &countingObserver{}}
	h.st = openTestStore(tb, h.clock.Now)
	h.cat = testCatalog(tb, extra...)
	h.cfg = engine.Config{Clock: h.clock.Now, Observer: h.obs}
	h.reconfigure(nil)
	return h
}

// reconfigure replaces the orchestrator with one whose Config set
// changed, on the same store, publisher and clock.
func (h *harness) reconfigure(set func(c *engine.Config)) {
	h.tb.Helper()
	if set != nil {
		set(&h.cfg)
	}
	o, err := engine.New(h.cfg, h.cat, h.st, h.pub)
	if err != nil {
		h.tb.Fatalf("New: %v", err)
	}
	h.o = o
}

// event builds an event envelope.
func event(sagaID, name, by string, payload string) engine.Message {
	m := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER", Kind: engine.KindEvent,
		Name: name, Participant: by, OccurredAt: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)}
	if payload != "" {
		m.Payload = json.RawMessage(payload)
	}
	return m
}

func (h *harness) record(tb testing.TB, m engine.Message) engine.Record {
	tb.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatalf("encode: %v", err)
	}
	h.off++
	return engine.Record{Topic: "SAGA_SERVER_TOPIC", Key: m.SagaID, Value: b, Partition: 0, Offset: h.off}
}

func (h *harness) handle(tb testing.TB, msgs ...engine.Message) {
	tb.Helper()
	recs := make([]engine.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = h.record(tb, m)
	}
	if err := h.o.HandleRecords(context.Background(), recs); err != nil {
		tb.Fatalf("HandleRecords: %v", err)
	}
}

func (h *harness) inst(tb testing.TB, id string) engine.Instance {
	tb.Helper()
	in, err := h.st.GetInstance(context.Background(), id)
	if err != nil {
		tb.Fatalf("GetInstance(%s): %v", id, err)
	}
	return in
}

// outboxNames lists the command names waiting in the outbox.
func (h *harness) outboxNames() []string {
	var out []string
	for _, r := range h.st.outbox(h.tb) {
		out = append(out, r.Message.Name)
	}
	return out
}

type countingObserver struct {
	engine.NopObserver
	mu                       sync.Mutex
	started, finished, dead  int
	applied, retried, timers int
	published, heldBack      int
	batches, batchRecords    int
	untimedBatches           int // reported with no time taken
}

func (c *countingObserver) BatchHandled(records int, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if took <= 0 {
		c.untimedBatches++
	}
	c.batches++
	c.batchRecords += records
}

func (c *countingObserver) CommandHeldBack(string, string) { c.mu.Lock(); c.heldBack++; c.mu.Unlock() }

func (c *countingObserver) SagaStarted(string, int) { c.mu.Lock(); c.started++; c.mu.Unlock() }
func (c *countingObserver) SagaFinished(string, int, string, engine.Status) {
	c.mu.Lock()
	c.finished++
	c.mu.Unlock()
}
func (c *countingObserver) EventApplied(string, string, time.Duration) {
	c.mu.Lock()
	c.applied++
	c.mu.Unlock()
}
func (c *countingObserver) DeadLettered(engine.Code)      { c.mu.Lock(); c.dead++; c.mu.Unlock() }
func (c *countingObserver) CommandRetried(string, string) { c.mu.Lock(); c.retried++; c.mu.Unlock() }
func (c *countingObserver) TimerFired(string, string)     { c.mu.Lock(); c.timers++; c.mu.Unlock() }
func (c *countingObserver) CommandsPublished(n int, _ time.Duration) {
	c.mu.Lock()
	c.published += n
	c.mu.Unlock()
}

func TestApplyTransitions(t *testing.T) {
	const reg = `{"deal_context":{"deal_id":"D1","user_id":42,"amount":"10.5"}}`
	tests := []struct {
		name      string
		before    []string // events (NAME/by) applied first
		event     string
		by        string
		payload   string
		wantState string
		wantCmd   string      // command in the outbox for this event, "" = none
		wantCode  engine.Code // refusal code, "" = accepted
	}{
		{name: "register starts", event: "REGISTER", by: "deals", payload: reg, wantState: "DRAFT", wantCmd: "APPROVE_ORDER"},
		{name: "approved", before: []string{"REGISTER/deals"}, event: "ORDER_APPROVED", by: "profile", wantState: "APPROVED", wantCmd: "APPROVE_DEAL"},
		{name: "rejected", before: []string{"REGISTER/deals"}, event: "ORDER_REJECTED", by: "profile", wantState: "REJECTED", wantCmd: "REJECT_DEAL"},
		{name: "deal updated after approval", before: []string{"REGISTER/deals", "ORDER_APPROVED/profile"}, event: "DEAL_UPDATED", by: "deals", wantState: "NOTIFICATION", wantCmd: "NOTIFY"},
		{name: "deal updated after rejection", before: []string{"REGISTER/deals", "ORDER_REJECTED/profile"}, event: "DEAL_UPDATED", by: "deals", wantState: "NOTIFICATION", wantCmd: "NOTIFY"},
		{name: "illegal in state", before: []string{"REGISTER/deals"}, event: "DEAL_UPDATED", by: "deals", wantState: "DRAFT", wantCode: engine.CodeIllegal},
		{name: "wrong participant", before: []string{"REGISTER/deals"}, event: "ORDER_APPROVED", by: "deals", wantState: "DRAFT", wantCode: engine.CodeWrongParticipant},
		{name: "unknown event", before: []string{"REGISTER/deals"}, event: "NO_SUCH_EVENT", by: "deals", wantState: "DRAFT", wantCode: engine.CodeUnknownEvent},
		{name: "finished", before: []string{"REGISTER/deals", "ORDER_APPROVED/profile", "DEAL_UPDATED/deals"}, event: "DEAL_UPDATED", by: "deals", wantState: "NOTIFICATION", wantCode: engine.CodeFinished},
		{name: "unknown instance", event: "ORDER_APPROVED", by: "profile", wantCode: engine.CodeNotFound},
		{name: "register twice", before: []string{"REGISTER/deals"}, event: "REGISTER", by: "deals", wantState: "DRAFT", wantCode: engine.CodeIllegal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			id := uuid.NewString()
			for _, b := range tt.before {
				name, by, _ := strings.Cut(b, "/")
				p := ""
				if name == "REGISTER" {
					p = reg
				}
				h.handle(t, event(id, name, by, p))
			}
			outBefore := len(h.outboxNames())
			h.handle(t, event(id, tt.event, tt.by, tt.payload))
			out := h.outboxNames()[outBefore:]
			dls, _ := h.st.DeadLetters(context.Background(), 100, true)
			if tt.wantCode != "" {
				if len(dls) != 1 || dls[0].Code != tt.wantCode {
					t.Fatalf("dead letters = %+v, want one with code %s", dls, tt.wantCode)
				}
				if len(out) != 0 {
					t.Errorf("refused event sent %v, want nothing", out)
				}
			} else {
				if len(dls) != 0 {
					t.Fatalf("dead letters = %+v, want none", dls)
				}
				if tt.wantCmd != "" && (len(out) != 1 || out[0] != tt.wantCmd) {
					t.Errorf("sent %v, want [%s]", out, tt.wantCmd)
				}
			}
			if tt.wantState == "" {
				if _, err := h.st.GetInstance(context.Background(), id); engine.ErrorCode(err) != engine.CodeNotFound {
					t.Errorf("GetInstance err = %v, want not-found", err)
				}
				return
			}
			got := h.inst(t, id)
			if got.State != tt.wantState {
				t.Errorf("state = %s, want %s", got.State, tt.wantState)
			}
			hist, _ := h.st.History(context.Background(), id)
			last := hist[len(hist)-1]
			if tt.wantCode != "" && (last.Kind != engine.EntryRefused || last.Code != tt.wantCode) {
				t.Errorf("last history entry = %+v, want refused with %s", last, tt.wantCode)
			}
			if tt.wantCode == "" && (last.Kind != engine.EntryEvent || last.Event != tt.event || last.ToState != tt.wantState) {
				t.Errorf("last history entry = %+v, want event %s to %s", last, tt.event, tt.wantState)
			}
		})
	}
}

func TestContextMergeKeysAndCommand(t *testing.T) {
	h := newHarness(t)
	id := uuid.NewString()
	reg := event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D-7","user_id":42},"note":"a"}`)
	h.handle(t, reg, event(id, "ORDER_APPROVED", "profile", `{"note":"b","approved_by":"profile"}`))
	got := h.inst(t, id)
	var doc map[string]any
	if err := json.Unmarshal(got.Context, &doc); err != nil {
		t.Fatalf("context %s: %v", got.Context, err)
	}
	if doc["note"] != "b" || doc["approved_by"] != "profile" || doc["deal_context"] == nil {
		t.Errorf("context = %s, want merged top-level keys with the later note", got.Context)
	}
	if got.Keys["deal_id"] != "D-7" || got.Keys["user_id"] != "42" {
		t.Errorf("keys = %v, want deal_id D-7, user_id 42", got.Keys)
	}
	// A new saga starts on the newest version (4).
	if got.SagaVersion != 4 || got.Status != engine.StatusRunning || got.Rev != 1 {
		t.Errorf("version %d status %s rev %d, want 4 running 1 (created and advanced in one batch)", got.SagaVersion, got.Status, got.Rev)
	}
	cmds := h.st.outbox(t)
	if len(cmds) != 2 {
		t.Fatalf("outbox has %d records, want 2", len(cmds))
	}
	c := cmds[1]
	if c.Topic != "DEALS_TOPIC" || c.Key != id || c.Message.Kind != engine.KindCommand || c.Message.Participant != "deals" ||
		c.Message.Attempt != 1 || c.Message.SagaVersion != 4 || c.Message.CausationID == "" || string(c.Message.Payload) != string(got.Context) {
		t.Errorf("command = %+v, want APPROVE_DEAL to deals on DEALS_TOPIC keyed by the saga with the whole context", c)
	}
	if got.Pending == nil || got.Pending.ID != c.Message.ID || got.Attempts != 1 {
		t.Errorf("pending = %+v attempts %d, want the APPROVE_DEAL command, 1", got.Pending, got.Attempts)
	}
	// A payload that rewrites deal_context updates the keys.
	h.handle(t, event(id, "DEAL_UPDATED", "deals", `{"deal_context":{"deal_id":"D-8"}}`))
	if k := h.inst(t, id).Keys; k["deal_id"] != "D-8" || k["user_id"] != "" {
		t.Errorf("keys after deal_context replaced = %v, want only deal_id D-8", k)
	}
}

func TestDuplicatesChangeNothing(t *testing.T) {
	h := newHarness(t)
	id := uuid.NewString()
	reg := event(id, "REGISTER", "deals", `{"deal_context":{"deal_id":"D1"}}`)
	appr := event(id, "ORDER_APPROVED", "profile", "")
	// A duplicate in the same batch and one in a later batch.
	h.handle(t, reg, reg, appr)
	before := h.inst(t, id)
	h.handle(t, appr, reg)
	after := h.inst(t, id)
	if after.Rev != before.Rev || after.State != "APPROVED" {
		t.Errorf("after duplicates: rev %d state %s, want rev %d APPROVED", after.Rev, after.State, before.Rev)
	}
	if got := h.outboxNames(); len(got) != 2 {
		t.Errorf("outbox = %v, want 2 commands", got)
	}
	hist, _ := h.st.History(context.Background(), id)
	if len(hist) != 2 {
		t.Errorf("history has %d entries, want 2", len(hist))
	}
	if dls, _ := h.st.DeadLetters(context.Background(), 10, true); len(dls) != 0 {
		t.Errorf("dead letters = %+v, want none", dls)
	}
}

func TestMalformedRecordsAreDeadLettered(t *testing.T) {
	good := event("s1", "REGISTER", "deals", "")
	enc := func(mod func(m map[string]any)) []byte {
		b, _ := json.Marshal(good)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		mod(m)
		b, _ = json.Marshal(m)
		return b
	}
	tests := []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"not json", []byte("{oops"), "not a JSON message envelope"},
		{"missing id", enc(func(m map[string]any) { delete(m, "id") }), "missing id"},
		{"missing saga and name", enc(func(m map[string]any) { delete(m, "saga"); delete(m, "name") }), "missing saga; missing name"},
		{"command kind", enc(func(m map[string]any) { m["kind"] = "command" }), `kind is "command"`},
		{"bad version", enc(func(m map[string]any) { m["v"] = 7 }), "envelope version 7"},
		{"array payload", enc(func(m map[string]any) { m["payload"] = []int{1} }), "payload is not a JSON object"},
		{"no occurred_at", enc(func(m map[string]any) { delete(m, "occurred_at") }), "missing occurred_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			rec := engine.Record{Topic: "T", Partition: 2, Offset: 99, Value: tt.raw}
			ok := h.record(t, event(uuid.NewString(), "REGISTER", "deals", ""))
			if err := h.o.HandleRecords(context.Background(), []engine.Record{rec, ok}); err != nil {
				t.Fatalf("HandleRecords: %v", err)
			}
			// Redelivery of the same records adds nothing.
			if err := h.o.HandleRecords(context.Background(), []engine.Record{rec, ok}); err != nil {
				t.Fatalf("HandleRecords again: %v", err)
			}
			dls, _ := h.st.DeadLetters(context.Background(), 10, true)
			if len(dls) != 1 {
				t.Fatalf("got %d dead letters, want 1", len(dls))
			}
			d := dls[0]
			if d.Code != engine.CodeInvalid || !strings.Contains(d.Reason, tt.reason) || string(d.Raw) != string(tt.raw) ||
				d.Topic != "T" || d.Partition != 2 || d.Offset != 99 {
				t.Errorf("dead letter = %+v, want invalid with %q, the raw bytes and T/2/99", d, tt.reason)
			}
			if n := len(h.outboxNames()); n != 1 {
				t.Errorf("the good record in the batch sent %d commands, want 1", n)
			}
		})
	}
}

func TestUnknownSagaAndVersion(t *testing.T) {
	h := newHarness(t)
	m1 := event(uuid.NewString(), "REGISTER", "deals", "")
	m1.Saga = "NO_SUCH_SAGA"
	m2 := event(uuid.NewString(), "REGISTER", "deals", "")
	m2.SagaVersion = 9
	h.handle(t, m1, m2)
	dls, _ := h.st.DeadLetters(context.Background(), 10, true)
	if len(dls) != 2 || dls[0].Code != engine.CodeUnknownSaga || dls[1].Code != engine.CodeUnknownSaga {
		t.Fatalf("dead letters = %+v, want two unknown-saga", dls)
	}
}

// v5 is a fifth MANUAL_CREATE_ORDER, newer than the shipped four.
const v5 = `
saga: MANUAL_CREATE_ORDER
version: 5
participants:
  deals: { topic: DEALS_V5 }
  profile: { topic: PROFILE_V5 }
transitions:
  - { on: REGISTER, by: deals, from: [], to: CHECKING, send: { to: profile, command: CHECK } }
  - { on: CHECKED, by: profile, from: [CHECKING], to: DONE }
final: [DONE]
`

func TestInstancesKeepTheirVersion(t *testing.T) {
	h := newHarness(t, v5)
	old, mid, newer := uuid.NewString(), uuid.NewString(), uuid.NewString()
	pinned := event(old, "REGISTER", "deals", "")
	pinned.SagaVersion = 1
	pinned2 := event(mid, "REGISTER", "deals", "")
	pinned2.SagaVersion = 2
	h.handle(t, pinned, pinned2, event(newer, "REGISTER", "deals", ""))
	if got := h.inst(t, old); got.SagaVersion != 1 || got.State != "DRAFT" || len(got.Undo) != 0 {
		t.Errorf("pinned saga: v%d %s undo %v, want v1 DRAFT with nothing to undo", got.SagaVersion, got.State, got.Undo)
	}
	if got := h.inst(t, mid); got.SagaVersion != 2 || got.State != "DRAFT" || undoStatuses(got) != "FAIL_DEAL=replied REVERT_ORDER=open" {
		t.Errorf("pinned saga: v%d %s undo %s, want v2 DRAFT with FAIL_DEAL=replied REVERT_ORDER=open", got.SagaVersion, got.State, undoStatuses(got))
	}
	if got := h.inst(t, newer); got.SagaVersion != 5 || got.State != "CHECKING" {
		t.Errorf("new saga: v%d %s, want v5 CHECKING", got.SagaVersion, got.State)
	}
	// A later event without a version still applies on the instance's version.
	h.handle(t, event(old, "ORDER_APPROVED", "profile", ""), event(mid, "ORDER_APPROVED", "profile", ""),
		event(newer, "CHECKED", "profile", ""))
	if got := h.inst(t, old); got.State != "APPROVED" || len(got.Undo) != 0 {
		t.Errorf("v1 saga = %s undo %v, want APPROVED with nothing to undo", got.State, got.Undo)
	}
	if got := h.inst(t, mid); got.State != "APPROVED" || undoStatuses(got) != "FAIL_DEAL=replied REVERT_ORDER=replied FAIL_DEAL=open" {
		t.Errorf("v2 saga = %s undo %s, want APPROVED with APPROVE_ORDER answered and APPROVE_DEAL open", got.State, undoStatuses(got))
	}
	if got := h.inst(t, newer); got.State != "DONE" || got.Status != engine.StatusCompleted {
		t.Errorf("v5 saga = %s %s, want DONE completed", got.State, got.Status)
	}
	// Each command goes to the topic of its saga's version.
	topics := map[string]string{}
	for _, r := range h.outbox() {
		topics[r.Message.SagaID+"/"+r.Message.Name] = r.Topic
	}
	for k, want := range map[string]string{old + "/APPROVE_ORDER": "PROFILE_TOPIC", mid + "/APPROVE_ORDER": "PROFILE_TOPIC", newer + "/CHECK": "PROFILE_V5"} {
		if topics[k] != want {
			t.Errorf("%s went to %q, want %s", k, topics[k], want)
		}
	}
}

const fast = `
saga: FAST
version: 1
participants:
  p: { topic: P_TOPIC }
states:
  WAIT:
    timeout: { after: 1m, event: TIMED_OUT }
transitions:
  - on: GO
    by: p
    from: []
    to: WAIT
    send: { to: p, command: DO, retry: { attempts: 3, backoff: 1s, max_backoff: 3s, exhausted: GAVE_UP } }
  - { on: DONE, by: p, from: [WAIT], to: OK }
  - { on: GAVE_UP, by: engine, from: [WAIT], to: BROKEN }
  - { on: TIMED_OUT, by: engine, from: [WAIT], to: LATE }
final: [OK]
failed: [BROKEN, LATE]
`

func fastEvent(id, name string) engine.Message {
	m := event(id, name, "p", "")
	m.Saga = "FAST"
	return m
}

func TestRetryThenExhausted(t *testing.T) {
	h := newHarness(t, fast)
	ctx := context.Background()
	id := uuid.NewString()
	h.handle(t, fastEvent(id, "GO"))
	inst := h.inst(t, id)
	if want := h.clock.Now().Add(time.Second); inst.TimerAt == nil || !inst.TimerAt.Equal(want) {
		t.Fatalf("timer = %v, want %v (first backoff)", inst.TimerAt, want)
	}
	// Nothing is due yet.
	if n, err := h.o.FireTimers(ctx); err != nil || n != 0 {
		t.Fatalf("FireTimers before due = %d, %v; want 0, nil", n, err)
	}
	wantDelays := []time.Duration{2 * time.Second, 3 * time.Second} // doubled, then capped
	for i, d := range wantDelays {
		h.clock.Advance(h.inst(t, id).TimerAt.Sub(h.clock.Now()))
		if _, err := h.o.FireTimers(ctx); err != nil {
			t.Fatalf("FireTimers: %v", err)
		}
		got := h.inst(t, id)
		if got.Attempts != i+2 || got.Pending.Attempt != i+2 {
			t.Fatalf("after retry %d: attempts %d (pending attempt %d), want %d", i+1, got.Attempts, got.Pending.Attempt, i+2)
		}
		if want := h.clock.Now().Add(d); !got.TimerAt.Equal(want) {
			t.Errorf("after retry %d: timer %v, want %v", i+1, got.TimerAt, want)
		}
	}
	var ids []string
	for _, r := range h.st.outbox(t) {
		ids = append(ids, r.Message.ID)
	}
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("outbox ids = %v, want the same command id 3 times", ids)
	}
	h.clock.Advance(3 * time.Second)
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers: %v", err)
	}
	got := h.inst(t, id)
	if got.State != "BROKEN" || got.Status != engine.StatusFailed || got.TimerAt != nil {
		t.Errorf("after exhaustion: %s %s timer %v, want BROKEN failed no timer", got.State, got.Status, got.TimerAt)
	}
	hist, _ := h.st.History(ctx, id)
	var kinds []string
	for _, e := range hist {
		kinds = append(kinds, string(e.Kind)+":"+e.Event)
	}
	if want := "event:GO retry: retry: timer:GAVE_UP"; strings.Join(kinds, " ") != want {
		t.Errorf("history = %v, want %s", kinds, want)
	}
	if h.obs.retried != 2 || h.obs.timers != 1 {
		t.Errorf("observer retried %d timers %d, want 2 and 1", h.obs.retried, h.obs.timers)
	}
}

func TestStateTimeoutWins(t *testing.T) {
	h := newHarness(t, fast)
	ctx := context.Background()
	id := uuid.NewString()
	h.handle(t, fastEvent(id, "GO"))
	h.clock.Advance(2 * time.Minute) // past both the retry and the state deadline
	if _, err := h.o.FireTimers(ctx); err != nil {
		t.Fatalf("FireTimers: %v", err)
	}
	got := h.inst(t, id)
	if got.State != "LATE" || got.Pending != nil || got.TimerAt != nil {
		t.Errorf("after deadline: %s pending %v timer %v, want LATE, none, none", got.State, got.Pending, got.TimerAt)
	}
	// The answer arriving late is refused.
	h.handle(t, fastEvent(id, "DONE"))
	dls, _ := h.st.DeadLetters(ctx, 10, true)
	if len(dls) != 1 || dls[0].Code != engine.CodeFinished {
		t.Errorf("dead letters = %+v, want one finished", dls)
	}
}

func TestAnswerDisarmsRetry(t *testing.T) {
	h := newHarness(t, fast)
	id := uuid.NewString()
	h.handle(t, fastEvent(id, "GO"), fastEvent(id, "DONE"))
	got := h.inst(t, id)
	if got.State != "OK" || got.TimerAt != nil || got.Status != engine.StatusCompleted {
		t.Errorf("got %s %s timer %v, want OK completed no timer", got.State, got.Status, got.TimerAt)
	}
	if h.obs.started != 1 || h.obs.finished != 1 || h.obs.applied != 2 {
		t.Errorf("observer started %d finished %d applied %d, want 1 1 2", h.obs.started, h.obs.finished, h.obs.applied)
	}
}

func TestStartIsIdempotent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	req := engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", IdempotencyKey: "k-1", Payload: json.RawMessage(`{"deal_context":{"deal_id":"D9"}}`)}
	a, created, err := h.o.Start(ctx, req)
	if err != nil || !created {
		t.Fatalf("Start = %v, %v; want created", created, err)
	}
	b, created, err := h.o.Start(ctx, req)
	if err != nil || created || b.ID != a.ID {
		t.Fatalf("Start again = %s, %v, %v; want %s, not created", b.ID, created, err, a.ID)
	}
	if a.State != "DRAFT" || a.Keys["deal_id"] != "D9" {
		t.Errorf("saga = %s keys %v, want DRAFT with deal_id D9", a.State, a.Keys)
	}
	if got := h.outboxNames(); len(got) != 1 {
		t.Errorf("outbox = %v, want one APPROVE_ORDER", got)
	}
	for _, tt := range []struct {
		name string
		req  engine.StartRequest
		code engine.Code
	}{
		{"unknown saga", engine.StartRequest{Saga: "NOPE"}, engine.CodeUnknownSaga},
		{"not a starting event", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Event: "ORDER_APPROVED"}, engine.CodeNotFound},
		{"wrong participant", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", By: "profile"}, engine.CodeWrongParticipant},
		{"existing id", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", SagaID: a.ID}, engine.CodeConflict},
		{"payload not object", engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Payload: json.RawMessage(`[1]`)}, engine.CodeInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := h.o.Start(ctx, tt.req); engine.ErrorCode(err) != tt.code {
				t.Errorf("Start err = %v, want code %s", err, tt.code)
			}
		})
	}
}

// TestResendAndAbort: an operator re-sends the command a saga waits for,
// then aborts the saga. On version 1 the abort fails the saga at once; on
// version 2 it first undoes what the saga did (REVERT_ORDER for the
// APPROVE_ORDER sent, then FAIL_DEAL for the registered deal) and sends no
// NOTIFY (version 2 has no ABORT transition); on version 4 the abort takes
// the definition's ABORT transition: the same undo, then its NOTIFY, held
// back until the undo is done and caused by the abort.
func TestResendAndAbort(t *testing.T) {
	for _, version := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			id := uuid.NewString()
			reg := event(id, "REGISTER", "deals", "")
			reg.SagaVersion = version
			h.handle(t, reg)
			if _, err := h.o.Resend(ctx, id, "", "why"); engine.ErrorCode(err) != engine.CodeInvalid {
				t.Errorf("Resend without actor err = %v, want invalid", err)
			}
			got, err := h.o.Resend(ctx, id, "alice", "profile lost it")
			if err != nil || got.Attempts != 2 {
				t.Fatalf("Resend = attempts %d, %v; want 2", got.Attempts, err)
			}
			approve := h.last(t, "APPROVE_ORDER")
			if _, err := h.o.Abort(ctx, id, "DRAFT", "alice", "x"); engine.ErrorCode(err) != engine.CodeInvalid {
				t.Errorf("Abort into a running state err = %v, want invalid", err)
			}
			if version == 4 {
				// Its ABORT transition goes to FAILED: another failed
				// state is refused, and nothing moves.
				if _, err := h.o.Abort(ctx, id, "CANCELLED", "alice", "x"); engine.ErrorCode(err) != engine.CodeInvalid {
					t.Errorf("Abort into CANCELLED err = %v, want invalid (the definition aborts into FAILED)", err)
				}
				if in := h.inst(t, id); in.State != "DRAFT" || in.Status != engine.StatusRunning || in.Pending == nil {
					t.Fatalf("after the refused abort: %s %s pending %v, want DRAFT running with APPROVE_ORDER pending", in.State, in.Status, in.Pending)
				}
			}
			got, err = h.o.Abort(ctx, id, "", "alice", "customer called")
			if version == 1 {
				if err != nil || got.State != "FAILED" || got.Status != engine.StatusFailed || got.TimerAt != nil || got.Pending != nil {
					t.Fatalf("Abort = %+v, %v; want FAILED, no timer, no pending", got, err)
				}
			} else {
				// Compensating: the timer re-sends REVERT_ORDER until profile
				// answers; version 4 holds its NOTIFY back until the undo is done.
				deferred := ""
				if got.Deferred != nil {
					deferred = got.Deferred.Name
				}
				wantDeferred := ""
				if version == 4 {
					wantDeferred = "NOTIFY"
				}
				if err != nil || got.State != "FAILED" || got.Status != engine.StatusCompensating || got.TimerAt == nil || got.Pending != nil ||
					deferred != wantDeferred || undoStatuses(got) != "FAIL_DEAL=replied REVERT_ORDER=compensating" {
					t.Fatalf("Abort = %+v, %v; want FAILED compensating REVERT_ORDER, its re-send timer, no pending, %q held back", got, err, wantDeferred)
				}
			}
			// The abort's payload joined the context: the compensations
			// (and v4's NOTIFY) carry it.
			if !strings.Contains(string(got.Context), `"abort":{"at":"`) {
				t.Errorf("context after the abort = %s, want the abort's payload in it", got.Context)
			}
			if _, err := h.o.Resend(ctx, id, "alice", "again"); engine.ErrorCode(err) != engine.CodeConflict {
				t.Errorf("Resend after the abort err = %v, want conflict (no pending command)", err)
			}
			if _, err := h.o.Abort(ctx, id, "", "alice", "again"); engine.ErrorCode(err) != engine.CodeFinished {
				t.Errorf("second Abort err = %v, want finished", err)
			}
			if _, err := h.o.Resend(ctx, "nope", "alice", ""); engine.ErrorCode(err) != engine.CodeNotFound {
				t.Errorf("Resend unknown err = %v, want not-found", err)
			}
			hist, _ := h.st.History(ctx, id)
			wantHist := 3
			if version != 1 {
				wantHist = 4 // and the compensation sent
			}
			if len(hist) != wantHist || hist[1].Kind != engine.EntryOperator || hist[1].Actor != "alice" || hist[1].Reason != "profile lost it" ||
				hist[2].Kind != engine.EntryOperator || hist[2].Event != "ABORT" || hist[2].ToState != "FAILED" ||
				hist[2].Actor != "alice" || hist[2].Reason != "customer called" {
				t.Errorf("history = %+v, want event, operator re-send, operator abort (alice: customer called)", hist)
			}
			want := []string{"APPROVE_ORDER", "APPROVE_ORDER"}
			if version != 1 {
				want = append(want, "REVERT_ORDER")
			}
			if got := h.outboxNames(); !slices.Equal(got, want) {
				t.Errorf("outbox = %v, want %v", got, want)
			}
			if version == 1 {
				return
			}
			revert := h.last(t, "REVERT_ORDER")
			if revert.Compensates != approve.ID || revert.CausationID != hist[2].MessageID {
				t.Errorf("REVERT_ORDER compensates %s caused by %s, want APPROVE_ORDER %s caused by the abort %s",
					revert.Compensates, revert.CausationID, approve.ID, hist[2].MessageID)
			}
			h.handle(t, ev("MANUAL_CREATE_ORDER", id, "ORDER_REVERTED", "profile", revert.ID))
			fail := h.last(t, "FAIL_DEAL")
			if !strings.Contains(string(fail.Payload), `"abort":{"at":"`) {
				t.Errorf("FAIL_DEAL payload = %s, want the context with the abort in it", fail.Payload)
			}
			if fail.Compensates != reg.ID {
				t.Errorf("FAIL_DEAL compensates %s, want REGISTER %s", fail.Compensates, reg.ID)
			}
			h.handle(t, ev("MANUAL_CREATE_ORDER", id, "DEAL_FAILED", "deals", fail.ID))
			in := h.inst(t, id)
			if in.Status != engine.StatusFailed || in.TimerAt != nil || undoStatuses(in) != "FAIL_DEAL=compensated REVERT_ORDER=compensated" {
				t.Errorf("after the compensations: %s timer %v undo %s, want failed, no timer, both compensated", in.Status, in.TimerAt, undoStatuses(in))
			}
			want = []string{"APPROVE_ORDER", "APPROVE_ORDER", "REVERT_ORDER", "FAIL_DEAL"}
			if version == 2 {
				if !slices.Equal(h.outboxNames(), want) {
					t.Errorf("outbox = %v, want %v (no NOTIFY after an abort on version 2)", h.outboxNames(), want)
				}
				return
			}
			if want = append(want, "NOTIFY"); !slices.Equal(h.outboxNames(), want) {
				t.Errorf("outbox = %v, want %v (NOTIFY after the undo)", h.outboxNames(), want)
			}
			notify := h.last(t, "NOTIFY")
			if notify.CausationID != hist[2].MessageID || notify.Participant != "notification" {
				t.Errorf("NOTIFY to %s caused by %s, want to notification caused by the abort %s", notify.Participant, notify.CausationID, hist[2].MessageID)
			}
			if in.Deferred != nil || in.Pending == nil || in.Pending.ID != notify.ID {
				t.Errorf("after the undo: deferred %+v pending %+v, want nothing held back, NOTIFY the last command", in.Deferred, in.Pending)
			}
		})
	}
}

func TestReplayDeadLetter(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := uuid.NewString()
	early := event(id, "ORDER_APPROVED", "profile", "")
	h.handle(t, early) // no such saga yet
	dls, _ := h.st.DeadLetters(ctx, 10, false)
	if len(dls) != 1 || dls[0].Code != engine.CodeNotFound {
		t.Fatalf("dead letters = %+v, want one not-found", dls)
	}
	// Still refused: nothing changes.
	if err := h.o.Replay(ctx, dls[0].ID, "bob"); engine.ErrorCode(err) != engine.CodeNotFound {
		t.Fatalf("Replay err = %v, want not-found", err)
	}
	h.handle(t, event(id, "REGISTER", "deals", ""))
	if err := h.o.Replay(ctx, dls[0].ID, "bob"); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if got := h.inst(t, id); got.State != "APPROVED" {
		t.Errorf("state after replay = %s, want APPROVED", got.State)
	}
	if err := h.o.Replay(ctx, dls[0].ID, "bob"); engine.ErrorCode(err) != engine.CodeConflict {
		t.Errorf("second Replay err = %v, want conflict", err)
	}
	if left, _ := h.st.DeadLetters(ctx, 10, false); len(left) != 0 {
		t.Errorf("unreplayed dead letters = %+v, want none", left)
	}
}

func TestConflictRetriesBatchAndOtherErrorsSurface(t *testing.T) {
	h := newHarness(t)
	h.st.fail(engine.Errorf(engine.CodeConflict, "update", "changed concurrently"))
	id := uuid.NewString()
	h.handle(t, event(id, "REGISTER", "deals", ""))
	if got := h.inst(t, id); got.State != "DRAFT" {
		t.Errorf("state = %s, want DRAFT after the retried batch", got.State)
	}
	h.st.fail(engine.Errorf(engine.CodeUnavailable, "connect", "database down"))
	rec := h.record(t, event(id, "ORDER_APPROVED", "profile", ""))
	if err := h.o.HandleRecords(context.Background(), []engine.Record{rec}); engine.ErrorCode(err) != engine.CodeUnavailable {
		t.Fatalf("HandleRecords err = %v, want unavailable", err)
	}
	if got := h.inst(t, id); got.State != "DRAFT" {
		t.Errorf("state = %s, want DRAFT: nothing applied when the database failed", got.State)
	}
	if err := h.o.HandleRecords(context.Background(), []engine.Record{rec}); err != nil {
		t.Fatalf("HandleRecords retry: %v", err)
	}
	if got := h.inst(t, id); got.State != "APPROVED" {
		t.Errorf("state = %s, want APPROVED after the retry", got.State)
	}
}

func TestRelayPublishesThenDeletes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.handle(t, event(uuid.NewString(), "REGISTER", "deals", ""), event(uuid.NewString(), "REGISTER", "deals", ""))
	h.reconfigure(func(c *engine.Config) { c.RelayLease = 300 * time.Millisecond }) // a failed publish is retried within the lease, then given up
	h.pub.fail = fmt.Errorf("broker down")
	if _, err := h.o.RelayOnce(ctx); err == nil {
		t.Fatal("RelayOnce with a failing publisher: got nil error")
	}
	if n, _ := h.st.OutboxBacklog(ctx); n != 2 {
		t.Fatalf("backlog after failed publish = %d, want 2", n)
	}
	h.pub.fail = nil
	if n, err := h.o.RelayOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RelayOnce = %d, %v; want 2", n, err)
	}
	if n, _ := h.st.OutboxBacklog(ctx); n != 0 {
		t.Errorf("backlog = %d, want 0", n)
	}
	for _, m := range h.pub.messages() {
		if m.Name != "APPROVE_ORDER" || m.Kind != engine.KindCommand {
			t.Errorf("published %+v, want APPROVE_ORDER commands", m)
		}
	}
	if h.pub.recs[0].Headers[engine.HeaderName] != "APPROVE_ORDER" || h.pub.recs[0].Topic != "PROFILE_TOPIC" {
		t.Errorf("record = %+v, want topic PROFILE_TOPIC and name header", h.pub.recs[0])
	}
}

func TestConfigValidation(t *testing.T) {
	cat := testCatalog(t)
	st := openTestStore(t, time.Now)
	if _, err := engine.New(engine.Config{BatchSize: -1}, cat, st, nil); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("negative BatchSize err = %v, want invalid", err)
	}
	if _, err := engine.New(engine.Config{}, nil, st, nil); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("nil catalog err = %v, want invalid", err)
	}
	if _, err := engine.New(engine.Config{}, cat, nil, nil); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("nil store err = %v, want invalid", err)
	}
	if _, err := engine.New(engine.Config{}, cat, st, nil); err != nil {
		t.Fatalf("New: %v", err) // the defaults: TestConfigKnobs
	}
}

// fakeConsumer hands out batches, then blocks; Commit checks a condition.
type fakeConsumer struct {
	mu       sync.Mutex
	batches  [][]engine.Record
	commits  [][]engine.Record
	onCommit func()
	done     chan struct{}
}

func (c *fakeConsumer) Fetch(ctx context.Context, _ int) ([]engine.Record, error) {
	c.mu.Lock()
	if len(c.batches) > 0 {
		b := c.batches[0]
		c.batches = c.batches[1:]
		c.mu.Unlock()
		return b, nil
	}
	c.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (c *fakeConsumer) Commit(_ context.Context, recs []engine.Record) error {
	if c.onCommit != nil {
		c.onCommit()
	}
	c.mu.Lock()
	c.commits = append(c.commits, recs)
	c.mu.Unlock()
	close(c.done)
	return nil
}

// Run retries a batch the database refused and commits its offsets only
// after the batch is durable; the relay then publishes its command, and a
// stop flushes the outbox.
func TestRunCommitsOffsetsOnlyAfterTheBatchIsDurable(t *testing.T) {
	h := newHarness(t)
	h.reconfigure(func(c *engine.Config) { c.RelayPoll = 10 * time.Millisecond })
	id := uuid.NewString()
	rec := h.record(t, event(id, "REGISTER", "deals", ""))
	h.st.fail(engine.Errorf(engine.CodeUnavailable, "connect", "database down"))
	c := &fakeConsumer{batches: [][]engine.Record{{rec}}, done: make(chan struct{})}
	stateAtCommit := ""
	c.onCommit = func() {
		in, err := h.st.GetInstance(context.Background(), id)
		if err == nil {
			stateAtCommit = in.State
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- h.o.Run(ctx, c) }()
	<-c.done
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if stateAtCommit != "DRAFT" {
		t.Errorf("saga state when offsets were committed = %q, want DRAFT (committed first)", stateAtCommit)
	}
	if len(c.commits) != 1 || len(c.commits[0]) != 1 || c.commits[0][0].Offset != rec.Offset {
		t.Errorf("commits = %+v, want the one record once", c.commits)
	}
	if txs, _ := h.st.counts(); txs < 2 {
		t.Errorf("transactions = %d, want the refused one and the retry", txs)
	}
	if msgs := h.pub.messages(); len(msgs) != 1 || msgs[0].Name != "APPROVE_ORDER" {
		t.Errorf("published %+v, want APPROVE_ORDER once", msgs)
	}
}

// statsStore is a store whose statistics job runs every 10 ms and counts
// its runs.
type statsStore struct {
	*testStore
	refreshes atomic.Int32
}

func (s *statsStore) RefreshStats(ctx context.Context) ([]string, error) {
	s.refreshes.Add(1)
	return s.testStore.RefreshStats(ctx)
}

func (s *statsStore) StatsEvery() time.Duration { return 10 * time.Millisecond }

// Run refreshes the store's planner statistics at the interval the store
// gives (sqlstore: sqldb.StatsEvery, the participants' interval too), not
// at one of its own.
func TestRunRefreshesStatsAtTheStoresInterval(t *testing.T) {
	h := newHarness(t)
	st := &statsStore{testStore: h.st}
	o, err := engine.New(h.cfg, h.cat, st, h.pub)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- o.Run(ctx, &fakeConsumer{done: make(chan struct{})}) }()
	// Five runs take 40 ms at the store's interval; at any interval of
	// seconds the deadline passes first.
	deadline := time.Now().Add(3 * time.Second)
	for st.refreshes.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := st.refreshes.Load(); n < 5 {
		t.Errorf("RefreshStats ran %d times in 3 s, want at least 5 at the store's 10 ms interval", n)
	}
}

// HandleRecords reports each committed batch to an IntakeObserver with its
// size and the time it took; a batch the store refused is not reported
// until it commits.
func TestHandleRecordsReportsItsBatches(t *testing.T) {
	h := newHarness(t)
	obs := h.obs
	a, b := uuid.NewString(), uuid.NewString()
	recs := []engine.Record{h.record(t, event(a, "REGISTER", "deals", "")), h.record(t, event(b, "REGISTER", "deals", "")),
		h.record(t, event(a, "ORDER_APPROVED", "profile", ""))}
	h.st.fail(engine.Errorf(engine.CodeUnavailable, "connect", "database down"))
	if err := h.o.HandleRecords(context.Background(), recs); err == nil {
		t.Fatal("HandleRecords with the database down: nil error")
	}
	obs.mu.Lock()
	if obs.batches != 0 {
		t.Errorf("a refused batch was reported: %d batches", obs.batches)
	}
	obs.mu.Unlock()
	if err := h.o.HandleRecords(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.batches != 1 || obs.batchRecords != 3 || obs.untimedBatches != 0 {
		t.Errorf("reported %d batches of %d records (%d with no time taken), want 1 of 3 with its time", obs.batches, obs.batchRecords, obs.untimedBatches)
	}
}

// abortDecision is a saga whose ABORT is a decision on its context: a
// large order tells the shop TELL_BIG, any other TELL.
const abortDecision = `
saga: ABORTABLE
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - { on: ORDERED, by: shop, from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
  - { on: ABORT, by: engine, from: [PAYING], when: 'context.order.amount > 100', to: CANCELLED, send: { to: shop, command: TELL_BIG } }
  - { on: ABORT, by: engine, from: [PAYING], to: CANCELLED, send: { to: shop, command: TELL } }
final: [PAID]
failed: [CANCELLED]
`

// TestAbortDecision: an ABORT transition may be a decision on the saga's
// context; when its condition cannot be evaluated on a saga (the context
// lacks the field), the abort still stops the saga, without the
// transition and with nothing sent, and the timeline says why: an
// operator can always abort.
func TestAbortDecision(t *testing.T) {
	h := newHarness(t, abortDecision)
	ctx := context.Background()
	ordered := func(payload string) string {
		id := uuid.NewString()
		m := ev("ABORTABLE", id, "ORDERED", "shop", "")
		m.Payload = json.RawMessage(payload)
		h.handle(t, m)
		return id
	}
	big, small, broken := ordered(`{"order":{"amount":500}}`), ordered(`{"order":{"amount":5}}`), ordered(`{"note":"no order"}`)
	for _, tc := range []struct {
		id, want string
	}{{big, "TELL_BIG"}, {small, "TELL"}} {
		got, err := h.o.Abort(ctx, tc.id, "", "olga", "shop closed")
		if err != nil || got.State != "CANCELLED" || got.Status != engine.StatusFailed || got.Pending == nil || got.Pending.Name != tc.want {
			t.Errorf("Abort = %s %s pending %+v, %v; want CANCELLED failed with %s sent", got.State, got.Status, got.Pending, err, tc.want)
		}
	}
	got, err := h.o.Abort(ctx, broken, "", "olga", "shop closed")
	if err != nil || got.State != "CANCELLED" || got.Status != engine.StatusFailed || got.Pending != nil || got.TimerAt != nil {
		t.Fatalf("Abort of the saga the condition cannot read = %s %s pending %+v, %v; want CANCELLED failed, nothing sent", got.State, got.Status, got.Pending, err)
	}
	hist, err := h.st.History(ctx, broken)
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if last.Kind != engine.EntryOperator || last.Actor != "olga" || !strings.HasPrefix(last.Reason, "shop closed; the definition's ABORT transition could not be taken") {
		t.Errorf("timeline ends with %+v, want olga's abort saying the transition could not be taken", last)
	}
	var sent []string
	for _, r := range h.outbox() {
		if r.Message.SagaID == broken && r.Message.Name != "CHARGE" {
			sent = append(sent, r.Message.Name)
		}
	}
	if len(sent) != 0 {
		t.Errorf("sent %v for the saga aborted without its transition, want nothing", sent)
	}
}
