package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

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
// deferred command, in a parallel step, ...). A refusal changes nothing.
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
		return MigrateResult{}, fmt.Errorf("%s: %w", op, err)
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
	if req.From != 0 && inst.SagaVersion != req.From {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is on version %d, not %d as the request expects: nothing was changed", inst.SagaVersion, req.From)
	}
	if inst.SagaVersion == req.To {
		return MigrateResult{}, Errorf(CodeConflict, op, "the saga is already on version %d of %s: nothing to migrate", req.To, inst.Saga)
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
