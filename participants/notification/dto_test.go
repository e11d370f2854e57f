package notification

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// dtoOf is the notificationDTO MANUAL_CREATE_ORDER v3's mapping builds
// for dc, as a JSON object (so that tests can break it field by field).
func dtoOf(dc dealctx.DealContext, reverted bool) map[string]any {
	return map[string]any{"user_id": dc.UserID, "deal_id": dc.DealID, "portfolio_id": dc.PortfolioID,
		"status": dc.Status, "reason": dc.Reason, "side": dc.Side, "instrument": dc.Instrument,
		"quantity": dc.Quantity.String(), "price": dc.Price.String(), "amount": dc.Amount.String(),
		"currency": dc.Currency, "reverted": reverted}
}

func newNotifier(t *testing.T, db *sqlx.DB) (*Service, *sdk.Participant) {
	t.Helper()
	p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(t), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)
	return s, p
}

// countRows is the number of notifications stored, for anyone.
func countRows(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	if err := db.GetContext(context.Background(), &n, `SELECT COUNT(*) FROM notifications`); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNotifyShapes sends NOTIFY in both shapes saga-machine uses: the
// notificationDTO of MANUAL_CREATE_ORDER v3 and the whole context of v1
// and v2 (with keys notification ignores, such as cash). Each stores the
// same text for its user.
func TestNotifyShapes(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newNotifier(t, db)
		ctx := context.Background()
		tests := []struct {
			name    string
			payload func(dc dealctx.DealContext) any
			status  string
			want    string
		}{
			{name: "DTO executed", status: dealctx.StatusExecuted,
				payload: func(dc dealctx.DealContext) any { return map[string]any{DTOKey: dtoOf(dc, false)} },
				want:    "Your buy of 10 AAPL at 150.00 USD was executed"},
			{name: "DTO failed, reverted", status: dealctx.StatusFailed,
				payload: func(dc dealctx.DealContext) any {
					dc.Reason = "the approved order could not be executed in time"
					return map[string]any{DTOKey: dtoOf(dc, true)}
				},
				want: "Your buy of 10 AAPL at 150.00 USD failed: the approved order could not be executed in time. The 1500.00 USD taken from your cash were returned"},
			{name: "DTO cancelled, nothing reverted", status: dealctx.StatusCancelled,
				payload: func(dc dealctx.DealContext) any { return map[string]any{DTOKey: dtoOf(dc, false)} },
				want:    "Your buy of 10 AAPL at 150.00 USD was cancelled at your request"},
			{name: "DTO of a failed saga, FAIL_DEAL resolved by hand", status: "",
				payload: func(dc dealctx.DealContext) any { return map[string]any{DTOKey: dtoOf(dc, false)} },
				want:    "Your buy of 10 AAPL at 150.00 USD failed: the deal could not be completed"},
			{name: "legacy context executed", status: dealctx.StatusExecuted,
				payload: func(dc dealctx.DealContext) any {
					return map[string]any{"deal_context": dc, "cash": "100.00", "portfolio": map[string]any{"positions": []any{}}}
				},
				want: "Your buy of 10 AAPL at 150.00 USD was executed"},
			{name: "legacy context failed, reverted", status: dealctx.StatusFailed,
				payload: func(dc dealctx.DealContext) any {
					dc.Reason = "r"
					return dealctx.Envelope{DealContext: &dc, OrderReversal: &dealctx.Reversal{DealID: dc.DealID, Reverted: true}}
				},
				want: "Your buy of 10 AAPL at 150.00 USD failed: r. The 1500.00 USD taken from your cash were returned"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				user := "u-" + uuid.NewString()
				dc := settled(user, tt.status, "")
				sagaID := uuid.NewString()
				if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, tt.payload(dc)); out.Err != nil || out.Reply != nil || out.DeadLetter != nil {
					t.Fatalf("NOTIFY: got %+v, want handled without reply", out)
				}
				page, err := s.List(ctx, user, service.PageRequest{Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Items) != 1 || page.Items[0].Text != tt.want || page.Items[0].DealID != dc.DealID || page.Items[0].SagaID != sagaID {
					t.Fatalf("notifications of %s: got %+v, want one %q for deal %s", user, page.Items, tt.want, dc.DealID)
				}
			})
		}
	})
}

