package deals

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// basketWorld is deals on one database behind its validated HTTP router.
type basketWorld struct {
	httpEnv
	db *sqlx.DB
}

func newBasketWorld(t *testing.T, db *sqlx.DB) *basketWorld {
	t.Helper()
	return &basketWorld{httpEnv: newHTTP(t, db), db: db}
}

// basketLines are the lines of the test baskets: a buy and a sell.
func basketLines() []map[string]string {
	return []map[string]string{
		{"side": "buy", "instrument": "AAPL", "quantity": "10", "price": "150.00", "currency": "USD"},
		{"side": "sell", "instrument": "MSFT", "quantity": "5", "price": "300.10", "currency": "USD"},
	}
}

func basketBody(lines []map[string]string) map[string]any {
	return map[string]any{"portfolio_id": portfolioID, "lines": lines}
}

// create posts a basket as token and returns it with the one
// BASKET_REGISTERED it wrote to the outbox.
func (w *basketWorld) create(t *testing.T, token string, body any, headers ...string) (Basket, engine.Message) {
	t.Helper()
	res := servicetest.Call(t, w.h, "POST", "/baskets", token, body, headers...)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /baskets: got %d %s, want 201", res.Status, res.Body)
	}
	var b Basket
	res.Decode(t, &b)
	msgs := servicetest.Flush(t, w.p)
	if len(msgs) != 1 || msgs[0].Name != BasketStartEvent || msgs[0].Saga != BasketSagaName || msgs[0].SagaID != b.SagaID {
		t.Fatalf("outbox after POST /baskets: got %v, want one %s of saga %s %s", msgs, BasketStartEvent, BasketSagaName, b.SagaID)
	}
	return b, msgs[0]
}

// registered decodes the basket of a BASKET_REGISTERED.
func registered(t *testing.T, m engine.Message) BasketContext {
	t.Helper()
	var env struct {
		Basket *BasketContext `json:"basket"`
	}
	if err := json.Unmarshal(m.Payload, &env); err != nil || env.Basket == nil {
		t.Fatalf("%s payload %s: %v", m.Name, m.Payload, err)
	}
	return *env.Basket
}

// dealRow is what the database holds of a deal.
type dealRow struct {
	ID                string     `db:"id"`
	Status            string     `db:"status"`
	Reason            string     `db:"reason"`
	UpdatedAt         time.Time  `db:"updated_at"`
	CancelRequestedAt *time.Time `db:"cancel_requested_at"`
}

// rows reads the deals of basket id from the database, oldest first.
func (w *basketWorld) rows(t *testing.T, basketID string) []dealRow {
	t.Helper()
	var rows []dealRow
	if err := w.db.Select(&rows, w.db.Rebind(`SELECT id, status, reason, updated_at, cancel_requested_at FROM deals WHERE basket_id = ? ORDER BY seq`), basketID); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("basket %s has no deals in the database", basketID)
	}
	return rows
}

// wantRows checks every deal of the basket has status and reason.
func (w *basketWorld) wantRows(t *testing.T, basketID, status, reason string) []dealRow {
	t.Helper()
	rows := w.rows(t, basketID)
	for _, r := range rows {
		if r.Status != status || r.Reason != reason {
			t.Errorf("deal %s of basket %s: got %q %q, want %q %q", r.ID, basketID, r.Status, r.Reason, status, reason)
		}
	}
	return rows
}

// unchanged checks the deals of the basket are as before.
func (w *basketWorld) unchanged(t *testing.T, basketID string, before []dealRow) {
	t.Helper()
	after := w.rows(t, basketID)
	if len(after) != len(before) {
		t.Fatalf("basket %s: %d deals, had %d", basketID, len(after), len(before))
	}
	for i := range after {
		a, b := after[i], before[i]
		if a.Status != b.Status || a.Reason != b.Reason || !a.UpdatedAt.Equal(b.UpdatedAt) || (a.CancelRequestedAt == nil) != (b.CancelRequestedAt == nil) {
			t.Errorf("deal %s changed: got %+v, had %+v", a.ID, a, b)
		}
	}
}

// count returns the rows of table.
func (w *basketWorld) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := w.db.Get(&n, `SELECT COUNT(*) FROM `+table); err != nil {
		t.Fatal(err)
	}
	return n
}

// nothingStored checks no basket, deal or saga start exists.
func (w *basketWorld) nothingStored(t *testing.T) {
	t.Helper()
	if b, d := w.count(t, "baskets"), w.count(t, "deals"); b != 0 || d != 0 {
		t.Errorf("stored: got %d baskets and %d deals, want none", b, d)
	}
	if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
		t.Errorf("sagas started: got %v, want none", msgs)
	}
}

func (w *basketWorld) get(t *testing.T, id string) Basket {
	t.Helper()
	res := servicetest.Call(t, w.h, "GET", "/baskets/"+id, w.alice, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("GET /baskets/%s: got %d %s", id, res.Status, res.Body)
	}
	var b Basket
	res.Decode(t, &b)
	return b
}

