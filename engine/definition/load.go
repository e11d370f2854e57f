package definition

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// LoadDir parses every *.yaml and *.yml file at the root of fsys (for
// example sagas.FS, or os.DirFS("sagas")) and returns the valid definitions
// in file-name order together with the problems of all files. Two files
// defining the same saga and version are a problem, and so is a directory
// without any definition. Subdirectories are not read.
func LoadDir(fsys fs.FS) ([]*Definition, Problems) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, Problems{{File: ".", Rule: ruleReadError, Message: fmt.Sprintf("reading the definitions directory: %v", err)}}
	}
	var defs []*Definition
	var problems Problems
	seen := map[string]*Definition{}
	files := 0
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(path.Ext(name))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		files++
		data, err := readFile(fsys, name)
		if err != nil {
			problems = append(problems, Problem{File: name, Rule: ruleReadError, Message: fmt.Sprintf("reading the file: %v", err)})
			continue
		}
		def, ps := ParseWith(name, data, Options{Files: fsys})
		problems = append(problems, ps...)
		if def == nil {
			continue
		}
		id := fmt.Sprintf("%s@%d", def.Saga, def.Version)
		if first, dup := seen[id]; dup {
			problems = append(problems, Problem{
				File: name, Line: def.Pos.Line, Col: def.Pos.Col, Rule: ruleDuplicateSaga,
				Message: fmt.Sprintf("saga %s version %d is already defined in %s: give the new definition a higher version", def.Saga, def.Version, first.File),
			})
			continue
		}
		seen[id] = def
		defs = append(defs, def)
	}
	if files == 0 {
		problems = append(problems, Problem{File: ".", Rule: ruleNoDefinitions, Message: "no saga definitions (*.yaml or *.yml files) found"})
	}
	sortProblems(problems)
	return defs, problems
}

// readFile reads at most MaxFileBytes+1 bytes of file name (see ReadAll).
func readFile(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f)
}
