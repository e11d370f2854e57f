package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// addPayload drives the ADD batch handler of the fixture.
type addPayload struct {
	Fail  int  `json:"fail"`  // fail the call while this command has run this many times or fewer
	Perm  bool `json:"perm"`  // fail permanently
	Short bool `json:"short"` // return one result fewer than commands
	Panic bool `json:"panic"` // panic
}

// addFixture is batchFixture (per-command DO) plus ADD, a batch handler
// that inserts the effects of all its commands in one statement and
// records every call.
type addFixture struct {
	*batchFixture
	calls [][]string // command ids of each call of the ADD handler
}

func newAddFixture(t *testing.T, db *sqlx.DB) *addFixture {
	t.Helper()
	f := &addFixture{batchFixture: newBatchFixture(t, db)}
	HandleBatch(f.p, "ADD", func(ctx context.Context, tx *sqlx.Tx, cmds []Command[addPayload]) ([]Result, error) {
		ids := make([]string, len(cmds))
		f.mu.Lock()
		fail, short := error(nil), false
		for i, c := range cmds {
			ids[i] = c.ID
			f.runs[c.ID]++
			switch {
			case c.Payload.Perm:
				fail = Permanent(fmt.Errorf("bad command %s", c.ID))
			case f.runs[c.ID] <= c.Payload.Fail:
				fail = fmt.Errorf("command %s: run %d fails", c.ID, f.runs[c.ID])
			case c.Payload.Panic:
				f.calls = append(f.calls, ids)
				f.mu.Unlock()
				panic("boom " + c.ID)
			}
			short = short || c.Payload.Short
		}
		f.calls = append(f.calls, ids)
		f.mu.Unlock()
		// One statement for the whole batch.
		q, args := `INSERT INTO effects (command_id) VALUES `, make([]any, len(cmds))
		for i, c := range cmds {
			if i > 0 {
				q += ", "
			}
			q += "(?)"
			args[i] = c.ID
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(q), args...); err != nil {
			return nil, err
		}
		if fail != nil {
			return nil, fail
		}
		res := make([]Result, 0, len(cmds))
		for _, c := range cmds {
			res = append(res, Reply("ADDED", map[string]any{"by": c.ID}))
		}
		if short {
			res = res[:len(res)-1]
		}
		return res, nil
	})
	return f
}

func addRecord(t *testing.T, pl addPayload, edit func(*envelope.Message)) (envelope.Message, kafka.Record) {
	t.Helper()
	raw, _ := json.Marshal(pl)
	m := envelope.Message{V: 1, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "S", SagaVersion: 1, Kind: envelope.KindCommand,
		Name: "ADD", Participant: "worker", OccurredAt: time.Now().UTC(), Payload: raw}
	if edit != nil {
		edit(&m)
	}
	b, _ := json.Marshal(m)
	return m, kafka.Record{Topic: "WORKER_TOPIC", Key: m.SagaID, Value: b}
}

// effects returns how many times each command's effect was committed.
func (f *addFixture) effects(t *testing.T) map[string]int {
	t.Helper()
	var ids []string
	if err := f.p.db.Select(&ids, `SELECT command_id FROM effects`); err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, id := range ids {
		n[id]++
	}
	return n
}

// outboxCauses returns the causation ids of the outbox rows in order.
func (f *addFixture) outboxCauses(t *testing.T) []string {
	t.Helper()
	var bodies [][]byte
	if err := f.p.db.Select(&bodies, `SELECT body FROM sdk_outbox ORDER BY seq`); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(bodies))
	for i, b := range bodies {
		var m envelope.Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		out[i] = m.CausationID
	}
	return out
}

func process(t *testing.T, p *Participant, recs ...kafka.Record) []Outcome {
	t.Helper()
	outs, err := p.process(context.Background(), nil, recs)
	if err != nil {
		t.Fatalf("process: %v", err)
	}
	if len(outs) != len(recs) {
		t.Fatalf("outcomes = %d, want %d", len(outs), len(recs))
	}
	return outs
}