// TestNotifyHostile sends NOTIFY payloads that are neither shape or a
// broken DTO (missing fields, wrong types, unknown fields, oversized or
// control-character text, inconsistent amounts): each is parked with a
// reason naming what is wrong, and no notification is stored.
func TestNotifyHostile(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		_, p := newNotifier(t, db)
		dc := settled("alice", dealctx.StatusExecuted, "")
		with := func(edit func(m map[string]any)) any {
			m := dtoOf(dc, false)
			edit(m)
			return map[string]any{DTOKey: m}
		}
		tests := []struct {
			name    string
			payload any
			want    string // in the dead letter's reason
		}{
			{"empty object", map[string]any{}, "neither notificationDTO nor deal_context"},
			{"other keys only", map[string]any{"cash": "5", "user": "bob"}, `"cash", "user"`},
			{"not an object", []int{1, 2}, "not a JSON object"},
			{"null", nil, "not a JSON object"},
			{"both shapes", map[string]any{DTOKey: dtoOf(dc, false), "deal_context": dc}, "both notificationDTO and deal_context"},
			{"DTO and the context", map[string]any{DTOKey: dtoOf(dc, false), "cash": "5"}, `keys beside notificationDTO ("cash")`},
			{"DTO not an object", map[string]any{DTOKey: "alice"}, "is not a JSON object"},
			{"DTO null", map[string]any{DTOKey: nil}, "is not a JSON object"},
			{"missing user_id", with(func(m map[string]any) { delete(m, "user_id") }), "missing fields: user_id"},
			{"missing several", with(func(m map[string]any) { delete(m, "reverted"); delete(m, "amount") }), "missing fields: amount, reverted"},
			{"user_id a number", with(func(m map[string]any) { m["user_id"] = 42 }), "user_id"},
			{"reverted a string", with(func(m map[string]any) { m["reverted"] = "true" }), "reverted"},
			{"quantity a number", with(func(m map[string]any) { m["quantity"] = 10 }), "quantity"},
			{"unknown field", with(func(m map[string]any) { m["email"] = "bob@example.com" }), `unknown field "email"`},
			{"empty user_id", with(func(m map[string]any) { m["user_id"] = " " }), "user_id is empty"},
			{"oversized reason", with(func(m map[string]any) { m["reason"] = strings.Repeat("x", MaxReasonBytes+1) }), "reason has 1001 bytes"},
			{"oversized user_id", with(func(m map[string]any) { m["user_id"] = strings.Repeat("u", MaxUserIDBytes+1) }), "user_id has 257 bytes"},
			{"oversized instrument", with(func(m map[string]any) { m["instrument"] = strings.Repeat("A", 100_000) }), "instrument has 100000 bytes"},
			{"control characters", with(func(m map[string]any) { m["reason"] = "ok\n\x1b[31mforged line" }), "reason has control characters"},
			{"deal_id not a UUID", with(func(m map[string]any) { m["deal_id"] = "d1" }), `deal_id "d1" is not a UUID`},
			{"amount not quantity*price", with(func(m map[string]any) { m["amount"] = "1" }), "amount 1 is not quantity*price"},
			{"quantity not a decimal", with(func(m map[string]any) { m["quantity"] = "1e9" }), "quantity"},
			{"status draft", with(func(m map[string]any) { m["status"] = "draft" }), `status "draft"`},
			{"legacy context broken", map[string]any{"deal_context": map[string]any{"deal_id": "x"}}, "deal_context"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := countRows(t, db)
				out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), tt.payload)
				if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("NOTIFY: got dead letter %+v (err %v), want one whose reason contains %q", out.DeadLetter, out.Err, tt.want)
				}
				if out.Reply != nil {
					t.Errorf("NOTIFY: got reply %+v, want none", out.Reply)
				}
				if after := countRows(t, db); after != before {
					t.Errorf("notifications: got %d rows, want %d (nothing stored)", after, before)
				}
			})
		}
	})
}

// TestNotifyOtherRecipient is a DTO (or legacy context) naming another user
// than the one the deal was notified to, or another saga: parked, and
// nobody else is told. The service keeps no deals, so the first NOTIFY of
// a deal is trusted as saga-machine built it (see checkRecipient).
func TestNotifyOtherRecipient(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newNotifier(t, db)
		ctx := context.Background()
		dc := settled("alice", dealctx.StatusRejected, "insufficient cash")
		sagaID := uuid.NewString()
		if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{DTOKey: dtoOf(dc, false)}); out.Err != nil || out.DeadLetter != nil {
			t.Fatalf("alice's NOTIFY: got %+v, want handled", out)
		}
		bobs := dc
		bobs.UserID, bobs.Status = "bob", dealctx.StatusFailed // another status: not the (deal_id, status) duplicate
		tests := []struct {
			name    string
			sagaID  string
			payload any
			want    string
		}{
			{"DTO to bob", sagaID, map[string]any{DTOKey: dtoOf(bobs, true)}, `notified to another user before; refusing to tell user "bob"`},
			{"legacy context to bob", sagaID, dealctx.Wrap(bobs), "notified to another user before"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := countRows(t, db)
				out := servicetest.Dispatch(t, p, CommandNotify, tt.sagaID, tt.payload)
				if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("NOTIFY: got dead letter %+v (err %v), want one whose reason contains %q", out.DeadLetter, out.Err, tt.want)
				}
				if after := countRows(t, db); after != before {
					t.Errorf("notifications: got %d rows, want %d", after, before)
				}
			})
		}
		t.Run("same deal from another saga", func(t *testing.T) {
			other := dc
			other.Status = dealctx.StatusFailed
			out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), map[string]any{DTOKey: dtoOf(other, false)})
			if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, "notified before in saga "+sagaID) {
				t.Fatalf("NOTIFY: got dead letter %+v (err %v), want one naming saga %s", out.DeadLetter, out.Err, sagaID)
			}
		})
		if page, _ := s.List(ctx, "bob", service.PageRequest{Limit: 10}); len(page.Items) != 0 {
			t.Errorf("bob's notifications: got %+v, want none", page.Items)
		}
		page, err := s.List(ctx, "alice", service.PageRequest{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 || page.Items[0].Status != dealctx.StatusRejected {
			t.Errorf("alice's notifications: got %+v, want only the rejection", page.Items)
		}
	})
}

func TestParseNotifyDTOMatchesMapping(t *testing.T) {
	// The DTO's JSON names are the ones dtoFields requires: a field added
	// to one and not the other would refuse every NOTIFY.
	b, err := json.Marshal(DTO{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != len(dtoFields) {
		t.Fatalf("DTO has %d JSON fields, dtoFields %d", len(m), len(dtoFields))
	}
	for _, f := range dtoFields {
		if _, ok := m[f]; !ok {
			t.Errorf("dtoFields names %q, which DTO does not have", f)
		}
	}
}
