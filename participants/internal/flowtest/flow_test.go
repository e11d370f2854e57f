package flowtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// catalog is the shipped sagas (sagas.FS), as saga-machine loads them.
func catalog(t *testing.T) *engine.Catalog {
	t.Helper()
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		t.Fatalf("shipped sagas: %v", problems)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

type world struct {
	deals   *deals.Service
	profile *profile.Service
	notify  *notification.Service
	parts   map[string]*sdk.Participant
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

// fault makes one forward command of the saga go unanswered in time, so
// that the engine raises the command's exhausted event.
type fault struct {
	command string
	// applied: the command reaches its participant before the saga gives
	// up, and only its reply is lost (the effect happened); otherwise it
	// is held up on the bus and arrives after its compensation.
	applied bool
}

// machine plays saga-machine's part by hand for one saga, following the
// compiled definition: each event goes through Model.Apply, its payload's
// top-level keys are merged into the context, the step's command is sent
// and its compensable effects recorded (Step.Undos); entering a failed
// state sends the compensations newest first (engine.Plan), each after the
// done event of the one before, and then the failed transition's command.
type machine struct {
	m        *engine.Model
	w        *world
	sagaID   string
	state    string
	ctx      map[string]json.RawMessage
	undo     []engine.Undo
	late     *engine.Message // a faulty command held up on the bus
	timeline []string
}

func (s *machine) merge(t *testing.T, payload json.RawMessage) {
	t.Helper()
	if len(payload) == 0 {
		return
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		t.Fatalf("payload %s is not an object: %v", payload, err)
	}
	for k, v := range top {
		s.ctx[k] = v
	}
}

// command builds a command of the saga with the context as its payload.
func (s *machine) command(t *testing.T, name, to, compensates string) engine.Message {
	t.Helper()
	raw, err := json.Marshal(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: s.sagaID, Saga: s.m.Name(), SagaVersion: s.m.Version(),
		Kind: engine.KindCommand, Name: name, Participant: to, Compensates: compensates, Payload: raw}
}

// deliver dispatches cmd to its participant and returns the reply it
// relayed (nil for none).
func (s *machine) deliver(t *testing.T, cmd engine.Message) (sdk.Outcome, *engine.Message) {
	t.Helper()
	p := s.w.parts[cmd.Participant]
	out := servicetest.DispatchMessage(t, p, cmd)
	if out.Err != nil || out.DeadLetter != nil {
		t.Fatalf("%s → %s: %v (dead letter %+v)", cmd.Name, cmd.Participant, out.Err, out.DeadLetter)
	}
	msgs := servicetest.Flush(t, p)
	if out.Reply == nil {
		if len(msgs) != 0 {
			t.Fatalf("%s emitted %v without a reply", cmd.Name, msgs)
		}
		return out, nil
	}
	if len(msgs) != 1 || msgs[0].ID != out.Reply.ID || msgs[0].SagaID != s.sagaID || msgs[0].CausationID != cmd.ID {
		t.Fatalf("%s outbox: got %v, want its reply on saga %s", cmd.Name, msgs, s.sagaID)
	}
	return out, &msgs[0]
}

// run follows the saga from the REGISTER in the deals outbox to its end.
func (s *machine) run(t *testing.T, f *fault) {
	t.Helper()
	start := servicetest.Flush(t, s.w.parts["deals"])
	if len(start) != 1 || start[0].Name != deals.StartEvent {
		t.Fatalf("deals outbox: got %v, want one REGISTER", start)
	}
	ev := start[0]
	s.sagaID, s.ctx = ev.SagaID, map[string]json.RawMessage{}
	for range 20 {
		step, err := s.m.Apply(s.state, ev.Name, ev.Participant)
		if err != nil {
			t.Fatalf("%s in %s: %v", ev.Name, s.state, err)
		}
		s.timeline = append(s.timeline, ev.Name)
		s.merge(t, ev.Payload)
		s.state = step.To
		var cmd *engine.Message
		cmdID := ""
		if step.Send != nil {
			c := s.command(t, step.Send.Name, step.Send.Participant, "")
			cmd, cmdID = &c, c.ID
		}
		s.undo = append(s.undo, step.Undos(ev.ID, cmdID)...)
		if step.Failed {
			s.compensate(t)
		}
		if cmd == nil {
			return
		}
		s.timeline = append(s.timeline, cmd.Name)
		if step.Failed || step.Final {
			// A held-back command carries the context of when it is sent.
			if _, reply := s.deliver(t, s.command(t, cmd.Name, cmd.Participant, "")); reply != nil {
				t.Fatalf("%s into %s was answered with %s", cmd.Name, s.state, reply.Name)
			}
			s.deliverLate(t)
			return
		}
		if f != nil && cmd.Name == f.command {
			if f.applied {
				s.deliver(t, *cmd) // the effect happens; the reply is lost
			} else {
				s.late = cmd
			}
			ev = engine.Message{ID: uuid.NewString(), SagaID: s.sagaID, Kind: engine.KindEvent,
				Name: step.Send.Retry.Exhausted.Value, Participant: definition.Engine}
			continue
		}
		_, reply := s.deliver(t, *cmd)
		if reply == nil {
			t.Fatalf("%s was not answered", cmd.Name)
		}
		ev = *reply
	}
	t.Fatal("the saga did not end")
}

// compensate sends the compensations Plan gives, newest first, each
// answered by its done event, whose payload is merged.
func (s *machine) compensate(t *testing.T) {
	t.Helper()
	for {
		plan := engine.Plan(s.undo)
		if len(plan) == 0 {
			return
		}
		u := plan[0]
		c := u.Compensation
		cmd := s.command(t, c.Command, c.Participant, u.Of)
		s.timeline = append(s.timeline, c.Command)
		_, reply := s.deliver(t, cmd)
		if reply == nil || reply.Name != c.Done || reply.Participant != c.Participant {
			t.Fatalf("%s: got %+v, want %s from %s", c.Command, reply, c.Done, c.Participant)
		}
		s.timeline = append(s.timeline, reply.Name)
		s.merge(t, reply.Payload)
		i := slices.IndexFunc(s.undo, func(x engine.Undo) bool { return x.Of == u.Of })
		s.undo[i].Compensated = true
	}
}

// deliverLate delivers the command held up on the bus, after the saga
// ended: the SDK's barrier must refuse it.
func (s *machine) deliverLate(t *testing.T) {
	t.Helper()
	if s.late == nil {
		return
	}
	out, reply := s.deliver(t, *s.late)
	if !out.Expired || reply == nil || reply.Name != engine.EventCommandExpired {
		t.Fatalf("late %s: got %+v, want COMMAND_EXPIRED", s.late.Name, reply)
	}
	s.timeline = append(s.timeline, "late "+s.late.Name+": "+reply.Name)
}

// treasury funds the portfolios: cash enters only through deposits.
var treasury = auth.User{Subject: "treasury", Roles: []string{auth.RoleFundingOperator}}

// order is one case of TestManualCreateOrder.
type order struct {
	name       string
	version    int // 0: the newest loaded
	cash       string
	upperID    bool // send the portfolio id in upper case
	qty, price string
	fault      *fault
	wantSteps  string
	wantState  string
	wantStatus string
	wantReason string
	wantCash   string
	wantPos    string
	wantText   string
}

const (
	approved    = "REGISTER APPROVE_ORDER ORDER_APPROVED APPROVE_DEAL DEAL_UPDATED NOTIFY"
	executed    = "Your buy of 10 AAPL at 150.00 USD was executed"
	notConfirm  = "the order could not be confirmed against your portfolio in time"
	notExecuted = "the approved order could not be executed in time"
	returned    = ". The 1500.00 USD taken from your cash were returned"
)

// TestManualCreateOrder runs MANUAL_CREATE_ORDER through the three
// services on SQLite and on PostgreSQL, following the shipped definition:
// the approved and rejected paths (also on version 1, which running sagas
// may still be on), and every way the saga fails, each with its effects
// undone: the deal ends failed, the cash and positions as before the
// order, one failure notification says why, and a command held up on the
// bus arrives after its compensation without effect.
func TestManualCreateOrder(t *testing.T) {
	tests := []order{
		{name: "funded", cash: "2000", qty: "10", price: "150.00", wantSteps: approved, wantState: "NOTIFICATION",
			wantStatus: deals.StatusExecuted, wantCash: "500", wantPos: `{"AAPL":"10"}`, wantText: executed},
		{name: "unfunded", cash: "200", qty: "10", price: "150.00", wantSteps: "REGISTER APPROVE_ORDER ORDER_REJECTED REJECT_DEAL DEAL_UPDATED NOTIFY",
			wantState: "NOTIFICATION", wantStatus: deals.StatusRejected, wantReason: "insufficient cash: need 1500.00 USD, have 200.00 USD",
			wantCash: "200", wantPos: `{}`, wantText: "Your buy of 10 AAPL at 150.00 USD was rejected: insufficient cash: need 1500.00 USD, have 200.00 USD"},
		{name: "upper-case portfolio id", cash: "2000", upperID: true, qty: "10", price: "150.00", wantSteps: approved, wantState: "NOTIFICATION",
			wantStatus: deals.StatusExecuted, wantCash: "500", wantPos: `{"AAPL":"10"}`, wantText: executed},
		{name: "tiny trade", cash: "1", qty: "0.00000001", price: "0.00000001", wantSteps: approved, wantState: "NOTIFICATION",
			wantStatus: deals.StatusExecuted, wantCash: "0.99999999", wantPos: `{"AAPL":"0.00000001"}`, wantText: "Your buy of 0.00000001 AAPL at 0.00000001 USD was executed"},
		{name: "version 1, funded", version: 1, cash: "2000", qty: "10", price: "150.00", wantSteps: approved, wantState: "NOTIFICATION",
			wantStatus: deals.StatusExecuted, wantCash: "500", wantPos: `{"AAPL":"10"}`, wantText: executed},

		{name: "profile unavailable, APPROVE_ORDER held up", cash: "2000", qty: "10", price: "150.00",
			fault:     &fault{command: profile.CommandApproveOrder},
			wantSteps: "REGISTER APPROVE_ORDER PROFILE_UNAVAILABLE REVERT_ORDER ORDER_REVERTED FAIL_DEAL DEAL_FAILED NOTIFY late APPROVE_ORDER: COMMAND_EXPIRED",
			wantState: "FAILED", wantStatus: deals.StatusFailed, wantReason: notConfirm, wantCash: "2000", wantPos: `{}`,
			wantText: "Your buy of 10 AAPL at 150.00 USD failed: " + notConfirm},
		{name: "profile approved, its reply lost", cash: "2000", qty: "10", price: "150.00",
			fault:     &fault{command: profile.CommandApproveOrder, applied: true},
			wantSteps: "REGISTER APPROVE_ORDER PROFILE_UNAVAILABLE REVERT_ORDER ORDER_REVERTED FAIL_DEAL DEAL_FAILED NOTIFY",
			wantState: "FAILED", wantStatus: deals.StatusFailed, wantReason: notConfirm, wantCash: "2000", wantPos: `{}`,
			wantText: "Your buy of 10 AAPL at 150.00 USD failed: " + notConfirm + returned},
		{name: "deals unavailable, APPROVE_DEAL held up", cash: "2000", qty: "10", price: "150.00",
			fault: &fault{command: deals.CommandApprove},
			wantSteps: "REGISTER APPROVE_ORDER ORDER_APPROVED APPROVE_DEAL DEALS_UNAVAILABLE FAIL_DEAL DEAL_FAILED REVERT_ORDER ORDER_REVERTED " +
				"FAIL_DEAL DEAL_FAILED NOTIFY late APPROVE_DEAL: COMMAND_EXPIRED",
			wantState: "FAILED", wantStatus: deals.StatusFailed, wantReason: notExecuted, wantCash: "2000", wantPos: `{}`,
			wantText: "Your buy of 10 AAPL at 150.00 USD failed: " + notExecuted + returned},
		{name: "deals executed, its reply lost", cash: "2000", qty: "10", price: "150.00",
			fault: &fault{command: deals.CommandApprove, applied: true},
			wantSteps: "REGISTER APPROVE_ORDER ORDER_APPROVED APPROVE_DEAL DEALS_UNAVAILABLE FAIL_DEAL DEAL_FAILED REVERT_ORDER ORDER_REVERTED " +
				"FAIL_DEAL DEAL_FAILED NOTIFY",
			wantState: "FAILED", wantStatus: deals.StatusFailed, wantReason: notExecuted, wantCash: "2000", wantPos: `{}`,
			wantText: "Your buy of 10 AAPL at 150.00 USD failed: " + notExecuted + returned},
		{name: "rejected, REJECT_DEAL's reply lost", cash: "200", qty: "10", price: "150.00",
			fault: &fault{command: deals.CommandReject, applied: true},
			wantSteps: "REGISTER APPROVE_ORDER ORDER_REJECTED REJECT_DEAL DEALS_UNAVAILABLE FAIL_DEAL DEAL_FAILED REVERT_ORDER ORDER_REVERTED " +
				"FAIL_DEAL DEAL_FAILED NOTIFY",
			wantState: "FAILED", wantStatus: deals.StatusFailed,
			wantReason: "the order was rejected (insufficient cash: need 1500.00 USD, have 200.00 USD) and the deal could not be settled in time",
			wantCash:   "200", wantPos: `{}`,
			wantText: "Your buy of 10 AAPL at 150.00 USD failed: the order was rejected (insufficient cash: need 1500.00 USD, have 200.00 USD) " +
				"and the deal could not be settled in time"},
	}
	cat := catalog(t)
	for _, db := range []struct {
		name string
		open opener
	}{{"sqlite", servicetest.SQLite}, {"postgres", servicetest.Postgres}} {
		for _, tt := range tests {
			t.Run(db.name+"/"+tt.name, func(t *testing.T) {
				m, err := cat.Get("MANUAL_CREATE_ORDER", tt.version)
				if err != nil {
					t.Fatal(err)
				}
				runOrder(t, db.open, m, tt)
			})
		}
	}
}

func runOrder(t *testing.T, open opener, m *engine.Model, tt order) {
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
	s := &machine{m: m, w: w}
	s.run(t, tt.fault)
	if got := strings.Join(s.timeline, " "); got != tt.wantSteps {
		t.Errorf("timeline:\n got %s\nwant %s", got, tt.wantSteps)
	}
	if s.state != tt.wantState {
		t.Errorf("saga state: got %s, want %s", s.state, tt.wantState)
	}
	got, err := w.deals.Get(ctx, "alice", d.ID)
	if err != nil || got.Status != tt.wantStatus || got.Reason != tt.wantReason {
		t.Errorf("deal: got %q %q (err %v), want %q %q", got.Status, got.Reason, err, tt.wantStatus, tt.wantReason)
	}
	p, err := w.profile.Portfolio(ctx, "alice", pf.ID)
	if err != nil || p.Cash.String() != tt.wantCash || positions(p.Positions) != tt.wantPos {
		t.Errorf("portfolio: got %s %s (err %v), want %s %s", p.Cash, positions(p.Positions), err, tt.wantCash, tt.wantPos)
	}
	page, err := w.notify.List(ctx, "alice", service.PageRequest{Limit: 10})
	if err != nil || len(page.Items) != 1 || page.Items[0].Text != tt.wantText || page.Items[0].DealID != d.ID {
		t.Errorf("notifications: got %+v (err %v), want one %q for deal %s", page.Items, err, tt.wantText, d.ID)
	}
}

func positions(p profile.Positions) string {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Sprint(err)
	}
	return string(b)
}
