package deals

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

type httpEnv struct {
	h     http.Handler
	iss   *servicetest.Issuer
	p     *sdk.Participant
	alice string
	bob   string
}

func newHTTP(t *testing.T, db *sqlx.DB) httpEnv {
	t.Helper()
	iss := servicetest.NewIssuer(t)
	s, p := newService(t, db, iss.Auth)
	return httpEnv{h: servicetest.Validated(t, s.Router(), "deals.yaml"), iss: iss, p: p, alice: iss.Token(t, "alice"), bob: iss.Token(t, "bob")}
}

func body() map[string]string {
	return map[string]string{"portfolio_id": portfolioID, "side": "buy", "instrument": "AAPL", "quantity": "10", "price": "150.00", "currency": "USD"}
}

func TestHTTPCreateGetList(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		res := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body())
		if res.Status != http.StatusCreated {
			t.Fatalf("POST /deals: got %d %s, want 201", res.Status, res.Body)
		}
		var d Deal
		res.Decode(t, &d)
		if got, want := res.Header.Get("Location"), "/deals/"+d.ID; got != want {
			t.Errorf("Location: got %q, want %q", got, want)
		}
		if d.Status != StatusDraft || d.UserID != "alice" || d.Amount.String() != "1500" || d.SagaID == "" {
			t.Errorf("created deal: got %+v, want alice's draft of amount 1500 with a saga", d)
		}
		if !strings.Contains(string(res.Body), `"quantity":"10"`) {
			t.Errorf("decimals must be JSON strings: got %s", res.Body)
		}
		msgs := servicetest.Flush(t, e.p)
		if len(msgs) != 1 || msgs[0].Name != StartEvent || msgs[0].SagaID != d.SagaID {
			t.Fatalf("outbox after POST: got %v, want one REGISTER of saga %s", msgs, d.SagaID)
		}

		get := servicetest.Call(t, e.h, "GET", "/deals/"+d.ID, e.alice, nil)
		var got Deal
		get.Decode(t, &got)
		if get.Status != http.StatusOK || got.ID != d.ID || !got.Quantity.Equal(d.Quantity) || !got.CreatedAt.Equal(d.CreatedAt) {
			t.Errorf("GET /deals/{id}: got %d %+v, want 200 and %+v", get.Status, got, d)
		}

		// Bob sees neither the deal nor its existence.
		other := servicetest.Call(t, e.h, "GET", "/deals/"+d.ID, e.bob, nil)
		if other.Status != http.StatusNotFound || other.Problem(t).Type != service.TypeNotFound {
			t.Errorf("another user's deal: got %d %s, want 404 not-found", other.Status, other.Body)
		}
		missing := servicetest.Call(t, e.h, "GET", "/deals/00000000-0000-4000-8000-000000000000", e.alice, nil)
		if missing.Status != http.StatusNotFound {
			t.Errorf("unknown deal: got %d, want 404", missing.Status)
		}
		var bobs service.Page[Deal]
		servicetest.Call(t, e.h, "GET", "/deals", e.bob, nil).Decode(t, &bobs)
		if len(bobs.Items) != 0 {
			t.Errorf("bob's list: got %d deals, want 0", len(bobs.Items))
		}

		// Four more deals, one settled, then page through newest first.
		ids := []string{d.ID}
		for i := range 4 {
			b := body()
			b["quantity"] = fmt.Sprint(i + 1)
			r := servicetest.Call(t, e.h, "POST", "/deals", e.alice, b)
			var nd Deal
			r.Decode(t, &nd)
			ids = append(ids, nd.ID)
		}
		if out := servicetest.Dispatch(t, e.p, CommandApprove, mustGet(t, e, ids[2]).SagaID, map[string]any{"deal_context": mustGet(t, e, ids[2]).context()}); out.Err != nil {
			t.Fatalf("approve: %v", out.Err)
		}
		var seen []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			r := servicetest.Call(t, e.h, "GET", "/deals?limit=2&cursor="+cursor, e.alice, nil)
			var page service.Page[Deal]
			r.Decode(t, &page)
			for _, it := range page.Items {
				seen = append(seen, it.ID)
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
		if strings.Join(seen, ",") != strings.Join(want, ",") {
			t.Errorf("pages: got %v, want newest first %v", seen, want)
		}
		var executed service.Page[Deal]
		servicetest.Call(t, e.h, "GET", "/deals?status=executed", e.alice, nil).Decode(t, &executed)
		if len(executed.Items) != 1 || executed.Items[0].ID != ids[2] || executed.Items[0].Status != StatusExecuted {
			t.Errorf("?status=executed: got %+v, want only deal %s", executed.Items, ids[2])
		}
	})
}

