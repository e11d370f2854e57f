package profile

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

type httpEnv struct {
	h     http.Handler
	s     *Service
	p     *sdk.Participant
	db    *sqlx.DB
	clk   *clock
	alice string
	bob   string
	// treasury and olga are funding operators; alice and bob are not.
	treasury, olga string
}

func newHTTP(t *testing.T, db *sqlx.DB) httpEnv {
	t.Helper()
	iss := servicetest.NewIssuer(t)
	clk := &clock{}
	clk.Set("2026-03-02T10:00:00Z")
	p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: iss.Auth, Logger: quiet, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterHandlers(p)
	return httpEnv{h: servicetest.Validated(t, s.Router(), "profile.yaml"), s: s, p: p, db: db, clk: clk, alice: iss.Token(t, "alice"), bob: iss.Token(t, "bob"),
		treasury: iss.TokenWithRoles(t, "treasury", auth.RoleFundingOperator), olga: iss.TokenWithRoles(t, "olga", auth.RoleFundingOperator)}
}

// deposit funds portfolio id over HTTP as the funding operator token.
func (e httpEnv) deposit(t *testing.T, token, id, amount string) servicetest.Response {
	t.Helper()
	return servicetest.Call(t, e.h, "POST", "/portfolios/"+id+"/deposits", token,
		map[string]string{"amount": amount, "currency": "USD", "reason": "test funding"}, HeaderIdempotencyKey, uuid.NewString())
}

func TestHTTPPortfolios(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		login := servicetest.Call(t, e.h, "GET", "/login", e.alice, nil)
		var prof Profile
		login.Decode(t, &prof)
		if login.Status != http.StatusOK || prof.UserID != "alice" || prof.Name != "alice" || prof.Email != "alice@example.com" {
			t.Errorf("GET /login: got %d %+v, want alice's profile from the token", login.Status, prof)
		}

		res := servicetest.Call(t, e.h, "POST", "/portfolios", e.alice, map[string]string{"name": "Main", "currency": "USD", "cash": "0"})
		var pf Portfolio
		res.Decode(t, &pf)
		if res.Status != http.StatusCreated || res.Header.Get("Location") != "/portfolios/"+pf.ID || !pf.Cash.IsZero() || len(pf.Positions) != 0 {
			t.Fatalf("POST /portfolios: got %d %s, want 201 with cash 0 and no positions", res.Status, res.Body)
		}
		if !strings.Contains(string(res.Body), `"cash":"0"`) || !strings.Contains(string(res.Body), `"positions":{}`) {
			t.Errorf("body: got %s, want cash as a JSON string and positions as an object", res.Body)
		}
		if dep := e.deposit(t, e.treasury, pf.ID, "2000.00"); dep.Status != http.StatusCreated {
			t.Fatalf("deposit: got %d %s, want 201", dep.Status, dep.Body)
		}
		unfunded := servicetest.Call(t, e.h, "POST", "/portfolios", e.alice, map[string]string{"name": "Side", "currency": "EUR"})
		var pf2 Portfolio
		unfunded.Decode(t, &pf2)
		if unfunded.Status != http.StatusCreated || !pf2.Cash.IsZero() {
			t.Errorf("POST without cash: got %d %s, want 201 with cash 0", unfunded.Status, unfunded.Body)
		}

		// The saga buys: the portfolio and its snapshot show it.
		dc := deal("alice", pf.ID, "buy", "10", "150")
		if out := servicetest.Dispatch(t, e.p, CommandApproveOrder, "8a1d7c2e-0000-4000-8000-000000000001", dealctx.Wrap(dc)); out.Reply == nil || out.Reply.Name != EventOrderApproved {
			t.Fatalf("APPROVE_ORDER: got %+v, want ORDER_APPROVED", out)
		}
		var got Portfolio
		servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID, e.alice, nil).Decode(t, &got)
		if got.Cash.String() != "500" || got.Positions["AAPL"].String() != "10" {
			t.Errorf("GET /portfolios/{id}: got %+v, want cash 500 and 10 AAPL", got)
		}
		var list struct{ Items []Portfolio }
		servicetest.Call(t, e.h, "GET", "/portfolios", e.alice, nil).Decode(t, &list)
		if len(list.Items) != 2 || list.Items[0].ID != pf.ID || list.Items[1].ID != pf2.ID {
			t.Errorf("GET /portfolios: got %+v, want Main then Side", list.Items)
		}

		// Sending the cash back unchanged is accepted (a GET-modify-PUT client).
		put := servicetest.Call(t, e.h, "PUT", "/portfolios/"+pf.ID, e.alice, map[string]string{"name": "Renamed", "cash": "500.00", "currency": "USD"})
		var upd Portfolio
		put.Decode(t, &upd)
		if put.Status != http.StatusOK || upd.Name != "Renamed" || upd.Cash.String() != "500" || upd.Positions["AAPL"].String() != "10" {
			t.Errorf("PUT: got %d %s, want renamed, cash 500, positions kept", put.Status, put.Body)
		}
		var snaps struct{ Items []Snapshot }
		servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/snapshots", e.alice, nil).Decode(t, &snaps)
		if len(snaps.Items) != 1 || snaps.Items[0].Date != "2026-03-02" || snaps.Items[0].Cash.String() != "500" || snaps.Items[0].Positions["AAPL"].String() != "10" {
			t.Errorf("snapshots: got %+v, want one of 2026-03-02 with the end-of-day position", snaps.Items)
		}
		var asOf SnapshotAsOf
		r := servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/snapshots/2026-04-01", e.alice, nil)
		r.Decode(t, &asOf)
		if r.Status != http.StatusOK || asOf.AsOf != "2026-04-01" || asOf.Date != "2026-03-02" || asOf.Currency != "USD" {
			t.Errorf("snapshot as of 2026-04-01: got %d %s, want the 2026-03-02 snapshot", r.Status, r.Body)
		}
		before := servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID+"/snapshots/2026-03-01", e.alice, nil)
		if before.Status != http.StatusNotFound || before.Problem(t).Type != service.TypeNotFound {
			t.Errorf("snapshot before the first: got %d %s, want 404", before.Status, before.Body)
		}

		// Bob sees none of it.
		for _, c := range []struct{ method, path string }{
			{"GET", "/portfolios/" + pf.ID},
			{"PUT", "/portfolios/" + pf.ID},
			{"GET", "/portfolios/" + pf.ID + "/snapshots"},
			{"GET", "/portfolios/" + pf.ID + "/snapshots/2026-03-02"},
		} {
			var b any
			if c.method == "PUT" {
				b = map[string]string{"name": "mine now", "cash": "1000000"}
			}
			res := servicetest.Call(t, e.h, c.method, c.path, e.bob, b)
			if res.Status != http.StatusNotFound || res.Problem(t).Type != service.TypeNotFound {
				t.Errorf("bob %s %s: got %d %s, want 404", c.method, c.path, res.Status, res.Body)
			}
		}
		var bobs struct{ Items []Portfolio }
		servicetest.Call(t, e.h, "GET", "/portfolios", e.bob, nil).Decode(t, &bobs)
		if len(bobs.Items) != 0 {
			t.Errorf("bob's portfolios: got %d, want 0", len(bobs.Items))
		}
		servicetest.Call(t, e.h, "GET", "/portfolios/"+pf.ID, e.alice, nil).Decode(t, &got)
		if got.Name != "Renamed" || got.Cash.String() != "500" {
			t.Errorf("alice's portfolio after bob's PUT: got %s %s, want unchanged", got.Name, got.Cash)
		}
	})
}

