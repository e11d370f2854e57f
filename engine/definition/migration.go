package definition

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// Migration moves running sagas from one version of a saga to another
// (sagas/migrations/*.yaml): the state each waiting state of version From
// becomes in version To, and optionally how the context changes. Checked
// against both definitions by CheckMigration; the engine plans it for one
// instance with engine.PlanMigration.
type Migration struct {
	File        string
	Saga        string
	From, To    int
	Description string
	// States maps every non-terminal state of From to a non-terminal state
	// of To, in file order.
	States []StateMapping
	// Context is a CEL expression over context and saga (the saga's
	// version From) giving the new context (an object); nil keeps the
	// context as it is.
	Context *Expr
	Pos     Pos

	sagaPos, fromPos, toPos, statesPos Pos
}

// StateMapping is one line of a migration's states: a state of the old
// version and the state of the new version a saga waiting in it moves to.
type StateMapping struct {
	From, To Name
}

// Target returns the state of version To that state of version From maps
// to, and whether there is one.
func (m *Migration) Target(state string) (string, bool) {
	for _, s := range m.States {
		if s.From.Value == state {
			return s.To.Value, true
		}
	}
	return "", false
}

// Migration rule ids.
const (
	ruleMigrationUnknownSaga  = "migration-unknown-saga"
	ruleMigrationSameVersion  = "migration-same-version"
	ruleMigrationUnmapped     = "migration-unmapped-state"
	ruleMigrationUnknownState = "migration-unknown-state"
	ruleMigrationTerminal     = "migration-terminal-state"
	ruleDuplicateMigration    = "duplicate-migration"
)

var migrationFields = []field{
	{"migration", true, "the saga's name, e.g. MANUAL_CREATE_ORDER"},
	{"from", true, "the version running sagas are on"},
	{"to", true, "the version they move to"},
	{"description", false, ""},
	{"states", true, "every waiting state of version from, mapped to a state of version to"},
	{"context", false, ""},
}

var migrationKey = regexp.MustCompile(`(?m)^migration\s*:`)

// IsMigration reports whether data looks like a migration file (it has a
// top-level `migration:` key) rather than a saga definition.
func IsMigration(data []byte) bool { return migrationKey.Match(data) }

// ParseMigration reads one migration file and checks its shape (names,
// versions, the context expression); CheckMigration checks it against the
// two definitions. The limits of Parse apply. When Problems is empty the
// Migration is complete.
func ParseMigration(name string, data []byte) (*Migration, Problems) {
	p := &parser{file: name, suggestBudget: suggestCells, src: data}
	if len(data) > MaxFileBytes {
		p.add(Pos{Line: 1, Col: 1}, ruleFileTooLarge, "the file is larger than %d bytes (1 MiB): a migration is a few lines", MaxFileBytes)
		return nil, p.sorted()
	}
	root := p.decode(data)
	if root == nil || !p.measure(root) {
		return nil, p.sorted()
	}
	m := p.migration(root)
	if len(p.problems) > 0 {
		return nil, p.sorted()
	}
	return m, nil
}

func (p *parser) migration(root *yaml.Node) *Migration {
	m := &Migration{File: p.file, Pos: posOf(root)}
	top, ok := p.object(root, "the migration", migrationFields)
	if !ok {
		return nil
	}
	if e, ok := top["migration"]; ok {
		n, _ := p.name(e.val, "saga", upperSnake)
		m.Saga, m.sagaPos = n.Value, n.Pos
	}
	version := func(key string) (int, Pos) {
		e, ok := top[key]
		if !ok {
			return 0, Pos{}
		}
		v, ok := p.integer(e.val, ruleBadVersion, key)
		if ok && v < 1 {
			p.addAt(e.val, ruleBadVersion, "%s %d must be a positive whole number (1, 2, ...)", key, v)
		}
		return v, posOf(e.val)
	}
	m.From, m.fromPos = version("from")
	m.To, m.toPos = version("to")
	if m.From > 0 && m.From == m.To {
		p.add(m.toPos, ruleMigrationSameVersion, "from and to are both version %d: a migration moves sagas to another version", m.To)
	}
	if e, ok := top["description"]; ok {
		m.Description, _ = p.str(e.val, "a text for description")
	}
	if e, ok := top["states"]; ok {
		m.statesPos = posOf(e.key)
		entries, ok := p.entries(e.val, "a mapping of the old version's states to the new version's")
		if ok && len(entries) > MaxStates {
			p.tooMany(entries[MaxStates].key, ruleTooManyStates, MaxStates, "states")
			entries = nil
		}
		for _, en := range entries {
			from, _ := p.name(en.key, "state", upperSnake)
			to, ok := p.name(en.val, "state", upperSnake)
			if ok {
				m.States = append(m.States, StateMapping{From: from, To: to})
			}
		}
	}
	if e, ok := top["context"]; ok {
		m.Context = p.expression(e.val, expr.Value, true, "the context transform")
	}
	return m
}

