package profile

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(s string) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func devAuth(tb testing.TB) *auth.Authenticator {
	tb.Helper()
	a, err := auth.New(context.Background(), auth.Config{DevHeader: true, Logger: quiet})
	if err != nil {
		tb.Fatalf("auth.New: %v", err)
	}
	return a
}

func kit(t *testing.T, clk *clock) (*sdktest.Kit, *Service) {
	t.Helper()
	var svc *Service
	k := sdktest.New(t, sdk.Config{Name: Name, Logger: quiet}, func(p *sdk.Participant) {
		s, err := New(Config{DB: p.DB(), Participant: p, Auth: devAuth(t), Logger: quiet, Now: clk.Now})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		s.RegisterHandlers(p)
		svc = s
	}, func(db *sqlx.DB) error { return Migrate(context.Background(), db) })
	return k, svc
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// treasury is a funding operator: the only way cash enters a portfolio
// besides sells.
var treasury = auth.User{Subject: "treasury", Roles: []string{auth.RoleFundingOperator}}

// fundedPortfolio creates a USD portfolio "Main" of user and, unless cash
// is zero, funds it with a deposit by treasury.
func fundedPortfolio(ctx context.Context, s *Service, user string, cash decimal.Decimal) (Portfolio, error) {
	pf, err := s.CreatePortfolio(ctx, user, NewPortfolio{Name: "Main", Currency: "USD"})
	if err != nil || cash.IsZero() {
		return pf, err
	}
	dep, _, err := s.Deposit(ctx, treasury, pf.ID, NewDeposit{Amount: cash, Currency: "USD", Reason: "test funding"}, uuid.NewString())
	pf.Cash = dep.CashAfter
	return pf, err
}

func deal(user, portfolio, side, qty, price string) dealctx.DealContext {
	q, p := dec(qty), dec(price)
	return dealctx.DealContext{DealID: uuid.NewString(), UserID: user, PortfolioID: portfolio, Side: side,
		Instrument: "AAPL", Quantity: q, Price: p, Amount: dealctx.CashAmount(side, q, p), Currency: "USD"}
}

func reply(t *testing.T, res sdktest.Result) dealctx.DealContext {
	t.Helper()
	var env dealctx.Envelope
	res.Decode(t, &env)
	if env.DealContext == nil {
		t.Fatalf("%s payload has no deal_context: %s", res.Event, res.Payload)
	}
	return *env.DealContext
}

func mustPortfolio(t *testing.T, s *Service, user, id string) Portfolio {
	t.Helper()
	pf, err := s.Portfolio(context.Background(), user, id)
	if err != nil {
		t.Fatalf("Portfolio: %v", err)
	}
	return pf
}

func positionsString(p Positions) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func TestApproveOrder(t *testing.T) {
	tests := []struct {
		name       string
		cash       string
		holdings   string // AAPL bought first (approved), "" for none
		other      bool   // the deal's user is not the portfolio's
		currency   string
		side, qty  string
		wantEvent  string
		wantReason string
		wantCash   string
		wantPos    string
	}{
		{name: "funded buy", cash: "2000", side: "buy", qty: "10", wantEvent: EventOrderApproved, wantCash: "500", wantPos: `{"AAPL":"10"}`},
		{name: "buy of all cash", cash: "1500", side: "buy", qty: "10", wantEvent: EventOrderApproved, wantCash: "0", wantPos: `{"AAPL":"10"}`},
		{name: "unfunded buy", cash: "200", side: "buy", qty: "10", wantEvent: EventOrderRejected,
			wantReason: "insufficient cash: need 1500.00 USD, have 200.00 USD", wantCash: "200", wantPos: `{}`},
		{name: "sell without holdings", cash: "100", side: "sell", qty: "5", wantEvent: EventOrderRejected,
			wantReason: "insufficient holdings: need 5 AAPL, have 0 AAPL", wantCash: "100", wantPos: `{}`},
		{name: "sell more than held", cash: "1500", holdings: "3", side: "sell", qty: "5", wantEvent: EventOrderRejected,
			wantReason: "insufficient holdings: need 5 AAPL, have 3 AAPL", wantCash: "1050", wantPos: `{"AAPL":"3"}`},
		{name: "sell part", cash: "1500", holdings: "3", side: "sell", qty: "2", wantEvent: EventOrderApproved,
			wantCash: "1350", wantPos: `{"AAPL":"1"}`},
		{name: "sell all", cash: "1500", holdings: "3", side: "sell", qty: "3", wantEvent: EventOrderApproved,
			wantCash: "1500", wantPos: `{}`},
		{name: "another user's portfolio", cash: "2000", other: true, side: "buy", qty: "1", wantEvent: EventOrderRejected,
			wantReason: "not found for user mallory", wantCash: "2000", wantPos: `{}`},
		{name: "currency mismatch", cash: "2000", currency: "EUR", side: "buy", qty: "1", wantEvent: EventOrderRejected,
			wantReason: "currency mismatch: the deal is in EUR", wantCash: "2000", wantPos: `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{}
			clk.Set("2026-03-02T10:00:00Z")
			k, s := kit(t, clk)
			ctx := context.Background()
			pf, err := fundedPortfolio(ctx, s, "alice", dec(tt.cash))
			if err != nil {
				t.Fatal(err)
			}
			if tt.holdings != "" {
				if res := k.Send(t, CommandApproveOrder, dealctx.Wrap(deal("alice", pf.ID, "buy", tt.holdings, "150"))); res.Event != EventOrderApproved {
					t.Fatalf("setup buy: got %q %q (err %v)", res.Event, res.Reason, res.Err)
				}
			}
			user := "alice"
			if tt.other {
				user = "mallory"
			}
			dc := deal(user, pf.ID, tt.side, tt.qty, "150")
			if tt.currency != "" {
				dc.Currency = tt.currency
			}
			res := k.Send(t, CommandApproveOrder, dealctx.Wrap(dc))
			if res.Event != tt.wantEvent || res.Err != nil {
				t.Fatalf("reply: got %q %q (err %v), want %s", res.Event, res.Reason, res.Err, tt.wantEvent)
			}
			if !strings.Contains(res.Reason, tt.wantReason) || (tt.wantReason == "") != (res.Reason == "") {
				t.Errorf("reason: got %q, want %q", res.Reason, tt.wantReason)
			}
			out := reply(t, res)
			wantStatus := dealctx.StatusApproved
			if tt.wantEvent == EventOrderRejected {
				wantStatus = dealctx.StatusRejected
			}
			if out.Status != wantStatus || out.Reason != res.Reason || out.DealID != dc.DealID || !out.Quantity.Equal(dc.Quantity) {
				t.Errorf("reply deal_context: got %+v, want the deal with status %q and reason %q", out, wantStatus, res.Reason)
			}
			got := mustPortfolio(t, s, "alice", pf.ID)
			if !got.Cash.Equal(dec(tt.wantCash)) || positionsString(got.Positions) != tt.wantPos {
				t.Errorf("portfolio: got cash %s positions %s, want %s %s", got.Cash, positionsString(got.Positions), tt.wantCash, tt.wantPos)
			}
			snap, err := s.SnapshotAt(ctx, "alice", pf.ID, "2026-03-02")
			if err != nil {
				t.Fatalf("today's snapshot: %v", err)
			}
			if !snap.Cash.Equal(got.Cash) || positionsString(snap.Positions) != tt.wantPos {
				t.Errorf("today's snapshot: got cash %s positions %s, want the portfolio's %s %s", snap.Cash, positionsString(snap.Positions), got.Cash, tt.wantPos)
			}

			// Redelivery: duplicate, same reply, nothing applied again.
			again := k.Redeliver(t)
			if !again.Duplicate || again.Reply == nil || again.Reply.ID != res.Reply.ID {
				t.Errorf("redelivery: got duplicate %v reply %+v, want the stored reply %s", again.Duplicate, again.Reply, res.Reply.ID)
			}
			// The same deal under a new message id: same decision, nothing applied again.
			third := k.Send(t, CommandApproveOrder, dealctx.Wrap(dc))
			if third.Event != res.Event || third.Reason != res.Reason {
				t.Errorf("same deal again: got %q %q, want %q %q", third.Event, third.Reason, res.Event, res.Reason)
			}
			after := mustPortfolio(t, s, "alice", pf.ID)
			if !after.Cash.Equal(got.Cash) || positionsString(after.Positions) != positionsString(got.Positions) {
				t.Errorf("portfolio after repeated commands: got %s %s, want unchanged %s %s",
					after.Cash, positionsString(after.Positions), got.Cash, positionsString(got.Positions))
			}
		})
	}
}

func TestApproveOrderMalformedIsDeadLetter(t *testing.T) {
	clk := &clock{}
	clk.Set("2026-03-02T10:00:00Z")
	k, _ := kit(t, clk)
	tests := []struct {
		name    string
		payload any
		want    string
	}{
		{"no deal_context", map[string]any{"other": 1}, "no deal_context"},
		{"bad side", map[string]any{"deal_context": map[string]any{"deal_id": uuid.NewString(), "user_id": "a",
			"portfolio_id": uuid.NewString(), "side": "hold", "instrument": "AAPL", "quantity": "1", "price": "1", "amount": "1", "currency": "USD"}}, `side "hold"`},
		{"float quantity", map[string]any{"deal_context": map[string]any{"quantity": []int{1}}}, "decode APPROVE_ORDER payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := k.Send(t, CommandApproveOrder, tt.payload)
			if !res.DeadLettered || res.Event != "" {
				t.Fatalf("got event %q dead-lettered %v, want a dead letter", res.Event, res.DeadLettered)
			}
			if !strings.Contains(res.DeadLetter.Reason, tt.want) {
				t.Errorf("reason: got %q, want it to contain %q", res.DeadLetter.Reason, tt.want)
			}
		})
	}
}

func TestSnapshotsByDate(t *testing.T) {
	clk := &clock{}
	clk.Set("2026-03-02T10:00:00Z")
	k, s := kit(t, clk)
	ctx := context.Background()
	pf, err := fundedPortfolio(ctx, s, "alice", dec("10000"))
	if err != nil {
		t.Fatal(err)
	}
	clk.Set("2026-03-04T09:00:00Z")
	k.Send(t, CommandApproveOrder, dealctx.Wrap(deal("alice", pf.ID, "buy", "10", "100")))
	clk.Set("2026-03-04T23:59:00Z")
	k.Send(t, CommandApproveOrder, dealctx.Wrap(deal("alice", pf.ID, "buy", "5", "100")))
	clk.Set("2026-03-07T12:00:00Z")
	k.Send(t, CommandApproveOrder, dealctx.Wrap(deal("alice", pf.ID, "sell", "15", "120")))

	snaps, err := s.Snapshots(ctx, "alice", pf.ID, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var days []string
	for _, sn := range snaps {
		days = append(days, sn.Date+"="+sn.Cash.String()+positionsString(sn.Positions))
	}
	if got, want := strings.Join(days, " "), `2026-03-02=10000{} 2026-03-04=8500{"AAPL":"15"} 2026-03-07=10300{}`; got != want {
		t.Errorf("snapshots: got %s, want %s (one per day, end-of-day position)", got, want)
	}
	tests := []struct {
		date     string
		wantDate string // "" for not found
	}{
		{"2026-03-01", ""},
		{"2026-03-02", "2026-03-02"},
		{"2026-03-03", "2026-03-02"},
		{"2026-03-04", "2026-03-04"},
		{"2026-03-06", "2026-03-04"},
		{"2026-12-31", "2026-03-07"},
	}
	for _, tt := range tests {
		t.Run(tt.date, func(t *testing.T) {
			snap, err := s.SnapshotAt(ctx, "alice", pf.ID, tt.date)
			if tt.wantDate == "" {
				if err == nil {
					t.Fatalf("SnapshotAt before the first snapshot: got %+v, want not found", snap)
				}
				return
			}
			if err != nil {
				t.Fatalf("SnapshotAt: %v", err)
			}
			if snap.Date != tt.wantDate || snap.AsOf != tt.date {
				t.Errorf("got snapshot of %s as of %s, want %s as of %s", snap.Date, snap.AsOf, tt.wantDate, tt.date)
			}
		})
	}
	ranged, err := s.Snapshots(ctx, "alice", pf.ID, "2026-03-03", "2026-03-06")
	if err != nil {
		t.Fatal(err)
	}
	if len(ranged) != 1 || ranged[0].Date != "2026-03-04" {
		t.Errorf("snapshots from 03-03 to 03-06: got %+v, want only 2026-03-04", ranged)
	}
	if _, err := s.Snapshots(ctx, "bob", pf.ID, "", ""); err == nil {
		t.Errorf("bob listing alice's snapshots: got no error, want not found")
	}
}

// TestStorage runs the approval flow through sdk.Participant.Dispatch on
// SQLite and on real PostgreSQL.
func TestStorage(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		clk := &clock{}
		clk.Set("2026-03-02T10:00:00Z")
		p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterHandlers(p)
		ctx := context.Background()
		pf, err := fundedPortfolio(ctx, s, "alice", dec("1000.50"))
		if err != nil {
			t.Fatal(err)
		}
		buy := deal("alice", pf.ID, "buy", "0.12345678", "1234.5")
		if out := servicetest.Dispatch(t, p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(buy)); out.Err != nil || out.Reply == nil || out.Reply.Name != EventOrderApproved {
			t.Fatalf("buy: got %+v, want ORDER_APPROVED", out)
		}
		big := deal("alice", pf.ID, "buy", "1000", "1000")
		out := servicetest.Dispatch(t, p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(big))
		if out.Reply == nil || out.Reply.Name != EventOrderRejected || out.Reply.Reason != "insufficient cash: need 1000000.00 USD, have 848.09260509 USD" {
			t.Fatalf("big buy: got %+v, want ORDER_REJECTED with the exact amounts", out.Reply)
		}
		got := mustPortfolio(t, s, "alice", pf.ID)
		// 1000.50 - 0.12345678*1234.5 = 1000.50 - 152.40739491 = 848.09260509, exactly.
		wantCash := dec("1000.50").Sub(dec("0.12345678").Mul(dec("1234.5")))
		if !got.Cash.Equal(wantCash) || !got.Positions["AAPL"].Equal(dec("0.12345678")) {
			t.Errorf("portfolio: got cash %s positions %v, want %s and AAPL 0.12345678 exactly", got.Cash, got.Positions, wantCash)
		}
		list, err := s.Portfolios(ctx, "alice")
		if err != nil || len(list) != 1 || !list[0].Cash.Equal(wantCash) || !list[0].Positions["AAPL"].Equal(dec("0.12345678")) {
			t.Errorf("Portfolios: got %+v (err %v), want the one portfolio", list, err)
		}
		if msgs := servicetest.Flush(t, p); len(msgs) != 2 {
			t.Errorf("replies relayed: got %d, want 2", len(msgs))
		}
		p2, err := s.Login(ctx, auth.User{Subject: "alice", Name: "Alice", Email: "a@example.com"})
		if err != nil || p2.Name != "Alice" {
			t.Fatalf("Login: got %+v (err %v)", p2, err)
		}
		clk.Set("2026-03-03T10:00:00Z")
		p3, err := s.Login(ctx, auth.User{Subject: "alice", Name: "Alice B", Email: "a@example.com"})
		if err != nil || p3.Name != "Alice B" || !p3.CreatedAt.Equal(p2.CreatedAt) || !p3.UpdatedAt.After(p2.UpdatedAt) {
			t.Errorf("second Login with a new name: got %+v (err %v), want name updated, created_at kept", p3, err)
		}
	})
}

func TestOpenAPIMatchesRouter(t *testing.T) {
	s, err := New(Config{DB: servicetest.SQLite(t, Migrate), Auth: devAuth(t), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.CheckOpenAPI(t, s.routes(), "profile.yaml")
}

// TestConcurrentApprovals sends buys of the same portfolio at once: the
// portfolio row lock (PostgreSQL) or the single writer (SQLite) must let
// exactly as many through as the cash covers, with no lost update.
func TestConcurrentApprovals(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet, Concurrency: 8})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterHandlers(p)
		ctx := context.Background()
		pf, err := fundedPortfolio(ctx, s, "alice", dec("1000"))
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		events := map[string]int{}
		var failures []error
		for range n {
			dc := deal("alice", pf.ID, "buy", "1", "300")
			raw, err := json.Marshal(dealctx.Wrap(dc))
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				rec := record(p, uuid.NewString(), raw)
				out, err := p.Dispatch(ctx, rec)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					failures = append(failures, err)
				case out.Reply == nil:
					failures = append(failures, out.Err)
				default:
					events[out.Reply.Name]++
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("dispatch failures: %v", failures)
		}
		if events[EventOrderApproved] != 3 || events[EventOrderRejected] != n-3 {
			t.Errorf("decisions: got %v, want 3 approved and %d rejected (1000 covers 3 buys of 300)", events, n-3)
		}
		got := mustPortfolio(t, s, "alice", pf.ID)
		if !got.Cash.Equal(dec("100")) || !got.Positions["AAPL"].Equal(dec("3")) {
			t.Errorf("portfolio: got cash %s positions %v, want 100 and 3 AAPL", got.Cash, got.Positions)
		}
	})
}

// record builds an APPROVE_ORDER command record as the Kafka intake gets it.
func record(p *sdk.Participant, sagaID string, payload json.RawMessage) sdk.Record {
	msg := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1,
		Kind: engine.KindCommand, Name: CommandApproveOrder, Participant: Name, OccurredAt: time.Now().UTC(), Attempt: 1, Payload: payload}
	body, _ := json.Marshal(msg) // an envelope always encodes
	return sdk.Record{Topic: p.Config().CommandTopic, Key: sagaID, Value: body}
}

// TestApproveOrderWritesEachDB buys, sells part and sells all on both
// databases: the approved path writes cash, position (deleted at zero),
// today's snapshot and the decision (one statement on PostgreSQL), and a
// repeated command answers the stored decision.
func TestApproveOrderWritesEachDB(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterHandlers(p)
		ctx := context.Background()
		pf, err := fundedPortfolio(ctx, s, "alice", dec("1000"))
		if err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			side, qty, price string
			wantEvent        string
			wantCash         string
			wantAAPL         string // "" for no position
		}{
			{"buy", "4", "100", EventOrderApproved, "600", "4"},
			{"sell", "1", "150", EventOrderApproved, "750", "3"},
			{"buy", "100", "100", EventOrderRejected, "750", "3"},
			{"sell", "3", "50", EventOrderApproved, "900", ""},
		}
		for i, st := range steps {
			raw, err := json.Marshal(dealctx.Wrap(deal("alice", pf.ID, st.side, st.qty, st.price)))
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Dispatch(ctx, record(p, uuid.NewString(), raw))
			if err != nil || out.Reply == nil {
				t.Fatalf("step %d: dispatch: %v (outcome err %v)", i, err, out.Err)
			}
			if out.Reply.Name != st.wantEvent {
				t.Errorf("step %d: got %s, want %s (%s)", i, out.Reply.Name, st.wantEvent, out.Reply.Reason)
			}
			// The same deal again under a new command id: the same answer, nothing applied twice.
			again, err := p.Dispatch(ctx, record(p, uuid.NewString(), raw))
			if err != nil || again.Reply == nil || again.Reply.Name != st.wantEvent {
				t.Errorf("step %d repeated: got %+v (err %v), want %s", i, again.Reply, err, st.wantEvent)
			}
			got := mustPortfolio(t, s, "alice", pf.ID)
			held, has := got.Positions["AAPL"]
			if !got.Cash.Equal(dec(st.wantCash)) || has != (st.wantAAPL != "") || (has && !held.Equal(dec(st.wantAAPL))) {
				t.Errorf("step %d: portfolio cash %s positions %v, want cash %s and AAPL %q", i, got.Cash, got.Positions, st.wantCash, st.wantAAPL)
			}
			snaps, err := s.Snapshots(ctx, "alice", pf.ID, "", "")
			if err != nil {
				t.Fatal(err)
			}
			last := snaps[len(snaps)-1]
			if !last.Cash.Equal(got.Cash) || len(last.Positions) != len(got.Positions) {
				t.Errorf("step %d: snapshot cash %s positions %v, want the portfolio's %s %v", i, last.Cash, last.Positions, got.Cash, got.Positions)
			}
		}
	})
}
