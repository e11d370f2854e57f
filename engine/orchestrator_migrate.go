package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// ErrNoMigration is in the chain of the error Migrate returns when no
// migration from the saga's version to the requested one is loaded (an
// *Error with CodeUnknownSaga whose Message says which migrations are).
var ErrNoMigration error = &Error{Code: CodeUnknownSaga, Op: "find migration"}

// EventMigrate is the Event of the timeline entry (Kind EntryOperator) an
// applied migration records.
const EventMigrate = "MIGRATE"

// SagaLocker is implemented by a Tx that can lock sagas' rows until the
// transaction ends (engine/sqlstore on PostgreSQL: SELECT … FOR UPDATE).
// Migrate locks the saga before it reads it, so that events for it wait for
// the migration instead of conflicting with it. Without it the optimistic
// check of Tx.Update (Rev) still serializes them.
type SagaLocker interface {
	// LockSagas locks the rows of the sagas ids (those that exist).
	LockSagas(ctx context.Context, ids []string) error
}

// migrationKey names one migration in a catalog.
type migrationKey struct {
	saga     string
	from, to int
}

// WithMigrations returns a catalog with c's models and the migrations migs
// (definition.LoadMigrations reads them from sagas/migrations). Every
// migration must fit two loaded versions of its saga (CheckMigration
// against their definitions) and be given once; c is not changed.
func (c *Catalog) WithMigrations(migs ...*definition.Migration) (*Catalog, error) {
	const op = "add migrations to the saga catalog"
	out := &Catalog{byName: c.byName, list: c.list, migrations: make(map[migrationKey]*definition.Migration, len(c.migrations)+len(migs))}
	for k, m := range c.migrations {
		out.migrations[k] = m
	}
	for _, mig := range migs {
		if mig == nil {
			return nil, Errorf(CodeInvalid, op, "a migration is nil")
		}
		from, err := c.Get(mig.Saga, mig.From)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", op, mig.File, err)
		}
		to, err := c.Get(mig.Saga, mig.To)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", op, mig.File, err)
		}
		if probs := definition.CheckMigration(mig, from.Definition(), to.Definition()); len(probs) > 0 {
			return nil, &Error{Code: CodeInvalid, Op: op, Message: mig.File + " does not fit the loaded definitions", Err: probs}
		}
		k := migrationKey{mig.Saga, mig.From, mig.To}
		if prev, dup := out.migrations[k]; dup {
			return nil, Errorf(CodeConflict, op, "the migration of %s from version %d to %d is given twice (%s and %s)", mig.Saga, mig.From, mig.To, prev.File, mig.File)
		}
		out.migrations[k] = mig
	}
	return out, nil
}

// Migration returns the loaded migration of saga from version from to
// version to, if there is one.
func (c *Catalog) Migration(saga string, from, to int) (*definition.Migration, bool) {
	m, ok := c.migrations[migrationKey{saga, from, to}]
	return m, ok
}

