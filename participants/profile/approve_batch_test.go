package profile

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// batchWorld is a profile service on one database with its clock.
type batchWorld struct {
	db  *sqlx.DB
	p   *sdk.Participant
	s   *Service
	clk *clock
}

func newBatchWorld(t *testing.T, db *sqlx.DB) *batchWorld {
	t.Helper()
	clk := &clock{}
	clk.Set("2026-03-02T10:00:00Z")
	p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)
	return &batchWorld{db: db, p: p, s: s, clk: clk}
}

// portfolio creates a funded USD portfolio of user.
func (w *batchWorld) portfolio(t *testing.T, user, cash string) Portfolio {
	t.Helper()
	pf, err := fundedPortfolio(context.Background(), w.s, user, dec(cash))
	if err != nil {
		t.Fatal(err)
	}
	return pf
}

// approve decides dc through the SDK (committed), checking the event.
func (w *batchWorld) approve(t *testing.T, dc dealctx.DealContext, want string) {
	t.Helper()
	out := servicetest.Dispatch(t, w.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(dc))
	if out.Reply == nil || out.Reply.Name != want {
		t.Fatalf("APPROVE_ORDER of deal %s: got %+v (err %v), want %s", dc.DealID, out.Reply, out.Err, want)
	}
}

// orderCmd is an APPROVE_ORDER command of dc as a handler gets it.
func orderCmd(dc dealctx.DealContext) sdk.Command[dealctx.Envelope] {
	return sdk.Command[dealctx.Envelope]{ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
		Name: CommandApproveOrder, Attempt: 1, Payload: dealctx.Wrap(dc)}
}

// orderRun is what a run of APPROVE_ORDER handlers produced: the replies
// (or the error) and the business tables afterwards, read in the same
// transaction (rolled back at the end, so that every run starts from the
// same database; after an error, read after the rollback, as the SDK
// leaves them).
type orderRun struct {
	replies []sdk.Result // compared whole: event, reason and payload
	err     string
	tables  string
}

func (w *batchWorld) run(t *testing.T, f func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error)) orderRun {
	t.Helper()
	ctx := context.Background()
	tx, err := w.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	var r orderRun
	res, err := f(ctx, tx)
	if err != nil {
		r.err = err.Error()
		if !sdk.IsPermanent(err) {
			r.err = "transient: " + r.err
		}
	}
	r.replies = res
	if err != nil {
		// The SDK rolls a failed group back: read what is left then (a
		// failed statement also leaves a PostgreSQL transaction unusable).
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if tx, err = w.db.BeginTxx(ctx, nil); err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
	}
	r.tables = businessTables(t, tx)
	return r
}

