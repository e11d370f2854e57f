package engine

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// PlanMigration returns inst as it is once migrated by mig from model from
// to model to, without changing anything: the runtime stores the result
// (with a new Rev, UpdatedAt and a timeline entry) in one transaction, and
// sagactl migrate --dry-run prints it.
//
// The migrated instance has version to, the state mig maps inst's state
// to, the context mig's transform gives (or the same context), the
// business keys of to read from that context, and its timer re-armed for
// the new state: the new state's time limit counted from when the saga
// entered the old one (EnteredAt is kept: the saga has waited that long),
// or the pending command's next re-send when to still re-sends it. The
// pending command, its attempts and the compensable steps taken are kept.
//
// It refuses (an *Error) with CodeInvalid when mig does not fit the two
// models, and with CodeConflict when this saga cannot move: it is not on
// version from, it is not running (finished, compensating or stopped for
// an operator), it waits for a parallel step's join (in from or, once
// migrated, in to), it took a compensable step whose compensation to does
// not have, or the context transform fails.
func PlanMigration(from, to *Model, mig *definition.Migration, inst Instance) (Instance, error) {
	op := fmt.Sprintf("migrate saga %s", inst.ID)
	if from == nil || to == nil || mig == nil {
		return Instance{}, Errorf(CodeInvalid, op, "a migration needs both models and the migration")
	}
	if mig.Saga != from.Name() || mig.Saga != to.Name() || mig.From != from.Version() || mig.To != to.Version() {
		return Instance{}, Errorf(CodeInvalid, op, "the migration of %s from version %d to %d does not fit %s and %s", mig.Saga, mig.From, mig.To, from, to)
	}
	if inst.Saga != from.Name() || inst.SagaVersion != from.Version() {
		return Instance{}, Errorf(CodeConflict, op, "the saga is a %s v%d, not a %s", inst.Saga, inst.SagaVersion, from)
	}
	if inst.Status != StatusRunning {
		return Instance{}, Errorf(CodeConflict, op, "the saga is %s: only running sagas migrate", inst.Status)
	}
	if inst.Deferred != nil {
		return Instance{}, Errorf(CodeConflict, op, "the saga holds back %s until its compensations are done: it cannot migrate now", inst.Deferred.Name)
	}
	target, ok := mig.Target(inst.State)
	if !ok {
		return Instance{}, Errorf(CodeConflict, op, "the migration maps no state for %s", inst.State)
	}
	if !to.HasState(target) || to.IsTerminal(target) {
		return Instance{}, Errorf(CodeInvalid, op, "%s is no waiting state of %s", target, to)
	}
	if len(from.ParallelsInto(inst.State)) > 0 || len(to.ParallelsInto(target)) > 0 {
		return Instance{}, Errorf(CodeConflict, op, "the saga waits for the join of a parallel step in %s (or would in %s): migrate it once the step is over", inst.State, target)
	}
	for _, u := range inst.Undo {
		if _, ok := to.CompensationByDone(u.Participant, u.Done); !ok {
			return Instance{}, Errorf(CodeConflict, op, "the saga took a step that %s undoes with %s → %s (done %s), which %s does not have", from, u.Command, u.Participant, u.Done, to)
		}
	}
	out := inst
	out.SagaVersion = to.Version()
	out.State = target
	out.Status = statusOf(to, target)
	out.Undo = append([]UndoEntry(nil), inst.Undo...)
	if mig.Context != nil {
		ctx, err := transformContext(from, mig, inst)
		if err != nil {
			return Instance{}, &Error{Code: CodeConflict, Op: op, Message: "the context transform failed on this saga", Err: err}
		}
		out.Context = ctx
	}
	out.Keys = extractKeys(to, out.Context)
	out.TimerAt = migratedTimer(to, &out, inst.TimerAt)
	return out, nil
}

// transformContext runs the migration's context transform on inst.
func transformContext(from *Model, mig *definition.Migration, inst Instance) (json.RawMessage, error) {
	ctx, err := expr.Decode(inst.Context)
	if err != nil {
		return nil, err
	}
	v, err := mig.Context.Program.Value(expr.Input{Context: ctx, Saga: expr.Saga{ID: inst.ID, Name: from.Name(), Version: from.Version()}})
	if err != nil {
		return nil, err
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("it gave %T, not an object", v)
	}
	return expr.Encode(v)
}

// migratedTimer is the timer of a migrated instance: the earlier of its new
// state's time limit (from EnteredAt) and, when to still re-sends its
// pending command, the re-send that was armed.
func migratedTimer(to *Model, inst *Instance, armed *time.Time) *time.Time {
	var at *time.Time
	if t := to.Timeout(inst.State); t != nil {
		d := inst.EnteredAt.Add(t.After)
		at = &d
	}
	if inst.Pending != nil && armed != nil && pendingRetry(to, inst) != nil {
		if at == nil || armed.Before(*at) {
			a := *armed
			at = &a
		}
	}
	return at
}