func ids(ms ...envelope.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// outcomeWant is what a test expects of one Outcome.
type outcomeWant struct {
	id        string
	reply     string // reply name, "" for none
	duplicate bool
	expired   bool
	dead      bool
	attempts  int
}

func checkOutcomes(t *testing.T, outs []Outcome, wants []outcomeWant) {
	t.Helper()
	for i, w := range wants {
		o := outs[i]
		got := outcomeWant{id: o.Command.ID, reply: replyName(o.Reply), duplicate: o.Duplicate, expired: o.Expired, dead: o.DeadLetter != nil, attempts: o.Attempts}
		if got != w {
			t.Errorf("outcome %d = %+v, want %+v (err %v)", i, got, w, o.Err)
		}
		if o.Reply != nil && o.Reply.CausationID != o.Command.ID {
			t.Errorf("outcome %d: reply answers %s, want %s", i, o.Reply.CausationID, o.Command.ID)
		}
	}
}

// TestHandleBatchGroup: a run of N commands reaches the batch handler in
// one call; each gets its own reply, inbox row and Outcome.
func TestHandleBatchGroup(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newAddFixture(t, open(t))
			var msgs []envelope.Message
			var recs []kafka.Record
			for range 7 {
				m, r := addRecord(t, addPayload{}, nil)
				msgs, recs = append(msgs, m), append(recs, r)
			}
			outs := process(t, f.p, recs...)
			var wants []outcomeWant
			for _, m := range msgs {
				wants = append(wants, outcomeWant{id: m.ID, reply: "ADDED", attempts: 1})
			}
			checkOutcomes(t, outs, wants)
			if got, want := f.calls, [][]string{ids(msgs...)}; !reflect.DeepEqual(got, want) {
				t.Errorf("handler calls = %v, want one call with all %d commands %v", got, len(msgs), want)
			}
			if got, want := f.outboxCauses(t), ids(msgs...); !reflect.DeepEqual(got, want) {
				t.Errorf("outbox answers %v, want %v in order", got, want)
			}
			if got, want := countRows(t, f.p.db, "sdk_inbox"), len(msgs); got != want {
				t.Errorf("inbox rows = %d, want %d", got, want)
			}
			for _, m := range msgs {
				if got := f.effects(t)[m.ID]; got != 1 {
					t.Errorf("effects of %s = %d, want 1", m.ID, got)
				}
			}
		})
	}
}

// TestHandleBatchDuplicatesAndExpired: a redelivered command, an id
// repeated inside the fetched batch and an expired command never reach the
// batch handler; the duplicates re-send their stored replies and the
// expired one is refused.
func TestHandleBatchDuplicatesAndExpired(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newAddFixture(t, open(t))
			old, rOld := addRecord(t, addPayload{}, nil)
			first := process(t, f.p, rOld)
			a, ra := addRecord(t, addPayload{}, nil)
			b, rb := addRecord(t, addPayload{}, nil)
			exp, rexp := addRecord(t, addPayload{}, func(m *envelope.Message) { m.Deadline = time.Now().Add(-time.Minute) })
			c, rc := addRecord(t, addPayload{}, nil)
			d, rd := addRecord(t, addPayload{}, nil)
			e, re := addRecord(t, addPayload{}, nil)
			outs := process(t, f.p, ra, rb, ra, rOld, rexp, rc, rd, rexp, re)
			checkOutcomes(t, outs, []outcomeWant{
				{id: a.ID, reply: "ADDED", attempts: 1},
				{id: b.ID, reply: "ADDED", attempts: 1},
				{id: a.ID, reply: "ADDED", duplicate: true},
				{id: old.ID, reply: "ADDED", duplicate: true},
				{id: exp.ID, reply: envelope.CommandExpired, expired: true},
				{id: c.ID, reply: "ADDED", attempts: 1},
				{id: d.ID, reply: "ADDED", attempts: 1},
				{id: exp.ID, reply: envelope.CommandExpired, duplicate: true, expired: true},
				{id: e.ID, reply: "ADDED", attempts: 1},
			})
			if got, want := f.calls, [][]string{{old.ID}, ids(a, b), ids(c, d), {e.ID}}; !reflect.DeepEqual(got, want) {
				t.Errorf("handler calls = %v, want %v", got, want)
			}
			if outs[2].Reply.ID != outs[0].Reply.ID {
				t.Errorf("in-batch duplicate re-sent reply %s, want %s", outs[2].Reply.ID, outs[0].Reply.ID)
			}
			if outs[3].Reply.ID != first[0].Reply.ID {
				t.Errorf("redelivery re-sent reply %s, want the stored %s", outs[3].Reply.ID, first[0].Reply.ID)
			}
			if outs[7].Reply.ID != outs[4].Reply.ID {
				t.Errorf("expired duplicate re-sent %s, want %s", outs[7].Reply.ID, outs[4].Reply.ID)
			}
			effects := f.effects(t)
			for _, m := range []envelope.Message{old, a, b, c, d, e} {
				if effects[m.ID] != 1 {
					t.Errorf("effects of %s = %d, want 1", m.ID, effects[m.ID])
				}
			}
			if effects[exp.ID] != 0 {
				t.Errorf("effects of the expired command = %d, want 0", effects[exp.ID])
			}
			want := []string{old.ID, a.ID, b.ID, a.ID, old.ID, exp.ID, c.ID, d.ID, exp.ID, e.ID}
			if got := f.outboxCauses(t); !reflect.DeepEqual(got, want) {
				t.Errorf("outbox answers %v, want %v", got, want)
			}
		})
	}
}