// businessTables dumps every business row that APPROVE_ORDER may write,
// all columns but the generated times (updated_at, taken_at, decided_at),
// in a stable order; decimals as stored.
func businessTables(t *testing.T, tx *sqlx.Tx) string {
	t.Helper()
	queries := []string{
		`SELECT id, user_id, currency, CAST(cash AS TEXT) FROM portfolios ORDER BY id`,
		`SELECT portfolio_id, instrument, CAST(quantity AS TEXT) FROM positions ORDER BY portfolio_id, instrument`,
		`SELECT portfolio_id, day, CAST(cash AS TEXT), positions FROM snapshots ORDER BY portfolio_id, day`,
		`SELECT deal_id, portfolio_id, status, reason, saga_id, side, instrument, CAST(quantity AS TEXT), CAST(amount AS TEXT), COALESCE(command_id, '')
			FROM order_decisions ORDER BY deal_id`,
		`SELECT deal_id, portfolio_id, outcome FROM order_reversals ORDER BY deal_id`,
	}
	var b strings.Builder
	for _, q := range queries {
		rows, err := tx.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if bs, ok := v.([]byte); ok {
					v = string(bs)
				}
				fmt.Fprintf(&b, "%v|", v)
			}
			b.WriteString("\n")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// TestApproveBatchLikeOneByOne drives one group of APPROVE_ORDER commands
// through the batch handler and, from the same database (the runs are
// rolled back), through handleApproveOrder one by one in the same order:
// several portfolios with several orders each (buys that exhaust the cash
// so that a later one is rejected, sells that exhaust the holdings and
// delete the position, another instrument, an upper-case portfolio id), a
// deal named twice (its second command after the cash changed), a deal
// decided before, a deal whose order was reverted before, another user's
// portfolio, a missing one and a currency mismatch. The replies
// (event, reason, deal_context) and every business row (cash, positions,
// snapshots, decisions) must be equal, and the replies must be the
// expected decisions. A group holding a payload that fails to parse fails
// as a whole with a permanent error (the SDK then handles each command
// alone) and writes nothing.
func TestApproveBatchLikeOneByOne(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBatchWorld(t, db)
		a := w.portfolio(t, "alice", "1000")
		b := w.portfolio(t, "alice", "2000")
		bob := w.portfolio(t, "bob", "1000")
		w.approve(t, deal("alice", b.ID, "buy", "5", "100"), EventOrderApproved) // b: 1500, 5 AAPL
		before := deal("alice", a.ID, "buy", "1", "100")
		w.approve(t, before, EventOrderApproved) // a: 900, 1 AAPL
		rejectedBefore := deal("alice", a.ID, "buy", "100", "100")
		w.approve(t, rejectedBefore, EventOrderRejected)
		// A deal whose saga failed before its order came: REVERT_ORDER
		// recorded "nothing", so its APPROVE_ORDER is rejected.
		reverted := deal("alice", a.ID, "buy", "1", "1")
		forward := servicetest.Command(t, w.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(reverted))
		if out := servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandRevertOrder, forward, dealctx.Wrap(reverted))); out.Reply == nil || out.Reply.Name != EventOrderReverted {
			t.Fatalf("REVERT_ORDER first: %+v (err %v)", out.Reply, out.Err)
		}

		first := deal("alice", a.ID, "buy", "3", "100")
		tooMuch := deal("alice", a.ID, "buy", "2", "100")
		eur := deal("alice", a.ID, "buy", "1", "1")
		eur.Currency = "EUR"
		msft := deal("alice", b.ID, "buy", "2", "10")
		msft.Instrument = "MSFT"
		aMSFT := deal("alice", a.ID, "buy", "5", "100")
		aMSFT.Instrument = "MSFT"
		upper := deal("alice", strings.ToUpper(b.ID), "buy", "1", "100")
		cases := []struct {
			dc   dealctx.DealContext
			want string // the expected status, then the reason's start
		}{
			{first, "approved"}, // a: 900 -> 600, 4 AAPL
			{deal("alice", a.ID, "buy", "5", "100"), "approved"},     // a: 600 -> 100, 9 AAPL
			{tooMuch, "rejected insufficient cash: need 200.00 USD"}, // a: 100 left
			{deal("alice", b.ID, "sell", "5", "120"), "approved"},    // b: 1500 -> 2100, AAPL deleted
			{deal("alice", b.ID, "sell", "1", "120"), "rejected insufficient holdings: need 1 AAPL, have 0 AAPL"},
			{first, "approved"}, // the same deal again: its decision, nothing applied twice
			{reverted, "rejected the order of deal " + reverted.DealID + " was reverted"},
			{deal("mallory", bob.ID, "buy", "1", "1"), "rejected portfolio " + bob.ID + " not found for user mallory"},
			{eur, "rejected currency mismatch: the deal is in EUR"},
			{before, "approved"},
			{rejectedBefore, "rejected insufficient cash: need 10000.00 USD, have 900.00 USD"},
			{deal("alice", uuid.NewString(), "buy", "1", "1"), "rejected portfolio "},
			{upper, "approved"}, // b: 2100 -> 2000, 1 AAPL
			{msft, "approved"},  // b: 2000 -> 1980, 2 MSFT
			{deal("alice", a.ID, "buy", "1", "100"), "approved"},     // a: 100 -> 0, 10 AAPL
			{deal("alice", a.ID, "sell", "10", "50"), "approved"},    // a: 0 -> 500, AAPL deleted
			{tooMuch, "rejected insufficient cash: need 200.00 USD"}, // decided once: still rejected, though 500 would cover it now
			{aMSFT, "approved"}, // a: 500 -> 0, 5 MSFT
			{deal("alice", a.ID, "buy", "0.01", "1"), "rejected insufficient cash: need 0.01 USD, have 0.00 USD"},
		}
		cmds := make([]sdk.Command[dealctx.Envelope], len(cases))
		for i, c := range cases {
			cmds[i] = orderCmd(c.dc)
		}
		batch := w.run(t, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
			return w.s.handleApproveBatch(ctx, tx, cmds)
		})
		seq := w.run(t, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
			var out []sdk.Result
			for _, c := range cmds {
				r, err := w.s.handleApproveOrder(ctx, tx, c)
				if err != nil {
					return nil, err
				}
				out = append(out, r)
			}
			return out, nil
		})
		if batch.err != "" || seq.err != "" {
			t.Fatalf("errors: batch %q, one by one %q", batch.err, seq.err)
		}
		if len(batch.replies) != len(cmds) {
			t.Fatalf("batch replies = %d, want %d", len(batch.replies), len(cmds))
		}
		for i := range cmds {
			if !reflect.DeepEqual(batch.replies[i], seq.replies[i]) {
				t.Errorf("command %d: batch reply\n%+v\none by one\n%+v", i, batch.replies[i], seq.replies[i])
			}
			got := resultString(t, batch.replies[i])
			if !strings.HasPrefix(got, cases[i].want) {
				t.Errorf("command %d: got %q, want %q...", i, got, cases[i].want)
			}
		}
		if batch.tables != seq.tables {
			t.Errorf("tables after the batch:\n%s\none by one:\n%s", batch.tables, seq.tables)
		}
		for _, want := range []string{a.ID + "|alice|USD|0|", b.ID + "|alice|USD|1980|", bob.ID + "|bob|USD|1000|",
			b.ID + "|AAPL|1|", b.ID + "|MSFT|2|", a.ID + "|MSFT|5|"} {
			if !strings.Contains(batch.tables, want) {
				t.Errorf("tables after the batch lack %q:\n%s", want, batch.tables)
			}
		}
		if strings.Contains(batch.tables, a.ID+"|AAPL|") {
			t.Errorf("portfolio a still holds AAPL after selling all:\n%s", batch.tables)
		}

		// A payload that fails to parse fails the group, writing nothing.
		bad := orderCmd(deal("alice", a.ID, "buy", "1", "1"))
		bad.Payload = dealctx.Envelope{}
		before2 := w.run(t, func(context.Context, *sqlx.Tx) ([]sdk.Result, error) { return nil, nil })
		failed := w.run(t, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
			return w.s.handleApproveBatch(ctx, tx, []sdk.Command[dealctx.Envelope]{cmds[0], bad, cmds[1]})
		})
		if failed.err == "" || strings.HasPrefix(failed.err, "transient") || !strings.Contains(failed.err, "deal_context") || failed.replies != nil {
			t.Errorf("group with a malformed payload: err %q replies %v, want a permanent error about the deal_context and no replies", failed.err, failed.replies)
		}
		if failed.tables != before2.tables {
			t.Errorf("the failed group wrote:\n%s\nbefore:\n%s", failed.tables, before2.tables)
		}
	})
}

