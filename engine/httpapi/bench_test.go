package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// BenchmarkAPI measures read requests over 500 sagas on in-memory SQLite,
// through the whole handler (routing, logging, JSON).
func BenchmarkAPI(b *testing.B) {
	e := newEnv(b, "", envOptions{})
	var id string
	for i := range 500 {
		inst := e.start(b, fmt.Sprintf("B-%d", i))
		e.send(b, inst.ID, [2]string{"ORDER_APPROVED", "profile"})
		id = inst.ID
	}
	for _, bc := range []struct{ name, target string }{
		{"list-50", "/api/v1/sagas?limit=50"},
		{"search-key", "/api/v1/sagas?key=deal_id:B-250"},
		{"get-with-timeline", "/api/v1/sagas/" + id},
		{"definitions-with-counts", "/api/v1/definitions"},
		{"diagram-svg", "/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg"},
		{"metrics", "/metrics"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bytes := 0
			for b.Loop() {
				rec := httptest.NewRecorder()
				e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, bc.target, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: status %d: %s", bc.target, rec.Code, rec.Body.String())
				}
				bytes = rec.Body.Len()
			}
			b.ReportMetric(float64(bytes), "resp-bytes")
		})
	}
}

// BenchmarkStart measures POST /sagas through the whole handler with the
// dev-header authenticator: without a key, with a new Idempotency-Key
// each time (one more row claimed in idempotency_keys) and a retry of one
// key (answered from the stored key), on in-memory SQLite, or on
// PostgreSQL with SAGA_BENCH_POSTGRES=1 and `make up`.
func BenchmarkStart(b *testing.B) {
	db := ""
	if os.Getenv("SAGA_BENCH_POSTGRES") != "" {
		db = testenv.Postgres(b)
	}
	e := newEnv(b, db, envOptions{auth: devAuth(b)})
	sam := as("sam", "support-agent")
	body := callback("U-bench")
	n := 0
	for _, bc := range []struct {
		name string
		key  func() string
	}{
		{"no-key", func() string { return "" }},
		{"new-key", func() string { n++; return fmt.Sprintf("k-%d", n) }},
		{"same-key", func() string { return "k-retry" }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/api/v1/sagas", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				for i := 0; i+1 < len(sam); i += 2 {
					req.Header.Set(sam[i], sam[i+1])
				}
				if k := bc.key(); k != "" {
					req.Header.Set("Idempotency-Key", k)
				}
				rec := httptest.NewRecorder()
				e.handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
			}
		})
	}
}