// basketResult decodes the basket_result of a reply and checks it.
func wantBasketReply(t *testing.T, out sdk.Outcome, event, status, reason string) {
	t.Helper()
	if out.Err != nil || out.DeadLetter != nil || out.Reply == nil || out.Reply.Name != event {
		t.Fatalf("got reply %+v (err %v, dead letter %+v), want %s", out.Reply, out.Err, out.DeadLetter, event)
	}
	var env map[string]BasketResult
	if err := json.Unmarshal(out.Reply.Payload, &env); err != nil {
		t.Fatalf("%s payload %s: %v", event, out.Reply.Payload, err)
	}
	if len(env) != 1 || env["basket_result"] != (BasketResult{Status: status, Reason: reason}) {
		t.Errorf("%s payload: got %s, want only basket_result {%s %q}", event, out.Reply.Payload, status, reason)
	}
}

func wantDeadLetter(t *testing.T, out sdk.Outcome, contains string) {
	t.Helper()
	if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, contains) {
		t.Fatalf("got reply %+v dead letter %+v (err %v), want a dead letter containing %q", out.Reply, out.DeadLetter, out.Err, contains)
	}
}

// TestBasketCreateGetList: POST /baskets stores the basket and one draft
// deal per line (basket_id, the basket's saga) and starts BASKET_ORDER with
// the contract's BASKET_REGISTERED; GET /baskets/{id} and GET /baskets
// (paginated, newest first) show it to its owner only; GET /deals shows
// the lines with basket_id.
func TestBasketCreateGetList(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		body := basketBody(basketLines())
		body["portfolio_id"] = strings.ToUpper(portfolioID)
		res := servicetest.Call(t, w.h, "POST", "/baskets", w.alice, body)
		if res.Status != http.StatusCreated {
			t.Fatalf("POST /baskets: got %d %s, want 201", res.Status, res.Body)
		}
		var b Basket
		res.Decode(t, &b)
		if got, want := res.Header.Get("Location"), "/baskets/"+b.ID; got != want {
			t.Errorf("Location: got %q, want %q", got, want)
		}
		if b.Status != StatusDraft || b.UserID != "alice" || b.PortfolioID != portfolioID || b.Currency != "USD" || b.SagaID == "" || len(b.Deals) != 2 {
			t.Fatalf("basket: got %+v, want alice's draft USD basket on %s with a saga and 2 deals", b, portfolioID)
		}
		wantAmounts := []string{"1500", "1500.5"}
		for i, d := range b.Deals {
			if d.BasketID == nil || *d.BasketID != b.ID || d.SagaID != b.SagaID || d.UserID != "alice" || d.Status != StatusDraft ||
				d.PortfolioID != portfolioID || d.Amount.String() != wantAmounts[i] {
				t.Errorf("deal %d: got %+v, want alice's draft of basket %s, saga %s, amount %s", i, d, b.ID, b.SagaID, wantAmounts[i])
			}
		}
		msgs := servicetest.Flush(t, w.p)
		if len(msgs) != 1 {
			t.Fatalf("outbox: got %d messages, want 1 (%s)", len(msgs), BasketStartEvent)
		}
		m := msgs[0]
		if m.Name != BasketStartEvent || m.Saga != BasketSagaName || m.SagaID != b.SagaID || m.Kind != engine.KindEvent || m.Participant != Name {
			t.Errorf("start event: got %s %s saga %s kind %s from %s, want %s %s saga %s event from deals",
				m.Name, m.Saga, m.SagaID, m.Kind, m.Participant, BasketStartEvent, BasketSagaName, b.SagaID)
		}
		// The payload is exactly the contract's: {"basket": {...}}.
		var raw map[string]map[string]json.RawMessage
		if err := json.Unmarshal(m.Payload, &raw); err != nil || len(raw) != 1 {
			t.Fatalf("payload %s: want only the basket (%v)", m.Payload, err)
		}
		if got := len(raw["basket"]); got != 5 {
			t.Errorf("basket keys: got %d in %s, want basket_id, user_id, portfolio_id, currency, lines", got, m.Payload)
		}
		bc := registered(t, m)
		if bc.BasketID != b.ID || bc.UserID != "alice" || bc.PortfolioID != portfolioID || bc.Currency != "USD" || len(bc.Lines) != 2 {
			t.Fatalf("basket context: got %+v", bc)
		}
		for i, l := range bc.Lines {
			if err := l.Validate(); err != nil {
				t.Errorf("line %d does not pass dealctx.Validate: %v", i, err)
			}
			d := b.Deals[i]
			if l.DealID != d.ID || l.UserID != "alice" || l.PortfolioID != portfolioID || l.Side != d.Side || !l.Amount.Equal(d.Amount) || l.Status != "" {
				t.Errorf("line %d: got %+v, want deal %+v without status", i, l, d)
			}
		}

		got := w.get(t, b.ID)
		if got.ID != b.ID || got.Status != StatusDraft || len(got.Deals) != 2 || got.Deals[0].ID != b.Deals[0].ID || got.Deals[1].ID != b.Deals[1].ID || !got.CreatedAt.Equal(b.CreatedAt) {
			t.Errorf("GET /baskets/{id}: got %+v, want %+v", got, b)
		}
		if res := servicetest.Call(t, w.h, "GET", "/baskets/"+strings.ToUpper(b.ID), w.alice, nil); res.Status != http.StatusOK {
			t.Errorf("GET /baskets/{UPPER}: got %d, want 200", res.Status)
		}
		// GET /deals shows the lines with their basket.
		var deals service.Page[Deal]
		servicetest.Call(t, w.h, "GET", "/deals", w.alice, nil).Decode(t, &deals)
		if len(deals.Items) != 2 {
			t.Fatalf("GET /deals: got %d deals, want the basket's 2", len(deals.Items))
		}
		for _, d := range deals.Items {
			if d.BasketID == nil || *d.BasketID != b.ID {
				t.Errorf("GET /deals: deal %s has basket %v, want %s", d.ID, d.BasketID, b.ID)
			}
		}
		single := servicetest.Call(t, w.h, "GET", "/deals/"+b.Deals[0].ID, w.alice, nil)
		if !strings.Contains(string(single.Body), `"basket_id":"`+b.ID+`"`) {
			t.Errorf("GET /deals/{id}: %s, want basket_id %s", single.Body, b.ID)
		}
		// A deal of its own has no basket_id at all.
		own := servicetest.Call(t, w.h, "POST", "/deals", w.alice, map[string]string{"portfolio_id": portfolioID, "side": "buy", "instrument": "AAPL", "quantity": "1", "price": "1", "currency": "USD"})
		if own.Status != http.StatusCreated || strings.Contains(string(own.Body), "basket_id") {
			t.Errorf("POST /deals: got %d %s, want 201 without basket_id", own.Status, own.Body)
		}
		servicetest.Flush(t, w.p)

		// Bob sees neither the basket nor its existence.
		other := servicetest.Call(t, w.h, "GET", "/baskets/"+b.ID, w.bob, nil)
		if other.Status != http.StatusNotFound || other.Problem(t).Type != service.TypeNotFound {
			t.Errorf("bob GET alice's basket: got %d %s, want 404 not-found", other.Status, other.Body)
		}
		if res := servicetest.Call(t, w.h, "GET", "/baskets/00000000-0000-4000-8000-000000000000", w.alice, nil); res.Status != http.StatusNotFound {
			t.Errorf("unknown basket: got %d, want 404", res.Status)
		}
		var bobs service.Page[Basket]
		servicetest.Call(t, w.h, "GET", "/baskets", w.bob, nil).Decode(t, &bobs)
		if bobs.Items == nil || len(bobs.Items) != 0 {
			t.Errorf("bob's baskets: got %+v, want an empty list", bobs.Items)
		}

		// Three more, then page through newest first.
		ids := []string{b.ID}
		for i := range 3 {
			lines := basketLines()[:1]
			lines[0]["quantity"] = fmt.Sprint(i + 1)
			nb, _ := w.create(t, w.alice, basketBody(lines))
			ids = append(ids, nb.ID)
		}
		var seen []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 4 {
				t.Fatal("pagination does not end")
			}
			r := servicetest.Call(t, w.h, "GET", "/baskets?limit=3&cursor="+cursor, w.alice, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("GET /baskets: %d %s", r.Status, r.Body)
			}
			var page service.Page[Basket]
			r.Decode(t, &page)
			for _, it := range page.Items {
				seen = append(seen, it.ID)
				if len(it.Deals) == 0 || it.Status != StatusDraft {
					t.Errorf("listed basket %s: status %q with %d deals, want draft with its deals", it.ID, it.Status, len(it.Deals))
				}
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if want := []string{ids[3], ids[2], ids[1], ids[0]}; strings.Join(seen, ",") != strings.Join(want, ",") {
			t.Errorf("pages: got %v, want newest first %v", seen, want)
		}
		for _, q := range []string{"?limit=0", "?limit=", "?cursor=zzz"} {
			if r := servicetest.Call(t, w.h, "GET", "/baskets"+q, w.alice, nil); r.Status != http.StatusUnprocessableEntity {
				t.Errorf("GET /baskets%s: got %d, want 422", q, r.Status)
			}
		}
	})
}

