package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

// order is the payload the test handlers read.
type order struct {
	DealContext struct {
		DealID string `json:"deal_id"`
		Amount int    `json:"amount"`
	} `json:"deal_context"`
}

func orderPayload(id string, amount int) map[string]any {
	return map[string]any{"deal_context": map[string]any{"deal_id": id, "amount": amount}}
}

// bank is a tiny business: APPROVE_ORDER debits a balance if it is enough.
type bank struct {
	runs atomic.Int64
}

func (b *bank) setup(db *sqlx.DB) error {
	_, err := db.Exec(`CREATE TABLE balance (id INTEGER PRIMARY KEY, cash INTEGER NOT NULL);
		INSERT INTO balance (id, cash) VALUES (1, 100);
		CREATE TABLE approved (deal_id TEXT PRIMARY KEY);`)
	return err
}

func (b *bank) register(p *sdk.Participant) {
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		b.runs.Add(1)
		var cash int
		if err := tx.GetContext(ctx, &cash, `SELECT cash FROM balance WHERE id = 1`); err != nil {
			return sdk.Result{}, fmt.Errorf("read balance: %w", err)
		}
		need := cmd.Payload.DealContext.Amount
		if need > cash {
			return sdk.Reject("ORDER_REJECTED", fmt.Sprintf("insufficient cash: need %d, have %d", need, cash), nil), nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE balance SET cash = cash - ? WHERE id = 1`, need); err != nil {
			return sdk.Result{}, fmt.Errorf("debit: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approved (deal_id) VALUES (?)`, cmd.Payload.DealContext.DealID); err != nil {
			return sdk.Result{}, fmt.Errorf("record approval: %w", err)
		}
		return sdk.Reply("ORDER_APPROVED", map[string]any{"approval": map[string]any{"deal_id": cmd.Payload.DealContext.DealID, "left": cash - need}}), nil
	})
	sdk.Handle(p, "NOTIFY", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[json.RawMessage]) (sdk.Result, error) {
		b.runs.Add(1)
		return sdk.NoReply(), nil
	})
}

func newBankKit(t *testing.T) (*sdktest.Kit, *bank) {
	t.Helper()
	b := &bank{}
	kit := sdktest.New(t, sdk.Config{Name: "profile"}, b.register, b.setup)
	return kit, b
}

func cash(t *testing.T, kit *sdktest.Kit) int {
	t.Helper()
	var c int
	if err := kit.DB().Get(&c, `SELECT cash FROM balance WHERE id = 1`); err != nil {
		t.Fatalf("read balance: %v", err)
	}
	return c
}