// TestHandleBatchFailure: a failing batch handler rolls the whole group
// back; then every command of the group is handled alone: the one that
// keeps failing is parked after MaxAttempts, the permanent one at once,
// the others are answered and their effects commit once.
func TestHandleBatchFailure(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newAddFixture(t, open(t))
			do, rdo := doRecord(t, doPayload{})
			a, ra := addRecord(t, addPayload{}, nil)
			bad, rbad := addRecord(t, addPayload{Fail: 100}, nil)
			flaky, rflaky := addRecord(t, addPayload{Fail: 2}, nil)
			perm, rperm := addRecord(t, addPayload{Perm: true}, nil)
			c, rc := addRecord(t, addPayload{}, nil)
			d, rd := addRecord(t, addPayload{}, nil)
			e, re := addRecord(t, addPayload{}, nil)
			outs := process(t, f.p, rdo, ra, rbad, rflaky, rperm, rc, rd, re)
			checkOutcomes(t, outs, []outcomeWant{
				{id: do.ID, reply: "DONE", attempts: 1},
				{id: a.ID, reply: "ADDED", attempts: 1},
				{id: bad.ID, dead: true, attempts: 3},
				{id: flaky.ID, reply: "ADDED", attempts: 2}, // run 1 in the group, 2 alone fails, 3 alone succeeds
				{id: perm.ID, dead: true, attempts: 1},
				{id: c.ID, reply: "ADDED", attempts: 1},
				{id: d.ID, reply: "ADDED", attempts: 1},
				{id: e.ID, reply: "ADDED", attempts: 1},
			})
			group := ids(a, bad, flaky, perm, c, d, e)
			want := [][]string{group, {a.ID}, {bad.ID}, {bad.ID}, {bad.ID}, {flaky.ID}, {flaky.ID}, {perm.ID}, {c.ID}, {d.ID}, {e.ID}}
			if !reflect.DeepEqual(f.calls, want) {
				t.Errorf("handler calls = %v, want %v", f.calls, want)
			}
			effects := f.effects(t)
			for _, m := range []envelope.Message{do, a, flaky, c, d, e} {
				if effects[m.ID] != 1 {
					t.Errorf("effects of %s = %d, want 1", m.ID, effects[m.ID])
				}
			}
			for _, m := range []envelope.Message{bad, perm} {
				if effects[m.ID] != 0 {
					t.Errorf("effects of parked %s = %d, want 0", m.ID, effects[m.ID])
				}
			}
			if got, want := countRows(t, f.p.db, "sdk_dead_letters"), 2; got != want {
				t.Errorf("dead letters = %d, want %d", got, want)
			}
			var reasons []string
			if err := f.p.db.Select(&reasons, f.p.db.Rebind(`SELECT reason FROM sdk_dead_letters WHERE message_id = ?`), perm.ID); err != nil {
				t.Fatal(err)
			}
			if len(reasons) != 1 || !strings.Contains(reasons[0], "bad command "+perm.ID) {
				t.Errorf("dead letter reason of the permanent failure = %q, want its own error", reasons)
			}
			if got, want := f.outboxCauses(t), ids(do, a, flaky, c, d, e); !reflect.DeepEqual(got, want) {
				t.Errorf("outbox answers %v, want %v", got, want)
			}
		})
	}
}

