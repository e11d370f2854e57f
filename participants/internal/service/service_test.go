package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	type req struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		detail      string
	}{
		{"ok", "application/json", `{"name":"a","n":1}`, 0, ""},
		{"ok with charset", "application/json; charset=utf-8", `{"name":"a"}`, 0, ""},
		{"no content type", "none", `{"name":"a"}`, 415, "no Content-Type"},
		{"form", "application/x-www-form-urlencoded", `name=a`, 415, `Content-Type "application/x-www-form-urlencoded"`},
		{"problem json", "application/merge-patch+json", `{"name":"a"}`, 0, ""},
		{"text", "text/plain", `{}`, 415, `Content-Type "text/plain"`},
		{"unknown field", "", `{"nme":"a"}`, 400, `unknown field "nme"`},
		{"wrong type", "", `{"name":1}`, 400, `field "name" must be a string, got number`},
		{"array", "", `[]`, 400, "must be a JSON object, got array"},
		{"syntax", "", `{"name" "a"}`, 400, "not valid JSON (at byte"},
		{"truncated", "", `{"name":`, 400, "truncated"},
		{"empty", "", ``, 400, "empty"},
		{"trailing", "", `{"name":"a"} x`, 400, "more than one JSON value"},
		{"too big", "", `{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 400, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			switch tt.contentType {
			case "none":
			case "":
				r.Header.Set("Content-Type", "application/json")
			default:
				r.Header.Set("Content-Type", tt.contentType)
			}
			var v req
			err := DecodeJSON(httptest.NewRecorder(), r, &v)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			e, ok := asError(err)
			if !ok {
				t.Fatalf("got %T %v, want *Error", err, err)
			}
			if e.Status != tt.status || !strings.Contains(e.Detail, tt.detail) {
				t.Errorf("got %d %q, want %d containing %q", e.Status, e.Detail, tt.status, tt.detail)
			}
		})
	}
}

func TestCursor(t *testing.T) {
	for _, seq := range []int64{1, 42, 1 << 40} {
		got, err := DecodeCursor(EncodeCursor(seq))
		if err != nil || got != seq {
			t.Errorf("round trip of %d: got %d (err %v)", seq, got, err)
		}
	}
	for _, bad := range []string{"", "!!", EncodeCursor(0)[:1], "czA", "eDE"} {
		if _, err := DecodeCursor(bad); err == nil {
			t.Errorf("DecodeCursor(%q): got no error, want one", bad)
		}
	}
	page := NewPage([]int64{9, 8, 7}, 2, func(v int64) int64 { return v })
	if len(page.Items) != 2 || page.NextCursor != EncodeCursor(8) {
		t.Errorf("NewPage of 3 with limit 2: got %v %q, want 2 items and a cursor after 8", page.Items, page.NextCursor)
	}
	if last := NewPage([]int64{1}, 2, func(v int64) int64 { return v }); last.NextCursor != "" {
		t.Errorf("last page: got cursor %q, want none", last.NextCursor)
	}
	if empty := NewPage[int64](nil, 2, nil); empty.Items == nil {
		t.Errorf("empty page: got nil items, want [] (JSON array)")
	}
}

func TestParsePage(t *testing.T) {
	tests := []struct {
		query  string
		limit  int
		before int64
		bad    string
	}{
		{"", DefaultPageSize, 0, ""},
		{"limit=5&cursor=" + EncodeCursor(10), 5, 10, ""},
		{"limit=0", 0, 0, "limit"},
		{"limit=101", 0, 0, "limit"},
		{"limit=x", 0, 0, "limit"},
		{"cursor=nope", 0, 0, "cursor"},
	}
	for _, tt := range tests {
		p, err := ParsePage(httptest.NewRequest("GET", "/?"+tt.query, nil))
		if tt.bad != "" {
			e, ok := asError(err)
			if !ok || len(e.Errors) != 1 || e.Errors[0].Field != tt.bad {
				t.Errorf("%q: got %v, want a validation error on %s", tt.query, err, tt.bad)
			}
			continue
		}
		if err != nil || p.Limit != tt.limit || p.Before != tt.before {
			t.Errorf("%q: got %+v (err %v), want limit %d before %d", tt.query, p, err, tt.limit, tt.before)
		}
	}
}

func TestOpenDBAndRedact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "x.db")
	for _, u := range []string{"sqlite:" + path, "file:" + path, path} {
		db, err := OpenDB(ctx, u)
		if err != nil {
			t.Fatalf("OpenDB(%q): %v", u, err)
		}
		if d, err := DialectOf(db); err != nil || d != SQLite {
			t.Errorf("dialect of %q: got %q (err %v), want sqlite", u, d, err)
		}
		db.Close()
	}
	for _, bad := range []string{"", "sqlite:", "sqlite:x.db?mode=ro"} {
		if _, err := OpenDB(ctx, bad); err == nil {
			t.Errorf("OpenDB(%q): got no error, want one", bad)
		}
	}
	if got := Redact("postgres://u:secret@h/db"); strings.Contains(got, "secret") {
		t.Errorf("Redact: got %q, want the password hidden", got)
	}
	if got := Redact("sqlite:/x.db"); got != "sqlite:/x.db" {
		t.Errorf("Redact of a path: got %q, want it unchanged", got)
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest("GET", "/x", nil), nil, context.Canceled)
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(rec.Body.String(), TypeInternal) || strings.Contains(rec.Body.String(), "canceled") {
		t.Errorf("internal error: got %d %s %s, want 500 problem+json without the cause", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	rec = httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest("GET", "/x", nil), nil, NotFound("deal", "d1"))
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"instance":"/x"`) || !strings.Contains(rec.Body.String(), `deal \"d1\" not found`) {
		t.Errorf("not found: got %d %s", rec.Code, rec.Body)
	}
}

