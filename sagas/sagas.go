// Package sagas embeds the saga definitions shipped with saga-machine (the
// *.yaml files beside this one) and the migrations of running sagas between
// their versions (migrations/*.yaml), so that every binary carries them.
// Load the definitions with definition.LoadDir(sagas.FS) and the
// migrations with definition.LoadMigrations(sagas.Migrations(), defs).
package sagas

import (
	"embed"
	"io/fs"
)

// FS holds every *.yaml saga definition of this directory, at its root,
// and the migrations under migrations/.
//
//go:embed *.yaml migrations/*.yaml
var FS embed.FS

// Migrations returns the migrations directory of FS (migrations/*.yaml).
func Migrations() fs.FS {
	sub, err := fs.Sub(FS, "migrations")
	if err != nil {
		panic("sagas: the embedded migrations directory: " + err.Error()) // a fixed, valid path
	}
	return sub
}
