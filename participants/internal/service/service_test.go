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
		{"no content type", "", `{"name":"a"}`, 0, ""},
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
			if tt.contentType != "" {
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