func mustGet(t *testing.T, e httpEnv, id string) Deal {
	t.Helper()
	var d Deal
	r := servicetest.Call(t, e.h, "GET", "/deals/"+id, e.alice, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /deals/%s: got %d %s", id, r.Status, r.Body)
	}
	r.Decode(t, &d)
	return d
}

func TestHTTPIdempotencyKey(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	first := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body(), HeaderIdempotencyKey, "k-1")
	second := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body(), HeaderIdempotencyKey, "k-1")
	var d1, d2 Deal
	first.Decode(t, &d1)
	second.Decode(t, &d2)
	if first.Status != http.StatusCreated || second.Status != http.StatusCreated || d1.ID != d2.ID || d1.SagaID != d2.SagaID {
		t.Fatalf("same key twice: got %d %s and %d %s, want 201 with the same deal", first.Status, d1.ID, second.Status, d2.ID)
	}
	if second.Header.Get(HeaderReplayed) != "true" || first.Header.Get(HeaderReplayed) != "" {
		t.Errorf("%s: got %q then %q, want \"\" then \"true\"", HeaderReplayed, first.Header.Get(HeaderReplayed), second.Header.Get(HeaderReplayed))
	}
	// Bob may use the same key: keys are per user.
	bobs := servicetest.Call(t, e.h, "POST", "/deals", e.bob, body(), HeaderIdempotencyKey, "k-1")
	var d3 Deal
	bobs.Decode(t, &d3)
	if bobs.Status != http.StatusCreated || d3.ID == d1.ID {
		t.Errorf("bob with alice's key: got %d deal %s, want 201 and a new deal", bobs.Status, d3.ID)
	}
	if msgs := servicetest.Flush(t, e.p); len(msgs) != 2 {
		t.Errorf("sagas started: got %d, want 2 (one for alice's key, one for bob)", len(msgs))
	}
	changed := body()
	changed["quantity"] = "11"
	reuse := servicetest.Call(t, e.h, "POST", "/deals", e.alice, changed, HeaderIdempotencyKey, "k-1")
	if reuse.Status != http.StatusUnprocessableEntity || reuse.Problem(t).Type != service.TypeIdempotencyReuse {
		t.Errorf("same key, different body: got %d %s, want 422 idempotency-key-reused", reuse.Status, reuse.Body)
	}
	bad := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body(), HeaderIdempotencyKey, "has space")
	if bad.Status != http.StatusUnprocessableEntity {
		t.Errorf("bad key: got %d %s, want 422", bad.Status, bad.Body)
	}
}

