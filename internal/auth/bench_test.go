package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// BenchmarkMiddleware measures one request through Middleware with a valid
// RS256 token whose key is already cached (the steady state): the token
// answered from the token cache (a session's next request), and verified
// in full (the cache off: what every new token costs).
func BenchmarkMiddleware(b *testing.B) {
	b.Run("cached", func(b *testing.B) { benchmarkMiddleware(b, 0) })
	b.Run("verified", func(b *testing.B) { benchmarkMiddleware(b, -1) })
}

func benchmarkMiddleware(b *testing.B, cacheTTL time.Duration) {
	iss := startIssuer(b)
	a := newAuth(b, auth.Config{Issuer: iss.URL(), Audience: audience, TokenCacheTTL: cacheTTL})
	tok := mustToken(b, iss, "alice", issuer.TokenOptions{Audience: audience, Roles: []string{auth.RoleOperator}})
	h := a.Middleware(a.RequireRole(auth.RoleOperator, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req) // warm the key cache
	if rec.Code != http.StatusOK {
		b.Fatalf("warm-up status = %d, want 200", rec.Code)
	}
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status = %d, want 200", rec.Code)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
