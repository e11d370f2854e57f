package notification

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// basketDTO is a basketNotificationDTO as BASKET_ORDER's mapping builds
// it, for a basket of n deals of user, as a JSON object (so that tests can
// break it field by field).
func basketDTO(user string, n int, status, reason string) map[string]any {
	ids := make([]any, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	return map[string]any{"user_id": user, "basket_id": uuid.NewString(), "portfolio_id": uuid.NewString(),
		"currency": "USD", "deal_ids": ids, "status": status, "reason": reason}
}

// storedBasket is the row stored for a basket, printed, or "" if none.
func storedBasket(t *testing.T, db *sqlx.DB, basketID string) string {
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
	q := db.Rebind(`SELECT user_id, deal_id, saga_id, basket_id, deal_ids, status, text FROM notifications WHERE basket_id = ? OR deal_id = ?`)
	if err := db.Select(&rows, q, basketID, basketID); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, strings.Join([]string{r.UserID, r.DealID, r.SagaID, r.BasketID, r.DealIDs, r.Status, r.Text}, " | "))
	}
	return strings.Join(out, "\n")
}

// dealIDsJSON is the deal_ids column a basket's row should hold.
func dealIDsJSON(dto map[string]any) string {
	var ids []string
	for _, id := range dto["deal_ids"].([]any) {
		ids = append(ids, `"`+strings.ToLower(id.(string))+`"`)
	}
	return "[" + strings.Join(ids, ",") + "]"
}

// TestNotifyBasket stores BASKET_ORDER's notifications on SQLite and
// PostgreSQL, one per basket for its owner, read back from the table and
// from the owner's list.
func TestNotifyBasket(t *testing.T) {
	tests := []struct {
		name, status, reason string
		deals                int
		want, wantStatus     string
	}{
		{name: "executed", status: "executed", deals: 3, want: "Your basket of 3 deals was executed", wantStatus: "executed"},
		{name: "executed, one deal", status: "executed", deals: 1, want: "Your basket of 1 deal was executed", wantStatus: "executed"},
		{name: "rejected", status: "rejected", reason: "insufficient cash: need 1600.00 USD, have 1500.00 USD", deals: 2,
			want: "Your basket of 2 deals was rejected: insufficient cash: need 1600.00 USD, have 1500.00 USD", wantStatus: "rejected"},
		{name: "rejected without reason", status: "rejected", deals: 2, want: "Your basket of 2 deals was rejected: no reason given", wantStatus: "rejected"},
		{name: "failed", status: "failed", reason: "line AAPL buy 10: insufficient cash: need 1500.00 USD, have 200.00 USD", deals: 20,
			want: "Your basket of 20 deals failed: line AAPL buy 10: insufficient cash: need 1500.00 USD, have 200.00 USD", wantStatus: "failed"},
		{name: "cancelled", status: "cancelled", reason: "cancelled at your request", deals: 2,
			want: "Your basket of 2 deals was cancelled at your request: the lines already applied to your portfolio were reverted", wantStatus: "cancelled"},
		{name: "compensation resolved by hand", status: "", reason: "insufficient holdings: need 5 AAPL, have 3 AAPL", deals: 3,
			want: "Your basket of 3 deals failed: insufficient holdings: need 5 AAPL, have 3 AAPL", wantStatus: "failed"},
		{name: "compensation resolved by hand, no reason", status: "", deals: 3,
			want: "Your basket of 3 deals failed: the basket could not be completed", wantStatus: "failed"},
	}
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newNotifier(t, db)
		ctx := context.Background()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				user := "u-" + uuid.NewString()
				dto := basketDTO(user, tt.deals, tt.status, tt.reason)
				basketID := dto["basket_id"].(string)
				sagaID := uuid.NewString()
				msg := servicetest.Command(t, p, CommandNotify, sagaID, map[string]any{BasketDTOKey: dto})
				if out := servicetest.DispatchMessage(t, p, msg); out.Err != nil || out.Reply != nil || out.DeadLetter != nil {
					t.Fatalf("NOTIFY: got %+v, want handled without reply", out)
				}
				want := strings.Join([]string{user, basketID, sagaID, basketID, dealIDsJSON(dto), tt.wantStatus, tt.want}, " | ")
				if got := storedBasket(t, db, basketID); got != want {
					t.Fatalf("stored:\n got %s\nwant %s", got, want)
				}
				page, err := s.List(ctx, user, service.PageRequest{Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Items) != 1 || page.Items[0].Text != tt.want || page.Items[0].BasketID != basketID || page.Items[0].Status != tt.wantStatus {
					t.Errorf("%s's notifications: got %+v, want one %q for basket %s", user, page.Items, tt.want, basketID)
				}
				// Re-delivery (same message id): the inbox's duplicate.
				if again := servicetest.DispatchMessage(t, p, msg); !again.Duplicate || again.DeadLetter != nil {
					t.Errorf("redelivery: got duplicate %v dead letter %+v, want a duplicate", again.Duplicate, again.DeadLetter)
				}
				// The same NOTIFY under a new message id (a re-send), the ids in
				// upper case: nothing new.
				upper := map[string]any{}
				for k, v := range dto {
					upper[k] = v
				}
				upper["basket_id"] = strings.ToUpper(basketID)
				for i, payload := range []map[string]any{dto, upper} {
					if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{BasketDTOKey: payload}); out.Err != nil || out.DeadLetter != nil {
						t.Errorf("NOTIFY again (%d): got %+v, want handled", i, out)
					}
				}
				if got := storedBasket(t, db, basketID); got != want {
					t.Errorf("after the repetitions:\n got %s\nwant still %s", got, want)
				}
			})
		}
	})
}