func TestHTTPErrors(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	res := servicetest.Call(t, e.h, "POST", "/portfolios", e.alice, map[string]string{"name": "Main", "currency": "USD"})
	var pf Portfolio
	res.Decode(t, &pf)
	tests := []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		status int
		typ    string
		fields string
	}{
		{"no token", "GET", "/login", "", nil, 401, "about:blank", ""},
		{"bad token", "GET", "/portfolios", "x.y.z", nil, 401, "about:blank", ""},
		{"missing name and currency", "POST", "/portfolios", e.alice, map[string]string{}, 422, service.TypeValidation, "name,currency"},
		{"negative cash", "POST", "/portfolios", e.alice, map[string]string{"name": "a", "currency": "USD", "cash": "-1"}, 422, service.TypeValidation, "cash"},
		{"initial cash", "POST", "/portfolios", e.alice, map[string]string{"name": "a", "currency": "USD", "cash": "100"}, 422, service.TypeValidation, "cash"},
		{"float cash", "POST", "/portfolios", e.alice, `{"name":"a","currency":"USD","cash":1.5}`, 400, service.TypeMalformed, ""},
		{"long name", "POST", "/portfolios", e.alice, map[string]string{"name": strings.Repeat("x", 101), "currency": "USD"}, 422, service.TypeValidation, "name"},
		{"unknown field", "POST", "/portfolios", e.alice, `{"name":"a","currency":"USD","positions":{}}`, 400, service.TypeMalformed, ""},
		{"currency change", "PUT", "/portfolios/" + pf.ID, e.alice, map[string]string{"name": "a", "currency": "EUR"}, 422, service.TypeValidation, "currency"},
		{"bad cash on put", "PUT", "/portfolios/" + pf.ID, e.alice, map[string]string{"name": "a", "cash": "lots"}, 422, service.TypeValidation, "cash"},
		{"cash change on put", "PUT", "/portfolios/" + pf.ID, e.alice, map[string]string{"name": "a", "cash": "1000000"}, 422, service.TypeValidation, "cash"},
		{"unknown portfolio", "GET", "/portfolios/nope", e.alice, nil, 404, service.TypeNotFound, ""},
		{"bad date", "GET", "/portfolios/" + pf.ID + "/snapshots/2026-02-30", e.alice, nil, 422, service.TypeValidation, "date"},
		{"bad from", "GET", "/portfolios/" + pf.ID + "/snapshots?from=yesterday", e.alice, nil, 422, service.TypeValidation, "from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := servicetest.Call(t, e.h, tt.method, tt.path, tt.token, tt.body)
			if res.Status != tt.status {
				t.Fatalf("status: got %d %s, want %d", res.Status, res.Body, tt.status)
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
				t.Errorf("invalid fields: got %q, want %q (%s)", got, tt.fields, res.Body)
			}
		})
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if res := servicetest.Call(t, e.h, "GET", path, "", nil); res.Status != http.StatusOK {
			t.Errorf("GET %s without token: got %d, want 200", path, res.Status)
		}
	}
}
