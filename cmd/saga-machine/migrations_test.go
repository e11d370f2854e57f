package main

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/portfolio-counselor/sagamachine/sagas"
)

// copySagas copies the shipped definitions and migrations into a new
// directory and returns it.
func copySagas(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := fs.WalkDir(sagas.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, p), 0o755)
		}
		b, err := fs.ReadFile(sagas.FS, p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLoadsMigrations: the shipped migrations load with the definitions
// (embedded and from --sagas), and a migration that does not fit the
// definitions stops saga-machine with its FILE:LINE:COL problem.
func TestLoadsMigrations(t *testing.T) {
	for _, dir := range []string{"", copySagas(t)} {
		cat, err := loadCatalog(dir, io.Discard)
		if err != nil {
			t.Fatalf("loadCatalog(%q): %v", dir, err)
		}
		if _, ok := cat.Migration("MANUAL_CREATE_ORDER", 1, 2); !ok {
			t.Errorf("loadCatalog(%q): no migration of MANUAL_CREATE_ORDER from 1 to 2 (have %d)", dir, len(cat.Migrations()))
		}
	}
	dir := copySagas(t)
	bad := "migration: MANUAL_CREATE_ORDER\nfrom: 1\nto: 2\nstates:\n  DRAFT: NOWHERE\n  APPROVED: APPROVED\n  REJECTED: REJECTED\n"
	if err := os.WriteFile(filepath.Join(dir, "migrations", "manual_create_order.1-2.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--sagas", dir, "--db", "sqlite::memory:"}, envMap(nil), io.Discard, &stderr)
	var pe problemsError
	if err == nil || !errorsAs(err, &pe) {
		t.Fatalf("run = %v, want a problemsError", err)
	}
	line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(filepath.Join(dir, "migrations", "manual_create_order.1-2.yaml")) + `:\d+:\d+: .*NOWHERE.*$`)
	if !line.MatchString(stderr.String()) {
		t.Errorf("stderr = %q, want the migration's FILE:LINE:COL problem", stderr.String())
	}
}