func TestGuard(t *testing.T) {
	reached := 0
	h := Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusNoContent)
	}))
	tests := []struct {
		name    string
		method  string
		body    string
		headers map[string]string
		want    int
		typ     string
	}{
		{"json post", "POST", `{}`, map[string]string{"Content-Type": "application/json"}, 204, ""},
		{"same-origin browser post", "POST", `{}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin", "Origin": "http://svc.example"}, 204, ""},
		{"post without body", "POST", ``, nil, 204, ""},
		{"cross-site get", "GET", ``, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 204, ""},
		{"cross-site form post", "POST", `portfolio_id=x`, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403, TypeCrossOrigin},
		{"cross-site json post", "POST", `{}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, TypeCrossOrigin},
		{"origin mismatch without fetch metadata", "PUT", `{}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, TypeCrossOrigin},
		{"same-site other origin", "DELETE", ``, map[string]string{"Sec-Fetch-Site": "same-site"}, 403, TypeCrossOrigin},
		{"text/plain json", "POST", `{}`, map[string]string{"Content-Type": "text/plain"}, 415, TypeUnsupportedMedia},
		{"form without origin", "POST", `a=b`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, TypeUnsupportedMedia},
		{"multipart", "PUT", `--x--`, map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, 415, TypeUnsupportedMedia},
		{"body without content type", "POST", `{}`, nil, 415, TypeUnsupportedMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reached
			r := httptest.NewRequest(tt.method, "http://svc.example/deals", strings.NewReader(tt.body))
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.typ == "" {
				if reached != before+1 {
					t.Errorf("handler not reached")
				}
				return
			}
			if reached != before {
				t.Errorf("handler reached, want the request refused before it")
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" || !strings.Contains(rec.Body.String(), tt.typ) {
				t.Errorf("got %s %s, want a problem of type %s", ct, rec.Body, tt.typ)
			}
		})
	}
}

func TestLoopbackIssuer(t *testing.T) {
	for issuer, want := range map[string]bool{
		"http://127.0.0.1:8090":                          true,
		"http://localhost:8090/realms/dev":               true,
		"http://[::1]:8090":                              true,
		"https://keycloak.example/auth/realms/portfolio": false,
		"http://10.0.0.5:8080/realms/x":                  false,
		"":                                               false,
	} {
		if got := LoopbackIssuer(issuer); got != want {
			t.Errorf("LoopbackIssuer(%q): got %v, want %v", issuer, got, want)
		}
	}
}
