package notification

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// notifyCmd is a NOTIFY command of saga sagaID carrying payload (a
// json.RawMessage is sent as it is, anything else encoded).
func notifyCmd(t *testing.T, sagaID string, payload any) sdk.Command[json.RawMessage] {
	t.Helper()
	raw, ok := payload.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			t.Fatal(err)
		}
	}
	return sdk.Command[json.RawMessage]{ID: uuid.NewString(), SagaID: sagaID, Name: CommandNotify, Attempt: 1, Payload: raw}
}

// describe is a handler's answer to one command, for comparison: "no
// reply", another result, or the error with its kind.
func describe(r sdk.Result, err error) string {
	switch {
	case err != nil && sdk.IsPermanent(err):
		return "permanent: " + err.Error()
	case err != nil:
		return "transient: " + err.Error()
	case reflect.DeepEqual(r, sdk.NoReply()):
		return "no reply"
	}
	return fmt.Sprintf("result %+v", r)
}

// inTx runs f in a transaction of db, committed if f succeeds and rolled
// back otherwise (as the SDK does with a handler's transaction).
func inTx(t *testing.T, db *sqlx.DB, f func(ctx context.Context, tx *sqlx.Tx) error) error {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f(ctx, tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			t.Fatal(rerr)
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return nil
}

// runGroupLikeSDK hands cmds to the batch handler as Run does with a
// group (sdk.HandleBatch): all of them in one transaction; if that fails,
// each alone in its own transaction, with a one-element slice. It returns
// each command's answer and whether the group fell back to one by one.
func runGroupLikeSDK(t *testing.T, s *Service, db *sqlx.DB, cmds []sdk.Command[json.RawMessage]) (answers []string, fellBack bool) {
	t.Helper()
	var res []sdk.Result
	err := inTx(t, db, func(ctx context.Context, tx *sqlx.Tx) error {
		var err error
		res, err = s.handleNotifyBatch(ctx, tx, cmds)
		if err == nil && len(res) != len(cmds) {
			t.Fatalf("batch handler: %d results for %d commands", len(res), len(cmds))
		}
		return err
	})
	if err == nil {
		for _, r := range res {
			answers = append(answers, describe(r, nil))
		}
		return answers, false
	}
	for _, c := range cmds {
		var one []sdk.Result
		err := inTx(t, db, func(ctx context.Context, tx *sqlx.Tx) error {
			var err error
			one, err = s.handleNotifyBatch(ctx, tx, []sdk.Command[json.RawMessage]{c})
			if err == nil && len(one) != 1 {
				t.Fatalf("batch handler: %d results for 1 command", len(one))
			}
			return err
		})
		if err != nil {
			answers = append(answers, describe(sdk.Result{}, err))
		} else {
			answers = append(answers, describe(one[0], nil))
		}
	}
	return answers, true
}

// runOneByOne hands cmds to handleNotify (the handler before batches) one
// at a time, each in its own transaction.
func runOneByOne(t *testing.T, s *Service, db *sqlx.DB, cmds []sdk.Command[json.RawMessage]) []string {
	t.Helper()
	var answers []string
	for _, c := range cmds {
		var r sdk.Result
		err := inTx(t, db, func(ctx context.Context, tx *sqlx.Tx) error {
			var err error
			r, err = s.handleNotify(ctx, tx, c)
			return err
		})
		answers = append(answers, describe(r, err))
	}
	return answers
}

// storedRows is the notifications table in insertion order, without the
// generated ids and times.
func storedRows(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var rows []struct {
		UserID   string `db:"user_id"`
		DealID   string `db:"deal_id"`
		SagaID   string `db:"saga_id"`
		BasketID string `db:"basket_id"`
		DealIDs  string `db:"deal_ids"`
		Status   string `db:"status"`
		Text     string `db:"text"`
	}
	if err := db.Select(&rows, `SELECT user_id, deal_id, saga_id, basket_id, deal_ids, status, text FROM notifications ORDER BY seq`); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = strings.Join([]string{r.UserID, r.DealID, r.SagaID, r.BasketID, r.DealIDs, r.Status, r.Text}, " | ")
	}
	return out
}