// TestNotifyBasketRefused: NOTIFYs that contradict what was notified
// before are parked with the reason, and no row changes: the basket to
// another user, from another saga, with another outcome or other deals; a
// basket id that is a deal notified before; a basket whose deal was
// notified before to another user.
func TestNotifyBasketRefused(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newNotifier(t, db)
		ctx := context.Background()
		dto := basketDTO("alice", 3, "executed", "")
		sagaID := uuid.NewString()
		if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{BasketDTOKey: dto}); out.Err != nil || out.DeadLetter != nil {
			t.Fatalf("alice's NOTIFY: got %+v, want handled", out)
		}
		deal := settled("alice", dealctx.StatusExecuted, "")
		if out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), map[string]any{DTOKey: dtoOf(deal, false)}); out.Err != nil || out.DeadLetter != nil {
			t.Fatalf("alice's deal NOTIFY: got %+v, want handled", out)
		}
		with := func(edit func(m map[string]any)) map[string]any {
			m := map[string]any{}
			for k, v := range dto {
				m[k] = v
			}
			edit(m)
			return map[string]any{BasketDTOKey: m}
		}
		tests := []struct {
			name    string
			sagaID  string
			payload any
			want    string
		}{
			{"another user", sagaID, with(func(m map[string]any) { m["user_id"] = "bob" }),
				`was notified to another user before; refusing to tell user "bob"`},
			{"another user, another outcome", sagaID, with(func(m map[string]any) { m["user_id"], m["status"] = "bob", "failed" }),
				`was notified to another user before; refusing to tell user "bob"`},
			{"another saga", uuid.NewString(), with(func(map[string]any) {}), "was notified before in saga " + sagaID},
			{"another outcome", sagaID, with(func(m map[string]any) { m["status"], m["reason"] = "failed", "r" }),
				"refusing another notification of it (failed"},
			{"other deals", sagaID, with(func(m map[string]any) { m["deal_ids"] = []any{uuid.NewString()} }),
				"refusing another notification of it"},
			{"a deal's id as the basket's", sagaID, with(func(m map[string]any) { m["basket_id"] = deal.DealID }),
				"that id was notified before as a deal's"},
			{"a deal of bob's basket notified to alice", sagaID, func() any {
				b := basketDTO("bob", 2, "executed", "")
				b["deal_ids"] = []any{uuid.NewString(), deal.DealID}
				return map[string]any{BasketDTOKey: b}
			}(), "its deal " + deal.DealID + " was notified before to another user or in another saga"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := allRows(t, db)
				out := servicetest.Dispatch(t, p, CommandNotify, tt.sagaID, tt.payload)
				if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("NOTIFY: got dead letter %+v (err %v), want one whose reason contains %q", out.DeadLetter, out.Err, tt.want)
				}
				if after := allRows(t, db); after != before {
					t.Errorf("a refused NOTIFY changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
		if page, _ := s.List(ctx, "bob", service.PageRequest{Limit: 10}); len(page.Items) != 0 {
			t.Errorf("bob's notifications: got %+v, want none", page.Items)
		}
		if page, _ := s.List(ctx, "alice", service.PageRequest{Limit: 10}); len(page.Items) != 2 {
			t.Errorf("alice's notifications: got %+v, want her basket's and her deal's", page.Items)
		}
	})
}