// Migrations returns every loaded migration by saga, then from and to
// version.
func (c *Catalog) Migrations() []*definition.Migration {
	out := make([]*definition.Migration, 0, len(c.migrations))
	for _, m := range c.migrations {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Saga != b.Saga {
			return a.Saga < b.Saga
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	return out
}

// migrationsFrom names the loaded migrations of saga from version from, for
// a refusal.
func (c *Catalog) migrationsFrom(saga string, from int) string {
	var have []string
	for _, m := range c.Migrations() {
		if m.Saga == saga && m.From == from {
			have = append(have, fmt.Sprintf("%d → %d (%s)", m.From, m.To, m.File))
		}
	}
	if len(have) == 0 {
		return "none is loaded from that version"
	}
	return "loaded from that version: " + strings.Join(have, ", ")
}

// MigrateRequest asks to move one running saga to another version of its
// definition by a loaded migration.
type MigrateRequest struct {
	// SagaID is the saga to migrate. Required.
	SagaID string
	// Saga, when not empty, is the definition the caller expects the saga
	// to be of: a saga of another definition is refused with CodeConflict
	// (MigrateMany sets it, so that an id of another saga among its ids
	// is not moved by that saga's migration).
	Saga string
	// State, when not empty, is the state the caller expects the saga in:
	// a saga in another state is refused with CodeConflict (MigrateMany's
	// ids with a state).
	State string
	// To is the version to move to. Required; the migration from the
	// saga's current version to it must be loaded.
	To int
	// From, when not 0, is the version the caller expects the saga to be
	// on: a saga on another version is refused with CodeConflict (a retried
	// apply whose first attempt went through is refused this way, as is one
	// the caller planned on stale data).
	From int
	// Apply stores the migration; false is a dry run, which changes
	// nothing and returns what applying would store.
	Apply bool
	// Actor names who migrates (the API caller's subject); required to
	// apply, recorded in the timeline.
	Actor string
	// Reason says why; recorded in the timeline with the versions and
	// the state mapping.
	Reason string
}

// MigrateResult is what Migrate did, or would do on a dry run.
type MigrateResult struct {
	// Before is the saga as stored before the migration.
	Before Instance
	// After is the saga once migrated (on a dry run: as it would be
	// stored, with Before's Rev).
	After Instance
	// Migration is the file of the migration used.
	Migration string
	// Applied reports whether the migration was stored (false: dry run).
	Applied bool
	// Entry is the timeline entry recorded (on a dry run: the one that
	// would be).
	Entry HistoryEntry
}

// Migrate moves one running saga to version req.To by the loaded migration
// from its version (Catalog.WithMigrations), planned by PlanMigration. A
// dry run (Apply false) reads the saga and plans without storing anything.
// An apply locks the saga's row (SagaLocker), reads it, plans and stores
// the migrated saga with a timeline entry (EventMigrate: the actor, the
// versions, the state mapping, the reason) in one transaction: events for
// the saga wait for it or are applied on the version it leaves, never on a
// half-migrated saga. No command is sent: the pending command, if any,
// stays pending and its reply is applied by the new version.
//
// Refusals: CodeInvalid (bad request), CodeNotFound (no such saga),
// CodeUnknownSaga with ErrNoMigration (no migration from the saga's
// version to req.To), CodeConflict (already on req.To, not on req.From, or
// any refusal of PlanMigration: not running, compensating, holding a
// deferred command, in a parallel step, ...). A refusal changes nothing;
// when the saga was read, the result's Before holds it (the rest is
// empty).
func (o *Orchestrator) Migrate(ctx context.Context, req MigrateRequest) (MigrateResult, error) {
	op := "migrate saga " + req.SagaID
	switch {
	case strings.TrimSpace(req.SagaID) == "":
		return MigrateResult{}, Errorf(CodeInvalid, "migrate saga", "the saga id is empty")
	case req.To <= 0:
		return MigrateResult{}, Errorf(CodeInvalid, op, "the target version must be a positive number, not %d", req.To)
	case req.From < 0:
		return MigrateResult{}, Errorf(CodeInvalid, op, "the expected version must be a positive number, not %d", req.From)
	case req.Apply && strings.TrimSpace(req.Actor) == "":
		return MigrateResult{}, Errorf(CodeInvalid, op, "actor is empty: operator actions must name who acted")
	}
	var res MigrateResult
	var b *batch
	var read *Instance // the saga as read, for a refusal
	plan := func(ctx context.Context, tx Tx) error {
		b = newBatch(o.cfg.Clock().UTC())
		if l, ok := tx.(SagaLocker); ok && req.Apply {
			if err := l.LockSagas(ctx, []string{req.SagaID}); err != nil {
				return fmt.Errorf("lock saga %s: %w", req.SagaID, err)
			}
		}
		loaded, err := tx.Load(ctx, []string{req.SagaID})
		if err != nil {
			return fmt.Errorf("load saga %s: %w", req.SagaID, err)
		}
		inst := loaded[req.SagaID]
		if inst == nil {
			return permanent{Errorf(CodeNotFound, op, "saga %s does not exist", req.SagaID)}
		}
		read = inst
		r, err := o.planMigration(op, b, req, *inst)
		if err != nil {
			return permanent{err}
		}
		res = r
		if !req.Apply {
			return nil
		}
		b.add(loaded)
		w := b.sagas[req.SagaID]
		*w.inst = res.After
		w.changed = true
		b.entries = append(b.entries, res.Entry)
		if err := b.write(ctx, tx); err != nil {
			return err
		}
		res.After, res.Applied = *w.inst, true
		return nil
	}
	var err error
	if req.Apply {
		err = o.inTx(ctx, plan)
	} else {
		// A dry run stores nothing: its transaction is always rolled back.
		err = o.st.InTx(ctx, func(ctx context.Context, tx Tx) error {
			if err := plan(ctx, tx); err != nil {
				return err
			}
			return errDryRun
		})
		if errors.Is(err, errDryRun) {
			err = nil
		}
		var p permanent
		if errors.As(err, &p) {
			err = p.error
		}
	}
	if err != nil {
		var refused MigrateResult
		if read != nil && isRefusal(err) {
			refused.Before = *read
		}
		return refused, fmt.Errorf("%s: %w", op, err)
	}
	if res.Applied {
		b.committed()
		o.log.Info("operator migrated saga", "saga_id", res.After.ID, "saga", res.After.Saga,
			"from_version", res.Before.SagaVersion, "to_version", res.After.SagaVersion,
			"from_state", res.Before.State, "to_state", res.After.State, "actor", req.Actor, "reason", req.Reason)
		o.Wake()
	}
	return res, nil
}

// errDryRun rolls back the transaction of a dry run.
var errDryRun = errors.New("dry run: roll back")

// planMigration finds the migration for inst and plans it: the migrated
// instance and the timeline entry that records it.
func (o *Orchestrator) planMigration(op string, b *batch, req MigrateRequest, inst Instance) (MigrateResult, error) {
	if req.Saga != "" && inst.Saga != req.Saga {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is a %s, not a %s as the request expects: nothing was changed", inst.Saga, req.Saga)
	}
	if req.From != 0 && inst.SagaVersion != req.From {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is on version %d, not %d as the request expects: nothing was changed", inst.SagaVersion, req.From)
	}
	if inst.SagaVersion == req.To {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is already on version %d of %s: nothing to migrate", req.To, inst.Saga)
	}
	if req.State != "" && inst.State != req.State {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is in %s, not in %s as the request expects: nothing was changed", inst.State, req.State)
	}
	mig, ok := o.cat.Migration(inst.Saga, inst.SagaVersion, req.To)
	if !ok {
		return MigrateResult{}, &Error{Code: CodeUnknownSaga, Op: op,
			Message: fmt.Sprintf("no migration of %s from version %d to %d is loaded (%s)", inst.Saga, inst.SagaVersion, req.To, o.cat.migrationsFrom(inst.Saga, inst.SagaVersion)),
			Err:     ErrNoMigration}
	}
	from, err := o.cat.Get(inst.Saga, inst.SagaVersion)
	if err != nil {
		return MigrateResult{}, err
	}
	to, err := o.cat.Get(inst.Saga, req.To)
	if err != nil {
		return MigrateResult{}, err
	}
	after, err := PlanMigration(from, to, mig, inst)
	if err != nil {
		return MigrateResult{}, err
	}
	after.UpdatedAt = b.now
	reason := fmt.Sprintf("migrated %s from version %d to %d by %s: %s → %s", inst.Saga, inst.SagaVersion, req.To, mig.File, inst.State, after.State)
	if r := strings.TrimSpace(req.Reason); r != "" {
		reason += "; " + r
	}
	entry := HistoryEntry{
		SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: EventMigrate,
		FromState: inst.State, ToState: after.State, Actor: req.Actor, Reason: reason,
	}
	return MigrateResult{Before: inst, After: after, Migration: mig.File, Entry: entry}, nil
}

// Limits of MigrateMany.
const (
	// DefaultMigrateLimit is how many sagas one MigrateMany call selects
	// when the request names no limit.
	DefaultMigrateLimit = 100
	// MaxMigrateLimit is the most sagas one MigrateMany call handles, by
	// selection or by ids.
	MaxMigrateLimit = 1000
	// MaxMigrateReason is the longest reason (in characters) MigrateMany
	// accepts: it is copied into the timeline of every saga it migrates,
	// so a long one would be multiplied by up to MaxMigrateLimit.
	MaxMigrateReason = 1000
)

// InstanceLister lists sagas page by page (Queries.ListInstances;
// engine/sqlstore implements it). MigrateMany selects with it.
type InstanceLister interface {
	// ListInstances returns one page of sagas matching f, newest first.
	ListInstances(ctx context.Context, f SagaFilter) (SagaPage, error)
}

// MigrateManyRequest asks to move many running sagas of one definition
// version to another version by a loaded migration: those running in
// version From (in State, if given), newest first, Limit at a time, or
// exactly the sagas IDs.
type MigrateManyRequest struct {
	// Saga is the definition name. Required.
	Saga string
	// From is the version the sagas are on; To the version to move them
	// to. Both required, and the migration of Saga from From to To must
	// be loaded.
	From, To int
	// State, when not empty, selects only the sagas in this state of
	// version From (a state that is neither final nor failed).
	State string
	// IDs, when not empty, are the sagas to migrate, instead of a
	// selection: at most MaxMigrateLimit distinct ids, without Limit or
	// Cursor. Each must be a running saga of Saga on version From (and in
	// State, if given); any other is reported refused.
	IDs []string
	// Limit is how many sagas to select: 0 means DefaultMigrateLimit, at
	// most MaxMigrateLimit.
	Limit int
	// Cursor continues a selection: the Next of the previous result.
	Cursor string
	// Apply stores the migrations, each saga in its own transaction (as
	// Migrate); false is a dry run of each, which changes nothing.
	Apply bool
	// Actor and Reason are recorded in each migrated saga's timeline (as
	// Migrate's); Actor is required to apply.
	Actor, Reason string
}

// MigrateOutcome says what MigrateMany did with one saga.
type MigrateOutcome string

// The outcomes of one saga in MigrateMany.
const (
	// OutcomeApplied: the saga was migrated (its own transaction, a
	// MIGRATE timeline entry).
	OutcomeApplied MigrateOutcome = "applied"
	// OutcomeWouldApply: a dry run found that the saga would migrate.
	OutcomeWouldApply MigrateOutcome = "would-apply"
	// OutcomeRefused: the saga cannot migrate (the refusal Migrate gives
	// it: not running, compensating, in a parallel step, another version
	// or definition, no such saga, ...); nothing changed.
	OutcomeRefused MigrateOutcome = "refused"
	// OutcomeFailed: saga-machine could not finish the saga's migration
	// (the store failed, the request was cancelled); its transaction was
	// rolled back and it may be tried again.
	OutcomeFailed MigrateOutcome = "failed"
)

// MigrateItem is the result for one saga of MigrateMany.
type MigrateItem struct {
	// SagaID is the saga.
	SagaID string
	// Outcome is what happened to it.
	Outcome MigrateOutcome
	// Before is the saga as stored before (as selected, for a refusal
	// before it was read again); nil when no such saga exists.
	Before *Instance
	// After is the saga once migrated (applied) or as it would be (dry
	// run); nil for a refusal or a failure.
	After *Instance
	// Err is the refusal or failure (an *Error for a refusal), nil
	// otherwise.
	Err error
}

// MigrateManyResult is what MigrateMany did, saga by saga, in the order
// of the selection (newest first) or of the ids.
type MigrateManyResult struct {
	// Migration is the file of the migration used.
	Migration string
	// Items holds one result per saga selected.
	Items []MigrateItem
	// Next, when not empty, selects the following sagas (as Cursor of
	// the next request): more matched than Limit.
	Next string
}

// Count returns how many items have outcome.
func (r MigrateManyResult) Count(outcome MigrateOutcome) int {
	n := 0
	for _, it := range r.Items {
		if it.Outcome == outcome {
			n++
		}
	}
	return n
}

// MigrateMany migrates many running sagas of req.Saga from version
// req.From to req.To, each with Migrate's logic: a dry run of each
// (req.Apply false: nothing changes), or an apply of each in its own
// transaction (the saga's row locked, read again, planned, stored with its
// MIGRATE timeline entry), so that one saga's refusal or failure undoes
// none of the others. The sagas are req.IDs, or the running sagas of
// req.Saga on version req.From (in req.State if given) that list selects,
// newest first, req.Limit at a time; Next continues the selection (on an
// apply the migrated sagas leave it, the refused ones stay behind the
// cursor).
//
// The request is refused as a whole, before any saga is read, with
// CodeInvalid (a bad field; a state that is not a waiting state of
// version req.From), CodeNotFound (req.Saga is not loaded) or
// CodeUnknownSaga with ErrNoMigration (no loaded migration from req.From
// to req.To). Afterwards each saga has its own outcome; MigrateMany
// returns an error only when the selection cannot be read.
func (o *Orchestrator) MigrateMany(ctx context.Context, list InstanceLister, req MigrateManyRequest) (MigrateManyResult, error) {
	const op = "migrate sagas"
	mig, err := o.checkMigrateMany(op, req)
	if err != nil {
		return MigrateManyResult{}, err
	}
	var selected []MigrateItem
	var next string
	if len(req.IDs) > 0 {
		for _, id := range req.IDs {
			selected = append(selected, MigrateItem{SagaID: id})
		}
	} else {
		if list == nil {
			return MigrateManyResult{}, Errorf(CodeInvalid, op, "no store to select the sagas from")
		}
		selected, next, err = selectMigrating(ctx, list, req)
		if err != nil && req.Cursor != "" && ErrorCode(err) == CodeInvalid {
			// The request is checked above; what the store refuses is the
			// cursor, which only it can read.
			return MigrateManyResult{}, &Error{Code: CodeInvalid, Op: op, Err: err,
				Message: fmt.Sprintf("cursor %q is not one this API returned: pass the next of the previous result (with the same saga, from, to and state), or no cursor", abbreviateCursor(req.Cursor))}
		}
		if err != nil {
			return MigrateManyResult{}, fmt.Errorf("%s: select the running sagas of %s v%d: %w", op, req.Saga, req.From, err)
		}
	}
	res := MigrateManyResult{Migration: mig.File, Items: selected, Next: next}
	for i := range res.Items {
		it := &res.Items[i]
		if err := ctx.Err(); err != nil {
			it.Outcome, it.Err = OutcomeFailed, &Error{Code: CodeUnavailable, Op: op, Message: "not tried: the request was cancelled", Err: err}
			continue
		}
		r, err := o.Migrate(ctx, MigrateRequest{SagaID: it.SagaID, Saga: req.Saga, From: req.From, State: req.State, To: req.To,
			Apply: req.Apply, Actor: req.Actor, Reason: req.Reason})
		if err != nil && r.Before.ID != "" {
			before := r.Before
			it.Before = &before
		}
		switch {
		case err == nil:
			before, after := r.Before, r.After
			it.Before, it.After = &before, &after
			it.Outcome = OutcomeWouldApply
			if r.Applied {
				it.Outcome = OutcomeApplied
			}
		case isRefusal(err):
			it.Outcome, it.Err = OutcomeRefused, err
		default:
			it.Outcome, it.Err = OutcomeFailed, err
		}
	}
	o.log.Info("operator migrated sagas", "saga", req.Saga, "from_version", req.From, "to_version", req.To, "state", req.State,
		"apply", req.Apply, "selected", len(res.Items), "applied", res.Count(OutcomeApplied), "would_apply", res.Count(OutcomeWouldApply),
		"refused", res.Count(OutcomeRefused), "failed", res.Count(OutcomeFailed), "actor", req.Actor, "reason", req.Reason)
	return res, nil
}

// checkMigrateMany refuses a bad MigrateManyRequest and returns the
// migration it asks for.
func (o *Orchestrator) checkMigrateMany(op string, req MigrateManyRequest) (*definition.Migration, error) {
	switch {
	case strings.TrimSpace(req.Saga) == "":
		return nil, Errorf(CodeInvalid, op, "the saga name is empty")
	case req.From <= 0:
		return nil, Errorf(CodeInvalid, op, "the version to migrate from must be a positive number, not %d", req.From)
	case req.To <= 0:
		return nil, Errorf(CodeInvalid, op, "the version to migrate to must be a positive number, not %d", req.To)
	case req.From == req.To:
		return nil, Errorf(CodeInvalid, op, "from and to are both version %d: nothing to migrate", req.To)
	case req.Limit < 0 || req.Limit > MaxMigrateLimit:
		return nil, Errorf(CodeInvalid, op, "the limit must be from 1 to %d, not %d", MaxMigrateLimit, req.Limit)
	case len(req.IDs) > MaxMigrateLimit:
		return nil, Errorf(CodeInvalid, op, "%d ids: at most %d sagas migrate in one request", len(req.IDs), MaxMigrateLimit)
	case len(req.IDs) > 0 && (req.Limit != 0 || req.Cursor != ""):
		return nil, Errorf(CodeInvalid, op, "ids name the sagas to migrate: leave out limit and cursor, which page through a selection")
	case req.Apply && strings.TrimSpace(req.Actor) == "":
		return nil, Errorf(CodeInvalid, op, "actor is empty: operator actions must name who acted")
	case utf8.RuneCountInString(req.Reason) > MaxMigrateReason:
		return nil, Errorf(CodeInvalid, op, "the reason is %d characters long: at most %d, it is copied into every migrated saga's timeline", utf8.RuneCountInString(req.Reason), MaxMigrateReason)
	}
	seen := make(map[string]bool, len(req.IDs))
	for i, id := range req.IDs {
		if strings.TrimSpace(id) == "" {
			return nil, Errorf(CodeInvalid, op, "id %d of ids is empty", i+1)
		}
		if seen[id] {
			return nil, Errorf(CodeInvalid, op, "saga %s is listed twice in ids", id)
		}
		seen[id] = true
	}
	if o.cat.Latest(req.Saga) == nil {
		return nil, Errorf(CodeNotFound, op, "saga definition %s is not loaded", req.Saga)
	}
	mig, ok := o.cat.Migration(req.Saga, req.From, req.To)
	if !ok {
		return nil, &Error{Code: CodeUnknownSaga, Op: op,
			Message: fmt.Sprintf("no migration of %s from version %d to %d is loaded (%s)", req.Saga, req.From, req.To, o.cat.migrationsFrom(req.Saga, req.From)),
			Err:     ErrNoMigration}
	}
	if req.State != "" {
		from, err := o.cat.Get(req.Saga, req.From)
		if err != nil {
			return nil, err
		}
		if !from.HasState(req.State) || from.IsTerminal(req.State) {
			var waiting []string
			for _, st := range from.States() {
				if !from.IsTerminal(st) {
					waiting = append(waiting, st)
				}
			}
			return nil, Errorf(CodeInvalid, op, "state %s is no waiting state of %s (finished sagas do not migrate); its waiting states: %s", req.State, from, strings.Join(waiting, ", "))
		}
	}
	return mig, nil
}

// selectMigrating lists the running sagas req selects, at most its limit,
// and the cursor of the rest.
func selectMigrating(ctx context.Context, list InstanceLister, req MigrateManyRequest) ([]MigrateItem, string, error) {
	limit := req.Limit
	if limit == 0 {
		limit = DefaultMigrateLimit
	}
	f := SagaFilter{Saga: req.Saga, Version: req.From, State: req.State, Status: StatusRunning, Cursor: req.Cursor}
	var out []MigrateItem
	for {
		// A store may return fewer than asked (sqlstore: at most 500 a
		// page) with a cursor: go on from it until the limit.
		f.Limit = limit - len(out)
		page, err := list.ListInstances(ctx, f)
		if err != nil {
			return nil, "", err
		}
		for i := range page.Sagas {
			inst := page.Sagas[i]
			out = append(out, MigrateItem{SagaID: inst.ID, Before: &inst})
		}
		if page.Next == "" || len(out) >= limit || len(page.Sagas) == 0 {
			return out, page.Next, nil
		}
		f.Cursor = page.Next
	}
}

// isRefusal reports whether err is a saga's refusal to migrate (the
// request was right, the saga cannot move), not a failure of saga-machine.
func isRefusal(err error) bool {
	switch ErrorCode(err) {
	case CodeConflict, CodeNotFound, CodeUnknownSaga, CodeInvalid, CodeFinished:
		return true
	}
	return false
}

// abbreviateCursor shortens a cursor for a refusal.
func abbreviateCursor(c string) string {
	if r := []rune(c); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return c
}
