package deals

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
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

const portfolioID = "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// devAuth is an Authenticator for tests that never go through HTTP.
func devAuth(tb testing.TB) *auth.Authenticator {
	tb.Helper()
	a, err := auth.New(context.Background(), auth.Config{DevHeader: true, Logger: quiet})
	if err != nil {
		tb.Fatalf("auth.New: %v", err)
	}
	return a
}

// newService builds the service on db with a participant that has no
// brokers (commands are dispatched by hand).
func newService(tb testing.TB, db *sqlx.DB, a *auth.Authenticator) (*Service, *sdk.Participant) {
	tb.Helper()
	p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
	if err != nil {
		tb.Fatalf("sdk.New: %v", err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: a, Logger: quiet})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	s.RegisterHandlers(p)
	return s, p
}

func buyRequest() NewDeal {
	return NewDeal{PortfolioID: portfolioID, Side: "buy", Instrument: "AAPL", Quantity: "10", Price: "150.00", Currency: "USD"}
}

// kit returns an sdktest kit running the deals handlers and the service.
func kit(t *testing.T) (*sdktest.Kit, *Service) {
	t.Helper()
	var svc *Service
	k := sdktest.New(t, sdk.Config{Name: Name, Logger: quiet}, func(p *sdk.Participant) {
		s, err := New(Config{DB: p.DB(), Participant: p, Auth: devAuth(t), Logger: quiet})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		s.RegisterHandlers(p)
		svc = s
	}, func(db *sqlx.DB) error { return Migrate(context.Background(), db) })
	k.SetSaga(SagaName)
	return k, svc
}

// send dispatches command for deal d on d's saga.
func send(t *testing.T, k *sdktest.Kit, command string, dc dealctx.DealContext, sagaID string) sdktest.Result {
	t.Helper()
	raw, err := json.Marshal(dealctx.Wrap(dc))
	if err != nil {
		t.Fatal(err)
	}
	return k.SendMessage(t, engine.Message{Name: command, SagaID: sagaID, Payload: raw})
}

func replyContext(t *testing.T, res sdktest.Result) dealctx.DealContext {
	t.Helper()
	var env dealctx.Envelope
	res.Decode(t, &env)
	if env.DealContext == nil {
		t.Fatalf("%s payload has no deal_context: %s", res.Event, res.Payload)
	}
	return *env.DealContext
}

