package engine

import (
	"fmt"
	"io/fs"
	"sort"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Catalog holds the compiled models of every loaded saga definition, by name
// and version. Running instances keep the version they started with, so
// several versions of one saga may be loaded at once. A Catalog is immutable
// and safe for concurrent use.
type Catalog struct {
	byName map[string][]*Model // versions ascending
	list   []*Model            // name ascending, then version ascending
	// migrations of running sagas between loaded versions (WithMigrations)
	migrations map[migrationKey]*definition.Migration
}

// NewCatalog compiles defs into a catalog. Two definitions with the same name
// and version are an error, as is any definition Compile refuses.
func NewCatalog(defs ...*definition.Definition) (*Catalog, error) {
	c := &Catalog{byName: make(map[string][]*Model)}
	seen := make(map[string]string) // "NAME vN" → file
	for _, def := range defs {
		m, err := Compile(def)
		if err != nil {
			return nil, fmt.Errorf("build saga catalog: %w", err)
		}
		if prev, dup := seen[m.String()]; dup {
			return nil, Errorf(CodeConflict, "build saga catalog", "%s is defined twice (%s and %s)", m, prev, def.File)
		}
		seen[m.String()] = def.File
		c.byName[m.Name()] = append(c.byName[m.Name()], m)
		c.list = append(c.list, m)
	}
	for _, ms := range c.byName {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Version() < ms[j].Version() })
	}
	sort.Slice(c.list, func(i, j int) bool {
		if a, b := c.list[i].Name(), c.list[j].Name(); a != b {
			return a < b
		}
		return c.list[i].Version() < c.list[j].Version()
	})
	return c, nil
}

// LoadCatalog parses every definition file at the root of fsys (see
// definition.LoadDir) and compiles the valid ones. The catalog holds every
// definition that loaded and compiled; problems lists everything else, one
// per file position. A caller that wants all-or-nothing checks
// len(problems) > 0. The catalog is never nil.
func LoadCatalog(fsys fs.FS) (*Catalog, definition.Problems) {
	defs, problems := definition.LoadDir(fsys)
	var good []*definition.Definition
	for _, def := range defs {
		if _, err := Compile(def); err != nil {
			problems = append(problems, definition.Problem{
				File: def.File, Line: def.Pos.Line, Col: def.Pos.Col, Rule: "compile", Message: err.Error(),
			})
			continue
		}
		good = append(good, def)
	}
	c, err := NewCatalog(good...)
	if err != nil {
		// LoadDir already refuses duplicate versions, and every definition
		// compiled above: only a broken invariant gets here.
		problems = append(problems, definition.Problem{File: ".", Rule: "compile", Message: err.Error()})
		c, _ = NewCatalog()
	}
	sort.SliceStable(problems, func(i, j int) bool {
		a, b := problems[i], problems[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return c, problems
}

// Get returns the model of saga name at version; version 0 means the newest
// loaded version. An unknown name or version gives an *Error with code
// CodeUnknownSaga.
func (c *Catalog) Get(name string, version int) (*Model, error) {
	ms := c.byName[name]
	if len(ms) == 0 {
		return nil, Errorf(CodeUnknownSaga, "find saga definition", "no saga %s is loaded (loaded: %s)", name, c.names())
	}
	if version == 0 {
		return ms[len(ms)-1], nil
	}
	for _, m := range ms {
		if m.Version() == version {
			return m, nil
		}
	}
	have := make([]int, len(ms))
	for i, m := range ms {
		have[i] = m.Version()
	}
	return nil, Errorf(CodeUnknownSaga, "find saga definition", "saga %s has no version %d (loaded versions: %v)", name, version, have)
}

// Latest returns the newest version of saga name, or nil if none is loaded.
func (c *Catalog) Latest(name string) *Model {
	ms := c.byName[name]
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

// List returns every model, by name then version, both ascending.
func (c *Catalog) List() []*Model { return append([]*Model(nil), c.list...) }

func (c *Catalog) names() string {
	if len(c.list) == 0 {
		return "none"
	}
	out := ""
	last := ""
	for _, m := range c.list {
		if m.Name() == last {
			continue
		}
		if out != "" {
			out += ", "
		}
		out += m.Name()
		last = m.Name()
	}
	return out
}
