package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// MigrateSagasRequest is the body of POST /migrations: migrate many
// running sagas of one definition version at once.
type MigrateSagasRequest struct {
	// Saga is the definition name. Required.
	Saga string `json:"saga"`
	// From is the version the sagas are on. Required.
	From int `json:"from"`
	// To is the version to move them to. Required; the migration of Saga
	// from From to To must be loaded.
	To int `json:"to"`
	// State, when set, selects only the sagas in this waiting state of
	// version From.
	State string `json:"state,omitempty"`
	// IDs, when set, are the sagas to migrate instead of a selection (at
	// most engine.MaxMigrateLimit, each once; without Limit and Cursor).
	IDs []string `json:"ids,omitempty"`
	// Limit is how many sagas to select: default
	// engine.DefaultMigrateLimit, at most engine.MaxMigrateLimit.
	Limit *int `json:"limit,omitempty"`
	// Cursor continues a selection: the next of the previous answer.
	Cursor string `json:"cursor,omitempty"`
	// DryRun, true unless sent false, plans each saga's migration and
	// stores nothing.
	DryRun *bool `json:"dry_run,omitempty"`
	// Reason says why; required to apply, recorded in each migrated
	// saga's timeline.
	Reason string `json:"reason,omitempty"`
}

// UnmarshalJSON decodes the body strictly (no unknown field) and refuses
// null for any field: the spec has no null here, and a null limit or
// dry_run must not be read as absent (dry_run absent is a dry run, but a
// client sending null may think otherwise).
func (m *MigrateSagasRequest) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if bytes.Equal(bytes.TrimSpace(fields[name]), []byte("null")) {
			return fmt.Errorf("field %q is null: give a value or leave it out", name)
		}
	}
	type plain MigrateSagasRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(m))
}

// MigrateSagasResult answers POST /migrations.
type MigrateSagasResult struct {
	// Saga, From, To and State repeat the request.
	Saga  string `json:"saga"`
	From  int    `json:"from"`
	To    int    `json:"to"`
	State string `json:"state,omitempty"`
	// DryRun is true when nothing was stored.
	DryRun bool `json:"dry_run"`
	// Migration is the file of the migration used (under sagas/migrations).
	Migration string `json:"migration"`
	// Results holds one line per saga, in the order of the selection
	// (newest first) or of ids.
	Results []MigrateSagaLine `json:"results"`
	// Totals counts the results by outcome.
	Totals MigrateTotals `json:"totals"`
	// Next, when set, selects the following sagas: send it as cursor (with
	// the same saga, from, to and state).
	Next string `json:"next,omitempty"`
}

// MigrateSagaLine is what POST /migrations did with one saga.
type MigrateSagaLine struct {
	// ID is the saga.
	ID string `json:"id"`
	// Outcome is applied, would-apply (dry run), refused (the saga cannot
	// migrate; nothing changed) or failed (saga-machine could not finish
	// it; nothing changed, it may be tried again).
	Outcome engine.MigrateOutcome `json:"outcome"`
	// VersionBefore and StateBefore are the saga's as read (absent when
	// there is no such saga).
	VersionBefore int    `json:"version_before,omitempty"`
	StateBefore   string `json:"state_before,omitempty"`
	// VersionAfter and StateAfter are the saga's once migrated, or as it
	// would be (absent when refused or failed).
	VersionAfter int    `json:"version_after,omitempty"`
	StateAfter   string `json:"state_after,omitempty"`
	// Rev is the stored revision after an apply.
	Rev int64 `json:"rev,omitempty"`
	// Code and Detail say why a saga was refused or failed, as the
	// problem of POST /sagas/{id}/migrations would.
	Code   engine.Code `json:"code,omitempty"`
	Detail string      `json:"detail,omitempty"`
}

// MigrateTotals counts the results of POST /migrations by outcome.
type MigrateTotals struct {
	Selected   int `json:"selected"`
	Applied    int `json:"applied"`
	WouldApply int `json:"would_apply"`
	Refused    int `json:"refused"`
	Failed     int `json:"failed"`
}