// TestBasketValidation: a basket without lines, with 21, in two
// currencies, with a bad line or a bad portfolio is refused with every bad
// field named, and nothing is stored and no saga started.
func TestBasketValidation(t *testing.T) {
	many := make([]map[string]string, MaxBasketLines+1)
	for i := range many {
		many[i] = basketLines()[0]
	}
	mixed := basketLines()
	mixed[1]["currency"] = "EUR"
	bad := basketLines()
	bad[1]["quantity"] = "0"
	bad[1]["instrument"] = "msft"
	tests := []struct {
		name   string
		body   any
		status int
		typ    string
		fields string
	}{
		{"no lines", basketBody([]map[string]string{}), 422, service.TypeValidation, "lines"},
		{"lines missing", map[string]any{"portfolio_id": portfolioID}, 422, service.TypeValidation, "lines"},
		{"21 lines", basketBody(many), 422, service.TypeValidation, "lines"},
		{"mixed currency", basketBody(mixed), 422, service.TypeValidation, "lines[1].currency"},
		{"bad line", basketBody(bad), 422, service.TypeValidation, "lines[1].instrument,lines[1].quantity"},
		{"bad portfolio, reported once", map[string]any{"portfolio_id": "nope", "lines": basketLines()}, 422, service.TypeValidation, "portfolio_id"},
		{"bad portfolio and no lines", map[string]any{"portfolio_id": "", "lines": []any{}}, 422, service.TypeValidation, "portfolio_id,lines"},
		{"unknown field in a line", `{"portfolio_id":"` + portfolioID + `","lines":[{"side":"buy","instrument":"AAPL","quantity":"1","price":"1","currency":"USD","x":1}]}`, 400, service.TypeMalformed, ""},
		{"number for a decimal", `{"portfolio_id":"` + portfolioID + `","lines":[{"side":"buy","instrument":"AAPL","quantity":1,"price":"1","currency":"USD"}]}`, 400, service.TypeMalformed, ""},
		{"lines not an array", `{"portfolio_id":"` + portfolioID + `","lines":{}}`, 400, service.TypeMalformed, ""},
	}
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := servicetest.Call(t, w.h, "POST", "/baskets", w.alice, tt.body)
				if res.Status != tt.status {
					t.Fatalf("got %d %s, want %d", res.Status, res.Body, tt.status)
				}
				p := res.Problem(t)
				if p.Type != tt.typ {
					t.Errorf("type: got %q, want %q", p.Type, tt.typ)
				}
				var fields []string
				for _, f := range p.Errors {
					fields = append(fields, f.Field)
				}
				if got := strings.Join(fields, ","); got != tt.fields {
					t.Errorf("invalid fields: got %q (%s), want %q", got, res.Body, tt.fields)
				}
				w.nothingStored(t)
			})
		}
	})
}

