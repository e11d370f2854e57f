package service

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMethodNotAllowedAllow: a wrong method gets 405 problem+json with the
// Allow header RFC 9110 requires; a literal path beside a {variable} one
// lists only its own methods, not those of the variable route that would
// answer 404 for it (the first contract-fuzzing run found 405s without
// Allow in every participant service).
func TestMethodNotAllowedAllow(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	r := NewRouter(nil)
	r.Handle("/items/export", ok).Methods(http.MethodPost)
	r.Handle("/items/{id}", ok).Methods(http.MethodGet)
	r.Handle("/items/{id}", ok).Methods(http.MethodPut)
	r.Handle("/items", ok).Methods(http.MethodGet, http.MethodPost)
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodTrace, "/items", "GET, POST"},
		{http.MethodDelete, "/items", "GET, POST"},
		{http.MethodPost, "/items/42", "GET, PUT"},
		{http.MethodOptions, "/items/export", "POST"},
		{http.MethodPost, "/healthz", "GET"},
		{http.MethodTrace, "/readyz", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status: got %d, want 405", rec.Code)
			}
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow: got %q, want %q", got, tt.allow)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", got)
			}
		})
	}
}