// TestHandleBatchBadResults: a wrong result count or a panic fails the
// group; alone, the culprit is parked (a wrong count is permanent, a
// panic is retried up to MaxAttempts); a payload that cannot be decoded
// parks its own command only.
func TestHandleBatchBadResults(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newAddFixture(t, open(t))
			a, ra := addRecord(t, addPayload{}, nil)
			short, rshort := addRecord(t, addPayload{Short: true}, nil)
			b, rb := addRecord(t, addPayload{}, nil)
			boom, rboom := addRecord(t, addPayload{Panic: true}, nil)
			c, rc := addRecord(t, addPayload{}, nil)
			undecodable, rund := addRecord(t, addPayload{}, func(m *envelope.Message) { m.Payload = json.RawMessage(`{"fail":"many"}`) })
			d, rd := addRecord(t, addPayload{}, nil)
			outs := process(t, f.p, ra, rshort, rb, rboom, rc, rund, rd)
			checkOutcomes(t, outs, []outcomeWant{
				{id: a.ID, reply: "ADDED", attempts: 1},
				{id: short.ID, dead: true, attempts: 1},
				{id: b.ID, reply: "ADDED", attempts: 1},
				{id: boom.ID, dead: true, attempts: 3},
				{id: c.ID, reply: "ADDED", attempts: 1},
				{id: undecodable.ID, dead: true, attempts: 1},
				{id: d.ID, reply: "ADDED", attempts: 1},
			})
			if !strings.Contains(outs[1].Err.Error(), "returned 0 results for 1 command") {
				t.Errorf("wrong count error = %v", outs[1].Err)
			}
			if !strings.Contains(outs[3].Err.Error(), "panicked") {
				t.Errorf("panic error = %v", outs[3].Err)
			}
			if !IsPermanent(outs[5].Err) || !strings.Contains(outs[5].Err.Error(), "decode ADD payload") {
				t.Errorf("decode error = %v, want a permanent decode error", outs[5].Err)
			}
			effects := f.effects(t)
			for _, m := range []envelope.Message{a, b, c, d} {
				if effects[m.ID] != 1 {
					t.Errorf("effects of %s = %d, want 1", m.ID, effects[m.ID])
				}
			}
			for _, m := range []envelope.Message{short, boom, undecodable} {
				if effects[m.ID] != 0 {
					t.Errorf("effects of parked %s = %d, want 0", m.ID, effects[m.ID])
				}
			}
			for _, call := range f.calls {
				for _, id := range call {
					if id == undecodable.ID {
						t.Errorf("the undecodable command reached the handler: %v", call)
					}
				}
			}
		})
	}
}

// TestHandleBatchMixed: batch and per-command handlers and a compensation
// in one fetched batch: groups form only from consecutive commands of the
// batch handler's name, a compensation goes alone (with its barrier), and
// the replies keep the order of the commands.
func TestHandleBatchMixed(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newAddFixture(t, open(t))
			a1, r1 := addRecord(t, addPayload{}, nil)
			a2, r2 := addRecord(t, addPayload{}, nil)
			do1, r3 := doRecord(t, doPayload{})
			a3, r4 := addRecord(t, addPayload{}, nil)
			target := uuid.NewString()
			comp, r5 := addRecord(t, addPayload{}, func(m *envelope.Message) { m.Compensates = target })
			a4, r6 := addRecord(t, addPayload{}, nil)
			a5, r7 := addRecord(t, addPayload{}, nil)
			do2, r8 := doRecord(t, doPayload{})
			a6, r9 := addRecord(t, addPayload{}, nil)
			outs := process(t, f.p, r1, r2, r3, r4, r5, r6, r7, r8, r9)
			all := []envelope.Message{a1, a2, do1, a3, comp, a4, a5, do2, a6}
			var wants []outcomeWant
			for _, m := range all {
				reply := "ADDED"
				if m.Name == "DO" {
					reply = "DONE"
				}
				wants = append(wants, outcomeWant{id: m.ID, reply: reply, attempts: 1})
			}
			checkOutcomes(t, outs, wants)
			if got, want := f.calls, [][]string{ids(a1, a2), {a3.ID}, {comp.ID}, ids(a4, a5), {a6.ID}}; !reflect.DeepEqual(got, want) {
				t.Errorf("handler calls = %v, want %v", got, want)
			}
			if got, want := f.outboxCauses(t), ids(all...); !reflect.DeepEqual(got, want) {
				t.Errorf("outbox answers %v, want %v in command order", got, want)
			}
			// The compensation's barrier: the compensated id is refused now.
			fwd, rfwd := addRecord(t, addPayload{}, func(m *envelope.Message) { m.ID = target })
			late := process(t, f.p, rfwd)
			checkOutcomes(t, late, []outcomeWant{{id: fwd.ID, reply: envelope.CommandExpired, duplicate: true, expired: true}})
		})
	}
}

