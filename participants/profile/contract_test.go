package profile

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// Regression tests for what contract fuzzing (internal/contractfuzz) found.

// TestPortfolioNamesAsSpecified: a name the spec refuses is refused (422,
// nothing stored or renamed) and one it allows is accepted. Fuzzing found
// names of only spaces refused while the spec allowed them, names with NUL
// and other control characters accepted while the spec forbids them, and
// the length counted after trimming while the spec counts what is sent.
func TestPortfolioNamesAsSpecified(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		e := newHTTP(t, db)
		res := servicetest.Call(t, e.h, http.MethodPost, "/portfolios", e.alice, map[string]string{"name": "Main", "currency": "USD"})
		var pf Portfolio
		res.Decode(t, &pf)
		tests := []struct {
			name, value string
			ok          bool
		}{
			{"plain", "Retirement", true},
			{"inner spaces", "My  retirement fund", true},
			{"surrounding spaces are trimmed", "  Savings ", true},
			{"100 characters", strings.Repeat("é", 100), true},
			{"no-break space inside", "Main\u00a0fund", true},
			{"only spaces", "   ", false},
			{"only a no-break space and an ideographic space", "\u00a0\u3000", false},
			{"empty", "", false},
			{"NUL", "a\x00b", false},
			{"newline", "a\nb", false},
			{"trailing newline", "Main\n", false},
			{"tab", "a\tb", false},
			{"DEL", "a\x7fb", false},
			{"C1 control", "a\u0085b", false},
			{"101 characters", strings.Repeat("x", 101), false},
			{"100 characters and a space", strings.Repeat("x", 100) + " ", false},
		}
		spec := servicetest.SchemaPattern(t, "profile.yaml", "PortfolioName")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				n := utf8.RuneCountInString(tt.value)
				if inSpec := spec.MatchString(tt.value) && n >= 1 && n <= 100; inSpec != tt.ok {
					t.Errorf("name %q: the spec's PortfolioName says valid=%v, the service %v", tt.value, inSpec, tt.ok)
				}
				before := e.portfolios(t)
				create := servicetest.Call(t, e.h, http.MethodPost, "/portfolios", e.alice, map[string]string{"name": tt.value, "currency": "USD"})
				rename := servicetest.Call(t, e.h, http.MethodPut, "/portfolios/"+pf.ID, e.alice, map[string]string{"name": tt.value})
				if tt.ok {
					if create.Status != http.StatusCreated || rename.Status != http.StatusOK {
						t.Fatalf("name %q: create %d %s, rename %d %s; want 201 and 200", tt.value, create.Status, create.Body, rename.Status, rename.Body)
					}
					var got Portfolio
					rename.Decode(t, &got)
					if want := strings.TrimSpace(tt.value); got.Name != want {
						t.Errorf("stored name %q, want %q", got.Name, want)
					}
					return
				}
				for _, res := range []servicetest.Response{create, rename} {
					if res.Status != http.StatusUnprocessableEntity {
						t.Fatalf("name %q: got %d %s, want 422", tt.value, res.Status, res.Body)
					}
					if p := res.Problem(t); p.Type != service.TypeValidation || len(p.Errors) != 1 || p.Errors[0].Field != "name" {
						t.Errorf("problem %+v, want one validation error of field name", p)
					}
				}
				after := e.portfolios(t)
				if len(after) != len(before) {
					t.Errorf("portfolios: %d before, %d after a refused create", len(before), len(after))
				}
				for i := range before {
					if after[i].Name != before[i].Name {
						t.Errorf("portfolio %s renamed from %q to %q by a refused request", before[i].ID, before[i].Name, after[i].Name)
					}
				}
			})
		}
	})
}

// portfolios lists alice's portfolios, oldest first.
func (e httpEnv) portfolios(t *testing.T) []Portfolio {
	t.Helper()
	var page struct{ Items []Portfolio }
	servicetest.Call(t, e.h, http.MethodGet, "/portfolios", e.alice, nil).Decode(t, &page)
	return page.Items
}

// TestQueryEdges: an empty typed query parameter is refused (422) rather
// than read as absent (the spec has no empty date or limit); from after
// to is an empty range, answered with no snapshots.
func TestQueryEdges(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	res := servicetest.Call(t, e.h, http.MethodPost, "/portfolios", e.alice, map[string]string{"name": "Main", "currency": "USD"})
	var pf Portfolio
	res.Decode(t, &pf)
	for _, q := range []string{"/snapshots?from=", "/snapshots?to=", "/deposits?limit="} {
		res := servicetest.Call(t, e.h, http.MethodGet, "/portfolios/"+pf.ID+q, e.alice, nil)
		if res.Status != http.StatusUnprocessableEntity || res.Problem(t).Type != service.TypeValidation {
			t.Errorf("%s: got %d %s, want 422 validation", q, res.Status, res.Body)
		}
	}
	var page struct{ Items []Snapshot }
	res = servicetest.Call(t, e.h, http.MethodGet, "/portfolios/"+pf.ID+"/snapshots?from=2026-03-03&to=2026-03-01", e.alice, nil)
	res.Decode(t, &page)
	if res.Status != http.StatusOK || len(page.Items) != 0 {
		t.Errorf("from after to: got %d with %d snapshots, want 200 with none", res.Status, len(page.Items))
	}
}

// TestNewPortfolioCashAsSpecified: the spec's NewPortfolio.cash is an
// optional zero (null is as absent); fuzzing found null accepted while the
// spec refused it, and any decimal allowed while only zero is accepted.
func TestNewPortfolioCashAsSpecified(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	tests := []struct {
		body   string
		status int
	}{
		{`{"name":"a","currency":"USD","cash":null}`, http.StatusCreated},
		{`{"name":"a","currency":"USD","cash":"0"}`, http.StatusCreated},
		{`{"name":"a","currency":"USD","cash":"-0.00000000"}`, http.StatusCreated},
		{`{"name":"a","currency":"USD","cash":"0.000000000"}`, http.StatusUnprocessableEntity},
		{`{"name":"a","currency":"USD","cash":"0.00000001"}`, http.StatusUnprocessableEntity},
		{`{"name":"a","currency":"USD","cash":"150.25"}`, http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		res := servicetest.Call(t, e.h, http.MethodPost, "/portfolios", e.alice, tt.body)
		if res.Status != tt.status {
			t.Errorf("%s: got %d %s, want %d", tt.body, res.Status, res.Body, tt.status)
			continue
		}
		if res.Status == http.StatusCreated {
			var pf Portfolio
			res.Decode(t, &pf)
			if !pf.Cash.IsZero() {
				t.Errorf("%s: cash %s, want 0", tt.body, pf.Cash)
			}
		}
	}
}
