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
	tests := []struct {
		status, reason, want string
	}{
		{dealctx.StatusExecuted, "", "Your buy of 10 AAPL at 150.00 USD was executed"},
		{dealctx.StatusRejected, "insufficient cash: need 1500.00 USD, have 200.00 USD",
			"Your buy of 10 AAPL at 150.00 USD was rejected: insufficient cash: need 1500.00 USD, have 200.00 USD"},
		{dealctx.StatusRejected, "", "Your buy of 10 AAPL at 150.00 USD was rejected: no reason given"},
	}
	for _, tt := range tests {
		got, err := Text(settled("alice", tt.status, tt.reason))
		if err != nil || got != tt.want {
			t.Errorf("Text(%s, %q): got %q (err %v), want %q", tt.status, tt.reason, got, err, tt.want)
		}
	}
	if _, err := Text(settled("alice", "draft", "")); err == nil {
		t.Errorf("Text of a draft deal: got no error, want one")
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
	bad := k.Send(t, CommandNotify, dealctx.Wrap(settled("alice", "", "")))
	if !bad.DeadLettered || !strings.Contains(bad.DeadLetter.Reason, `status ""`) {
		t.Errorf("NOTIFY without status: got dead letter %v %+v, want one naming the status", bad.DeadLettered, bad.DeadLetter)
	}
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