// resultString is a reply as "approved" or "rejected <reason>" (the
// deal_context it carries is compared whole elsewhere).
func resultString(t *testing.T, r sdk.Result) string {
	t.Helper()
	switch r.Event() {
	case EventOrderApproved:
		return strings.TrimSpace(dealctx.StatusApproved + " " + r.Reason())
	case EventOrderRejected:
		return dealctx.StatusRejected + " " + r.Reason()
	}
	t.Fatalf("reply %+v: want %s or %s", r, EventOrderApproved, EventOrderRejected)
	return ""
}

// TestApproveBatchForgedGroup is the attacker's group: mallory's valid
// orders on her own portfolio with, amid them, forged commands naming
// alice's portfolio (a buy, a sell of alice's holdings, the id in upper
// case) under mallory's user. The batch is committed; the forged commands
// are rejected as not found for mallory and nothing of alice's moves
// (cash, positions, snapshots read back), while mallory's orders apply.
func TestApproveBatchForgedGroup(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBatchWorld(t, db)
		ctx := context.Background()
		alice := w.portfolio(t, "alice", "1000")
		w.approve(t, deal("alice", alice.ID, "buy", "4", "100"), EventOrderApproved) // 600, 4 AAPL
		mallory := w.portfolio(t, "mallory", "1000")
		victimBefore := mustPortfolio(t, w.s, "alice", alice.ID)
		snapsBefore, err := w.s.Snapshots(ctx, "alice", alice.ID, "", "")
		if err != nil {
			t.Fatal(err)
		}
		w.clk.Set("2026-03-03T10:00:00Z") // a new day: a snapshot written for alice would show

		cases := []struct {
			dc     dealctx.DealContext
			forged bool
		}{
			{deal("mallory", mallory.ID, "buy", "2", "100"), false},
			{deal("mallory", alice.ID, "buy", "1", "100"), true},
			{deal("mallory", alice.ID, "sell", "4", "100"), true},
			{deal("mallory", mallory.ID, "buy", "1", "100"), false},
			{deal("mallory", strings.ToUpper(alice.ID), "sell", "1", "100"), true},
		}
		cmds := make([]sdk.Command[dealctx.Envelope], len(cases))
		for i, c := range cases {
			cmds[i] = orderCmd(c.dc)
		}
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := w.s.handleApproveBatch(ctx, tx, cmds)
		if err != nil {
			tx.Rollback() //nolint:errcheck
			t.Fatalf("batch: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			got := resultString(t, res[i])
			want := "approved"
			if c.forged {
				want = "rejected portfolio " + c.dc.PortfolioID + " not found for user mallory"
			}
			if got != want {
				t.Errorf("command %d: got %q, want %q", i, got, want)
			}
		}
		victim := mustPortfolio(t, w.s, "alice", alice.ID)
		if !victim.Cash.Equal(victimBefore.Cash) || positionsString(victim.Positions) != positionsString(victimBefore.Positions) ||
			!victim.UpdatedAt.Equal(victimBefore.UpdatedAt) {
			t.Errorf("alice's portfolio: %s %s updated %v, want untouched %s %s updated %v", victim.Cash, positionsString(victim.Positions),
				victim.UpdatedAt, victimBefore.Cash, positionsString(victimBefore.Positions), victimBefore.UpdatedAt)
		}
		if !victim.Cash.Equal(dec("600")) || positionsString(victim.Positions) != `{"AAPL":"4"}` {
			t.Errorf("alice's portfolio: %s %s, want 600 {\"AAPL\":\"4\"}", victim.Cash, positionsString(victim.Positions))
		}
		snaps, err := w.s.Snapshots(ctx, "alice", alice.ID, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(snaps, snapsBefore) {
			t.Errorf("alice's snapshots: %+v, want untouched %+v", snaps, snapsBefore)
		}
		var approvedOnAlice int
		if err := db.Get(&approvedOnAlice, db.Rebind(`SELECT COUNT(*) FROM order_decisions WHERE portfolio_id = ? AND status = ?`),
			alice.ID, dealctx.StatusApproved); err != nil {
			t.Fatal(err)
		}
		if approvedOnAlice != 1 { // her own setup buy
			t.Errorf("approved decisions on alice's portfolio = %d, want 1 (her own)", approvedOnAlice)
		}
		if got := mustPortfolio(t, w.s, "mallory", mallory.ID); !got.Cash.Equal(dec("700")) || positionsString(got.Positions) != `{"AAPL":"3"}` {
			t.Errorf("mallory's portfolio: %s %s, want 700 {\"AAPL\":\"3\"}", got.Cash, positionsString(got.Positions))
		}
	})
}

