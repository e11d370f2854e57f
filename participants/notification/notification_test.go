package notification

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func devAuth(tb testing.TB) *auth.Authenticator {
	tb.Helper()
	a, err := auth.New(context.Background(), auth.Config{DevHeader: true, Logger: quiet})
	if err != nil {
		tb.Fatalf("auth.New: %v", err)
	}
	return a
}

func settled(user, status, reason string) dealctx.DealContext {
	q, p := decimal.RequireFromString("10"), decimal.RequireFromString("150.00")
	return dealctx.DealContext{DealID: uuid.NewString(), UserID: user, PortfolioID: uuid.NewString(), Side: "buy",
		Instrument: "AAPL", Quantity: q, Price: p, Amount: q.Mul(p), Currency: "USD", Status: status, Reason: reason}
}

func TestText(t *testing.T) {
	buyReverted := func(dc dealctx.DealContext) *dealctx.Reversal {
		return &dealctx.Reversal{DealID: dc.DealID, Reverted: true, Reason: "the buy was undone"}
	}
	tests := []struct {
		name, status, reason string
		side                 string
		rev                  func(dealctx.DealContext) *dealctx.Reversal // nil: no order_reversal in the context
		want, wantStatus     string
	}{
		{name: "executed", status: dealctx.StatusExecuted, want: "Your buy of 10 AAPL at 150.00 USD was executed", wantStatus: "executed"},
		{name: "rejected", status: dealctx.StatusRejected, reason: "insufficient cash: need 1500.00 USD, have 200.00 USD",
			want: "Your buy of 10 AAPL at 150.00 USD was rejected: insufficient cash: need 1500.00 USD, have 200.00 USD", wantStatus: "rejected"},
		{name: "rejected without reason", status: dealctx.StatusRejected, want: "Your buy of 10 AAPL at 150.00 USD was rejected: no reason given", wantStatus: "rejected"},
		{name: "failed, nothing to revert", status: dealctx.StatusFailed, reason: "the order could not be confirmed against your portfolio in time",
			rev: func(dc dealctx.DealContext) *dealctx.Reversal {
				return &dealctx.Reversal{DealID: dc.DealID, Reason: "the order was not decided"}
			},
			want: "Your buy of 10 AAPL at 150.00 USD failed: the order could not be confirmed against your portfolio in time", wantStatus: "failed"},
		{name: "failed buy, reverted", status: dealctx.StatusFailed, reason: "the approved order could not be executed in time", rev: buyReverted,
			want: "Your buy of 10 AAPL at 150.00 USD failed: the approved order could not be executed in time. The 1500.00 USD taken from your cash were returned", wantStatus: "failed"},
		{name: "failed sell, reverted", status: dealctx.StatusFailed, side: "sell", reason: "the approved order could not be executed in time", rev: buyReverted,
			want: "Your sell of 10 AAPL at 150.00 USD failed: the approved order could not be executed in time. The 10 AAPL sold were returned to your portfolio", wantStatus: "failed"},
		{name: "failed, the reversal of another deal", status: dealctx.StatusFailed, reason: "r",
			rev: func(dealctx.DealContext) *dealctx.Reversal {
				return &dealctx.Reversal{DealID: uuid.NewString(), Reverted: true}
			},
			want: "Your buy of 10 AAPL at 150.00 USD failed: r", wantStatus: "failed"},
		{name: "cancelled before approval", status: dealctx.StatusCancelled, reason: "cancelled at your request",
			want: "Your buy of 10 AAPL at 150.00 USD was cancelled at your request", wantStatus: "cancelled"},
		{name: "cancelled buy, reverted", status: dealctx.StatusCancelled, reason: "cancelled at your request", rev: buyReverted,
			want: "Your buy of 10 AAPL at 150.00 USD was cancelled at your request. The 1500.00 USD taken from your cash were returned", wantStatus: "cancelled"},
		{name: "cancelled, the reversal of another deal", status: dealctx.StatusCancelled,
			rev: func(dealctx.DealContext) *dealctx.Reversal {
				return &dealctx.Reversal{DealID: uuid.NewString(), Reverted: true}
			},
			want: "Your buy of 10 AAPL at 150.00 USD was cancelled at your request", wantStatus: "cancelled"},
		{name: "failed without reason", status: dealctx.StatusFailed,
			want: "Your buy of 10 AAPL at 150.00 USD failed: the deal could not be completed", wantStatus: "failed"},
		// A failed saga whose FAIL_DEAL an operator resolved by hand: the
		// deal_context is still profile's (or REGISTER's).
		{name: "failed saga, deal still approved", status: dealctx.StatusApproved, rev: buyReverted,
			want: "Your buy of 10 AAPL at 150.00 USD failed: the deal could not be completed. The 1500.00 USD taken from your cash were returned", wantStatus: "failed"},
		{name: "failed saga, no decision", status: "",
			want: "Your buy of 10 AAPL at 150.00 USD failed: the deal could not be completed", wantStatus: "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc := settled("alice", tt.status, tt.reason)
			if tt.side != "" {
				dc.Side = tt.side
			}
			var rev *dealctx.Reversal
			if tt.rev != nil {
				rev = tt.rev(dc)
			}
			got, status, err := Text(dc, rev)
			if err != nil || got != tt.want || status != tt.wantStatus {
				t.Errorf("Text: got %q %s (err %v), want %q %s", got, status, err, tt.want, tt.wantStatus)
			}
		})
	}
	for _, status := range []string{"draft", "FAILED", "unknown"} {
		if got, _, err := Text(settled("alice", status, ""), nil); err == nil {
			t.Errorf("Text of status %q: got %q, want an error", status, got)
		}
	}
}

