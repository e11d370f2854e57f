package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
)

// TestCrossOriginRefused checks that a browser on another origin cannot
// make the API change state (CSRF), which matters most when the API runs
// without authentication on loopback: a page's fetch with a typeless Blob
// body sends no Content-Type, which decodeJSON accepts as JSON.
func TestCrossOriginRefused(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	s := e.seed(t)
	abort := "/api/v1/sagas/" + s.waiting.ID + "/abort"
	for _, tc := range []struct {
		name   string
		method string
		target string
		hdr    map[string]string
		status int
	}{
		{"cross-site fetch", "POST", abort, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"old browser, foreign Origin", "POST", abort, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"cross-site start", "POST", "/api/v1/sagas", map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"cross-site read is allowed", "GET", "/api/v1/sagas/" + s.waiting.ID, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.method == "POST" {
				body = `{"reason":"csrf"}`
			}
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(body))
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			e.spec.check(t, req, rec)
			if tc.status != http.StatusForbidden {
				if rec.Code != tc.status {
					t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.status, rec.Body)
				}
				return
			}
			problemOf(t, rec, tc.status, httpapi.CodeCrossOrigin)
		})
	}
	inst, err := e.store.GetInstance(t.Context(), s.waiting.ID)
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if inst.Status != engine.StatusRunning {
		t.Fatalf("after cross-origin abort attempts: status %s, want %s", inst.Status, engine.StatusRunning)
	}
	// The console (same origin) and non-browser clients still act.
	for _, hdr := range []map[string]string{{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}, {}} {
		req := httptest.NewRequest("POST", "/api/v1/sagas/"+s.waiting.ID+"/resend", strings.NewReader(`{"reason":"ok"}`))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("resend with headers %v: status %d, want 200; body %s", hdr, rec.Code, rec.Body)
		}
	}
}