// allRows is every notification row, printed.
func allRows(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var rows []string
	if err := db.Select(&rows, `SELECT id || '|' || user_id || '|' || deal_id || '|' || saga_id || '|' || basket_id || '|' || deal_ids || '|' || status || '|' || text
		FROM notifications ORDER BY seq`); err != nil {
		t.Fatal(err)
	}
	return strings.Join(rows, "\n")
}

// TestNotifyBasketHostile sends broken or hostile basket NOTIFY payloads
// (wrong types, missing or unknown fields, oversized strings, too many or
// bad deal ids, several shapes at once, null, arrays): each is parked with
// a reason naming what is wrong, and no notification is stored.
func TestNotifyBasketHostile(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		_, p := newNotifier(t, db)
		good := basketDTO("alice", 3, "executed", "")
		with := func(edit func(m map[string]any)) any {
			m := basketDTO("alice", 3, "executed", "")
			edit(m)
			return map[string]any{BasketDTOKey: m}
		}
		ids := func(n int) []any {
			out := make([]any, n)
			for i := range out {
				out[i] = uuid.NewString()
			}
			return out
		}
		dc := settled("alice", dealctx.StatusExecuted, "")
		tests := []struct {
			name    string
			payload any
			want    string
		}{
			{"null payload", nil, "not a JSON object"},
			{"array payload", []any{map[string]any{BasketDTOKey: good}}, "not a JSON object"},
			{"DTO null", map[string]any{BasketDTOKey: nil}, "basketNotificationDTO: is not a JSON object"},
			{"DTO an array", map[string]any{BasketDTOKey: []any{good}}, "basketNotificationDTO: is not a JSON object"},
			{"DTO a string", map[string]any{BasketDTOKey: "executed"}, "basketNotificationDTO: is not a JSON object"},
			{"both DTO keys", map[string]any{BasketDTOKey: good, DTOKey: dtoOf(dc, false)}, "basketNotificationDTO beside notificationDTO or deal_context"},
			{"basket DTO and deal_context", map[string]any{BasketDTOKey: good, "deal_context": dc}, "basketNotificationDTO beside notificationDTO or deal_context"},
			{"a key beside the DTO", map[string]any{BasketDTOKey: good, "basket": map[string]any{}}, `keys beside basketNotificationDTO ("basket")`},
			{"unknown field", with(func(m map[string]any) { m["email"] = "bob@example.com" }), `unknown field "email"`},
			{"missing fields", with(func(m map[string]any) { delete(m, "deal_ids"); delete(m, "status") }), "missing fields: deal_ids, status"},
			{"user_id a number", with(func(m map[string]any) { m["user_id"] = 7 }), "user_id"},
			{"deal_ids a string", with(func(m map[string]any) { m["deal_ids"] = uuid.NewString() }), "deal_ids"},
			{"deal_ids with a number", with(func(m map[string]any) { m["deal_ids"] = []any{uuid.NewString(), 12} }), "deal_ids"},
			{"deal_ids null", with(func(m map[string]any) { m["deal_ids"] = nil }), "deal_ids is empty"},
			{"deal_ids empty", with(func(m map[string]any) { m["deal_ids"] = []any{} }), "deal_ids is empty"},
			{"21 deal ids", with(func(m map[string]any) { m["deal_ids"] = ids(21) }), "deal_ids has 21 ids, more than 20"},
			{"a deal id not a UUID", with(func(m map[string]any) { m["deal_ids"] = []any{uuid.NewString(), "d2"} }), `deal_ids[1] "d2" is not a UUID`},
			{"a deal twice", with(func(m map[string]any) {
				id := uuid.NewString()
				m["deal_ids"] = []any{id, strings.ToUpper(id)}
			}), "deal_ids[1] is deal_ids[0] again"},
			{"basket_id not a UUID", with(func(m map[string]any) { m["basket_id"] = "../../etc" }), `basket_id "../../etc" is not a UUID`},
			{"basket_id oversized", with(func(m map[string]any) { m["basket_id"] = strings.Repeat("a", 100_000) }), "basket_id has 100000 bytes, more than 64"},
			{"portfolio_id not a UUID", with(func(m map[string]any) { m["portfolio_id"] = "" }), `portfolio_id "" is not a UUID`},
			{"oversized reason", with(func(m map[string]any) { m["reason"] = strings.Repeat("x", MaxReasonBytes+1) }), "reason has 1001 bytes"},
			{"oversized user_id", with(func(m map[string]any) { m["user_id"] = strings.Repeat("u", MaxUserIDBytes+1) }), "user_id has 257 bytes"},
			{"empty user_id", with(func(m map[string]any) { m["user_id"] = "  " }), "user_id is empty"},
			{"control characters", with(func(m map[string]any) { m["reason"] = "ok\r\n\x1b[31mforged" }), "reason has control characters"},
			{"status draft", with(func(m map[string]any) { m["status"] = "draft" }), `status "draft"`},
			{"status approved", with(func(m map[string]any) { m["status"] = "approved" }), `status "approved"`},
			{"status a boolean", with(func(m map[string]any) { m["status"] = true }), "status"},
			{"currency lower case", with(func(m map[string]any) { m["currency"] = "usd" }), `currency "usd"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := allRows(t, db)
				out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), tt.payload)
				if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("NOTIFY: got dead letter %+v (err %v), want one whose reason contains %q", out.DeadLetter, out.Err, tt.want)
				}
				if out.Reply != nil {
					t.Errorf("NOTIFY: got reply %+v, want none", out.Reply)
				}
				if after := allRows(t, db); after != before {
					t.Errorf("notifications changed:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
		if n := countRows(t, db); n != 0 {
			t.Errorf("notifications: got %d rows, want none", n)
		}
	})
}

func TestBasketDTOFieldsMatchType(t *testing.T) {
	// The DTO's JSON names are the ones basketDTOFields requires.
	m := basketDTO("alice", 1, "", "")
	if len(m) != len(basketDTOFields) {
		t.Fatalf("the mapping's DTO has %d fields, basketDTOFields %d", len(m), len(basketDTOFields))
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeBasketDTO(raw)
	if err != nil {
		t.Fatalf("decode the mapping's DTO: %v", err)
	}
	if b.UserID != "alice" || len(b.DealIDs) != 1 {
		t.Errorf("decoded: got %+v", b)
	}
}

// TestHTTPBasketNotification: the owner reads her basket's notification
// over HTTP (the response checked against notification.yaml); another user
// does not see it.
func TestHTTPBasketNotification(t *testing.T) {
	db := servicetest.SQLite(t, Migrate)
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
	dto := basketDTO("alice", 2, "rejected", "insufficient cash: need 1600.00 USD, have 1500.00 USD")
	sagaID := uuid.NewString()
	if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{BasketDTOKey: dto}); out.Err != nil || out.DeadLetter != nil {
		t.Fatalf("NOTIFY: got %+v, want handled", out)
	}
	for _, tt := range []struct {
		user string
		want []Notification
	}{
		{"alice", []Notification{{DealID: dto["basket_id"].(string), SagaID: sagaID, BasketID: dto["basket_id"].(string), Status: "rejected",
			Text: "Your basket of 2 deals was rejected: insufficient cash: need 1600.00 USD, have 1500.00 USD"}}},
		{"bob", nil},
	} {
		res := servicetest.Call(t, h, http.MethodGet, "/notifications", iss.Token(t, tt.user), nil)
		if res.Status != http.StatusOK {
			t.Fatalf("GET /notifications as %s: got %d %s", tt.user, res.Status, res.Body)
		}
		var page service.Page[Notification]
		res.Decode(t, &page)
		for i := range page.Items {
			page.Items[i].ID, page.Items[i].CreatedAt = "", time.Time{}
		}
		if len(page.Items) != len(tt.want) || (len(tt.want) == 1 && page.Items[0] != tt.want[0]) {
			t.Errorf("%s's notifications: got %+v, want %+v", tt.user, page.Items, tt.want)
		}
	}
}

// TestBasketMigrationKeepsRows migrates a notification database holding a
// deal's notification of the first schema to the one with baskets
// (00002), on SQLite and PostgreSQL: the row is listed as before, the
// deal's repeated NOTIFY is still recognised, a basket can be notified;
// migrating back down keeps the deal's row.
func TestBasketMigrationKeepsRows(t *testing.T) {
	ctx := context.Background()
	for _, dbName := range []string{"sqlite", "postgres"} {
		t.Run(dbName, func(t *testing.T) {
			url := filepath.Join(t.TempDir(), "notification.db")
			if dbName == "postgres" {
				url = testenv.Postgres(t)
			}
			db, err := service.OpenDB(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if err := sdk.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			d, err := service.DialectOf(db)
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := schema.Migrations("notification/" + string(d))
			if err != nil {
				t.Fatal(err)
			}
			gd := goose.DialectSQLite3
			if d == service.Postgres {
				gd = goose.DialectPostgres
			}
			prov, err := goose.NewProvider(gd, db.DB, fsys, goose.WithTableName(service.VersionTable(Name)), goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := prov.UpTo(ctx, 1); err != nil {
				t.Fatal(err)
			}
			s, p := newNotifier(t, db)
			dc := settled("alice", dealctx.StatusExecuted, "")
			sagaID := uuid.NewString()
			if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{DTOKey: dtoOf(dc, false)}); out.Err != nil || out.DeadLetter != nil {
				t.Fatalf("NOTIFY before the migration: got %+v", out)
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			list := func() []Notification {
				t.Helper()
				page, err := s.List(ctx, "alice", service.PageRequest{Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				return page.Items
			}
			if got := list(); len(got) != 1 || got[0].DealID != dc.DealID || got[0].BasketID != "" || got[0].Text != "Your buy of 10 AAPL at 150.00 USD was executed" {
				t.Fatalf("after the migration: got %+v, want the deal's notification", got)
			}
			if out := servicetest.Dispatch(t, p, CommandNotify, sagaID, map[string]any{DTOKey: dtoOf(dc, false)}); out.Err != nil || out.DeadLetter != nil {
				t.Fatalf("the deal's NOTIFY again: got %+v", out)
			}
			if out := servicetest.Dispatch(t, p, CommandNotify, uuid.NewString(), map[string]any{BasketDTOKey: basketDTO("alice", 2, "executed", "")}); out.Err != nil || out.DeadLetter != nil {
				t.Fatalf("a basket's NOTIFY: got %+v", out)
			}
			if got := list(); len(got) != 2 || got[0].BasketID == "" || got[1].DealID != dc.DealID {
				t.Errorf("after the NOTIFYs: got %+v, want the basket's then the deal's", got)
			}
			if _, err := prov.DownTo(ctx, 1); err != nil {
				t.Fatalf("migrate down: %v", err)
			}
			var n int
			if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM notifications WHERE deal_id = ?`), dc.DealID); err != nil || n != 1 {
				t.Errorf("the deal's rows after migrating down: got %d (err %v), want 1", n, err)
			}
		})
	}
}