// TestNotifyBatchLikeOneByOne sends the same groups of NOTIFY commands
// through the batch handler (as the SDK runs a group, falling back to one
// by one when the group fails) and through handleNotify one command at a
// time, each on a fresh database, on SQLite and PostgreSQL: every command
// gets the same answer and the notifications tables are equal after each
// group. The groups hold several deals in both payload shapes, a deal
// outcome twice, a deal's second outcome in its saga, repeats of outcomes
// notified in an earlier group, baskets amid deals (one repeated), and the
// refusals: a deal notified before to another user (forged), the same deal
// twice in a group with another saga, a deal first told to one user then
// claimed by another in the same group, hostile payloads and a status
// NOTIFY does not expect. Groups without a refusal must be stored by the
// batch path (not fall back); groups with one must fall back, refuse
// exactly the faulty commands and store the others.
func TestNotifyBatchLikeOneByOne(t *testing.T) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		t.Run(dbName, func(t *testing.T) {
			open := servicetest.SQLite
			if dbName == "postgres" {
				open = servicetest.Postgres
			}
			batchDB, seqDB := open(t, Migrate), open(t, Migrate)
			batchSvc, _ := newNotifier(t, batchDB)
			seqSvc, _ := newNotifier(t, seqDB)

			saga := func() string { return uuid.NewString() }
			type deal struct {
				dc   dealctx.DealContext
				saga string
			}
			newDeal := func(user, status, reason string) deal { return deal{settled(user, status, reason), saga()} }
			dto := func(d deal) any { return map[string]any{DTOKey: dtoOf(d.dc, false)} }
			as := func(d deal, status, reason string) deal { d.dc.Status, d.dc.Reason = status, reason; return d }
			a1 := newDeal("alice", dealctx.StatusExecuted, "")
			a2 := newDeal("alice", dealctx.StatusRejected, "insufficient cash")
			a3 := newDeal("alice", dealctx.StatusFailed, "the approved order could not be executed in time")
			a4 := newDeal("alice", dealctx.StatusExecuted, "")
			a5 := newDeal("alice", dealctx.StatusCancelled, "cancelled at your request")
			a6 := newDeal("alice", dealctx.StatusExecuted, "")
			a7 := newDeal("alice", dealctx.StatusExecuted, "")
			a8 := newDeal("alice", dealctx.StatusExecuted, "")
			a9 := newDeal("alice", dealctx.StatusExecuted, "")
			a10 := newDeal("alice", dealctx.StatusExecuted, "")
			a11 := newDeal("alice", dealctx.StatusExecuted, "")
			a12 := newDeal("alice", dealctx.StatusExecuted, "")
			a13 := newDeal("alice", dealctx.StatusExecuted, "")
			other := saga()
			b1 := newDeal("bob", dealctx.StatusExecuted, "")
			k1, k1Saga := basketDTO("alice", 3, dealctx.StatusExecuted, ""), saga()
			k2, k2Saga := basketDTO("bob", 2, dealctx.StatusRejected, "limits"), saga()
			failedReverted := dealctx.Envelope{DealContext: &a3.dc, OrderReversal: &dealctx.Reversal{DealID: a3.dc.DealID, Reverted: true}}
			hostileDTO := dtoOf(a11.dc, false)
			hostileDTO["user_id"] = strings.Repeat("\x00<script>", 20)

			type step struct {
				sagaID  string
				payload any
				want    string // part of the answer: "no reply" or the refusal
			}
			groups := []struct {
				name     string
				steps    []step
				fallBack bool // the group must fail as a whole and be handled one by one
			}{
				{name: "deals, a basket amid, an outcome twice, a second outcome", steps: []step{
					{a1.saga, dto(a1), "no reply"},
					{a2.saga, dealctx.Wrap(a2.dc), "no reply"}, // the legacy whole-context shape
					{k1Saga, map[string]any{BasketDTOKey: k1}, "no reply"},
					{a3.saga, failedReverted, "no reply"},
					{a1.saga, dto(a1), "no reply"},                                               // the same outcome again: already sent
					{a2.saga, dto(as(a2, dealctx.StatusRejected, "another reason")), "no reply"}, // already sent: the first text stays
					{b1.saga, dto(b1), "no reply"},
					{a3.saga, dto(as(a3, dealctx.StatusCancelled, "")), "no reply"}, // the same deal and saga, another outcome
				}},
				{name: "repeats of notified outcomes", steps: []step{
					{a1.saga, dto(a1), "no reply"},
					{a4.saga, dto(a4), "no reply"},
					{k1Saga, map[string]any{BasketDTOKey: k1}, "no reply"},
					{a4.saga, dto(a4), "no reply"},
					{a2.saga, dto(a2), "no reply"},
					{a5.saga, dto(a5), "no reply"},
					{b1.saga, dto(as(b1, dealctx.StatusFailed, "")), "no reply"}, // bob's own second outcome
				}},
				{name: "a forged NOTIFY for bob's deal", fallBack: true, steps: []step{
					{a6.saga, dto(a6), "no reply"},
					// Bob's deal as mallory's, with an outcome not stored yet.
					{saga(), func() any { f := as(b1, dealctx.StatusCancelled, ""); f.dc.UserID = "mallory"; return dto(f) }(), "was notified to another user before"},
					{a8.saga, dto(a8), "no reply"},
				}},
				{name: "a notified deal from another saga", fallBack: true, steps: []step{
					{other, dto(as(a4, dealctx.StatusFailed, "")), "was notified before in saga " + a4.saga},
					{a13.saga, dto(a13), "no reply"},
				}},
				{name: "the same deal twice with another saga", fallBack: true, steps: []step{
					{a7.saga, dto(a7), "no reply"},
					{other, dto(as(a7, dealctx.StatusFailed, "")), "was notified before in saga " + a7.saga},
					{a10.saga, dto(a10), "no reply"},
				}},
				{name: "a deal claimed by two users in one group", fallBack: true, steps: []step{
					{a9.saga, func() any { f := a9; f.dc.UserID = "mallory"; return dto(f) }(), "no reply"}, // the first is trusted
					{a9.saga, dto(a9), "was notified to another user before"},
				}},
				{name: "hostile payloads", fallBack: true, steps: []step{
					{a11.saga, map[string]any{DTOKey: hostileDTO}, "control characters"},
					{k2Saga, map[string]any{BasketDTOKey: k2}, "no reply"},
					{a11.saga, json.RawMessage(`"just a string"`), "is not a JSON object"},
					{a11.saga, dto(as(a11, "draft", "")), `status "draft"`},
					{a11.saga, dto(a11), "no reply"},
				}},
				{name: "a forged basket NOTIFY", fallBack: true, steps: []step{
					{k1Saga, map[string]any{BasketDTOKey: func() map[string]any {
						f := map[string]any{}
						for k, v := range k1 {
							f[k] = v
						}
						f["user_id"] = "mallory"
						return f
					}()}, "notified to another user before"},
					{a12.saga, dto(a12), "no reply"},
				}},
				{name: "one command", steps: []step{
					{a1.saga, dto(as(a1, dealctx.StatusRejected, "too late")), "no reply"},
				}},
			}
			for _, g := range groups {
				cmds := make([]sdk.Command[json.RawMessage], len(g.steps))
				for i, st := range g.steps {
					cmds[i] = notifyCmd(t, st.sagaID, st.payload)
				}
				got, fellBack := runGroupLikeSDK(t, batchSvc, batchDB, cmds)
				want := runOneByOne(t, seqSvc, seqDB, cmds)
				if fellBack != g.fallBack {
					t.Errorf("%s: fell back to one by one = %v, want %v (answers %q)", g.name, fellBack, g.fallBack, got)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: answers\n batch      %q\n one by one %q", g.name, got, want)
				}
				for i, st := range g.steps {
					if !strings.Contains(want[i], st.want) || (st.want != "no reply" && !strings.HasPrefix(want[i], "permanent: ")) {
						t.Errorf("%s: command %d: one by one answered %q, want %q", g.name, i, want[i], st.want)
					}
				}
				if b, s := storedRows(t, batchDB), storedRows(t, seqDB); !reflect.DeepEqual(b, s) {
					t.Fatalf("%s: notifications\n batch      %q\n one by one %q", g.name, b, s)
				}
			}
			// What was stored for bob and the forged deal, read back.
			rows := storedRows(t, batchDB)
			var bobs int
			for _, r := range rows {
				if strings.Contains(r, b1.dc.DealID) {
					bobs++
					if !strings.HasPrefix(r, "bob | ") {
						t.Errorf("bob's deal told to someone else: %s", r)
					}
				}
				if strings.HasPrefix(r, "mallory") && !strings.Contains(r, a9.dc.DealID) {
					t.Errorf("mallory told of a deal not hers first: %s", r)
				}
			}
			if bobs != 2 {
				t.Errorf("rows of bob's deal = %d, want 2 (executed, failed)", bobs)
			}
			if len(rows) != 19 {
				t.Errorf("rows = %d, want 19:\n%s", len(rows), strings.Join(rows, "\n"))
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the SDK's concurrent log writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNotifyBatchThroughRun is the attack through the whole path: one
// partition of the command topic (Kafka) holds a run of alice's NOTIFYs
// with a forged one amid them, naming bob's deal (notified to bob before)
// for mallory with an outcome bob was not told yet; the service runs
// (PostgreSQL). The group fails, the SDK handles its commands one by one:
// each of alice's deals is notified once, the forged command is parked at
// once with checkRecipient's reason, bob's notifications are unchanged and
// mallory is told nothing.
func TestNotifyBatchThroughRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := servicetest.Postgres(t, Migrate)
	bus := servicetest.NewKafkaBus(ctx, t, "notification", "NOTIFICATION_TOPIC", 1)
	sdkLog := &lockedBuffer{}
	cfg := bus.Config(Name, db, slog.New(slog.NewTextHandler(sdkLog, nil)))
	cfg.MaxAttempts, cfg.Backoff = 2, time.Millisecond
	p, err := sdk.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)

	bob, bobSaga := settled("bob", dealctx.StatusExecuted, ""), uuid.NewString()
	if err := inTx(t, db, func(ctx context.Context, tx *sqlx.Tx) error {
		_, err := s.handleNotify(ctx, tx, notifyCmd(t, bobSaga, map[string]any{DTOKey: dtoOf(bob, false)}))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	bobBefore, err := s.List(ctx, "bob", service.PageRequest{Limit: 10})
	if err != nil || len(bobBefore.Items) != 1 {
		t.Fatalf("bob's notifications before: %+v (err %v), want 1", bobBefore.Items, err)
	}

	record := func(id, sagaID string, dc dealctx.DealContext) kafka.Record {
		payload, _ := json.Marshal(map[string]any{DTOKey: dtoOf(dc, false)})
		m := envelope.Message{V: envelope.Version, ID: id, SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 3,
			Kind: envelope.KindCommand, Name: CommandNotify, Participant: Name, OccurredAt: time.Now().UTC(), Payload: payload}
		body, _ := json.Marshal(m)
		return kafka.Record{Topic: bus.CommandTopic, Key: "one-key", Value: body,
			Headers: map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}}
	}
	var alice []dealctx.DealContext
	var ids []string
	var recs []kafka.Record
	forged := bob
	forged.UserID, forged.Status = "mallory", dealctx.StatusCancelled
	forgedSaga, forgedID := uuid.NewString(), uuid.NewString()
	for i := range 6 {
		dc := settled("alice", dealctx.StatusExecuted, "")
		alice = append(alice, dc)
		ids = append(ids, uuid.NewString())
		recs = append(recs, record(ids[i], uuid.NewString(), dc))
		if i == 2 {
			recs = append(recs, record(forgedID, forgedSaga, forged))
		}
	}
	bus.Publish(ctx, t, recs)
	servicetest.Run(ctx, t, p)

	// NOTIFY has no reply: wait until alice's commands are in the inbox
	// and the forged one is too (handled: a failure of the test) or parked.
	inboxQ := `SELECT COUNT(*) FROM sdk_inbox WHERE message_id IN (?` + strings.Repeat(", ?", len(ids)-1) + `)`
	for {
		var handled, forgedHandled int
		if err := db.GetContext(ctx, &handled, db.Rebind(inboxQ), anys(ids)...); err != nil {
			t.Fatalf("waiting for alice's %d commands: %v", len(ids), err)
		}
		if err := db.GetContext(ctx, &forgedHandled, db.Rebind(`SELECT COUNT(*) FROM sdk_inbox WHERE message_id = ?`), forgedID); err != nil {
			t.Fatal(err)
		}
		st, err := p.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if handled == len(ids) && forgedHandled+int(st.DeadLettersParked+st.DeadLettersHandled) >= 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for alice's %d commands (handled %d) and the forged one: %v", len(ids), handled, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.Contains(sdkLog.String(), "batch handler failed; handling its commands one by one") {
		t.Errorf("the NOTIFYs were not handed to the batch handler as a group (SDK log):\n%s", sdkLog.String())
	}
	dls, err := p.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].SagaID != forgedSaga || !strings.Contains(dls[0].Reason, "was notified to another user before") || dls[0].Attempts != 1 {
		t.Errorf("dead letters = %+v, want the forged command, parked at once for bob's deal", dls)
	}
	page, err := s.List(ctx, "alice", service.PageRequest{Limit: 20})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, n := range page.Items {
		got[n.DealID]++
	}
	if len(page.Items) != len(alice) {
		t.Errorf("alice's notifications = %d, want %d", len(page.Items), len(alice))
	}
	for _, dc := range alice {
		if got[dc.DealID] != 1 {
			t.Errorf("alice's deal %s notified %d times, want once", dc.DealID, got[dc.DealID])
		}
	}
	bobAfter, err := s.List(ctx, "bob", service.PageRequest{Limit: 10})
	if err != nil || !reflect.DeepEqual(bobAfter, bobBefore) {
		t.Errorf("bob's notifications: %+v (err %v), want unchanged %+v", bobAfter.Items, err, bobBefore.Items)
	}
	if m, err := s.List(ctx, "mallory", service.PageRequest{Limit: 10}); err != nil || len(m.Items) != 0 {
		t.Errorf("mallory's notifications: %+v (err %v), want none", m.Items, err)
	}
	var rows int
	if err := db.GetContext(ctx, &rows, db.Rebind(`SELECT COUNT(*) FROM notifications WHERE deal_id = ?`), bob.DealID); err != nil || rows != 1 {
		t.Errorf("rows of bob's deal = %d (err %v), want 1", rows, err)
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestNotifyBatchStatements counts the statements a group sends to the
// notifications table (PostgreSQL, through the counting driver of
// BenchmarkNotify): a run of deal NOTIFYs costs two whatever its length
// (the recipients' SELECT and the multi-row INSERT), a basket amid splits
// it into two runs and adds notifyBasket's three.
func TestNotifyBatchStatements(t *testing.T) {
	db, counter := servicetest.CountedPostgres(t, testenv.Postgres(t), Migrate, onNotifications)
	s, _ := newNotifier(t, db)
	deals := func(n int) []sdk.Command[json.RawMessage] {
		var cmds []sdk.Command[json.RawMessage]
		for range n {
			cmds = append(cmds, notifyCmd(t, uuid.NewString(), map[string]any{DTOKey: dtoOf(settled("alice", dealctx.StatusExecuted, ""), false)}))
		}
		return cmds
	}
	basket := notifyCmd(t, uuid.NewString(), map[string]any{BasketDTOKey: basketDTO("alice", 2, dealctx.StatusExecuted, "")})
	tests := []struct {
		name string
		cmds []sdk.Command[json.RawMessage]
		want int
	}{
		{"ten deals", deals(10), 2},
		{"thirty-two deals", deals(32), 2},
		{"five deals, a basket, five deals", append(append(deals(5), basket), deals(5)...), 2 + 3 + 2},
	}
	for _, tt := range tests {
		counter.Reset()
		var res []sdk.Result
		if err := inTx(t, db, func(ctx context.Context, tx *sqlx.Tx) error {
			var err error
			res, err = s.handleNotifyBatch(ctx, tx, tt.cmds)
			return err
		}); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if onTable := counter.Counts().Matching; onTable != tt.want || len(res) != len(tt.cmds) {
			t.Errorf("%s: %d statements on notifications, %d results; want %d and %d", tt.name, onTable, len(res), tt.want, len(tt.cmds))
		}
	}
	if got := len(storedRows(t, db)); got != 53 {
		t.Errorf("rows = %d, want 53", got)
	}
}
