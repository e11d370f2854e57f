// Package sagas embeds the saga definitions shipped with saga-machine (the
// *.yaml files beside this one), so that every binary carries them. Load them
// with definition.LoadDir(sagas.FS).
package sagas

import "embed"

// FS holds every *.yaml saga definition of this directory, at its root.
//
//go:embed *.yaml
var FS embed.FS
