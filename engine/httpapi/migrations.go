package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// CodeUnknownMigration answers a migration request naming a target version
// that no loaded migration leads to from the saga's version.
const CodeUnknownMigration engine.Code = "unknown-migration"

// MigrateRequest is the body of POST /sagas/{id}/migrations.
type MigrateRequest struct {
	// To is the version to move the saga to. Required.
	To int `json:"to"`
	// From, when set, is the version the caller expects the saga to be on;
	// a saga on another version is refused (409) and nothing changes.
	From int `json:"from,omitempty"`
	// DryRun, true unless sent false, plans the migration and stores
	// nothing.
	DryRun *bool `json:"dry_run,omitempty"`
	// Reason says why; required to apply, recorded in the timeline.
	Reason string `json:"reason,omitempty"`
}

// MigrateResult answers POST /sagas/{id}/migrations.
type MigrateResult struct {
	// DryRun is true when nothing was stored.
	DryRun bool `json:"dry_run"`
	// Applied is true when the migration was stored.
	Applied bool `json:"applied"`
	// Migration is the file of the migration used (under sagas/migrations).
	Migration string `json:"migration"`
	// Before is the saga as it was stored before.
	Before engine.Instance `json:"before"`
	// After is the saga once migrated (as stored, or as it would be).
	After engine.Instance `json:"after"`
	// Entry is the timeline entry recorded (or that would be).
	Entry engine.HistoryEntry `json:"entry"`
}

// migrateSaga moves one running saga to another version of its definition
// by a loaded migration (engine.Orchestrator.Migrate); a dry run unless
// dry_run is false.
func (s *server) migrateSaga(w http.ResponseWriter, r *http.Request) {
	const op = "migrate saga"
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	var req MigrateRequest
	if err := decodeJSON(w, r, op, &req, false); err != nil {
		writeProblem(w, r, err)
		return
	}
	dry := req.DryRun == nil || *req.DryRun
	switch {
	case req.To <= 0:
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "to" is required: the version to move the saga to (a positive number)`))
		return
	case req.From < 0:
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "from" must be a positive number (the version the saga is expected on) or left out`))
		return
	case !dry && strings.TrimSpace(req.Reason) == "":
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "reason" is required to apply a migration: say why, it goes into the saga's timeline`))
		return
	}
	res, err := s.orch.Migrate(r.Context(), engine.MigrateRequest{
		SagaID: id, To: req.To, From: req.From, Apply: !dry, Actor: actor(r), Reason: req.Reason,
	})
	if err != nil {
		if errors.Is(err, engine.ErrNoMigration) {
			err = &engine.Error{Code: CodeUnknownMigration, Op: op, Err: err}
		}
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, MigrateResult{
		DryRun: dry, Applied: res.Applied, Migration: res.Migration,
		Before: res.Before, After: res.After, Entry: res.Entry,
	})
}