// TestApproveBatchConcurrentGroups runs eight groups at once, each in its
// own transaction, each naming the same four portfolios in a different
// order (rotated, and reversed for every other group): the groups lock
// their portfolios in id order, so none deadlocks, and none loses
// another's update: of the 16 buys of 100 per portfolio of 1000, exactly
// 10 are approved, the cash ends at 0 and the position at 10.
func TestApproveBatchConcurrentGroups(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBatchWorld(t, db)
		ctx := context.Background()
		pfs := make([]Portfolio, 4)
		for i := range pfs {
			pfs[i] = w.portfolio(t, "alice", "1000")
		}
		const groups = 8
		errs := make(chan error, groups)
		approved := make(chan int, groups)
		start := make(chan struct{})
		for g := range groups {
			cmds := make([]sdk.Command[dealctx.Envelope], 8)
			for i := range cmds {
				j := (g + i) % len(pfs)
				if g%2 == 1 {
					j = len(pfs) - 1 - j
				}
				cmds[i] = orderCmd(deal("alice", pfs[j].ID, "buy", "1", "100"))
			}
			go func() {
				<-start
				n, err := func() (int, error) {
					tx, err := db.BeginTxx(ctx, nil)
					if err != nil {
						return 0, err
					}
					defer tx.Rollback() //nolint:errcheck
					res, err := w.s.handleApproveBatch(ctx, tx, cmds)
					if err != nil {
						return 0, err
					}
					n := 0
					for _, r := range res {
						if r.Event() == EventOrderApproved {
							n++
						}
					}
					return n, tx.Commit()
				}()
				approved <- n
				errs <- err
			}()
		}
		close(start)
		total := 0
		for range groups {
			if err := <-errs; err != nil {
				t.Errorf("group: %v", err)
			}
			total += <-approved
		}
		if total != 40 {
			t.Errorf("approved = %d, want 40 (10 per portfolio)", total)
		}
		for _, pf := range pfs {
			if got := mustPortfolio(t, w.s, "alice", pf.ID); !got.Cash.IsZero() || positionsString(got.Positions) != `{"AAPL":"10"}` {
				t.Errorf("portfolio %s: %s %s, want 0 {\"AAPL\":\"10\"}", pf.ID, got.Cash, positionsString(got.Positions))
			}
		}
	})
}