// TestBasketAttacks: a replayed Idempotency-Key with another body (422),
// a cross-site or non-JSON POST (403, 415), a bad key (422): refused with
// nothing stored; the same key and body answer the first basket and start
// no second saga; keys are per user.
func TestBasketAttacks(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		raw, _ := json.Marshal(basketBody(basketLines()))
		for _, tt := range []struct {
			name   string
			body   string
			hdr    []string
			status int
			typ    string
		}{
			{"cross-site json as text/plain", string(raw), []string{"Content-Type", "text/plain;charset=UTF-8", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, service.TypeCrossOrigin},
			{"cross-origin json, old browser", string(raw), []string{"Content-Type", "application/json", "Origin", "https://evil.example"}, 403, service.TypeCrossOrigin},
			{"json as text/plain", string(raw), []string{"Content-Type", "text/plain"}, 415, service.TypeUnsupportedMedia},
			{"no content type", string(raw), []string{"Content-Type", ""}, 415, service.TypeUnsupportedMedia},
			{"bad Idempotency-Key", string(raw), []string{HeaderIdempotencyKey, "has space"}, 422, service.TypeValidation},
			{"oversized body", `{"portfolio_id":"` + strings.Repeat("x", service.MaxBodyBytes) + `","lines":[]}`, nil, 400, service.TypeMalformed},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := servicetest.Call(t, w.h, "POST", "/baskets", w.alice, tt.body, tt.hdr...)
				if res.Status != tt.status || res.Problem(t).Type != tt.typ {
					t.Errorf("got %d %s, want %d %s", res.Status, res.Body, tt.status, tt.typ)
				}
				w.nothingStored(t)
			})
		}

		first, _ := w.create(t, w.alice, basketBody(basketLines()), HeaderIdempotencyKey, "k-1")
		// The same body with the portfolio id in upper case is the same request.
		same := basketBody(basketLines())
		same["portfolio_id"] = strings.ToUpper(portfolioID)
		again := servicetest.Call(t, w.h, "POST", "/baskets", w.alice, same, HeaderIdempotencyKey, "k-1")
		var b2 Basket
		again.Decode(t, &b2)
		if again.Status != http.StatusCreated || again.Header.Get(HeaderReplayed) != "true" || b2.ID != first.ID || b2.SagaID != first.SagaID || len(b2.Deals) != 2 {
			t.Errorf("same key and body: got %d %s, want 201 replayed with basket %s", again.Status, again.Body, first.ID)
		}
		changed := basketLines()
		changed[0]["quantity"] = "11"
		reuse := servicetest.Call(t, w.h, "POST", "/baskets", w.alice, basketBody(changed), HeaderIdempotencyKey, "k-1")
		if reuse.Status != http.StatusUnprocessableEntity || reuse.Problem(t).Type != service.TypeIdempotencyReuse || !strings.Contains(reuse.Problem(t).Detail, first.ID) {
			t.Errorf("same key, another body: got %d %s, want 422 idempotency-key-reused naming %s", reuse.Status, reuse.Body, first.ID)
		}
		if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
			t.Errorf("sagas started by the replays: got %v, want none", msgs)
		}
		if nb, nd := w.count(t, "baskets"), w.count(t, "deals"); nb != 1 || nd != 2 {
			t.Errorf("after the replays: %d baskets, %d deals, want 1 and 2", nb, nd)
		}
		w.wantRows(t, first.ID, StatusDraft, "")
		// Bob may use the same key: a new basket of his own.
		bobs, _ := w.create(t, w.bob, basketBody(basketLines()), HeaderIdempotencyKey, "k-1")
		if bobs.ID == first.ID || bobs.UserID != "bob" {
			t.Errorf("bob with alice's key: got basket %s of %s, want a new one of bob", bobs.ID, bobs.UserID)
		}
	})
}