func TestNotify(t *testing.T) {
	var svc *Service
	k := sdktest.New(t, sdk.Config{Name: Name, Logger: quiet}, func(p *sdk.Participant) {
		s, err := New(Config{DB: p.DB(), Participant: p, Auth: devAuth(t), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterHandlers(p)
		svc = s
	}, func(db *sqlx.DB) error { return Migrate(context.Background(), db) })
	ctx := context.Background()
	dc := settled("alice", dealctx.StatusExecuted, "")
	res := k.Send(t, CommandNotify, dealctx.Wrap(dc))
	if res.Err != nil || res.Event != "" || len(res.Emitted) != 0 || res.DeadLettered {
		t.Fatalf("NOTIFY: got event %q emitted %d err %v, want handled with no reply", res.Event, len(res.Emitted), res.Err)
	}
	page, err := svc.List(ctx, "alice", service.PageRequest{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 || page.Items[0].Text != "Your buy of 10 AAPL at 150.00 USD was executed" || page.Items[0].DealID != dc.DealID || page.Items[0].SagaID != res.Command.SagaID {
		t.Fatalf("notifications: got %+v, want the one for deal %s", page.Items, dc.DealID)
	}
	if again := k.Redeliver(t); !again.Duplicate {
		t.Errorf("redelivery: got duplicate %v, want true", again.Duplicate)
	}
	k.Send(t, CommandNotify, dealctx.Wrap(dc)) // same deal outcome, new message id
	if page, _ := svc.List(ctx, "alice", service.PageRequest{Limit: 10}); len(page.Items) != 1 {
		t.Errorf("after duplicates: got %d notifications, want 1", len(page.Items))
	}
	bad := k.Send(t, CommandNotify, dealctx.Wrap(settled("alice", "draft", "")))
	if !bad.DeadLettered || !strings.Contains(bad.DeadLetter.Reason, `status "draft"`) {
		t.Errorf("NOTIFY of a draft deal: got dead letter %v %+v, want one naming the status", bad.DeadLettered, bad.DeadLetter)
	}
	if page, _ := svc.List(ctx, "alice", service.PageRequest{Limit: 10}); len(page.Items) != 1 {
		t.Errorf("after the refused NOTIFY: got %d notifications, want still 1", len(page.Items))
	}
}

// TestNotifyFailure is NOTIFY of a failed saga, as saga-machine sends it
// after the compensations: deal_context from DEAL_FAILED and
// order_reversal from ORDER_REVERTED. One failure notification per deal,
// however often it comes; beside the deal's other outcomes.
func TestNotifyFailure(t *testing.T) {
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
		dc := settled("alice", dealctx.StatusFailed, "the approved order could not be executed in time")
		payload := dealctx.Envelope{DealContext: &dc, OrderReversal: &dealctx.Reversal{DealID: dc.DealID, Reverted: true, Reason: "the buy was undone"}}
		sagaID := uuid.NewString()
		for i := range 3 { // the first and two NOTIFYs under new ids
			if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, payload); out.Err != nil || out.Reply != nil || out.DeadLetter != nil {
				t.Fatalf("NOTIFY %d: got %+v, want handled without reply", i, out)
			}
		}
		page, err := s.List(ctx, "alice", service.PageRequest{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		want := "Your buy of 10 AAPL at 150.00 USD failed: the approved order could not be executed in time. The 1500.00 USD taken from your cash were returned"
		if len(page.Items) != 1 || page.Items[0].Status != dealctx.StatusFailed || page.Items[0].Text != want ||
			page.Items[0].DealID != dc.DealID || page.Items[0].SagaID != sagaID {
			t.Fatalf("notifications: got %+v, want one failure notification %q", page.Items, want)
		}
		var n int
		if err := db.GetContext(ctx, &n, db.Rebind(`SELECT COUNT(*) FROM notifications WHERE deal_id = ?`), dc.DealID); err != nil || n != 1 {
			t.Errorf("rows for the deal: got %d (err %v), want 1", n, err)
		}
		if page, _ := s.List(ctx, "bob", service.PageRequest{Limit: 10}); len(page.Items) != 0 {
			t.Errorf("bob's notifications: got %+v, want none", page.Items)
		}
	})
}

func TestHTTPNotifications(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		iss := servicetest.NewIssuer(t)
		p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{DB: db, Participant: p, Auth: iss.Auth, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterHandlers(p)
		h := servicetest.Validated(t, s.Router(), "notification.yaml")
		var want []string
		for i := range 3 {
			dc := settled("alice", dealctx.StatusRejected, fmt.Sprintf("reason %d", i))
			if out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), dealctx.Wrap(dc)); out.Err != nil {
				t.Fatalf("NOTIFY: %v", out.Err)
			}
			want = append([]string{"Your buy of 10 AAPL at 150.00 USD was rejected: " + fmt.Sprintf("reason %d", i)}, want...)
		}
		servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), dealctx.Wrap(settled("bob", dealctx.StatusExecuted, "")))

		alice := iss.Token(t, "alice")
		var texts []string
		cursor := ""
		for range 5 {
			res := servicetest.Call(t, h, "GET", "/notifications?limit=2&cursor="+cursor, alice, nil)
			if res.Status != http.StatusOK {
				t.Fatalf("GET /notifications: got %d %s", res.Status, res.Body)
			}
			var page service.Page[Notification]
			res.Decode(t, &page)
			for _, n := range page.Items {
				texts = append(texts, n.Text)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if strings.Join(texts, "|") != strings.Join(want, "|") {
			t.Errorf("alice's notifications: got %q, want newest first %q", texts, want)
		}
		if res := servicetest.Call(t, h, "GET", "/notifications", "", nil); res.Status != http.StatusUnauthorized {
			t.Errorf("no token: got %d, want 401", res.Status)
		}
		if res := servicetest.Call(t, h, "GET", "/notifications?limit=0", alice, nil); res.Status != http.StatusUnprocessableEntity || res.Problem(t).Type != service.TypeValidation {
			t.Errorf("limit=0: got %d %s, want 422 validation", res.Status, res.Body)
		}
	})
}

func TestOpenAPIMatchesRouter(t *testing.T) {
	s, err := New(Config{DB: servicetest.SQLite(t, Migrate), Auth: devAuth(t), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.CheckOpenAPI(t, s.routes(), "notification.yaml")
}
