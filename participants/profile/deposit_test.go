package profile

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// dbCash reads a portfolio's cash straight from the database.
func dbCash(t *testing.T, db *sqlx.DB, id string) string {
	t.Helper()
	var cash string
	if err := db.Get(&cash, db.Rebind(`SELECT CAST(cash AS TEXT) FROM portfolios WHERE id = ?`), id); err != nil {
		t.Fatalf("read cash of %s: %v", id, err)
	}
	return dec(cash).String()
}

func dbDeposits(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT COUNT(*) FROM deposits`); err != nil {
		t.Fatal(err)
	}
	return n
}

func newPortfolio(t *testing.T, e httpEnv, token string) Portfolio {
	t.Helper()
	res := servicetest.Call(t, e.h, "POST", "/portfolios", token, map[string]string{"name": "Main", "currency": "USD"})
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /portfolios: got %d %s", res.Status, res.Body)
	}
	var pf Portfolio
	res.Decode(t, &pf)
	return pf
}

// TestDepositFundsAndAudits: a funding operator funds a user's portfolio;
// the cash, today's snapshot and the audit row move together, and the
// owner and funding operators read the audit trail.
func TestDepositFundsAndAudits(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		pf := newPortfolio(t, e, e.alice)
		key := uuid.NewString()
		body := map[string]string{"amount": "1000.25", "currency": "USD", "reason": "wire 2026-03-02 ref 4711"}
		res := servicetest.Call(t, e.h, "POST", "/portfolios/"+pf.ID+"/deposits", e.treasury, body, HeaderIdempotencyKey, key)
		var dep Deposit
		res.Decode(t, &dep)
		if res.Status != http.StatusCreated || dep.PortfolioID != pf.ID || dep.Amount.String() != "1000.25" || dep.CashAfter.String() != "1000.25" ||
			dep.CreatedBy != "treasury" || dep.Reason != body["reason"] || !dep.CreatedAt.Equal(e.clk.Now()) || res.Header.Get(HeaderReplayed) != "" {
			t.Fatalf("deposit: got %d %s, want 201 by treasury leaving 1000.25", res.Status, res.Body)
		}
		if got := dbCash(t, db, pf.ID); got != "1000.25" {
			t.Errorf("cash in the database: got %s, want 1000.25", got)
		}
		snap, err := e.s.SnapshotAt(t.Context(), "alice", pf.ID, "2026-03-02")
		if err != nil || snap.Cash.String() != "1000.25" {
			t.Errorf("today's snapshot: got %+v (err %v), want cash 1000.25", snap, err)
		}
		// The same request again: the first deposit, nothing moves.
		again := servicetest.Call(t, e.h, "POST", "/portfolios/"+pf.ID+"/deposits", e.treasury, body, HeaderIdempotencyKey, key)
		var dep2 Deposit
		again.Decode(t, &dep2)
		if again.Status != http.StatusCreated || dep2.ID != dep.ID || again.Header.Get(HeaderReplayed) != "true" {
			t.Errorf("replay: got %d %s, want 201 with deposit %s and Idempotent-Replayed", again.Status, again.Body, dep.ID)
		}
		// The key is the operator's own: another operator's same key is a new deposit.
		other := servicetest.Call(t, e.h, "POST", "/portfolios/"+pf.ID+"/deposits", e.olga, body, HeaderIdempotencyKey, key)
		if other.Status != http.StatusCreated || other.Header.Get(HeaderReplayed) != "" {
			t.Errorf("another operator with the same key: got %d %s, want a new deposit", other.Status, other.Body)
		}
		if got := dbCash(t, db, pf.ID); got != "2000.5" {
			t.Errorf("cash after two deposits: got %s, want 2000.5", got)
		}
		for _, tok := range []string{e.alice, e.treasury, e.olga} {
			var page service.Page[Deposit]
			r := servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/deposits", tok, nil)
			r.Decode(t, &page)
			if r.Status != http.StatusOK || len(page.Items) != 2 || page.Items[0].CreatedBy != "olga" || page.Items[1].ID != dep.ID {
				t.Errorf("GET deposits: got %d %s, want olga's then treasury's deposit", r.Status, r.Body)
			}
		}
		var one service.Page[Deposit]
		servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/deposits?limit=1", e.alice, nil).Decode(t, &one)
		if len(one.Items) != 1 || one.NextCursor == "" {
			t.Errorf("first page of one: got %+v, want one item and a cursor", one)
		}
		if r := servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/deposits", e.bob, nil); r.Status != http.StatusNotFound {
			t.Errorf("bob reads alice's deposits: got %d %s, want 404", r.Status, r.Body)
		}
	})
}

// TestDepositAttacks performs what a user or a careless operator would try
// against the funding endpoint and the portfolio's own routes. Every
// attempt is refused with a problem, and the cash in the database and the
// audit table do not move.
func TestDepositAttacks(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		pf := newPortfolio(t, e, e.alice)
		olgas := newPortfolio(t, e, e.olga)
		usedKey := uuid.NewString()
		good := map[string]string{"amount": "1000", "currency": "USD", "reason": "initial funding"}
		if r := servicetest.Call(t, e.h, "POST", "/portfolios/"+pf.ID+"/deposits", e.treasury, good, HeaderIdempotencyKey, usedKey); r.Status != http.StatusCreated {
			t.Fatalf("setup deposit: got %d %s", r.Status, r.Body)
		}
		with := func(k, v string) map[string]string {
			m := map[string]string{"amount": "100", "currency": "USD", "reason": "top-up"}
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
			return m
		}
		path := "/portfolios/" + pf.ID + "/deposits"
		tests := []struct {
			name   string
			method string
			path   string
			token  string
			body   any
			hdr    []string
			status int
			typ    string
		}{
			{"owner without the role funds her own portfolio", "POST", path, e.alice, good, nil, 403, service.TypeForbidden},
			{"a user funds another user's portfolio", "POST", path, e.bob, good, nil, 403, service.TypeForbidden},
			{"a funding operator funds her own portfolio", "POST", "/portfolios/" + olgas.ID + "/deposits", e.olga, good, nil, 403, service.TypeForbidden},
			{"zero amount", "POST", path, e.treasury, with("amount", "0"), nil, 422, service.TypeValidation},
			{"zero with places", "POST", path, e.treasury, with("amount", "0.00000000"), nil, 422, service.TypeValidation},
			{"negative amount", "POST", path, e.treasury, with("amount", "-500"), nil, 422, service.TypeValidation},
			{"over-precise amount", "POST", path, e.treasury, with("amount", "0.000000001"), nil, 422, service.TypeValidation},
			{"exponent", "POST", path, e.treasury, with("amount", "1e9"), nil, 422, service.TypeValidation},
			{"19 integer digits", "POST", path, e.treasury, with("amount", "1000000000000000000"), nil, 422, service.TypeValidation},
			{"cash would reach 10^18", "POST", path, e.treasury, with("amount", "999999999999999999"), nil, 422, service.TypeValidation},
			{"amount as a JSON number", "POST", path, e.treasury, `{"amount":100,"currency":"USD","reason":"x"}`, nil, 400, service.TypeMalformed},
			{"missing amount", "POST", path, e.treasury, with("amount", ""), nil, 422, service.TypeValidation},
			{"other currency", "POST", path, e.treasury, with("currency", "EUR"), nil, 422, service.TypeValidation},
			{"no reason", "POST", path, e.treasury, with("reason", ""), nil, 422, service.TypeValidation},
			{"blank reason", "POST", path, e.treasury, with("reason", "   "), nil, 422, service.TypeValidation},
			{"long reason", "POST", path, e.treasury, with("reason", strings.Repeat("x", 501)), nil, 422, service.TypeValidation},
			{"no Idempotency-Key", "POST", path, e.treasury, good, []string{HeaderIdempotencyKey, ""}, 422, service.TypeValidation},
			{"replayed key, different amount", "POST", path, e.treasury, with("amount", "1000000"), []string{HeaderIdempotencyKey, usedKey}, 422, service.TypeIdempotencyReuse},
			{"replayed key, other portfolio", "POST", "/portfolios/" + olgas.ID + "/deposits", e.treasury, good, []string{HeaderIdempotencyKey, usedKey}, 422, service.TypeIdempotencyReuse},
			{"unknown portfolio", "POST", "/portfolios/" + uuid.NewString() + "/deposits", e.treasury, good, nil, 404, service.TypeNotFound},
			{"cross-site deposit", "POST", path, e.treasury, good, []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, service.TypeCrossOrigin},
			{"form deposit", "POST", path, e.treasury, "amount=100&currency=USD&reason=x", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, service.TypeUnsupportedMedia},
			{"owner sets her cash with PUT", "PUT", "/portfolios/" + pf.ID, e.alice, map[string]string{"name": "Main", "cash": "1000000"}, nil, 422, service.TypeValidation},
			{"owner sets her cash in upper-case id", "PUT", "/portfolios/" + strings.ToUpper(pf.ID), e.alice, map[string]string{"name": "Main", "cash": "1000000"}, nil, 422, service.TypeValidation},
			{"another user sets the cash", "PUT", "/portfolios/" + pf.ID, e.bob, map[string]string{"name": "Main", "cash": "1000000"}, nil, 404, service.TypeNotFound},
			{"funded at creation", "POST", "/portfolios", e.alice, map[string]string{"name": "Rich", "currency": "USD", "cash": "1000000"}, nil, 422, service.TypeValidation},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				hdr := tt.hdr
				if len(hdr) == 0 || hdr[0] != HeaderIdempotencyKey {
					hdr = append([]string{HeaderIdempotencyKey, uuid.NewString()}, hdr...)
				}
				res := servicetest.Call(t, e.h, tt.method, tt.path, tt.token, tt.body, hdr...)
				if res.Status != tt.status {
					t.Fatalf("got %d %s, want %d", res.Status, res.Body, tt.status)
				}
				if p := res.Problem(t); p.Type != tt.typ || p.Detail == "" {
					t.Errorf("problem: got %+v, want type %s with a detail", p, tt.typ)
				}
				if got := dbCash(t, db, pf.ID); got != "1000" {
					t.Errorf("alice's cash after the attempt: got %s, want 1000", got)
				}
				if got := dbCash(t, db, olgas.ID); got != "0" {
					t.Errorf("olga's cash after the attempt: got %s, want 0", got)
				}
				if n := dbDeposits(t, db); n != 1 {
					t.Errorf("deposit rows after the attempt: got %d, want 1", n)
				}
			})
		}
		var pfs int
		if err := db.Get(&pfs, `SELECT COUNT(*) FROM portfolios`); err != nil || pfs != 2 {
			t.Errorf("portfolios: got %d (err %v), want 2 (the funded creation refused)", pfs, err)
		}
	})
}

// TestUpperCaseIDs: a portfolio id sent in upper case finds the portfolio,
// which is answered with its canonical lower-case id.
func TestUpperCaseIDs(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		pf := newPortfolio(t, e, e.alice)
		up := strings.ToUpper(pf.ID)
		var got Portfolio
		res := servicetest.Call(t, e.h, "GET", "/portfolios/"+up, e.alice, nil)
		res.Decode(t, &got)
		if res.Status != http.StatusOK || got.ID != pf.ID {
			t.Errorf("GET /portfolios/{UPPER}: got %d %s, want 200 with id %s", res.Status, res.Body, pf.ID)
		}
		if r := e.deposit(t, e.treasury, up, "10"); r.Status != http.StatusCreated || !strings.Contains(string(r.Body), `"portfolio_id":"`+pf.ID+`"`) {
			t.Errorf("deposit to the upper-case id: got %d %s, want 201 on %s", r.Status, r.Body, pf.ID)
		}
		if r := servicetest.Call(t, e.h, "GET", "/portfolios/"+up+"/snapshots", e.alice, nil); r.Status != http.StatusOK {
			t.Errorf("snapshots of the upper-case id: got %d %s", r.Status, r.Body)
		}
		// A deal that names the portfolio in upper case (as an older deals
		// service stored it) is decided against it.
		dc := deal("alice", up, "buy", "1", "4")
		out := servicetest.Dispatch(t, e.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(dc))
		if out.Reply == nil || out.Reply.Name != EventOrderApproved {
			t.Fatalf("APPROVE_ORDER with the upper-case id: got %+v, want ORDER_APPROVED", out)
		}
		if got := dbCash(t, db, pf.ID); got != "6" {
			t.Errorf("cash: got %s, want 6", got)
		}
	})
}

// TestRoundingRule: the API fuzzer's trade. A buy of 0.00000001 at
// 0.00000001 costs 0.00000001 (rounded up to 8 places), leaving 0.99999999
// of 1, which the API answers and the spec's Money pattern accepts; the
// sell back brings 0 (rounded down), on both databases.
func TestRoundingRule(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		pf := newPortfolio(t, e, e.alice)
		if r := e.deposit(t, e.treasury, pf.ID, "1"); r.Status != http.StatusCreated {
			t.Fatalf("deposit: got %d %s", r.Status, r.Body)
		}
		steps := []struct {
			side, wantCash, wantPos string
		}{
			{"buy", "0.99999999", "0.00000001"},
			{"buy", "0.99999998", "0.00000002"},
			{"sell", "0.99999998", "0.00000001"},
			{"sell", "0.99999998", ""},
		}
		for i, st := range steps {
			out := servicetest.Dispatch(t, e.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(deal("alice", pf.ID, st.side, "0.00000001", "0.00000001")))
			if out.Reply == nil || out.Reply.Name != EventOrderApproved {
				t.Fatalf("step %d %s: got %+v, want ORDER_APPROVED", i, st.side, out)
			}
			if got := dbCash(t, db, pf.ID); got != st.wantCash {
				t.Errorf("step %d %s: cash in the database %s, want %s", i, st.side, got, st.wantCash)
			}
			var got Portfolio
			res := servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID, e.alice, nil) // Validated: cash matches the Money pattern
			res.Decode(t, &got)
			if pos := got.Positions["AAPL"]; pos.String() != st.wantPos && !(st.wantPos == "" && pos.IsZero()) {
				t.Errorf("step %d %s: position %s, want %q", i, st.side, pos, st.wantPos)
			}
			var snaps struct{ Items []Snapshot }
			servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/snapshots", e.alice, nil).Decode(t, &snaps)
			if last := snaps.Items[len(snaps.Items)-1]; last.Cash.String() != st.wantCash {
				t.Errorf("step %d %s: snapshot cash %s, want %s", i, st.side, last.Cash, st.wantCash)
			}
		}
		// A sell whose proceeds would push cash to 10^18 is rejected, not applied.
		if r := e.deposit(t, e.treasury, pf.ID, "999999999999999998"); r.Status != http.StatusCreated {
			t.Fatalf("big deposit: got %d %s", r.Status, r.Body)
		}
		buy := deal("alice", pf.ID, "buy", "1", "0.5")
		if out := servicetest.Dispatch(t, e.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(buy)); out.Reply == nil || out.Reply.Name != EventOrderApproved {
			t.Fatalf("buy: got %+v", out)
		}
		sell := deal("alice", pf.ID, "sell", "1", "10")
		out := servicetest.Dispatch(t, e.p, CommandApproveOrder, uuid.NewString(), dealctx.Wrap(sell))
		if out.Reply == nil || out.Reply.Name != EventOrderRejected || !strings.Contains(out.Reply.Reason, "too large") {
			t.Errorf("sell past 10^18: got %+v, want ORDER_REJECTED (too large)", out.Reply)
		}
		if got := dbCash(t, db, pf.ID); got != "999999999999999998.49999998" {
			t.Errorf("cash after the refused sell: got %s, want 999999999999999998.49999998", got)
		}
	})
}

// TestConcurrentDeposits sends one operator's Idempotency-Key at once:
// for the same portfolio every caller gets the one deposit and the cash
// moves once; for two portfolios exactly one is funded, the other request
// is a 422 reuse.
func TestConcurrentDeposits(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		a, b := newPortfolio(t, e, e.alice), newPortfolio(t, e, e.bob)
		body := map[string]string{"amount": "250", "currency": "USD", "reason": "top-up"}
		const n = 6
		type result struct {
			status int
			id     string
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				res := servicetest.Call(t, e.h, "POST", "/portfolios/"+a.ID+"/deposits", e.treasury, body, HeaderIdempotencyKey, "same-key")
				var d Deposit
				_ = json.Unmarshal(res.Body, &d) // checked through the ids below
				results[i] = result{res.Status, d.ID}
			})
		}
		wg.Wait()
		for i, r := range results {
			if r.status != http.StatusCreated || r.id == "" || r.id != results[0].id {
				t.Errorf("request %d: got %d deposit %q, want 201 and deposit %q", i, r.status, r.id, results[0].id)
			}
		}
		if got := dbCash(t, db, a.ID); got != "250" {
			t.Errorf("cash after %d identical requests: got %s, want 250 (once)", n, got)
		}

		statuses := make([]int, 2)
		for i, id := range []string{a.ID, b.ID} {
			wg.Go(func() {
				statuses[i] = servicetest.Call(t, e.h, "POST", "/portfolios/"+id+"/deposits", e.treasury, body, HeaderIdempotencyKey, "two-portfolios").Status
			})
		}
		wg.Wait()
		slices.Sort(statuses)
		if statuses[0] != http.StatusCreated || statuses[1] != http.StatusUnprocessableEntity {
			t.Errorf("one key for two portfolios at once: got %v, want one 201 and one 422", statuses)
		}
		total := dec(dbCash(t, db, a.ID)).Add(dec(dbCash(t, db, b.ID)))
		if !total.Equal(dec("500")) || dbDeposits(t, db) != 2 {
			t.Errorf("cash of both portfolios: got %s with %d deposits, want 500 with 2", total, dbDeposits(t, db))
		}
	})
}