// TestBasketOnAnotherUsersPortfolio: deals keeps no portfolios, so, as for
// POST /deals, it cannot tell whose portfolio an id is; what it
// guarantees is that the basket and every line belong to the caller (the
// token's subject) whatever the body says, so that profile's CHECK_BASKET
// ("the portfolio exists and belongs to basket.user_id") refuses it and
// REJECT_BASKET rejects its deals before any cash moves. The portfolio's
// owner sees nothing of it.
func TestBasketOnAnotherUsersPortfolio(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		alicesPortfolio := uuid.NewString()
		body := basketBody(basketLines())
		body["portfolio_id"] = alicesPortfolio
		b, m := w.create(t, w.bob, body)
		bc := registered(t, m)
		if b.UserID != "bob" || bc.UserID != "bob" {
			t.Fatalf("basket on alice's portfolio: owner %q, context user %q, want bob", b.UserID, bc.UserID)
		}
		for _, l := range bc.Lines {
			if l.UserID != "bob" {
				t.Errorf("line %s: user %q, want bob", l.DealID, l.UserID)
			}
		}
		// Alice sees nothing of it.
		if res := servicetest.Call(t, w.h, "GET", "/baskets/"+b.ID, w.alice, nil); res.Status != http.StatusNotFound {
			t.Errorf("alice GET bob's basket: got %d, want 404", res.Status)
		}
		var alices service.Page[Deal]
		servicetest.Call(t, w.h, "GET", "/deals", w.alice, nil).Decode(t, &alices)
		if len(alices.Items) != 0 {
			t.Errorf("alice's deals: got %d, want 0", len(alices.Items))
		}
		// profile's refusal, as the saga sends it: every deal rejected.
		why := "portfolio " + alicesPortfolio + " not found for user bob"
		out := servicetest.Dispatch(t, w.p, CommandRejectBasket, b.SagaID, map[string]any{"basket": bc, "reason": why})
		wantBasketReply(t, out, EventBasketRejected, StatusRejected, why)
		w.wantRows(t, b.ID, StatusRejected, why)
	})
}