// migrateSagas migrates many running sagas of one definition version
// (engine.Orchestrator.MigrateMany): a dry run of each unless dry_run is
// false, else each applied in its own transaction.
func (s *server) migrateSagas(w http.ResponseWriter, r *http.Request) {
	const op = "migrate sagas"
	if err := onlyParams(r, op); err != nil {
		writeProblem(w, r, err)
		return
	}
	var req MigrateSagasRequest
	if err := decodeJSON(w, r, op, &req, false); err != nil {
		writeProblem(w, r, err)
		return
	}
	dry := req.DryRun == nil || *req.DryRun
	limit := 0
	if req.Limit != nil {
		limit = *req.Limit
	}
	switch {
	case strings.TrimSpace(req.Saga) == "":
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "saga" is required: the definition name, e.g. MANUAL_CREATE_ORDER`))
		return
	case req.From <= 0:
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "from" is required: the version the sagas are on (a positive number)`))
		return
	case req.To <= 0:
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "to" is required: the version to move the sagas to (a positive number)`))
		return
	case req.Limit != nil && (limit < 1 || limit > engine.MaxMigrateLimit):
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "limit" must be from 1 to %d, got %d`, engine.MaxMigrateLimit, limit))
		return
	case req.IDs != nil && len(req.IDs) == 0:
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "ids" is empty: name at least one saga, or leave it out to select the running sagas`))
		return
	case !dry && strings.TrimSpace(req.Reason) == "":
		writeProblem(w, r, engine.Errorf(engine.CodeInvalid, op, `field "reason" is required to apply a migration: say why, it goes into each saga's timeline`))
		return
	}
	res, err := s.orch.MigrateMany(r.Context(), s.store, engine.MigrateManyRequest{
		Saga: req.Saga, From: req.From, To: req.To, State: req.State, IDs: req.IDs, Limit: limit, Cursor: req.Cursor,
		Apply: !dry, Actor: actor(r), Reason: req.Reason,
	})
	if err != nil {
		if errors.Is(err, engine.ErrNoMigration) {
			err = &engine.Error{Code: CodeUnknownMigration, Op: op, Err: err}
		}
		writeProblem(w, r, err)
		return
	}
	out := MigrateSagasResult{
		Saga: req.Saga, From: req.From, To: req.To, State: req.State, DryRun: dry, Migration: res.Migration,
		Results: make([]MigrateSagaLine, 0, len(res.Items)), Next: res.Next,
	}
	for _, it := range res.Items {
		line := MigrateSagaLine{ID: it.SagaID, Outcome: it.Outcome}
		if it.Before != nil {
			line.VersionBefore, line.StateBefore = it.Before.SagaVersion, it.Before.State
		}
		if it.After != nil {
			line.VersionAfter, line.StateAfter = it.After.SagaVersion, it.After.State
			if it.Outcome == engine.OutcomeApplied {
				line.Rev = it.After.Rev
			}
		}
		if it.Err != nil {
			p := problemFor(it.Err, "/api/v1/sagas/"+url.PathEscape(it.SagaID)+"/migrations")
			line.Code, line.Detail = engine.Code(p.Code), p.Detail
			if errors.Is(it.Err, engine.ErrNoMigration) {
				line.Code = CodeUnknownMigration
			}
			if it.Outcome == engine.OutcomeFailed {
				s.log.Error("migrate sagas: one saga failed", "saga_id", it.SagaID, "err", it.Err)
			}
		}
		out.Results = append(out.Results, line)
	}
	out.Totals = MigrateTotals{
		Selected: len(res.Items), Applied: res.Count(engine.OutcomeApplied), WouldApply: res.Count(engine.OutcomeWouldApply),
		Refused: res.Count(engine.OutcomeRefused), Failed: res.Count(engine.OutcomeFailed),
	}
	writeJSON(w, http.StatusOK, out)
}
