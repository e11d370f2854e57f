package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
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