func TestHTTPErrors(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	expired, err := e.iss.Issuer.Token("alice", issuer.TokenOptions{TTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	numeric := `{"portfolio_id":"` + portfolioID + `","side":"buy","instrument":"AAPL","quantity":10,"price":"1","currency":"USD"}`
	with := func(k, v string) map[string]string {
		b := body()
		b[k] = v
		if k == "quantity" {
			b["price"] = "1000000000" // 10^9 × 10^9 = 10^18
		}
		return b
	}
	tests := []struct {
		name     string
		method   string
		path     string
		token    string
		body     any
		headers  []string
		status   int
		typ      string
		contains string
	}{
		{"no token", "GET", "/deals", "", nil, nil, 401, "about:blank", "no Authorization"},
		{"garbage token", "GET", "/deals", "not-a-jwt", nil, nil, 401, "about:blank", "invalid"},
		{"expired token", "POST", "/deals", expired, body(), nil, 401, "about:blank", "expired"},
		{"missing fields", "POST", "/deals", e.alice, map[string]string{"side": "hold"}, nil, 422, service.TypeValidation, ""},
		{"unknown field", "POST", "/deals", e.alice, `{"portfolio_id":"x","extra":1}`, nil, 400, service.TypeMalformed, `unknown field "extra"`},
		{"number for decimal", "POST", "/deals", e.alice, numeric, nil, 400, service.TypeMalformed, `field "quantity" must be a string`},
		{"not json", "POST", "/deals", e.alice, `{"side":`, nil, 400, service.TypeMalformed, "truncated"},
		{"two values", "POST", "/deals", e.alice, `{} {}`, nil, 400, service.TypeMalformed, "more than one"},
		{"empty body", "POST", "/deals", e.alice, "", nil, 400, service.TypeMalformed, "empty"},
		{"bad status filter", "GET", "/deals?status=open", e.alice, nil, nil, 422, service.TypeValidation, "status"},
		{"bad limit", "GET", "/deals?limit=1000", e.alice, nil, nil, 422, service.TypeValidation, "limit"},
		{"bad cursor", "GET", "/deals?cursor=zzz", e.alice, nil, nil, 422, service.TypeValidation, "cursor"},
		{"wrong method", "DELETE", "/deals", e.alice, nil, nil, 405, service.TypeMethodNotAllowed, "DELETE"},
		{"unknown path", "GET", "/nope", e.alice, nil, nil, 404, service.TypeNotFound, "/nope"},
		{"zero quantity", "POST", "/deals", e.alice, with("quantity", "0"), nil, 422, service.TypeValidation, "must be positive"},
		{"negative price", "POST", "/deals", e.alice, with("price", "-1"), nil, 422, service.TypeValidation, "price"},
		{"over-precise price", "POST", "/deals", e.alice, with("price", "0.000000001"), nil, 422, service.TypeValidation, "more than 8 decimal places"},
		{"amount reaching 10^18", "POST", "/deals", e.alice, with("quantity", "1000000000"), nil, 422, service.TypeValidation, "too large"},
		{"portfolio id in braces", "POST", "/deals", e.alice, with("portfolio_id", "{"+portfolioID+"}"), nil, 422, service.TypeValidation, "portfolio_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := servicetest.Call(t, e.h, tt.method, tt.path, tt.token, tt.body, tt.headers...)
			if res.Status != tt.status {
				t.Fatalf("status: got %d %s, want %d", res.Status, res.Body, tt.status)
			}
			p := res.Problem(t)
			if p.Type != tt.typ {
				t.Errorf("type: got %q, want %q", p.Type, tt.typ)
			}
			if !strings.Contains(p.Detail, tt.contains) {
				t.Errorf("detail: got %q, want it to contain %q", p.Detail, tt.contains)
			}
		})
	}
	// Validation reports every bad field at once, by name.
	res := servicetest.Call(t, e.h, "POST", "/deals", e.alice, map[string]string{"side": "hold"})
	var p service.Problem
	res.Decode(t, &p)
	var fields []string
	for _, f := range p.Errors {
		fields = append(fields, f.Field)
	}
	if got, want := strings.Join(fields, ","), "portfolio_id,side,instrument,currency,quantity,price"; got != want {
		t.Errorf("invalid fields: got %s, want %s", got, want)
	}
	// Wrong content type.
	r := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body(), "Content-Type", "text/plain")
	if r.Status != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: got %d, want 415", r.Status)
	}
	// Nothing was stored by the failed requests.
	if msgs := servicetest.Flush(t, e.p); len(msgs) != 0 {
		t.Errorf("sagas started by failed requests: got %d, want 0", len(msgs))
	}
}

func TestHTTPProbes(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	for _, path := range []string{"/healthz", "/readyz"} {
		if res := servicetest.Call(t, e.h, "GET", path, "", nil); res.Status != http.StatusOK {
			t.Errorf("GET %s without token: got %d %s, want 200", path, res.Status, res.Body)
		}
	}
}

// TestConcurrentIdempotentCreates posts the same Idempotency-Key at once:
// one deal, one saga, every caller gets that deal.
func TestConcurrentIdempotentCreates(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		const n = 6
		ids := make([]string, n)
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				raw, _ := json.Marshal(body())
				req := httptest.NewRequest("POST", "/deals", bytes.NewReader(raw))
				req.Header.Set("Authorization", "Bearer "+e.alice)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(HeaderIdempotencyKey, "same")
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				var d Deal
				_ = json.Unmarshal(rec.Body.Bytes(), &d) // checked through ids below
				ids[i], statuses[i] = d.ID, rec.Code
			})
		}
		wg.Wait()
		for i := range n {
			if statuses[i] != http.StatusCreated || ids[i] == "" || ids[i] != ids[0] {
				t.Errorf("request %d: got %d deal %q, want 201 and deal %q", i, statuses[i], ids[i], ids[0])
			}
		}
		if msgs := servicetest.Flush(t, e.p); len(msgs) != 1 {
			t.Errorf("sagas started: got %d, want 1", len(msgs))
		}
	})
}