// TestNotifyBasketConcurrent sends one basket's NOTIFY under several
// message ids at once (re-sends racing each other), on SQLite and
// PostgreSQL: none is parked and the basket is notified once.
func TestNotifyBasketConcurrent(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		_, p := newNotifier(t, db)
		dto := basketDTO("alice", 3, "failed", "line AAPL buy 10: insufficient cash")
		sagaID := uuid.NewString()
		const n = 6
		outs := make([]sdk.Outcome, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			msg := servicetest.Command(t, p, CommandNotify, sagaID, map[string]any{BasketDTOKey: dto})
			body, err := json.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				outs[i], errs[i] = p.Dispatch(context.Background(), sdk.Record{Topic: p.Config().CommandTopic, Key: sagaID, Value: body,
					Headers: map[string]string{engine.HeaderKind: string(engine.KindCommand)}})
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || outs[i].DeadLetter != nil || outs[i].Err != nil {
				t.Errorf("NOTIFY %d: got err %v, outcome err %v, dead letter %+v; want handled", i, errs[i], outs[i].Err, outs[i].DeadLetter)
			}
		}
		var rows int
		if err := db.Get(&rows, db.Rebind(`SELECT COUNT(*) FROM notifications WHERE basket_id = ?`), dto["basket_id"]); err != nil || rows != 1 {
			t.Errorf("rows of the basket: got %d (err %v), want 1", rows, err)
		}
	})
}
