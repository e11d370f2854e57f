package profile

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// line is a deal_context of a basket: side qty instrument at price, USD.
func line(user, portfolio, side, qty, instrument, price string) dealctx.DealContext {
	dc := deal(user, portfolio, side, qty, price)
	dc.Instrument = instrument
	return dc
}

// basketOf is the basket of lines in portfolio of user, in USD.
func basketOf(user, portfolio string, lines ...dealctx.DealContext) Basket {
	return Basket{BasketID: uuid.NewString(), UserID: user, PortfolioID: portfolio, Currency: "USD", Lines: lines}
}

// basketCommand builds a command of the BASKET_ORDER saga sagaID.
func basketCommand(t *testing.T, p *sdk.Participant, command, sagaID string, payload any) engine.Message {
	t.Helper()
	msg := servicetest.Command(t, p, command, sagaID, payload)
	msg.Saga, msg.SagaVersion = "BASKET_ORDER", 1
	return msg
}

// checkOf decodes BASKET_CHECKED's payload, checking that it carries
// basket_check and nothing else (the only key the saga lets profile write).
func checkOf(t *testing.T, out sdk.Outcome) BasketCheck {
	t.Helper()
	if out.Reply == nil || out.Reply.Name != EventBasketChecked || out.Err != nil || out.DeadLetter != nil {
		t.Fatalf("got reply %+v (err %v, dead letter %+v), want %s", out.Reply, out.Err, out.DeadLetter, EventBasketChecked)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out.Reply.Payload, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["basket_check"]; !ok || len(top) != 1 {
		t.Errorf("BASKET_CHECKED payload %s: want basket_check only", out.Reply.Payload)
	}
	var env BasketCheckEnvelope
	if err := json.Unmarshal(out.Reply.Payload, &env); err != nil {
		t.Fatal(err)
	}
	return env.BasketCheck
}

// businessRows is every business row of profile's database (portfolios,
// positions, snapshots, deposits, decisions, reversals), printed: what a
// read-only command must leave exactly as it was.
func businessRows(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT * FROM portfolios ORDER BY seq`,
		`SELECT * FROM positions ORDER BY portfolio_id, instrument`,
		`SELECT * FROM snapshots ORDER BY portfolio_id, day`,
		`SELECT * FROM deposits ORDER BY id`,
		`SELECT * FROM order_decisions ORDER BY deal_id`,
		`SELECT * FROM order_reversals ORDER BY deal_id`,
	} {
		rows, err := db.Queryx(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			cols, err := rows.SliceScan()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cols {
				if raw, ok := c.([]byte); ok {
					c = string(raw)
				}
				fmt.Fprintf(&b, "%v|", c)
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

// dbHoldings reads a portfolio's cash and positions straight from the
// tables, e.g. `9400 {"MSFT":"6"}`.
func dbHoldings(t *testing.T, db *sqlx.DB, portfolioID string) string {
	t.Helper()
	var cash decimal.Decimal
	if err := db.Get(&cash, db.Rebind(`SELECT cash FROM portfolios WHERE id = ?`), portfolioID); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Instrument string          `db:"instrument"`
		Quantity   decimal.Decimal `db:"quantity"`
	}
	if err := db.Select(&rows, db.Rebind(`SELECT instrument, quantity FROM positions WHERE portfolio_id = ?`), portfolioID); err != nil {
		t.Fatal(err)
	}
	pos := Positions{}
	for _, r := range rows {
		pos[r.Instrument] = r.Quantity
	}
	return cash.String() + " " + positionsString(pos)
}

// TestCheckBasket checks baskets against alice's portfolio (1500 USD, 10
// AAPL, 5 MSFT) on SQLite and PostgreSQL: the answer, its reason, and that
// no row of the database changed.
func TestCheckBasket(t *testing.T) {
	type mk func(pf string) Basket
	alice := func(lines ...func(pf string) dealctx.DealContext) mk {
		return func(pf string) Basket {
			b := basketOf("alice", pf)
			for _, l := range lines {
				b.Lines = append(b.Lines, l(pf))
			}
			return b
		}
	}
	l := func(side, qty, inst, price string) func(pf string) dealctx.DealContext {
		return func(pf string) dealctx.DealContext { return line("alice", pf, side, qty, inst, price) }
	}
	tests := []struct {
		name       string
		basket     mk
		want       bool
		wantReason string // "%s" is the portfolio id
	}{
		{name: "sufficient: buys use all the cash, sells all the holdings",
			basket: alice(l("buy", "5", "TSLA", "100"), l("buy", "10", "NVDA", "100"), l("sell", "10", "AAPL", "100"), l("sell", "5", "MSFT", "1")),
			want:   true},
		{name: "insufficient cash: the sum of the buys", basket: alice(l("buy", "10", "TSLA", "100"), l("buy", "6", "NVDA", "100")),
			wantReason: "insufficient cash: need 1600.00 USD, have 1500.00 USD"},
		{name: "cost rounded against the portfolio", basket: alice(l("buy", "1", "TSLA", "1499.999999999"), l("buy", "0.00000001", "NVDA", "0.00000001")),
			wantReason: "insufficient cash: need 1500.00000001 USD, have 1500.00 USD"},
		{name: "insufficient holdings: the sum of one instrument's sells", basket: alice(l("sell", "6", "AAPL", "100"), l("sell", "5", "AAPL", "90"), l("sell", "5", "MSFT", "1")),
			wantReason: "insufficient holdings: need 11 AAPL, have 10 AAPL"},
		{name: "a sell of an instrument not held", basket: alice(l("sell", "1", "TSLA", "100")),
			wantReason: "insufficient holdings: need 1 TSLA, have 0 TSLA"},
		{name: "sells do not fund buys", basket: alice(l("sell", "10", "AAPL", "100"), l("buy", "20", "TSLA", "100")),
			wantReason: "insufficient cash: need 2000.00 USD, have 1500.00 USD"},
		{name: "every shortfall named, cash first", basket: alice(l("sell", "6", "MSFT", "1"), l("buy", "16", "TSLA", "100"), l("sell", "11", "AAPL", "1")),
			wantReason: "insufficient cash: need 1600.00 USD, have 1500.00 USD; insufficient holdings: need 11 AAPL, have 10 AAPL; insufficient holdings: need 6 MSFT, have 5 MSFT"},
		{name: "portfolio id in upper case", basket: func(pf string) Basket {
			b := alice(l("buy", "1", "TSLA", "100"))(strings.ToUpper(pf))
			return b
		}, want: true},
		{name: "another user's portfolio", basket: func(pf string) Basket {
			return basketOf("mallory", pf, line("mallory", pf, "buy", "1", "TSLA", "1"))
		}, wantReason: "portfolio %s not found for user mallory"},
		{name: "unknown portfolio", basket: func(string) Basket {
			pf := uuid.NewString()
			return basketOf("alice", pf, line("alice", pf, "buy", "1", "TSLA", "1"))
		}},
		{name: "currency mismatch", basket: func(pf string) Basket {
			b := alice(l("buy", "1", "TSLA", "1"))(pf)
			b.Currency, b.Lines[0].Currency = "EUR", "EUR"
			return b
		}, wantReason: "currency mismatch: the basket is in EUR, portfolio %s holds USD"},
	}
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "3000")
		w.approve(t, uuid.NewString(), line("alice", w.pf.ID, "buy", "10", "AAPL", "100"), EventOrderApproved)
		w.approve(t, uuid.NewString(), line("alice", w.pf.ID, "buy", "5", "MSFT", "100"), EventOrderApproved)
		if got := dbHoldings(t, db, w.pf.ID); got != `1500 {"AAPL":"10","MSFT":"5"}` {
			t.Fatalf("alice's portfolio: got %s", got)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				b := tt.basket(w.pf.ID)
				before := businessRows(t, db)
				msg := basketCommand(t, w.p, CommandCheckBasket, uuid.NewString(), BasketEnvelope{Basket: &b})
				out := servicetest.DispatchMessage(t, w.p, msg)
				got := checkOf(t, out)
				want := BasketCheck{Sufficient: tt.want, Reason: tt.wantReason}
				if strings.Contains(want.Reason, "%s") {
					want.Reason = fmt.Sprintf(want.Reason, w.pf.ID)
				}
				if tt.name == "unknown portfolio" {
					want.Reason = fmt.Sprintf("portfolio %s not found for user alice", b.PortfolioID)
				}
				if got != want {
					t.Errorf("basket_check: got %+v, want %+v", got, want)
				}
				// A redelivery answers the stored reply.
				if again := servicetest.DispatchMessage(t, w.p, msg); !again.Duplicate || again.Reply == nil || again.Reply.ID != out.Reply.ID {
					t.Errorf("redelivery: got duplicate %v reply %+v, want the stored reply", again.Duplicate, again.Reply)
				}
				if after := businessRows(t, db); after != before {
					t.Errorf("CHECK_BASKET changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
	})
}

// TestCheckBasketReasonBounded: a basket of 20 sells of instruments not
// held, with the longest tickers and quantities, is answered with a reason
// within the saga's 1000 bytes, naming the shortfalls that fit and how
// many more there are.
func TestCheckBasketReasonBounded(t *testing.T) {
	db := servicetest.SQLite(t, Migrate)
	w := newRevertWorld(t, db, "1")
	b := basketOf("alice", w.pf.ID)
	for i := range MaxBasketLines {
		b.Lines = append(b.Lines, line("alice", w.pf.ID, "sell", "123456789012345678.12345678", fmt.Sprintf("LONGTICKER%02d", i), "0.00000001"))
	}
	got := checkOf(t, servicetest.DispatchMessage(t, w.p, basketCommand(t, w.p, CommandCheckBasket, uuid.NewString(), BasketEnvelope{Basket: &b})))
	if got.Sufficient || len(got.Reason) > MaxCheckReasonBytes || !strings.HasPrefix(got.Reason, "insufficient holdings: need 123456789012345678.12345678 LONGTICKER00, have 0 LONGTICKER00; ") ||
		!strings.Contains(got.Reason, " more") {
		t.Errorf("basket_check: got %+v (%d bytes), want not sufficient, at most %d bytes, ending with how many more", got, len(got.Reason), MaxCheckReasonBytes)
	}
}

// TestCheckBasketMalformed sends CHECK_BASKET payloads that are not a
// valid basket: each is parked with the reason, answered with nothing, and
// no row of the database changes.
func TestCheckBasketMalformed(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newRevertWorld(t, db, "2000")
		good := func() Basket {
			return basketOf("alice", w.pf.ID, line("alice", w.pf.ID, "buy", "1", "AAPL", "100"), line("alice", w.pf.ID, "sell", "1", "MSFT", "100"))
		}
		edit := func(f func(b *Basket)) any {
			b := good()
			f(&b)
			return BasketEnvelope{Basket: &b}
		}
		lines := func(n int) []dealctx.DealContext {
			var out []dealctx.DealContext
			for range n {
				out = append(out, line("alice", w.pf.ID, "buy", "1", "AAPL", "1"))
			}
			return out
		}
		tests := []struct {
			name    string
			payload any
			want    string
		}{
			{"no basket", map[string]any{"deal_context": line("alice", w.pf.ID, "buy", "1", "AAPL", "1")}, "the payload has no basket"},
			{"basket null", map[string]any{"basket": nil}, "the payload has no basket"},
			{"basket a string", map[string]any{"basket": "all of it"}, "decode CHECK_BASKET payload"},
			{"lines an object", map[string]any{"basket": map[string]any{"basket_id": uuid.NewString(), "lines": map[string]any{}}}, "decode CHECK_BASKET payload"},
			{"payload an array", []any{1, 2}, "decode CHECK_BASKET payload"},
			{"no lines", edit(func(b *Basket) { b.Lines = nil }), "the basket has no lines"},
			{"21 lines", edit(func(b *Basket) { b.Lines = lines(21) }), "the basket has 21 lines, more than 20"},
			{"basket_id not a UUID", edit(func(b *Basket) { b.BasketID = "b1" }), `basket_id "b1" is not a UUID`},
			{"user_id empty", edit(func(b *Basket) { b.UserID = " " }), "user_id is empty"},
			{"user_id oversized", edit(func(b *Basket) { b.UserID = strings.Repeat("u", 257) }), "user_id has 257 bytes"},
			{"portfolio_id not a UUID", edit(func(b *Basket) { b.PortfolioID = "../x" }), `portfolio_id "../x" is not a UUID`},
			{"currency bad", edit(func(b *Basket) { b.Currency = "usd" }), `currency "usd"`},
			{"a line with a forged amount", edit(func(b *Basket) { b.Lines[1].Amount = dec("1") }), "line 2 (deal"},
			{"a line of another user", edit(func(b *Basket) { b.Lines[0].UserID = "mallory" }), `user_id "mallory" is not the basket's "alice"`},
			{"a line of another portfolio", edit(func(b *Basket) { b.Lines[1].PortfolioID = uuid.NewString() }), "is not the basket's " + w.pf.ID},
			{"a line in another currency", edit(func(b *Basket) { b.Lines[0].Currency = "EUR" }), "currency EUR is not the basket's USD"},
			{"a deal twice", edit(func(b *Basket) { b.Lines[1] = b.Lines[0] }), "the deal is line 1 too"},
			{"a deal twice, in upper case", edit(func(b *Basket) {
				b.Lines[1] = b.Lines[0]
				b.Lines[1].DealID = strings.ToUpper(b.Lines[0].DealID)
			}), "the deal is line 1 too"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := businessRows(t, db)
				out := servicetest.DispatchMessage(t, w.p, basketCommand(t, w.p, CommandCheckBasket, uuid.NewString(), tt.payload))
				if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("CHECK_BASKET: got reply %+v dead letter %+v (err %v), want a dead letter containing %q", out.Reply, out.DeadLetter, out.Err, tt.want)
				}
				if after := businessRows(t, db); after != before {
					t.Errorf("a refused CHECK_BASKET changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
	})
}

// TestBasketLinesApproveAndRevert runs BASKET_ORDER's lines through the
// existing APPROVE_ORDER and REVERT_ORDER, as the saga sends them: each
// line its own command {"deal_context": line} in the one basket saga,
// approved in any order (one after the other, or all at once), then two of
// them reverted (each compensation carrying its line). On SQLite and
// PostgreSQL, read from the tables: the cash and positions are those of
// the remaining line; a REVERT_ORDER of a line never approved moves
// nothing and answers ORDER_REVERTED; re-deliveries and repetitions move
// nothing.
func TestBasketLinesApproveAndRevert(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("concurrent=%v", concurrent), func(t *testing.T) {
			servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
				testBasketLines(t, db, concurrent)
			})
		})
	}
}

