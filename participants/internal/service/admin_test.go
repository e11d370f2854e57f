package service_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// The dead-letter API is mounted route by route behind the guard: a
// request the guard refuses never reaches it; without a guard MountAdmin
// refuses to mount it at all.
func TestMountAdmin(t *testing.T) {
	r := mux.NewRouter()
	reached := 0
	service.MountAdmin(r, nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Header.Get("X-Role") != "operator" {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			reached++
			h.ServeHTTP(w, req)
		})
	})
	for _, c := range []struct {
		method, path, role string
		want               int
	}{
		{http.MethodGet, "/admin/dead-letters", "", http.StatusForbidden},
		{http.MethodPost, "/admin/dead-letters/x/replay", "user", http.StatusForbidden},
		{http.MethodGet, "/admin/dead-letters", "operator", http.StatusServiceUnavailable}, // no participant: 503
		{http.MethodGet, "/admin/dead-letters/x", "operator", http.StatusServiceUnavailable},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		req.Header.Set("X-Role", c.role)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("%s %s as %q: status %d, want %d", c.method, c.path, c.role, w.Code, c.want)
		}
	}
	if reached != 2 {
		t.Errorf("the admin API was reached %d times, want only the operator's 2", reached)
	}
	defer func() {
		if recover() == nil {
			t.Error("MountAdmin with a nil guard did not panic")
		}
	}()
	service.MountAdmin(mux.NewRouter(), nil, nil)
}