// TestConcurrentCreatesShareCommits: deals created at the same time are
// written in shared transactions (group commit); each must still get its
// own row and exactly one saga start carrying its saga id, and a reused
// Idempotency-Key must still answer with the first deal.
func TestConcurrentCreatesShareCommits(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newService(t, db, servicetest.NewIssuer(t).Auth)
		const n, keys = 40, 10
		deals := make([]Deal, n)
		replayed := make([]bool, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				key := ""
				if i%2 == 0 {
					key = fmt.Sprint("key-", (i/2)%keys)
				}
				deals[i], replayed[i], errs[i] = s.Create(t.Context(), "alice", buyRequest(), key)
			})
		}
		wg.Wait()
		byKey := map[string]string{}
		distinct := map[string]string{} // deal id -> saga id
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("create %d: %v", i, errs[i])
			}
			d := deals[i]
			distinct[d.ID] = d.SagaID
			if !d.IdempotencyKey.Valid {
				continue
			}
			if first, ok := byKey[d.IdempotencyKey.String]; ok && first != d.ID {
				t.Errorf("key %s: deals %s and %s, want one", d.IdempotencyKey.String, first, d.ID)
			}
			byKey[d.IdempotencyKey.String] = d.ID
		}
		if got, want := len(distinct), n/2+keys; got != want {
			t.Errorf("distinct deals = %d, want %d (%d without a key, %d keys)", got, want, n/2, keys)
		}
		var stored int
		if err := db.Get(&stored, `SELECT COUNT(*) FROM deals`); err != nil {
			t.Fatal(err)
		}
		if stored != len(distinct) {
			t.Errorf("stored deals = %d, want %d", stored, len(distinct))
		}
		starts := map[string]int{}
		for _, m := range servicetest.Flush(t, p) {
			starts[m.SagaID]++
		}
		for id, sagaID := range distinct {
			if starts[sagaID] != 1 {
				t.Errorf("deal %s: %d starts of saga %s, want 1", id, starts[sagaID], sagaID)
			}
		}
		if got, want := len(starts), len(distinct); got != want {
			t.Errorf("sagas started = %d, want %d", got, want)
		}
	})
}

