package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/problem"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name string
		p    problem.Problem
		want map[string]any
	}{
		{"instance from the request", problem.New(http.StatusNotFound, "not-found", `dead letter "x" not found`),
			map[string]any{"type": "urn:saga-machine:problem:not-found", "title": "Not Found", "status": 404.0,
				"detail": `dead letter "x" not found`, "instance": "/admin/dead-letters/x"}},
		{"fields and code", problem.Problem{Type: problem.TypePrefix + "validation", Title: "Validation failed", Status: 422,
			Instance: "/given", Code: "validation", Errors: []problem.FieldError{{Field: "limit", Message: "must be 1 to 1000"}}},
			map[string]any{"type": "urn:saga-machine:problem:validation", "title": "Validation failed", "status": 422.0,
				"instance": "/given", "code": "validation", "errors": []any{map[string]any{"field": "limit", "message": "must be 1 to 1000"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			problem.Write(w, httptest.NewRequest(http.MethodGet, "/admin/dead-letters/x?full=1", nil), tc.p)
			if got, want := w.Code, tc.p.Status; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
			if got, want := w.Header().Get("Content-Type"), "application/problem+json"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
			if got, want := w.Header().Get("Cache-Control"), "no-store"; got != want {
				t.Errorf("Cache-Control = %q, want %q", got, want)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if g, w := mustJSON(t, got), mustJSON(t, tc.want); g != w {
				t.Errorf("body = %s, want %s", g, w)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