// TestBasketCommands: EXECUTE_BASKET, REJECT_BASKET and FAIL_BASKET move
// every deal of the basket at once (read back from the database), answer
// the contract's basket_result, and a re-delivery or a re-send answers the
// same and changes nothing; a command contradicting the basket's state is
// parked and moves nothing.
func TestBasketCommands(t *testing.T) {
	const noCash = "insufficient cash: need 1500.00 USD, have 200.00 USD"
	eachDB(t, func(t *testing.T, open opener) {
		t.Run("execute", func(t *testing.T) {
			w := newBasketWorld(t, open(t, Migrate))
			b, m := w.create(t, w.alice, basketBody(basketLines()))
			bc := registered(t, m)
			cmd := servicetest.Command(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc})
			out := servicetest.DispatchMessage(t, w.p, cmd)
			wantBasketReply(t, out, EventBasketExecuted, StatusExecuted, "")
			rows := w.wantRows(t, b.ID, StatusExecuted, "")
			if got := w.get(t, b.ID); got.Status != StatusExecuted || got.Reason != "" {
				t.Errorf("GET: basket %q %q, want executed", got.Status, got.Reason)
			}
			if again := servicetest.DispatchMessage(t, w.p, cmd); !again.Duplicate || again.Reply == nil || again.Reply.ID != out.Reply.ID {
				t.Errorf("redelivery: got duplicate %v reply %+v, want %s again", again.Duplicate, again.Reply, out.Reply.ID)
			}
			resend := servicetest.Dispatch(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc})
			wantBasketReply(t, resend, EventBasketExecuted, StatusExecuted, "")
			w.unchanged(t, b.ID, rows)
			wantDeadLetter(t, servicetest.Dispatch(t, w.p, CommandRejectBasket, b.SagaID, map[string]any{"basket": bc, "reason": noCash}),
				"cannot become rejected: its deal")
			w.unchanged(t, b.ID, rows)
			// FAIL_BASKET compensating EXECUTE_BASKET (its payload: the basket).
			comp := servicetest.Compensation(t, w.p, CommandFailBasket, cmd, map[string]any{"basket": bc})
			const why = "the basket's saga failed: its execution could not be confirmed in time"
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, comp), EventBasketFailed, StatusFailed, why)
			failed := w.wantRows(t, b.ID, StatusFailed, why)
			// Then BASKET_REGISTERED's, with the whole context: the same answer.
			ctx := map[string]any{"basket": bc, "basket_check": map[string]any{"sufficient": true, "reason": ""}}
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx)), EventBasketFailed, StatusFailed, why)
			w.unchanged(t, b.ID, failed)
			if got := w.get(t, b.ID); got.Status != StatusFailed || got.Reason != why {
				t.Errorf("GET: basket %q %q, want failed %q", got.Status, got.Reason, why)
			}
			wantDeadLetter(t, servicetest.Dispatch(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc}), "cannot become executed: its deal")
			w.unchanged(t, b.ID, failed)
		})
		t.Run("aborted while executing", func(t *testing.T) {
			// An operator aborted the saga in EXECUTING: FAIL_BASKET for
			// EXECUTE_BASKET comes first with its mapped payload (no
			// abort) and says "in time"; BASKET_REGISTERED's, with the
			// context and its abort, sets the reason right; again: the same.
			w := newBasketWorld(t, open(t, Migrate))
			b, m := w.create(t, w.alice, basketBody(basketLines()))
			bc := registered(t, m)
			cmd := servicetest.Command(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc})
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, cmd), EventBasketExecuted, StatusExecuted, "")
			comp := servicetest.Compensation(t, w.p, CommandFailBasket, cmd, map[string]any{"basket": bc})
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, comp), EventBasketFailed, StatusFailed,
				"the basket's saga failed: its execution could not be confirmed in time")
			ctx := map[string]any{"basket": bc, "basket_check": map[string]any{"sufficient": true, "reason": ""}, "abort": map[string]any{"at": "2026-11-26T22:00:00Z"}}
			last := servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx)
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, last), EventBasketFailed, StatusFailed, basketAbortReason)
			rows := w.wantRows(t, b.ID, StatusFailed, basketAbortReason)
			if again := servicetest.DispatchMessage(t, w.p, last); !again.Duplicate {
				t.Errorf("redelivery: got %+v, want the stored reply", again)
			}
			w.unchanged(t, b.ID, rows)
			if got := w.get(t, b.ID); got.Status != StatusFailed || got.Reason != basketAbortReason {
				t.Errorf("GET: basket %q %q, want failed %q", got.Status, got.Reason, basketAbortReason)
			}
		})
		t.Run("aborted while checking", func(t *testing.T) {
			w := newBasketWorld(t, open(t, Migrate))
			b, m := w.create(t, w.alice, basketBody(basketLines()))
			ctx := map[string]any{"basket": registered(t, m), "abort": map[string]any{"at": "2026-11-26T22:00:00Z"}}
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx)),
				EventBasketFailed, StatusFailed, basketAbortReason)
			w.wantRows(t, b.ID, StatusFailed, basketAbortReason)
		})
		t.Run("reject", func(t *testing.T) {
			w := newBasketWorld(t, open(t, Migrate))
			b, m := w.create(t, w.alice, basketBody(basketLines()))
			bc := registered(t, m)
			cmd := servicetest.Command(t, w.p, CommandRejectBasket, b.SagaID, map[string]any{"basket": bc, "reason": noCash})
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, cmd), EventBasketRejected, StatusRejected, noCash)
			rows := w.wantRows(t, b.ID, StatusRejected, noCash)
			// A re-send with another reason: the first answer, nothing moves.
			wantBasketReply(t, servicetest.Dispatch(t, w.p, CommandRejectBasket, b.SagaID, map[string]any{"basket": bc, "reason": "other"}),
				EventBasketRejected, StatusRejected, noCash)
			w.unchanged(t, b.ID, rows)
			wantDeadLetter(t, servicetest.Dispatch(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc}), "cannot become executed")
			w.unchanged(t, b.ID, rows)
			if got := w.get(t, b.ID); got.Status != StatusRejected || got.Reason != noCash {
				t.Errorf("GET: basket %q %q, want rejected %q", got.Status, got.Reason, noCash)
			}
			// FAIL_BASKET compensating REJECT_BASKET (its payload: basket and reason).
			comp := servicetest.Compensation(t, w.p, CommandFailBasket, cmd, map[string]any{"basket": bc, "reason": noCash})
			why := "the basket's saga failed: it was rejected (" + noCash + ") and its deals could not be settled in time"
			wantBasketReply(t, servicetest.DispatchMessage(t, w.p, comp), EventBasketFailed, StatusFailed, why)
			w.wantRows(t, b.ID, StatusFailed, why)
		})
		t.Run("reject without reason", func(t *testing.T) {
			w := newBasketWorld(t, open(t, Migrate))
			b, m := w.create(t, w.alice, basketBody(basketLines()))
			out := servicetest.Dispatch(t, w.p, CommandRejectBasket, b.SagaID, map[string]any{"basket": registered(t, m), "reason": " "})
			wantBasketReply(t, out, EventBasketRejected, StatusRejected, "rejected (profile gave no reason)")
			w.wantRows(t, b.ID, StatusRejected, "rejected (profile gave no reason)")
		})
		for _, tt := range []struct {
			name string
			ctx  func(bc BasketContext) map[string]any
			want func(bc BasketContext) string
		}{
			{"fail: a line refused",
				func(bc BasketContext) map[string]any {
					return map[string]any{"basket": bc, "basket_check": map[string]any{"sufficient": true, "reason": ""},
						"deal_context": map[string]any{"deal_id": bc.Lines[1].DealID, "status": "rejected", "reason": "insufficient holdings: need 5 MSFT, have 0 MSFT"}}
				},
				func(BasketContext) string { return "line MSFT sell 5: insufficient holdings: need 5 MSFT, have 0 MSFT" }},
			{"fail: an approved line last",
				func(bc BasketContext) map[string]any {
					return map[string]any{"basket": bc, "basket_check": map[string]any{"sufficient": true, "reason": ""},
						"deal_context": map[string]any{"deal_id": bc.Lines[0].DealID, "status": "approved"}}
				},
				func(BasketContext) string {
					return "the basket's saga failed: its lines could not all be applied to your portfolio in time"
				}},
			{"fail: a refusal naming another basket's deal is not told",
				func(bc BasketContext) map[string]any {
					return map[string]any{"basket": bc, "basket_check": map[string]any{"sufficient": true, "reason": ""},
						"deal_context": map[string]any{"deal_id": uuid.NewString(), "status": "rejected", "reason": "not yours"}}
				},
				func(BasketContext) string {
					return "the basket's saga failed: its lines could not all be applied to your portfolio in time"
				}},
			{"fail: profile unavailable",
				func(bc BasketContext) map[string]any { return map[string]any{"basket": bc} },
				func(BasketContext) string { return "the basket's saga failed: it could not be completed in time" }},
		} {
			t.Run(tt.name, func(t *testing.T) {
				w := newBasketWorld(t, open(t, Migrate))
				b, m := w.create(t, w.alice, basketBody(basketLines()))
				bc := registered(t, m)
				comp := servicetest.Compensation(t, w.p, CommandFailBasket, m, tt.ctx(bc))
				want := tt.want(bc)
				out := servicetest.DispatchMessage(t, w.p, comp)
				wantBasketReply(t, out, EventBasketFailed, StatusFailed, want)
				rows := w.wantRows(t, b.ID, StatusFailed, want)
				if again := servicetest.DispatchMessage(t, w.p, comp); !again.Duplicate || again.Reply == nil || again.Reply.ID != out.Reply.ID {
					t.Errorf("redelivery: got duplicate %v reply %+v, want %s again", again.Duplicate, again.Reply, out.Reply.ID)
				}
				// Re-sent under a new id with another context: the first reason.
				resend := servicetest.Compensation(t, w.p, CommandFailBasket, m, map[string]any{"basket": bc})
				wantBasketReply(t, servicetest.DispatchMessage(t, w.p, resend), EventBasketFailed, StatusFailed, want)
				w.unchanged(t, b.ID, rows)
			})
		}
	})
}

