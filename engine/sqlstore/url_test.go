package sqlstore

import (
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url      string
		kind     urlKind
		target   string
		wantFail bool
	}{
		{url: "postgres://u:p@h:5432/db?sslmode=disable", kind: kindPostgres, target: "postgres://u:p@h:5432/db?sslmode=disable"},
		{url: "postgresql://h/db", kind: kindPostgres, target: "postgresql://h/db"},
		{url: "sqlite::memory:", kind: kindSQLiteMemory},
		{url: "sqlite:/var/lib/saga/saga.db", kind: kindSQLiteFile, target: "/var/lib/saga/saga.db"},
		{url: "sqlite://rel/saga.sqlite", kind: kindSQLiteFile, target: "rel/saga.sqlite"},
		{url: "file:/tmp/x", kind: kindSQLiteFile, target: "/tmp/x"},
		{url: "data/saga.db", kind: kindSQLiteFile, target: "data/saga.db"},
		{url: "", wantFail: true},
		{url: "mysql://h/db", wantFail: true},
		{url: "sqlite:", wantFail: true},
		{url: "sqlite:/tmp/x.db?_pragma=foo", wantFail: true},
	}
	for _, tc := range tests {
		kind, target, err := parseURL(tc.url)
		if tc.wantFail {
			if err == nil {
				t.Errorf("parseURL(%q) = %v, %q; want an error", tc.url, kind, target)
			}
			continue
		}
		if err != nil || kind != tc.kind || target != tc.target {
			t.Errorf("parseURL(%q) = %v, %q, %v; want %v, %q", tc.url, kind, target, err, tc.kind, tc.target)
		}
	}
}

func TestRedact(t *testing.T) {
	if got, want := redact("postgres://u:secret@h/db"), "postgres://u:xxxxx@h/db"; got != want {
		t.Errorf("redact: got %q, want %q", got, want)
	}
}