func testBasketLines(t *testing.T, db *sqlx.DB, concurrent bool) {
	w := newRevertWorld(t, db, "10000")
	w.approve(t, uuid.NewString(), line("alice", w.pf.ID, "buy", "10", "MSFT", "100"), EventOrderApproved)
	const start = `9000 {"MSFT":"10"}`
	if got := dbHoldings(t, db, w.pf.ID); got != start {
		t.Fatalf("before the basket: got %s, want %s", got, start)
	}
	sagaID := uuid.NewString()
	l1 := line("alice", w.pf.ID, "buy", "10", "AAPL", "150")  // -1500
	l2 := line("alice", w.pf.ID, "sell", "4", "MSFT", "100")  // +400: the line that stays
	l3 := line("alice", w.pf.ID, "buy", "5", "TSLA", "200")   // -1000
	l4 := line("alice", w.pf.ID, "buy", "1", "NVDA", "50.25") // its APPROVE_ORDER never arrives
	b := basketOf("alice", w.pf.ID, l1, l2, l3, l4)
	if c := checkOf(t, servicetest.DispatchMessage(t, w.p, basketCommand(t, w.p, CommandCheckBasket, sagaID, BasketEnvelope{Basket: &b}))); !c.Sufficient {
		t.Fatalf("CHECK_BASKET: got %+v, want sufficient", c)
	}

	forward := map[string]engine.Message{}
	for _, l := range []dealctx.DealContext{l1, l2, l3, l4} {
		forward[l.DealID] = basketCommand(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(l))
	}
	applied := []dealctx.DealContext{l3, l2, l1} // not the basket's order
	outs := dispatchAll(t, w.p, concurrent, forward[l3.DealID], forward[l2.DealID], forward[l1.DealID])
	for i, out := range outs {
		if out.Reply == nil || out.Reply.Name != EventOrderApproved {
			t.Fatalf("APPROVE_ORDER of line %s: got %+v (err %v, dead letter %+v), want ORDER_APPROVED", applied[i].Instrument, out.Reply, out.Err, out.DeadLetter)
		}
		var env dealctx.Envelope
		if err := json.Unmarshal(out.Reply.Payload, &env); err != nil || env.DealContext == nil || env.DealContext.DealID != applied[i].DealID {
			t.Errorf("ORDER_APPROVED of line %s: got %s, want its own deal_context", applied[i].Instrument, out.Reply.Payload)
		}
	}
	if got, want := dbHoldings(t, db, w.pf.ID), `6900 {"AAPL":"10","MSFT":"6","TSLA":"5"}`; got != want {
		t.Fatalf("after the three lines: got %s, want %s", got, want)
	}

	// The saga fails: the applied lines but l2 are reverted, and l4 (which
	// may have been applied), each compensation with its line.
	comps := []engine.Message{
		compensationOf(t, w.p, forward[l1.DealID], l1),
		compensationOf(t, w.p, forward[l3.DealID], l3),
		compensationOf(t, w.p, forward[l4.DealID], l4),
	}
	revs := dispatchAll(t, w.p, concurrent, comps...)
	for i, want := range []struct {
		dc       dealctx.DealContext
		reverted bool
		reason   string
	}{
		{l1, true, "the buy was undone: 1500.00 USD returned to the cash, 10 AAPL taken back"},
		{l3, true, "the buy was undone: 1000.00 USD returned to the cash, 5 TSLA taken back"},
		{l4, false, "the order was not decided: nothing to undo, and it will not be applied if it arrives later"},
	} {
		rev := reversalOf(t, revs[i])
		if rev.DealID != want.dc.DealID || rev.Reverted != want.reverted || rev.Reason != want.reason {
			t.Errorf("order_reversal of line %s: got %+v, want reverted %v %q", want.dc.Instrument, rev, want.reverted, want.reason)
		}
	}
	const remaining = `9400 {"MSFT":"6"}` // start and l2 only
	if got := dbHoldings(t, db, w.pf.ID); got != remaining {
		t.Fatalf("after the reversals: got %s, want %s (the remaining line only)", got, remaining)
	}

	// Re-deliveries and repetitions: nothing moves.
	for i, c := range comps {
		if again := servicetest.DispatchMessage(t, w.p, c); !again.Duplicate || again.Reply == nil || again.Reply.ID != revs[i].Reply.ID {
			t.Errorf("redelivered REVERT_ORDER %d: got duplicate %v reply %+v, want the stored reply", i, again.Duplicate, again.Reply)
		}
	}
	if rev := reversalOf(t, servicetest.DispatchMessage(t, w.p, compensationOf(t, w.p, forward[l1.DealID], l1))); !rev.Reverted || rev.DealID != l1.DealID {
		t.Errorf("REVERT_ORDER of line AAPL under a new id: got %+v, want the first answer", rev)
	}
	for _, l := range []dealctx.DealContext{l1, l2, l3} {
		if again := servicetest.DispatchMessage(t, w.p, forward[l.DealID]); !again.Duplicate {
			t.Errorf("redelivered APPROVE_ORDER of line %s: got duplicate %v (reply %+v), want the stored reply", l.Instrument, again.Duplicate, again.Reply)
		}
	}
	if late := servicetest.DispatchMessage(t, w.p, forward[l4.DealID]); late.Reply == nil || late.Reply.Name != engine.EventCommandExpired {
		t.Errorf("APPROVE_ORDER of line NVDA after its revert: got %+v, want COMMAND_EXPIRED", late.Reply)
	}
	for _, l := range []dealctx.DealContext{l1, l4} {
		late := servicetest.DispatchMessage(t, w.p, basketCommand(t, w.p, CommandApproveOrder, sagaID, dealctx.Wrap(l)))
		if late.Reply == nil || late.Reply.Name != EventOrderRejected || !strings.Contains(late.Reply.Reason, "was reverted") {
			t.Errorf("APPROVE_ORDER of reverted line %s under a new id: got %+v, want ORDER_REJECTED (reverted)", l.Instrument, late.Reply)
		}
	}
	if got := dbHoldings(t, db, w.pf.ID); got != remaining {
		t.Errorf("after the repetitions: got %s, want still %s", got, remaining)
	}
	var decisions, reversals int
	if err := db.Get(&decisions, db.Rebind(`SELECT COUNT(*) FROM order_decisions WHERE saga_id = ?`), sagaID); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&reversals, db.Rebind(`SELECT COUNT(*) FROM order_reversals WHERE saga_id = ?`), sagaID); err != nil {
		t.Fatal(err)
	}
	if decisions != 3 || reversals != 3 {
		t.Errorf("rows of the basket's saga: %d decisions, %d reversals; want 3 and 3", decisions, reversals)
	}
}

// compensationOf is REVERT_ORDER compensating forward, with the line's
// payload (as the engine sends a fan-out element's compensation).
func compensationOf(t *testing.T, p *sdk.Participant, forward engine.Message, l dealctx.DealContext) engine.Message {
	t.Helper()
	c := servicetest.Compensation(t, p, CommandRevertOrder, forward, dealctx.Wrap(l))
	c.Saga, c.SagaVersion = forward.Saga, forward.SagaVersion
	return c
}

// dispatchAll dispatches msgs one after the other, or all at once, and
// returns their outcomes in order.
func dispatchAll(t *testing.T, p *sdk.Participant, concurrent bool, msgs ...engine.Message) []sdk.Outcome {
	t.Helper()
	outs := make([]sdk.Outcome, len(msgs))
	if !concurrent {
		for i, m := range msgs {
			outs[i] = servicetest.DispatchMessage(t, p, m)
		}
		return outs
	}
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		body, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			outs[i], errs[i] = p.Dispatch(context.Background(), sdk.Record{Topic: p.Config().CommandTopic, Key: m.SagaID, Value: body,
				Headers: map[string]string{engine.HeaderKind: string(engine.KindCommand)}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dispatch %d: %v", i, err)
		}
	}
	return outs
}
