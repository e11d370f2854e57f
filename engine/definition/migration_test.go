package definition_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// shippedDefs loads the shipped definitions (MANUAL_CREATE_ORDER v1 and v2).
func shippedDefs(tb testing.TB) []*definition.Definition {
	tb.Helper()
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		tb.Fatalf("LoadDir(sagas.FS): %v", problems)
	}
	return defs
}

func find(defs []*definition.Definition, saga string, version int) *definition.Definition {
	for _, d := range defs {
		if d.Saga == saga && d.Version == version {
			return d
		}
	}
	return nil
}

// checkMigrationFile parses a migration and checks it against defs.
func checkMigrationFile(tb testing.TB, defs []*definition.Definition, file string) (*definition.Migration, definition.Problems) {
	tb.Helper()
	m, problems := definition.ParseMigration(file, readFile(tb, file))
	if m == nil {
		return nil, problems
	}
	problems = definition.CheckMigration(m, find(defs, m.Saga, m.From), find(defs, m.Saga, m.To))
	if len(problems) > 0 {
		return nil, problems
	}
	return m, nil
}

func TestBadMigrations(t *testing.T) {
	defs := shippedDefs(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "migrations", "bad", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no bad migrations")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			m, problems := checkMigrationFile(t, defs, file)
			if m != nil || len(problems) == 0 {
				t.Fatalf("a bad migration was accepted")
			}
			got := golden(problems)
			wantFile := strings.TrimSuffix(file, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(wantFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := string(readFile(t, wantFile)); got != want {
				t.Errorf("problems differ from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", wantFile, got, want)
			}
		})
	}
}

func TestGoodMigration(t *testing.T) {
	defs := shippedDefs(t)
	file := filepath.Join("testdata", "migrations", "good", "manual_create_order.1-2.yaml")
	m, problems := checkMigrationFile(t, defs, file)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	if m.Saga != "MANUAL_CREATE_ORDER" || m.From != 1 || m.To != 2 || len(m.States) != 3 || m.Context != nil {
		t.Errorf("migration: %+v", m)
	}
	if to, ok := m.Target("APPROVED"); !ok || to != "APPROVED" {
		t.Errorf("Target(APPROVED) = %q, %v", to, ok)
	}
	if _, ok := m.Target("NOTIFICATION"); ok {
		t.Errorf("Target(NOTIFICATION): a final state is mapped")
	}
	if !definition.IsMigration(readFile(t, file)) || definition.IsMigration(readFile(t, filepath.Join("..", "..", "sagas", "manual_create_order.yaml"))) {
		t.Errorf("IsMigration does not tell a migration from a definition")
	}
}

func TestLoadMigrations(t *testing.T) {
	defs := shippedDefs(t)
	good := readFile(t, filepath.Join("testdata", "migrations", "good", "manual_create_order.1-2.yaml"))
	fsys := fstest.MapFS{
		"a.yaml":     {Data: good},
		"b.yaml":     {Data: good},
		"bad.yml":    {Data: []byte("migration: MANUAL_CREATE_ORDER\nfrom: 1\nto: 2\nstates: {DRAFT: DRAFT}\n")},
		"notes.txt":  {Data: []byte("not read")},
		"sub/c.yaml": {Data: []byte("not read either")},
	}
	ms, problems := definition.LoadMigrations(fsys, defs)
	if len(ms) != 1 || ms[0].File != "a.yaml" {
		t.Errorf("migrations: got %d, want a.yaml only", len(ms))
	}
	var rules []string
	for _, p := range problems {
		rules = append(rules, p.File+" "+p.Rule)
	}
	if got, want := strings.Join(rules, "; "), "b.yaml duplicate-migration; bad.yml migration-unmapped-state"; got != want {
		t.Errorf("problems: got %s, want %s", got, want)
	}
	if ms, problems := definition.LoadMigrations(fstest.MapFS{}, defs); len(ms) != 0 || len(problems) != 0 {
		t.Errorf("an empty directory: %v, %v", ms, problems)
	}
}

// TestMigrationSchema: the migration files against
// schema/saga-migration.schema.json, each bad file's first line saying
// whether the schema sees its mistake.
func TestMigrationSchema(t *testing.T) {
	sch := compileSchemaFile(t, "saga-migration.schema.json")
	good, _ := filepath.Glob(filepath.Join("testdata", "migrations", "good", "*.yaml"))
	bad, _ := filepath.Glob(filepath.Join("testdata", "migrations", "bad", "*.yaml"))
	for _, file := range append(good, bad...) {
		t.Run(file, func(t *testing.T) {
			data := readFile(t, file)
			first, _, _ := strings.Cut(string(data), "\n")
			wantReject := strings.HasPrefix(first, "# schema: rejects")
			err := validateYAML(sch, data)
			if wantReject && err == nil {
				t.Errorf("schema accepted a file marked `schema: rejects`")
			}
			if !wantReject && err != nil {
				t.Errorf("schema rejected the file: %v", err)
			}
		})
	}
}

// TestEveryMigrationRuleHasABadFile keeps the migration corpus honest.
func TestEveryMigrationRuleHasABadFile(t *testing.T) {
	defs := shippedDefs(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "migrations", "bad", "*.yaml"))
	seen := map[string]bool{}
	for _, file := range files {
		_, problems := checkMigrationFile(t, defs, file)
		for _, p := range problems {
			seen[p.Rule] = true
		}
	}
	for _, rule := range []string{"migration-unknown-saga", "migration-same-version", "migration-unmapped-state",
		"migration-unknown-state", "migration-terminal-state", "bad-expression", "unknown-key", "bad-name", "bad-version", "wrong-type"} {
		if !seen[rule] {
			t.Errorf("rule %s: no migration in testdata/migrations/bad breaks it", rule)
		}
	}
}

// TestParseWithoutFiles: a reader given the definition alone (the HTTP
// validate endpoint) cannot read schema files and says so at the schema.
func TestParseWithoutFiles(t *testing.T) {
	file := filepath.Join("testdata", "good", "rebalance_portfolio.yaml")
	_, problems := definition.Parse(file, readFile(t, file))
	if len(problems) != 1 || problems[0].Rule != "schema-file" || problems[0].Line != 22 || !strings.Contains(problems[0].Message, "cannot be read here") {
		t.Errorf("got %v, want one schema-file problem at line 22", problems)
	}
	def, problems := parseFile(t, file)
	if len(problems) > 0 {
		t.Fatalf("with its directory: %v", problems)
	}
	var whens, branches int
	for _, tr := range def.Transitions {
		if tr.When != nil {
			whens++
		}
		branches += len(tr.Branches)
	}
	if whens != 1 || branches != 4 || len(def.Events) != 4 || def.Events["REBALANCE_REQUESTED"].Schema.Path != "schemas/rebalance_requested.json" {
		t.Errorf("parsed: %d conditions, %d branches, %d contracts", whens, branches, len(def.Events))
	}
}