func TestCreateStartsSaga(t *testing.T) {
	k, s := kit(t)
	d, replayed, err := s.Create(context.Background(), "alice", buyRequest(), "")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if replayed {
		t.Errorf("replayed: got true, want false")
	}
	if d.Status != StatusDraft || d.SagaID == "" {
		t.Errorf("deal: got status %q saga %q, want draft with a saga id", d.Status, d.SagaID)
	}
	if want := decimal.RequireFromString("1500"); !d.Amount.Equal(want) {
		t.Errorf("amount: got %s, want %s", d.Amount, want)
	}
	msgs := k.Flush(t)
	if len(msgs) != 1 {
		t.Fatalf("outbox: got %d messages, want 1 (REGISTER)", len(msgs))
	}
	m := msgs[0]
	if m.Name != StartEvent || m.Saga != SagaName || m.SagaID != d.SagaID || m.Kind != engine.KindEvent || m.Participant != Name {
		t.Errorf("start event: got %s %s saga %s kind %s from %s, want REGISTER MANUAL_CREATE_ORDER saga %s event from deals",
			m.Name, m.Saga, m.SagaID, m.Kind, m.Participant, d.SagaID)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal(m.Payload, &raw); err != nil {
		t.Fatalf("decode REGISTER payload: %v", err)
	}
	want := map[string]any{"deal_id": d.ID, "user_id": "alice", "portfolio_id": portfolioID, "side": "buy",
		"instrument": "AAPL", "quantity": "10", "price": "150", "amount": "1500", "currency": "USD"}
	got := raw["deal_context"]
	for key, w := range want {
		if got[key] != w {
			t.Errorf("deal_context.%s: got %v, want %v", key, got[key], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("deal_context: got keys %v, want exactly %v", got, want)
	}
}

func TestSettle(t *testing.T) {
	tests := []struct {
		name       string
		command    string
		reason     string
		wantStatus string
		wantReason string
	}{
		{"approve", CommandApprove, "", StatusExecuted, ""},
		{"reject with profile's reason", CommandReject, "insufficient cash: need 1500.00 USD, have 200.00 USD", StatusRejected, "insufficient cash: need 1500.00 USD, have 200.00 USD"},
		{"reject without reason", CommandReject, "", StatusRejected, "rejected (profile gave no reason)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, s := kit(t)
			ctx := context.Background()
			d, _, err := s.Create(ctx, "alice", buyRequest(), "")
			if err != nil {
				t.Fatal(err)
			}
			k.Flush(t)
			dc := d.context()
			dc.Status, dc.Reason = dealctx.StatusApproved, ""
			if tt.command == CommandReject {
				dc.Status, dc.Reason = dealctx.StatusRejected, tt.reason
			}
			res := send(t, k, tt.command, dc, d.SagaID)
			if res.Err != nil || res.Event != EventUpdated {
				t.Fatalf("reply: got %q (err %v), want %s", res.Event, res.Err, EventUpdated)
			}
			out := replyContext(t, res)
			if out.Status != tt.wantStatus || out.Reason != tt.wantReason || out.DealID != d.ID || !out.Amount.Equal(d.Amount) {
				t.Errorf("DEAL_UPDATED deal_context: got %+v, want deal %s status %q reason %q", out, d.ID, tt.wantStatus, tt.wantReason)
			}
			got, err := s.Get(ctx, "alice", d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.wantStatus || got.Reason != tt.wantReason {
				t.Errorf("stored deal: got %q %q, want %q %q", got.Status, got.Reason, tt.wantStatus, tt.wantReason)
			}

			// A redelivered command is a duplicate: same reply, handler not run.
			again := k.Redeliver(t)
			if !again.Duplicate || again.Reply == nil || again.Reply.ID != res.Reply.ID {
				t.Errorf("redelivery: got duplicate %v reply %v, want the first reply %s again", again.Duplicate, again.Reply, res.Reply.ID)
			}
			// The same command under a new id answers the same, changing nothing.
			third := send(t, k, tt.command, dc, d.SagaID)
			if third.Event != EventUpdated || replyContext(t, third).Status != tt.wantStatus {
				t.Errorf("repeated %s: got %q %s, want DEAL_UPDATED %s", tt.command, third.Event, third.Payload, tt.wantStatus)
			}
			after, err := s.Get(ctx, "alice", d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !after.UpdatedAt.Equal(got.UpdatedAt) {
				t.Errorf("updated_at changed on a repeated command: got %s, want %s", after.UpdatedAt, got.UpdatedAt)
			}
		})
	}
}

func TestSettleConflictsAreDeadLetters(t *testing.T) {
	k, s := kit(t)
	ctx := context.Background()
	d, _, err := s.Create(ctx, "alice", buyRequest(), "")
	if err != nil {
		t.Fatal(err)
	}
	k.Flush(t)
	if res := send(t, k, CommandApprove, d.context(), d.SagaID); res.Event != EventUpdated {
		t.Fatalf("approve: got %q (err %v), want DEAL_UPDATED", res.Event, res.Err)
	}
	rejected := d.context()
	rejected.Reason = "too late"

	unknown := d.context()
	unknown.DealID = "00000000-0000-4000-8000-000000000000"
	strange := d.context()
	strange.UserID = "mallory"
	broken := d.context()
	broken.Amount = decimal.RequireFromString("1")

	tests := []struct {
		name    string
		command string
		dc      dealctx.DealContext
		sagaID  string
		want    string
	}{
		{"reject after executed", CommandReject, rejected, d.SagaID, "cannot become rejected: it is already executed"},
		{"unknown deal", CommandApprove, unknown, d.SagaID, "does not exist"},
		{"other user", CommandApprove, strange, d.SagaID, `belongs to user "alice"`},
		{"other saga", CommandApprove, d.context(), "3b0a4f8e-1111-4222-8333-444455556666", "belongs to saga"},
		{"inconsistent amount", CommandApprove, broken, d.SagaID, "is not quantity*price"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := send(t, k, tt.command, tt.dc, tt.sagaID)
			if !res.DeadLettered || res.Event != "" {
				t.Fatalf("got event %q dead-lettered %v, want a dead letter and no reply", res.Event, res.DeadLettered)
			}
			if !strings.Contains(res.DeadLetter.Reason, tt.want) {
				t.Errorf("dead letter reason: got %q, want it to contain %q", res.DeadLetter.Reason, tt.want)
			}
			if res.Attempts != 1 {
				t.Errorf("attempts: got %d, want 1 (a business error is not retried)", res.Attempts)
			}
		})
	}
	got, err := s.Get(ctx, "alice", d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusExecuted {
		t.Errorf("deal status after refused commands: got %q, want executed", got.Status)
	}
}

func TestParseNewDeal(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*NewDeal)
		fields []string
	}{
		{"valid", func(*NewDeal) {}, nil},
		{"all missing", func(n *NewDeal) { *n = NewDeal{} }, []string{"portfolio_id", "side", "instrument", "currency", "quantity", "price"}},
		{"bad side", func(n *NewDeal) { n.Side = "short" }, []string{"side"}},
		{"lower-case ticker", func(n *NewDeal) { n.Instrument = "aapl" }, []string{"instrument"}},
		{"bad currency", func(n *NewDeal) { n.Currency = "dollars" }, []string{"currency"}},
		{"portfolio not a uuid", func(n *NewDeal) { n.PortfolioID = "p1" }, []string{"portfolio_id"}},
		{"zero quantity", func(n *NewDeal) { n.Quantity = "0" }, []string{"quantity"}},
		{"negative price", func(n *NewDeal) { n.Price = "-1" }, []string{"price"}},
		{"exponent", func(n *NewDeal) { n.Quantity = "1e3" }, []string{"quantity"}},
		{"too precise", func(n *NewDeal) { n.Price = "1.123456789" }, []string{"price"}},
		{"too big", func(n *NewDeal) { n.Quantity = "1234567890123456789" }, []string{"quantity"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := buyRequest()
			tt.mutate(&in)
			_, err := parseNewDeal(in)
			var got []string
			if err != nil {
				e, ok := err.(*service.Error)
				if !ok {
					t.Fatalf("error: got %T %v, want *service.Error", err, err)
				}
				for _, f := range e.Errors {
					got = append(got, f.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("invalid fields: got %v, want %v (error %v)", got, tt.fields, err)
			}
		})
	}
}

func TestOpenAPIMatchesRouter(t *testing.T) {
	db := servicetest.SQLite(t, Migrate)
	s, _ := newService(t, db, devAuth(t))
	servicetest.CheckOpenAPI(t, s.routes(), "deals.yaml")
}