func TestHandleBatchRegistrationPanics(t *testing.T) {
	db := batchDBs(t)["sqlite"](t)
	f := newAddFixture(t, db)
	noop := func(context.Context, *sqlx.Tx, []Command[addPayload]) ([]Result, error) { return nil, nil }
	cases := []struct {
		name string
		reg  func()
	}{
		{"HandleBatch after Handle", func() { HandleBatch(f.p, "DO", noop) }},
		{"Handle after HandleBatch", func() {
			Handle(f.p, "ADD", func(context.Context, *sqlx.Tx, Command[addPayload]) (Result, error) { return NoReply(), nil })
		}},
		{"HandleBatch twice", func() { HandleBatch(f.p, "ADD", noop) }},
		{"empty name", func() { HandleBatch(f.p, "", noop) }},
		{"nil handler", func() { HandleBatch[addPayload](f.p, "OTHER", nil) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", c.name)
				}
			}()
			c.reg()
		})
	}
}

func countRows(t *testing.T, db *sqlx.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT COUNT(*) FROM `+table); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// TestHandleBatchTracing: with tracing on, each command of a group gets
// its own "handle ADD" span (child of its own record's traceparent) and
// its reply carries its own trace; a failing group's spans are marked
// rolled back (not failed), and the alone runs give the culprit the
// failed span.
func TestHandleBatchTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	prov := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tracing.Install(prov)()
	f := newAddFixture(t, batchDBs(t)["sqlite"](t))
	traced := func(pl addPayload, trace string) (envelope.Message, kafka.Record) {
		m, r := addRecord(t, pl, nil)
		r.Headers = map[string]string{envelope.HeaderTraceparent: "00-" + trace + "-00f067aa0ba902b7-01"}
		return m, r
	}
	traces := []string{"4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4736", "6bf92f3577b34da6a3ce929d0e0e4736"}
	var recs []kafka.Record
	var msgs []envelope.Message
	for _, tr := range traces {
		m, r := traced(addPayload{}, tr)
		msgs, recs = append(msgs, m), append(recs, r)
	}
	process(t, f.p, recs...)
	if got, want := f.calls, [][]string{ids(msgs...)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("handler calls = %v, want one group %v", got, want)
	}
	handles := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.Name == "handle ADD" {
			handles[attr(s, tracing.AttrMessageID)] = s
		}
	}
	for i, m := range msgs {
		s, ok := handles[m.ID]
		if !ok {
			t.Errorf("no handle span for command %d", i)
			continue
		}
		if got := s.SpanContext.TraceID().String(); got != traces[i] {
			t.Errorf("command %d: span in trace %s, want its record's %s", i, got, traces[i])
		}
		if s.Status.Code == codes.Error || attr(s, tracing.AttrRolledBack) != "" {
			t.Errorf("command %d: span status %v rolled back %q, want ok", i, s.Status, attr(s, tracing.AttrRolledBack))
		}
	}
	var headers []string
	if err := f.p.db.Select(&headers, `SELECT headers FROM sdk_outbox ORDER BY seq`); err != nil {
		t.Fatal(err)
	}
	for i, h := range headers {
		if !strings.Contains(h, traces[i]) {
			t.Errorf("reply %d headers %s, want trace %s", i, h, traces[i])
		}
	}

	exp.Reset()
	a, ra := traced(addPayload{}, traces[0])
	perm, rperm := traced(addPayload{Perm: true}, traces[1])
	process(t, f.p, ra, rperm)
	var rolledBack, failed, ok []string
	for _, s := range exp.GetSpans() {
		if s.Name != "handle ADD" {
			continue
		}
		id := attr(s, tracing.AttrMessageID)
		switch {
		case attr(s, tracing.AttrRolledBack) == "true":
			rolledBack = append(rolledBack, id)
		case s.Status.Code == codes.Error:
			failed = append(failed, id)
		default:
			ok = append(ok, id)
		}
	}
	if want := ids(a, perm); !reflect.DeepEqual(rolledBack, want) {
		t.Errorf("rolled back spans %v, want the group's %v", rolledBack, want)
	}
	if want := []string{perm.ID}; !reflect.DeepEqual(failed, want) {
		t.Errorf("failed spans %v, want %v", failed, want)
	}
	if want := []string{a.ID}; !reflect.DeepEqual(ok, want) {
		t.Errorf("ok spans %v, want %v", ok, want)
	}
}

func attr(s tracetest.SpanStub, k attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}
