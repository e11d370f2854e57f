package flowtest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type world struct {
	deals    *deals.Service
	profile  *profile.Service
	notify   *notification.Service
	parts    map[string]*sdk.Participant
	sagaCtx  map[string]json.RawMessage
	sagaID   string
	timeline []string
}

func participant(t *testing.T, name string, db *sqlx.DB) *sdk.Participant {
	t.Helper()
	p, err := sdk.New(sdk.Config{Name: name, DB: db, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// opener opens a migrated service database (servicetest.SQLite or
// servicetest.Postgres).
type opener func(testing.TB, func(context.Context, *sqlx.DB) error) *sqlx.DB

func newWorld(t *testing.T, open opener) *world {
	t.Helper()
	a, err := auth.New(context.Background(), auth.Config{DevHeader: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{parts: map[string]*sdk.Participant{}}
	ddb := open(t, deals.Migrate)
	pdb := open(t, profile.Migrate)
	ndb := open(t, notification.Migrate)
	w.parts["deals"] = participant(t, deals.Name, ddb)
	w.parts["profile"] = participant(t, profile.Name, pdb)
	w.parts["notification"] = participant(t, notification.Name, ndb)
	if w.deals, err = deals.New(deals.Config{DB: ddb, Participant: w.parts["deals"], Auth: a, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if w.profile, err = profile.New(profile.Config{DB: pdb, Participant: w.parts["profile"], Auth: a, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if w.notify, err = notification.New(notification.Config{DB: ndb, Participant: w.parts["notification"], Auth: a, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	w.deals.RegisterHandlers(w.parts["deals"])
	w.profile.RegisterHandlers(w.parts["profile"])
	w.notify.RegisterHandlers(w.parts["notification"])
	return w
}

// routes is the saga's table (sagas/manual_create_order.yaml): event → (participant, command).
var routes = map[string][2]string{
	"REGISTER":       {"profile", "APPROVE_ORDER"},
	"ORDER_APPROVED": {"deals", "APPROVE_DEAL"},
	"ORDER_REJECTED": {"deals", "REJECT_DEAL"},
	"DEAL_UPDATED":   {"notification", "NOTIFY"},
}

// merge folds an event's payload into the saga context, top-level keys
// replacing, as the saga-machine does.
func (w *world) merge(t *testing.T, m engine.Message) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(m.Payload, &top); err != nil {
		t.Fatalf("%s payload is not an object: %v", m.Name, err)
	}
	for k, v := range top {
		w.sagaCtx[k] = v
	}
}

// run follows the saga from the REGISTER in the deals outbox to the end.
func (w *world) run(t *testing.T) {
	t.Helper()
	start := servicetest.Flush(t, w.parts["deals"])
	if len(start) != 1 || start[0].Name != "REGISTER" {
		t.Fatalf("deals outbox: got %v, want one REGISTER", start)
	}
	ev := start[0]
	w.sagaID = ev.SagaID
	w.sagaCtx = map[string]json.RawMessage{}
	for range 10 {
		w.timeline = append(w.timeline, ev.Name)
		w.merge(t, ev)
		route, ok := routes[ev.Name]
		if !ok {
			t.Fatalf("event %s has no route", ev.Name)
		}
		w.timeline = append(w.timeline, route[1])
		p := w.parts[route[0]]
		out := servicetest.Dispatch(t, p, route[1], w.sagaID, w.sagaCtx)
		if out.Err != nil || out.DeadLetter != nil {
			t.Fatalf("%s: %v", route[1], out.Err)
		}
		msgs := servicetest.Flush(t, p)
		if out.Reply == nil {
			if len(msgs) != 0 {
				t.Fatalf("%s emitted %v without a reply", route[1], msgs)
			}
			return // NOTIFY: the saga is over
		}
		if len(msgs) != 1 || msgs[0].ID != out.Reply.ID || msgs[0].SagaID != w.sagaID {
			t.Fatalf("%s outbox: got %v, want its reply on saga %s", route[1], msgs, w.sagaID)
		}
		ev = msgs[0]
	}
	t.Fatal("the saga did not end")
}

// treasury funds the portfolios: cash enters only through deposits.
var treasury = auth.User{Subject: "treasury", Roles: []string{auth.RoleFundingOperator}}

// order is one case of TestManualCreateOrder.
type order struct {
	name         string
	cash         string
	upperID      bool // send the portfolio id in upper case
	qty, price   string
	wantTimeline string
	wantStatus   string
	wantCash     string
	wantText     string
}

// TestManualCreateOrder runs the saga through the three services on SQLite
// and on PostgreSQL: funded, unfunded, a portfolio id sent in upper case
// (stored canonical, the deal executes) and the API fuzzer's tiny trade
// (its cost rounded up to 8 places).
func TestManualCreateOrder(t *testing.T) {
	const approved = "REGISTER APPROVE_ORDER ORDER_APPROVED APPROVE_DEAL DEAL_UPDATED NOTIFY"
	tests := []order{
		{"funded", "2000", false, "10", "150.00", approved, deals.StatusExecuted, "500",
			"Your buy of 10 AAPL at 150.00 USD was executed"},
		{"unfunded", "200", false, "10", "150.00", "REGISTER APPROVE_ORDER ORDER_REJECTED REJECT_DEAL DEAL_UPDATED NOTIFY", deals.StatusRejected, "200",
			"Your buy of 10 AAPL at 150.00 USD was rejected: insufficient cash: need 1500.00 USD, have 200.00 USD"},
		{"upper-case portfolio id", "2000", true, "10", "150.00", approved, deals.StatusExecuted, "500",
			"Your buy of 10 AAPL at 150.00 USD was executed"},
		{"tiny trade", "1", false, "0.00000001", "0.00000001", approved, deals.StatusExecuted, "0.99999999",
			"Your buy of 0.00000001 AAPL at 0.00000001 USD was executed"},
	}
	for _, db := range []struct {
		name string
		open opener
	}{{"sqlite", servicetest.SQLite}, {"postgres", servicetest.Postgres}} {
		for _, tt := range tests {
			t.Run(db.name+"/"+tt.name, func(t *testing.T) { runOrder(t, db.open, tt) })
		}
	}
}

func runOrder(t *testing.T, open opener, tt order) {
	t.Helper()
	w := newWorld(t, open)
	ctx := context.Background()
	pf, err := w.profile.CreatePortfolio(ctx, "alice", profile.NewPortfolio{Name: "Main", Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.profile.Deposit(ctx, treasury, pf.ID, profile.NewDeposit{Amount: decimal.RequireFromString(tt.cash), Currency: "USD", Reason: "funding"}, "fund-"+pf.ID); err != nil {
		t.Fatal(err)
	}
	sent := pf.ID
	if tt.upperID {
		sent = strings.ToUpper(pf.ID)
	}
	d, _, err := w.deals.Create(ctx, "alice", deals.NewDeal{PortfolioID: sent, Side: "buy", Instrument: "AAPL",
		Quantity: tt.qty, Price: tt.price, Currency: "USD"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.PortfolioID != pf.ID {
		t.Errorf("deal's portfolio_id: got %q, want the canonical %q", d.PortfolioID, pf.ID)
	}
	w.run(t)
	if got := strings.Join(w.timeline, " "); got != tt.wantTimeline {
		t.Errorf("timeline: got %s, want %s", got, tt.wantTimeline)
	}
	got, err := w.deals.Get(ctx, "alice", d.ID)
	if err != nil || got.Status != tt.wantStatus {
		t.Errorf("deal: got %q (err %v), want %q", got.Status, err, tt.wantStatus)
	}
	p, err := w.profile.Portfolio(ctx, "alice", pf.ID)
	if err != nil || p.Cash.String() != tt.wantCash {
		t.Errorf("cash: got %s (err %v), want %s", p.Cash, err, tt.wantCash)
	}
	page, err := w.notify.List(ctx, "alice", service.PageRequest{Limit: 10})
	if err != nil || len(page.Items) != 1 || page.Items[0].Text != tt.wantText || page.Items[0].DealID != d.ID {
		t.Errorf("notifications: got %+v (err %v), want %q for deal %s", page.Items, err, tt.wantText, d.ID)
	}
}
