package deals

import (
	"net/http"
	"testing"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// TestListQueryEdges: contract fuzzing found ?status= and ?limit= (empty)
// read as absent while the spec has no empty status or limit; they are
// refused (422) now, and the list is not answered.
func TestListQueryEdges(t *testing.T) {
	e := newHTTP(t, servicetest.SQLite(t, Migrate))
	for _, q := range []string{"?status=", "?limit=", "?status=&limit=5", "?status=DRAFT"} {
		res := servicetest.Call(t, e.h, http.MethodGet, "/deals"+q, e.alice, nil)
		if res.Status != http.StatusUnprocessableEntity || res.Problem(t).Type != service.TypeValidation {
			t.Errorf("GET /deals%s: got %d %s, want 422 validation", q, res.Status, res.Body)
		}
	}
	for _, q := range []string{"", "?status=draft", "?cursor=", "?limit=1"} {
		if res := servicetest.Call(t, e.h, http.MethodGet, "/deals"+q, e.alice, nil); res.Status != http.StatusOK {
			t.Errorf("GET /deals%s: got %d %s, want 200", q, res.Status, res.Body)
		}
	}
}

// FuzzPositiveDecimalPattern: on any string, the specs' PositiveDecimal
// pattern (deal quantity and price, deposit amount) and the services'
// parser agree. Contract fuzzing cannot check this through POST /deals and
// deposits (their 422s also come from state, see
// internal/contractfuzz/schemathesis.toml), so it is fuzzed here directly.
func FuzzPositiveDecimalPattern(f *testing.F) {
	for _, s := range []string{"1", "150.25", "0.00000001", "0", "-1", "1.123456789", "999999999999999999.99999999", "1000000000000000000",
		"00012.5", "1e3", ".5", "1.", " 1", "+1", "0.000000000", "٣", "1\n"} {
		f.Add(s)
	}
	deals := servicetest.SchemaPattern(f, "deals.yaml", "PositiveDecimal")
	profile := servicetest.SchemaPattern(f, "profile.yaml", "PositiveDecimal")
	f.Fuzz(func(t *testing.T, s string) {
		_, err := dealctx.ParseAmount(s)
		if got, want := deals.MatchString(s), err == nil; got != want {
			t.Fatalf("PositiveDecimal on %q: the spec's pattern accepts %v, the services accept %v (%v)", s, got, want, err)
		}
		if profile.MatchString(s) != deals.MatchString(s) {
			t.Fatalf("deals.yaml and profile.yaml disagree on %q", s)
		}
	})
}