// TestBasketForgedCommands: a basket command for another saga, an unknown
// basket, another user, portfolio or currency, lines that are not the
// basket's deals, no basket, or a FAIL_BASKET that is not a compensation,
// is parked with its reason and moves nothing (the deals read back); the
// genuine command still applies afterwards.
func TestBasketForgedCommands(t *testing.T) {
	tests := []struct {
		name  string
		forge func(msg *engine.Message, bc *BasketContext, other BasketContext)
		want  string
	}{
		{"another saga", func(msg *engine.Message, _ *BasketContext, _ BasketContext) { msg.SagaID = uuid.NewString() }, "belongs to saga"},
		{"another basket's saga", func(msg *engine.Message, _ *BasketContext, other BasketContext) {
			msg.SagaID = other.BasketID // replaced below by the other basket's saga id
		}, "belongs to saga"},
		{"unknown basket", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.BasketID = uuid.NewString() }, "does not exist"},
		{"basket id not a UUID", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.BasketID = "x' OR 1=1 --" }, "is not a UUID"},
		{"another user", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.UserID = "mallory" }, `belongs to user "alice"`},
		{"another portfolio", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.PortfolioID = uuid.NewString() }, "but the command says"},
		{"another currency", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.Currency = "EUR" }, "currency EUR"},
		{"a line missing", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.Lines = bc.Lines[:1] }, "has 2 deals, the command names 1 lines"},
		{"a line twice", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.Lines[1] = bc.Lines[0] }, "again"},
		{"another basket's line", func(_ *engine.Message, bc *BasketContext, other BasketContext) { bc.Lines[1] = other.Lines[0] }, "which is not a deal of basket"},
		{"a line's quantity changed", func(_ *engine.Message, bc *BasketContext, _ BasketContext) {
			bc.Lines[0].Quantity = bc.Lines[0].Quantity.Add(bc.Lines[0].Quantity)
		}, "but the deal is"},
		{"no lines", func(_ *engine.Message, bc *BasketContext, _ BasketContext) { bc.Lines = nil }, "0 lines"},
	}
	commands := []struct {
		name    string
		payload func(bc BasketContext) map[string]any
	}{
		{CommandExecuteBasket, func(bc BasketContext) map[string]any { return map[string]any{"basket": bc} }},
		{CommandRejectBasket, func(bc BasketContext) map[string]any { return map[string]any{"basket": bc, "reason": "x"} }},
		{CommandFailBasket, func(bc BasketContext) map[string]any { return map[string]any{"basket": bc} }},
	}
	eachDB(t, func(t *testing.T, open opener) {
		w := newBasketWorld(t, open(t, Migrate))
		b, m := w.create(t, w.alice, basketBody(basketLines()))
		ob, om := w.create(t, w.alice, basketBody(basketLines()))
		other := registered(t, om)
		before, otherBefore := w.rows(t, b.ID), w.rows(t, ob.ID)
		for _, c := range commands {
			for _, tt := range tests {
				t.Run(c.name+"/"+tt.name, func(t *testing.T) {
					bc := registered(t, m)
					msg := servicetest.Compensation(t, w.p, c.name, m, nil)
					if c.name != CommandFailBasket {
						msg.Compensates = ""
					}
					tt.forge(&msg, &bc, other)
					if msg.SagaID == other.BasketID {
						msg.SagaID = ob.SagaID
					}
					msg.Payload = mustJSON(t, c.payload(bc))
					wantDeadLetter(t, servicetest.DispatchMessage(t, w.p, msg), tt.want)
					w.unchanged(t, b.ID, before)
					w.unchanged(t, ob.ID, otherBefore)
				})
			}
			t.Run(c.name+"/no basket", func(t *testing.T) {
				msg := servicetest.Compensation(t, w.p, c.name, m, map[string]any{"deal_context": registered(t, m).Lines[0]})
				if c.name != CommandFailBasket {
					msg.Compensates = ""
				}
				wantDeadLetter(t, servicetest.DispatchMessage(t, w.p, msg), "the payload has no basket")
				w.unchanged(t, b.ID, before)
			})
		}
		t.Run("FAIL_BASKET not a compensation", func(t *testing.T) {
			out := servicetest.Dispatch(t, w.p, CommandFailBasket, b.SagaID, map[string]any{"basket": registered(t, m)})
			wantDeadLetter(t, out, "compensates is empty")
			w.unchanged(t, b.ID, before)
		})
		// The genuine command still applies, to its basket only.
		wantBasketReply(t, servicetest.Dispatch(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": registered(t, m)}),
			EventBasketExecuted, StatusExecuted, "")
		w.wantRows(t, b.ID, StatusExecuted, "")
		w.unchanged(t, ob.ID, otherBefore)
	})
}