// TestCrossSiteCreateRefused performs the CSRF attack: a page on another
// site makes the browser POST a deal (a form, or JSON sent as text/plain)
// while the user's credentials ride along (here the bearer token, as an
// ingress that turns a session cookie into Authorization would add it).
// Every variant is refused before a handler runs: no deal row, no saga.
func TestCrossSiteCreateRefused(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		raw, _ := json.Marshal(body())
		form := "portfolio_id=" + portfolioID + "&side=buy&instrument=AAPL&quantity=10&price=150.00&currency=USD"
		tests := []struct {
			name   string
			body   string
			hdr    []string
			status int
			typ    string
		}{
			{"cross-site form", form, []string{"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, service.TypeCrossOrigin},
			{"cross-site json as text/plain", string(raw), []string{"Content-Type", "text/plain;charset=UTF-8", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, service.TypeCrossOrigin},
			{"cross-origin json, old browser", string(raw), []string{"Content-Type", "application/json", "Origin", "https://evil.example"}, 403, service.TypeCrossOrigin},
			{"form without origin headers", form, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, service.TypeUnsupportedMedia},
			{"json as text/plain", string(raw), []string{"Content-Type", "text/plain"}, 415, service.TypeUnsupportedMedia},
			{"json without content type", string(raw), []string{"Content-Type", ""}, 415, service.TypeUnsupportedMedia},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := servicetest.Call(t, e.h, "POST", "/deals", e.alice, tt.body, tt.hdr...)
				if res.Status != tt.status || res.Problem(t).Type != tt.typ {
					t.Errorf("got %d %s, want %d %s", res.Status, res.Body, tt.status, tt.typ)
				}
			})
		}
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM deals`); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("deal rows after the attacks: got %d, want 0", n)
		}
		if msgs := servicetest.Flush(t, e.p); len(msgs) != 0 {
			t.Errorf("sagas started by the attacks: got %d, want 0", len(msgs))
		}
		// The same user's own JSON request still works.
		if res := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body()); res.Status != http.StatusCreated {
			t.Errorf("same-origin JSON POST: got %d %s, want 201", res.Status, res.Body)
		}
	})
}

// TestSpecDecimalsMatchTheServer: the specs' PositiveDecimal pattern (deal
// quantity and price, deposit amount) accepts exactly the strings the
// server accepts, and the Money pattern every amount the rounding rule
// can produce; zero, negative and over-precise values are refused by both.
func TestSpecDecimalsMatchTheServer(t *testing.T) {
	inputs := []string{"1", "10", "150.25", "0.00000001", "0.1", "0.10000000", "00012.5", "999999999999999999", "999999999999999999.99999999",
		"0", "0.0", "0.00000000", "-1", "-0.5", "0.000000001", "1.123456789", "1000000000000000000", "1e3", "1.", ".5", "", " 1", "+1", "0x10", "1,5", "NaN"}
	for _, spec := range []string{"deals.yaml", "profile.yaml"} {
		re := servicetest.SchemaPattern(t, spec, "PositiveDecimal")
		for _, in := range inputs {
			_, err := dealctx.ParseAmount(in)
			if got, want := re.MatchString(in), err == nil; got != want {
				t.Errorf("%s PositiveDecimal on %q: pattern accepts %v, server accepts %v (%v)", spec, in, got, want, err)
			}
		}
		money := servicetest.SchemaPattern(t, spec, "Money")
		for _, c := range [][3]string{{"buy", "0.00000001", "0.00000001"}, {"sell", "0.00000001", "0.00000001"}, {"buy", "1.23456789", "9.87654321"},
			{"buy", "999999999", "999999999"}, {"sell", "0.5", "0.00000003"}} {
			amt := dealctx.CashAmount(c[0], decimal.RequireFromString(c[1]), decimal.RequireFromString(c[2]))
			if !money.MatchString(amt.String()) {
				t.Errorf("%s Money refuses the computed amount %s of %v", spec, amt, c)
			}
		}
		if money.MatchString("0.9999999999999999") || money.MatchString("-1") {
			t.Errorf("%s Money accepts an over-precise or negative amount", spec)
		}
	}
}

// TestHTTPCanonicalIDsAndAmount: a portfolio id in upper case is stored in
// canonical lower case (and so is the deal's REGISTER), GET /deals/{id}
// finds a deal by an upper-case id, and the amount follows the rounding
// rule: the tiny buy costs 0.00000001, the tiny sell brings 0.
func TestHTTPCanonicalIDsAndAmount(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		b := body()
		b["portfolio_id"] = strings.ToUpper(portfolioID)
		b["quantity"], b["price"] = "0.00000001", "0.00000001"
		res := servicetest.Call(t, e.h, "POST", "/deals", e.alice, b)
		var d Deal
		res.Decode(t, &d)
		if res.Status != http.StatusCreated || d.PortfolioID != portfolioID || d.Amount.String() != "0.00000001" {
			t.Fatalf("POST /deals: got %d %s, want 201 on %s with amount 0.00000001", res.Status, res.Body, portfolioID)
		}
		var stored string
		if err := db.Get(&stored, db.Rebind(`SELECT portfolio_id FROM deals WHERE id = ?`), d.ID); err != nil || stored != portfolioID {
			t.Errorf("stored portfolio_id: got %q (err %v), want %q", stored, err, portfolioID)
		}
		msgs := servicetest.Flush(t, e.p)
		if len(msgs) != 1 || !strings.Contains(string(msgs[0].Payload), `"portfolio_id":"`+portfolioID+`"`) || !strings.Contains(string(msgs[0].Payload), `"amount":"0.00000001"`) {
			t.Errorf("REGISTER: got %v, want the canonical portfolio id and the rounded amount", msgs)
		}
		if get := servicetest.Call(t, e.h, "GET", "/deals/"+strings.ToUpper(d.ID), e.alice, nil); get.Status != http.StatusOK {
			t.Errorf("GET /deals/{UPPER}: got %d %s, want 200", get.Status, get.Body)
		}
		b["side"] = "sell"
		var sell Deal
		servicetest.Call(t, e.h, "POST", "/deals", e.alice, b).Decode(t, &sell)
		if !sell.Amount.IsZero() {
			t.Errorf("tiny sell: amount %s, want 0 (proceeds rounded down)", sell.Amount)
		}
		// The same request with the id in another case is the same request.
		k := servicetest.Call(t, e.h, "POST", "/deals", e.alice, body(), HeaderIdempotencyKey, "case")
		b2 := body()
		b2["portfolio_id"] = strings.ToUpper(portfolioID)
		k2 := servicetest.Call(t, e.h, "POST", "/deals", e.alice, b2, HeaderIdempotencyKey, "case")
		if k.Status != http.StatusCreated || k2.Status != http.StatusCreated || k2.Header.Get(HeaderReplayed) != "true" {
			t.Errorf("same key, id in upper case: got %d then %d %s, want the first deal replayed", k.Status, k2.Status, k2.Body)
		}
	})
}