func count(t *testing.T, db *sqlx.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT COUNT(*) FROM `+table); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestReplyRejectNoReply(t *testing.T) {
	kit, b := newBankKit(t)
	tests := []struct {
		name       string
		command    string
		payload    any
		wantEvent  string
		wantReason string
		wantCash   int
	}{
		{"approve", "APPROVE_ORDER", orderPayload("d1", 30), "ORDER_APPROVED", "", 70},
		{"reject", "APPROVE_ORDER", orderPayload("d2", 500), "ORDER_REJECTED", "insufficient cash: need 500, have 70", 70},
		{"no reply", "NOTIFY", map[string]any{"notification": map[string]any{"text": "hi"}}, "", "", 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := kit.Send(t, tt.command, tt.payload)
			if res.Err != nil || res.DeadLettered {
				t.Fatalf("Send: err %v, dead lettered %v", res.Err, res.DeadLettered)
			}
			if got, want := res.Event, tt.wantEvent; got != want {
				t.Errorf("event = %q, want %q", got, want)
			}
			if got, want := res.Reason, tt.wantReason; got != want {
				t.Errorf("reason = %q, want %q", got, want)
			}
			if got, want := cash(t, kit), tt.wantCash; got != want {
				t.Errorf("cash = %d, want %d", got, want)
			}
			if tt.wantEvent == "" {
				if got := len(res.Emitted); got != 0 {
					t.Errorf("emitted %d messages, want none: %+v", got, res.Emitted)
				}
				return
			}
			r := res.Reply
			if r == nil {
				t.Fatal("no reply envelope")
			}
			checks := []struct{ field, got, want string }{
				{"kind", string(r.Kind), string(envelope.KindEvent)},
				{"participant", r.Participant, "profile"},
				{"causation_id", r.CausationID, res.Command.ID},
				{"saga_id", r.SagaID, res.Command.SagaID},
				{"saga", r.Saga, res.Command.Saga},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("reply %s = %q, want %q", c.field, c.got, c.want)
				}
			}
			if got, want := r.SagaVersion, res.Command.SagaVersion; got != want {
				t.Errorf("reply saga_version = %d, want %d", got, want)
			}
			if r.ID == "" || r.ID == res.Command.ID {
				t.Errorf("reply id = %q, want a new id (command id %q)", r.ID, res.Command.ID)
			}
		})
	}
	if got, want := b.runs.Load(), int64(3); got != want {
		t.Errorf("handler runs = %d, want %d", got, want)
	}
	var p struct {
		Approval struct {
			DealID string `json:"deal_id"`
		} `json:"approval"`
	}
	res := kit.Send(t, "APPROVE_ORDER", orderPayload("d3", 10))
	res.Decode(t, &p)
	if got, want := p.Approval.DealID, "d3"; got != want {
		t.Errorf("reply payload approval.deal_id = %q, want %q", got, want)
	}
}

func TestDuplicateRunsHandlerOnceAndResendsSameReply(t *testing.T) {
	kit, b := newBankKit(t)
	first := kit.Send(t, "APPROVE_ORDER", orderPayload("d1", 40))
	if first.Reply == nil {
		t.Fatalf("first delivery: no reply (err %v)", first.Err)
	}
	for i := range 2 {
		again := kit.Redeliver(t)
		if !again.Duplicate {
			t.Errorf("redelivery %d: Duplicate = false, want true", i)
		}
		if again.Reply == nil {
			t.Fatalf("redelivery %d: no reply re-sent", i)
		}
		if got, want := again.Reply.ID, first.Reply.ID; got != want {
			t.Errorf("redelivery %d: reply id = %q, want the first reply's %q", i, got, want)
		}
		if got, want := string(again.Payload), string(first.Payload); got != want {
			t.Errorf("redelivery %d: payload = %s, want %s", i, got, want)
		}
	}
	if got, want := b.runs.Load(), int64(1); got != want {
		t.Errorf("handler runs = %d, want %d", got, want)
	}
	if got, want := cash(t, kit), 60; got != want {
		t.Errorf("cash = %d, want %d (debited once)", got, want)
	}
	if got, want := count(t, kit.DB(), "sdk_inbox"), 1; got != want {
		t.Errorf("inbox rows = %d, want %d", got, want)
	}
	if got, want := count(t, kit.DB(), "sdk_outbox"), 0; got != want {
		t.Errorf("outbox rows after relay = %d, want %d", got, want)
	}

	// A duplicate of a NoReply command emits nothing and runs nothing.
	kit.Send(t, "NOTIFY", nil)
	dup := kit.Redeliver(t)
	if !dup.Duplicate || len(dup.Emitted) != 0 {
		t.Errorf("NOTIFY duplicate: Duplicate %v, emitted %d; want true, 0", dup.Duplicate, len(dup.Emitted))
	}
	if got, want := b.runs.Load(), int64(2); got != want {
		t.Errorf("handler runs = %d, want %d", got, want)
	}
}

// flaky fails its first `fail` runs (by error or panic), then replies.
type flaky struct {
	fail  int64
	panic bool
	perm  bool
	runs  atomic.Int64
}

func (f *flaky) register(p *sdk.Participant) {
	sdk.Handle(p, "DO", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[map[string]any]) (sdk.Result, error) {
		n := f.runs.Add(1)
		if _, err := tx.ExecContext(ctx, `INSERT INTO effects (run) VALUES (?)`, n); err != nil {
			return sdk.Result{}, err
		}
		if n <= f.fail {
			switch {
			case f.panic:
				panic(fmt.Sprintf("boom %d", n))
			case f.perm:
				return sdk.Result{}, sdk.Permanent(fmt.Errorf("bad deal %d", n))
			}
			return sdk.Result{}, fmt.Errorf("database of a partner is down (run %d)", n)
		}
		return sdk.Reply("DONE", nil), nil
	})
}

func effectsTable(db *sqlx.DB) error {
	_, err := db.Exec(`CREATE TABLE effects (run INTEGER NOT NULL)`)
	return err
}

func TestFailuresRetriesAndDeadLetters(t *testing.T) {
	tests := []struct {
		name         string
		h            *flaky
		maxAttempts  int
		wantEvent    string
		wantAttempts int
		wantDead     bool
		wantReason   string
	}{
		{"error then success", &flaky{fail: 2}, 5, "DONE", 3, false, ""},
		{"error every time", &flaky{fail: 100}, 3, "", 3, true, "partner is down (run 3)"},
		{"panic every time", &flaky{fail: 100, panic: true}, 4, "", 4, true, "panicked: boom 4"},
		{"panic then success", &flaky{fail: 1, panic: true}, 5, "DONE", 2, false, ""},
		{"permanent error", &flaky{fail: 100, perm: true}, 5, "", 1, true, "bad deal 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kit := sdktest.New(t, sdk.Config{Name: "worker", MaxAttempts: tt.maxAttempts}, tt.h.register, effectsTable)
			res := kit.Send(t, "DO", map[string]any{"x": 1})
			if got, want := res.Event, tt.wantEvent; got != want {
				t.Errorf("event = %q, want %q (err %v)", got, want, res.Err)
			}
			if got, want := res.Attempts, tt.wantAttempts; got != want {
				t.Errorf("attempts = %d, want %d", got, want)
			}
			if got, want := tt.h.runs.Load(), int64(tt.wantAttempts); got != want {
				t.Errorf("handler runs = %d, want %d", got, want)
			}
			if got, want := res.DeadLettered, tt.wantDead; got != want {
				t.Fatalf("dead lettered = %v, want %v (err %v)", got, want, res.Err)
			}
			// Failed attempts are rolled back: only a successful run's effect stays.
			wantEffects := 1
			if tt.wantDead {
				wantEffects = 0
			}
			if got := count(t, kit.DB(), "effects"); got != wantEffects {
				t.Errorf("effect rows = %d, want %d (failed attempts must roll back)", got, wantEffects)
			}
			if !tt.wantDead {
				return
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantReason) {
				t.Errorf("err = %v, want it to mention %q", res.Err, tt.wantReason)
			}
			dls, err := kit.Participant().DeadLetters(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(dls), 1; got != want {
				t.Fatalf("dead letters = %d, want %d", got, want)
			}
			dl := dls[0]
			if got, want := dl.MessageID, res.Command.ID; got != want {
				t.Errorf("dead letter message id = %q, want %q", got, want)
			}
			if got, want := dl.Command, "DO"; got != want {
				t.Errorf("dead letter command = %q, want %q", got, want)
			}
			if got, want := dl.Attempts, tt.wantAttempts; got != want {
				t.Errorf("dead letter attempts = %d, want %d", got, want)
			}
			if !strings.Contains(dl.Reason, tt.wantReason) {
				t.Errorf("dead letter reason = %q, want it to mention %q", dl.Reason, tt.wantReason)
			}
			if dl.CreatedAt.IsZero() {
				t.Error("dead letter has no creation time")
			}
			if got := count(t, kit.DB(), "sdk_inbox"); got != 0 {
				t.Errorf("inbox rows = %d, want 0 (a parked command is not handled)", got)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	h := &flaky{fail: 2}
	kit := sdktest.New(t, sdk.Config{Name: "worker", MaxAttempts: 1}, h.register, effectsTable)
	p := kit.Participant()
	ctx := context.Background()

	res := kit.Send(t, "DO", nil)
	if !res.DeadLettered {
		t.Fatalf("first send: not dead lettered (event %q)", res.Event)
	}
	// Redelivery of the same command updates the same dead letter.
	if again := kit.Redeliver(t); !again.DeadLettered {
		t.Fatalf("redelivery: not dead lettered (event %q)", again.Event)
	}
	dls, err := p.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(dls), 1; got != want {
		t.Fatalf("dead letters = %d, want %d", got, want)
	}
	if got, want := dls[0].Attempts, 2; got != want {
		t.Errorf("dead letter attempts = %d, want %d", got, want)
	}
	out, err := p.Replay(ctx, dls[0].ID)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if out.Reply == nil || out.Reply.Name != "DONE" {
		t.Fatalf("Replay reply = %+v, want DONE", out.Reply)
	}
	emitted := kit.Flush(t)
	if got, want := len(emitted), 1; got != want {
		t.Fatalf("emitted after replay = %d, want %d", got, want)
	}
	if got, want := emitted[0].CausationID, res.Command.ID; got != want {
		t.Errorf("replayed reply causation_id = %q, want %q", got, want)
	}
	// The dead letter is kept, marked replayed (as the admin API does).
	if dls, err := p.DeadLetters(ctx); err != nil || len(dls) != 1 {
		t.Errorf("dead letters after replay = %d (err %v), want 1", len(dls), err)
	} else if dls[0].ReplayedAt.IsZero() || dls[0].ReplayedBy != sdk.ReplayedByGo {
		t.Errorf("dead letter after replay: replayed at %v by %q, want a time and %q", dls[0].ReplayedAt, dls[0].ReplayedBy, sdk.ReplayedByGo)
	}
	// Now handled: a redelivery is a duplicate with the replayed reply.
	dup := kit.Redeliver(t)
	if !dup.Duplicate || dup.Reply == nil || dup.Reply.ID != emitted[0].ID {
		t.Errorf("redelivery after replay: duplicate %v reply %+v, want the replayed reply %s", dup.Duplicate, dup.Reply, emitted[0].ID)
	}
	_, err = p.Replay(ctx, "no-such-id")
	if got, want := errs.ErrorCode(err), errs.CodeNotFound; got != want {
		t.Errorf("Replay(unknown) code = %q, want %q (err %v)", got, want, err)
	}
}

func TestBadInputIsDeadLettered(t *testing.T) {
	kit, b := newBankKit(t)
	tests := []struct {
		name       string
		send       func(t *testing.T) sdktest.Result
		wantReason string
	}{
		{"malformed payload", func(t *testing.T) sdktest.Result {
			return kit.Send(t, "APPROVE_ORDER", map[string]any{"deal_context": "not an object"})
		}, "decode APPROVE_ORDER payload"},
		{"payload not JSON object", func(t *testing.T) sdktest.Result {
			return kit.SendMessage(t, envelope.Message{Name: "APPROVE_ORDER", Payload: json.RawMessage(`[1,2]`)})
		}, "decode APPROVE_ORDER payload"},
		{"unknown command", func(t *testing.T) sdktest.Result {
			return kit.Send(t, "LAUNCH_ROCKET", nil)
		}, "no handler for command LAUNCH_ROCKET"},
		{"not JSON", func(t *testing.T) sdktest.Result {
			return kit.SendRaw(t, "saga-1", []byte("{nope"))
		}, "malformed envelope"},
		{"event on the command topic", func(t *testing.T) sdktest.Result {
			return kit.SendMessage(t, envelope.Message{Name: "ORDER_APPROVED", Kind: envelope.KindEvent})
		}, `kind "event"`},
		{"wrong participant", func(t *testing.T) sdktest.Result {
			return kit.SendMessage(t, envelope.Message{Name: "APPROVE_ORDER", Participant: "deals"})
		}, `addressed to participant "deals"`},
		{"no id and old version", func(t *testing.T) sdktest.Result {
			return kit.SendRaw(t, "saga-2", []byte(`{"v":7,"saga_id":"s","kind":"command","name":"APPROVE_ORDER"}`))
		}, "envelope version 7"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.send(t)
			if !res.DeadLettered {
				t.Fatalf("not dead lettered: event %q err %v", res.Event, res.Err)
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantReason) {
				t.Errorf("err = %v, want it to mention %q", res.Err, tt.wantReason)
			}
			if got := len(res.Emitted); got != 0 {
				t.Errorf("emitted %d messages, want none", got)
			}
			dls, err := kit.Participant().DeadLetters(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(dls), i+1; got != want {
				t.Fatalf("dead letters = %d, want %d", got, want)
			}
			if got := dls[len(dls)-1].Reason; !strings.Contains(got, tt.wantReason) {
				t.Errorf("dead letter reason = %q, want it to mention %q", got, tt.wantReason)
			}
		})
	}
	if got := b.runs.Load(); got != 0 {
		t.Errorf("handler runs = %d, want 0 (bad input never reaches business code)", got)
	}
}

func TestBadResultIsDeadLettered(t *testing.T) {
	tests := []struct {
		name       string
		result     sdk.Result
		wantReason string
	}{
		{"lower-case event", sdk.Reply("done", nil), `event name "done"`},
		{"payload not an object", sdk.Reply("DONE", []int{1}), "must be a JSON object"},
		{"reject without reason", sdk.Reject("REJECTED", " ", nil), "gave no reason"},
		{"the SDK's refusal", sdk.Reply(envelope.CommandExpired, nil), "the SDK's own"},
		{"the SDK's refusal as a rejection", sdk.Reject(envelope.CommandExpired, "no effect", nil), "the SDK's own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kit := sdktest.New(t, sdk.Config{Name: "worker"}, func(p *sdk.Participant) {
				sdk.Handle(p, "DO", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[struct{}]) (sdk.Result, error) {
					return tt.result, nil
				})
			}, nil)
			res := kit.Send(t, "DO", nil)
			if !res.DeadLettered || res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantReason) {
				t.Errorf("dead lettered %v, err %v; want a dead letter mentioning %q", res.DeadLettered, res.Err, tt.wantReason)
			}
			if got, want := res.Attempts, 1; got != want {
				t.Errorf("attempts = %d, want %d (a bad result is not retried)", got, want)
			}
		})
	}
}

func TestStartSaga(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "deals"}, nil, func(db *sqlx.DB) error {
		_, err := db.Exec(`CREATE TABLE deals (id TEXT PRIMARY KEY, saga_id TEXT NOT NULL)`)
		return err
	})
	p := kit.Participant()
	ctx := context.Background()
	start := func(commit bool, dealID string) string {
		t.Helper()
		tx, err := kit.DB().BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
		sagaID, err := p.StartSaga(ctx, tx, "MANUAL_CREATE_ORDER", "REGISTER", orderPayload(dealID, 10))
		if err != nil {
			t.Fatalf("StartSaga: %v", err)
		}
		if _, err := tx.Exec(`INSERT INTO deals (id, saga_id) VALUES (?, ?)`, dealID, sagaID); err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		return sagaID
	}
	start(false, "rolled-back")
	if got := kit.Flush(t); len(got) != 0 {
		t.Errorf("rolled back StartSaga emitted %d messages, want 0", len(got))
	}
	sagaID := start(true, "d1")
	got := kit.Flush(t)
	if len(got) != 1 {
		t.Fatalf("emitted %d messages, want 1", len(got))
	}
	m := got[0]
	if m.SagaID != sagaID || m.Saga != "MANUAL_CREATE_ORDER" || m.Name != "REGISTER" || m.Kind != envelope.KindEvent || m.Participant != "deals" || m.SagaVersion != 0 {
		t.Errorf("start event = %+v, want REGISTER event of MANUAL_CREATE_ORDER saga %s by deals, version 0", m, sagaID)
	}
	var pl order
	if err := json.Unmarshal(m.Payload, &pl); err != nil || pl.DealContext.DealID != "d1" {
		t.Errorf("start payload = %s (err %v), want deal d1", m.Payload, err)
	}

	bad := []struct {
		name          string
		saga, event   string
		payload       any
		wantErrSubstr string
	}{
		{"lower-case saga", "orders", "REGISTER", nil, "saga name"},
		{"empty event", "MANUAL_CREATE_ORDER", "", nil, "event name"},
		{"payload not object", "MANUAL_CREATE_ORDER", "REGISTER", "text", "JSON object"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tx, err := kit.DB().BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback() //nolint:errcheck
			_, err = p.StartSaga(ctx, tx, tt.saga, tt.event, tt.payload)
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
				t.Errorf("StartSaga err = %v, want it to mention %q", err, tt.wantErrSubstr)
			}
			if got, want := errs.ErrorCode(err), errs.CodeInvalid; got != want {
				t.Errorf("code = %q, want %q", got, want)
			}
		})
	}
}

// TestStartSagaWithID: the saga id chosen by the caller is the one the
// start event carries; an id that is not a UUID is refused.
func TestStartSagaWithID(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "deals"}, nil, nil)
	p := kit.Participant()
	ctx := context.Background()
	tests := []struct {
		name          string
		sagaID        string
		wantErrSubstr string
	}{
		{"fresh id", sdk.NewSagaID(), ""},
		{"not a UUID", "saga-1", "not a UUID"},
		{"empty", "", "not a UUID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx, err := kit.DB().BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback() //nolint:errcheck
			err = p.StartSagaWithID(ctx, tx, tt.sagaID, "MANUAL_CREATE_ORDER", "REGISTER", orderPayload("d-"+tt.name, 10))
			if tt.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
					t.Errorf("StartSagaWithID err = %v, want it to mention %q", err, tt.wantErrSubstr)
				}
				if got, want := errs.ErrorCode(err), errs.CodeInvalid; got != want {
					t.Errorf("code = %q, want %q", got, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("StartSagaWithID: %v", err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			got := kit.Flush(t)
			if len(got) != 1 {
				t.Fatalf("emitted %d messages, want 1", len(got))
			}
			if got[0].SagaID != tt.sagaID || got[0].Name != "REGISTER" {
				t.Errorf("start event: saga %s %s, want saga %s REGISTER", got[0].SagaID, got[0].Name, tt.sagaID)
			}
		})
	}
}

// TestStartSagas: several starts in one call are each published once with
// their own saga id and payload; one invalid start writes none of them.
func TestStartSagas(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "deals"}, nil, nil)
	p := kit.Participant()
	ctx := context.Background()
	start := func(id, deal string) sdk.SagaStart {
		return sdk.SagaStart{SagaID: id, Saga: "MANUAL_CREATE_ORDER", Event: "REGISTER", Payload: orderPayload(deal, 10)}
	}
	ids := []string{sdk.NewSagaID(), sdk.NewSagaID(), sdk.NewSagaID()}
	tx, err := kit.DB().BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.StartSagas(ctx, tx, []sdk.SagaStart{start(ids[0], "d-0"), start(ids[1], "d-1"), start(ids[2], "d-2")}); err != nil {
		t.Fatalf("StartSagas: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	got := kit.Flush(t)
	if len(got) != len(ids) {
		t.Fatalf("emitted %d messages, want %d", len(got), len(ids))
	}
	for i, m := range got {
		if m.SagaID != ids[i] || m.Name != "REGISTER" || !strings.Contains(string(m.Payload), fmt.Sprintf(`"d-%d"`, i)) {
			t.Errorf("start %d: saga %s %s payload %s, want saga %s REGISTER of deal d-%d", i, m.SagaID, m.Name, m.Payload, ids[i], i)
		}
	}

	tx, err = kit.DB().BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	bad := []sdk.SagaStart{start(sdk.NewSagaID(), "d-3"), start("not-a-uuid", "d-4")}
	err = p.StartSagas(ctx, tx, bad)
	if got, want := errs.ErrorCode(err), errs.CodeInvalid; err == nil || got != want {
		t.Fatalf("StartSagas with an invalid id: err %v (code %q), want code %q", err, got, want)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := kit.Flush(t); len(got) != 0 {
		t.Errorf("an invalid start among two: %d messages published, want none", len(got))
	}
	if err := p.StartSagas(ctx, nil, bad[:1]); err == nil {
		t.Error("StartSagas with a nil tx: no error")
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	db := sdktest.New(t, sdk.Config{Name: "x"}, nil, nil).DB()
	p, err := sdk.New(sdk.Config{Name: "profile", DB: db})
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config()
	defaults := []struct {
		field string
		got   any
		want  any
	}{
		{"CommandTopic", cfg.CommandTopic, "PROFILE_TOPIC"},
		{"EventTopic", cfg.EventTopic, "SAGA_SERVER_TOPIC_PROFILE"}, // its own event topic
		{"Group", cfg.Group, "profile"},
		{"MaxAttempts", cfg.MaxAttempts, 5},
		{"Backoff", cfg.Backoff, sdk.DefaultBackoff},
		{"MaxBackoff", cfg.MaxBackoff, sdk.DefaultMaxBackoff},
		{"Concurrency", cfg.Concurrency, 1},
		{"RelayBatch", cfg.RelayBatch, sdk.DefaultRelayBatch},
		{"RelayPoll", cfg.RelayPoll, sdk.DefaultRelayPoll},
		{"RelayLease", cfg.RelayLease, sdk.DefaultRelayLease},
		{"ShutdownTimeout", cfg.ShutdownTimeout, sdk.DefaultShutdownTimeout},
		{"InboxRetention", cfg.InboxRetention, sdk.DefaultInboxRetention},
		{"PruneEvery", cfg.PruneEvery, sdk.DefaultPruneEvery},
	}
	for _, d := range defaults {
		if d.got != d.want {
			t.Errorf("default %s = %v, want %v", d.field, d.got, d.want)
		}
	}
	// The former name of RelayPoll still works; the new one wins.
	old, err := sdk.New(sdk.Config{Name: "profile", DB: db, RelayInterval: 7e6})
	if err != nil || old.Config().RelayPoll != 7e6 {
		t.Errorf("RelayInterval 7ms: RelayPoll = %v (err %v), want 7ms", old.Config().RelayPoll, err)
	}
	both, err := sdk.New(sdk.Config{Name: "profile", DB: db, RelayInterval: 7e6, RelayPoll: 9e6})
	if err != nil || both.Config().RelayPoll != 9e6 {
		t.Errorf("RelayPoll 9ms beside RelayInterval 7ms: RelayPoll = %v (err %v), want 9ms", both.Config().RelayPoll, err)
	}
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Brokers is empty") {
		t.Errorf("Run without brokers: err = %v, want a clear error", err)
	}

	bad := []struct {
		name string
		cfg  sdk.Config
		want string
	}{
		{"no name", sdk.Config{DB: db}, "Name is empty"},
		{"no db", sdk.Config{Name: "p"}, "DB is nil"},
		{"negative attempts", sdk.Config{Name: "p", DB: db, MaxAttempts: -1}, "MaxAttempts is negative"},
		{"negative relay poll", sdk.Config{Name: "p", DB: db, RelayPoll: -1}, "RelayPoll is negative"},
		{"negative relay lease", sdk.Config{Name: "p", DB: db, RelayLease: -1}, "RelayLease is negative"},
		{"negative prune interval", sdk.Config{Name: "p", DB: db, PruneEvery: -1}, "PruneEvery is negative"},
		{"blank broker", sdk.Config{Name: "p", DB: db, Brokers: []string{" "}}, "broker 0 is empty"},
		{"max below backoff", sdk.Config{Name: "p", DB: db, Backoff: 2e9, MaxBackoff: 1e9}, "below Backoff"},
		{"other driver", sdk.Config{Name: "p", DB: sqlx.NewDb(db.DB, "mysql")}, "unsupported database driver"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sdk.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestHandleRegistrationPanics(t *testing.T) {
	kit := sdktest.New(t, sdk.Config{Name: "x"}, nil, nil)
	p := kit.Participant()
	h := func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[struct{}]) (sdk.Result, error) {
		return sdk.NoReply(), nil
	}
	sdk.Handle(p, "A", h)
	tests := []struct {
		name    string
		command string
	}{{"duplicate", "A"}, {"empty", ""}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", tt.command)
				}
			}()
			sdk.Handle(p, tt.command, h)
		})
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("x")
	if !sdk.IsPermanent(fmt.Errorf("wrapped: %w", sdk.Permanent(base))) {
		t.Error("IsPermanent(wrapped Permanent) = false, want true")
	}
	if sdk.IsPermanent(base) {
		t.Error("IsPermanent(plain) = true, want false")
	}
	if !errors.Is(sdk.Permanent(base), base) {
		t.Error("Permanent hides its cause from errors.Is")
	}
	if sdk.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
}