// TestBasketDealsMoveOnlyTogether: a deal of a basket cannot be cancelled
// on its own (409 naming the basket), nor settled or failed by the
// commands of a single deal (APPROVE_DEAL, REJECT_DEAL, FAIL_DEAL with the
// basket's saga id: parked); the deal does not move and no message is
// sent.
func TestBasketDealsMoveOnlyTogether(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		b, m := w.create(t, w.alice, basketBody(basketLines()))
		before := w.rows(t, b.ID)
		d := b.Deals[0]
		res := servicetest.Call(t, w.h, "POST", "/deals/"+d.ID+"/cancel", w.alice, nil)
		if res.Status != http.StatusConflict || res.Problem(t).Type != service.TypeConflict || !strings.Contains(res.Problem(t).Detail, "part of basket "+b.ID) {
			t.Errorf("cancel a basket's deal: got %d %s, want 409 conflict naming basket %s", res.Status, res.Body, b.ID)
		}
		// Another user's basket deal stays a 404.
		if res := servicetest.Call(t, w.h, "POST", "/deals/"+d.ID+"/cancel", w.bob, nil); res.Status != http.StatusNotFound {
			t.Errorf("bob cancelling alice's basket deal: got %d, want 404", res.Status)
		}
		w.unchanged(t, b.ID, before)
		if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
			t.Errorf("messages after the refused cancel: got %v, want none", msgs)
		}
		line := registered(t, m).Lines[0]
		for _, cmd := range []string{CommandApprove, CommandReject} {
			wantDeadLetter(t, servicetest.Dispatch(t, w.p, cmd, b.SagaID, dealctx.Wrap(line)), "is a line of basket "+b.ID)
		}
		fail := servicetest.Compensation(t, w.p, CommandFail, m, dealctx.Wrap(line))
		wantDeadLetter(t, servicetest.DispatchMessage(t, w.p, fail), "is a line of basket "+b.ID)
		w.unchanged(t, b.ID, before)
	})
}

// TestConcurrentIdempotentBaskets posts the same basket with the same
// Idempotency-Key at once: one basket, one set of deals, one saga, and
// every caller gets that basket.
func TestConcurrentIdempotentBaskets(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		w := newBasketWorld(t, db)
		const n = 6
		ids := make([]string, n)
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				raw, _ := json.Marshal(basketBody(basketLines()))
				req := httptest.NewRequest("POST", "/baskets", bytes.NewReader(raw))
				req.Header.Set("Authorization", "Bearer "+w.alice)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(HeaderIdempotencyKey, "same")
				rec := httptest.NewRecorder()
				w.h.ServeHTTP(rec, req)
				var b Basket
				_ = json.Unmarshal(rec.Body.Bytes(), &b) // checked through ids below
				ids[i], statuses[i] = b.ID, rec.Code
			})
		}
		wg.Wait()
		for i := range n {
			if statuses[i] != http.StatusCreated || ids[i] == "" || ids[i] != ids[0] {
				t.Errorf("request %d: got %d basket %q, want 201 and basket %q", i, statuses[i], ids[i], ids[0])
			}
		}
		if nb, nd := w.count(t, "baskets"), w.count(t, "deals"); nb != 1 || nd != 2 {
			t.Errorf("stored: %d baskets, %d deals, want 1 and 2", nb, nd)
		}
		if msgs := servicetest.Flush(t, w.p); len(msgs) != 1 {
			t.Errorf("sagas started: got %d, want 1", len(msgs))
		}
	})
}

// TestBasketMigrationDown: migration 00004 goes down and up again on both
// databases with baskets stored: down keeps every deal (as deals without a
// basket) and drops the baskets; up again lets a basket be created.
func TestBasketMigrationDown(t *testing.T) {
	ctx := context.Background()
	eachDB(t, func(t *testing.T, open opener) {
		db := open(t, Migrate)
		w := newBasketWorld(t, db)
		w.create(t, w.alice, basketBody(basketLines()))
		d, err := service.DialectOf(db)
		if err != nil {
			t.Fatal(err)
		}
		fsys, err := schema.Migrations("deals/" + string(d))
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
		if _, err := prov.DownTo(ctx, 3); err != nil {
			t.Fatalf("down to 3: %v", err)
		}
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM deals`); err != nil || n != 2 {
			t.Errorf("deals after down: got %d (err %v), want the basket's 2", n, err)
		}
		if _, err := db.Exec(`SELECT basket_id FROM deals`); err == nil {
			t.Errorf("deals.basket_id after down: still there")
		}
		if err := Migrate(ctx, db); err != nil {
			t.Fatalf("up again: %v", err)
		}
		w.create(t, w.alice, basketBody(basketLines()))
	})
}