// CheckMigration checks m against the definitions of its two versions:
// every state it names exists, every non-terminal state of from is mapped,
// and only to non-terminal states of to (a running saga stays running;
// finished sagas are not migrated). from or to nil means that version is not
// loaded, which is a problem too.
func CheckMigration(m *Migration, from, to *Definition) Problems {
	p := &parser{file: m.File, suggestBudget: suggestCells}
	for _, d := range []struct {
		def     *Definition
		version int
		pos     Pos
	}{{from, m.From, m.fromPos}, {to, m.To, m.toPos}} {
		if d.def == nil {
			p.add(d.pos, ruleMigrationUnknownSaga, "saga %s version %d is not loaded: a migration names two loaded versions of one saga", m.Saga, d.version)
		} else if d.def.Saga != m.Saga || d.def.Version != d.version {
			p.add(d.pos, ruleMigrationUnknownSaga, "the definition given for %s version %d is %s version %d", m.Saga, d.version, d.def.Saga, d.def.Version)
		}
	}
	if len(p.problems) > 0 {
		return p.sorted()
	}
	terminal := func(def *Definition, s string) string {
		for _, f := range def.Final {
			if f.Value == s {
				return "final"
			}
		}
		for _, f := range def.Failed {
			if f.Value == s {
				return "failed"
			}
		}
		return ""
	}
	names := func(def *Definition) []string {
		out := make([]string, 0, len(def.States))
		for n := range def.States {
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	}
	fromNames, toNames := names(from), names(to)
	mapped := map[string]bool{}
	for _, s := range m.States {
		mapped[s.From.Value] = true
		unknown := func(n Name, def *Definition, candidates []string) {
			msg := fmt.Sprintf("version %d of %s has no state %s", def.Version, def.Saga, n.Value)
			if sug := p.suggest(n.Value, candidates); sug != "" {
				msg += fmt.Sprintf("; did you mean %s?", sug)
			}
			p.add(n.Pos, ruleMigrationUnknownState, "%s", msg)
		}
		switch {
		case from.States[s.From.Value] == nil:
			unknown(s.From, from, fromNames)
		case terminal(from, s.From.Value) != "":
			p.add(s.From.Pos, ruleMigrationTerminal, "%s is a %s state of version %d: finished sagas are not migrated; remove this line", s.From.Value, terminal(from, s.From.Value), from.Version)
		}
		switch {
		case to.States[s.To.Value] == nil:
			unknown(s.To, to, toNames)
		case terminal(to, s.To.Value) != "":
			p.add(s.To.Pos, ruleMigrationTerminal, "%s is a %s state of version %d: a running saga must stay running when it migrates (abort it instead to end it)", s.To.Value, terminal(to, s.To.Value), to.Version)
		}
	}
	var missing []string
	for _, n := range fromNames {
		if !mapped[n] && terminal(from, n) == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		at := m.statesPos
		if at.Line == 0 {
			at = m.Pos
		}
		p.add(at, ruleMigrationUnmapped, "the waiting states %s of version %d are not mapped: a saga waiting in one of them would have nowhere to go; map each to a state of version %d", joinFew(missing, 10), from.Version, to.Version)
	}
	return p.sorted()
}

// LoadMigrations parses every *.yaml / *.yml file at the root of fsys (for
// example sagas/migrations) and checks each against defs (the loaded
// definitions, see LoadDir). It returns the valid migrations in file-name
// order and the problems of all files; two files for the same saga and
// versions are a problem. An empty directory is no problem.
func LoadMigrations(fsys fs.FS, defs []*Definition) ([]*Migration, Problems) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, Problems{{File: ".", Rule: ruleReadError, Message: fmt.Sprintf("reading the migrations directory: %v", err)}}
	}
	byVersion := map[string]*Definition{}
	for _, d := range defs {
		byVersion[fmt.Sprintf("%s@%d", d.Saga, d.Version)] = d
	}
	var out []*Migration
	var problems Problems
	seen := map[string]*Migration{}
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(path.Ext(name))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		data, err := readFile(fsys, name)
		if err != nil {
			problems = append(problems, Problem{File: name, Rule: ruleReadError, Message: fmt.Sprintf("reading the file: %v", err)})
			continue
		}
		m, ps := ParseMigration(name, data)
		problems = append(problems, ps...)
		if m == nil {
			continue
		}
		if ps := CheckMigration(m, byVersion[fmt.Sprintf("%s@%d", m.Saga, m.From)], byVersion[fmt.Sprintf("%s@%d", m.Saga, m.To)]); len(ps) > 0 {
			problems = append(problems, ps...)
			continue
		}
		id := fmt.Sprintf("%s@%d→%d", m.Saga, m.From, m.To)
		if first, dup := seen[id]; dup {
			problems = append(problems, Problem{File: name, Line: m.Pos.Line, Col: m.Pos.Col, Rule: ruleDuplicateMigration,
				Message: fmt.Sprintf("the migration of %s from version %d to %d is already defined in %s", m.Saga, m.From, m.To, first.File)})
			continue
		}
		seen[id] = m
		out = append(out, m)
	}
	sortProblems(problems)
	return out, problems
}
