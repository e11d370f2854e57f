package engine

import (
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Compensation is a compensating command of a model: what saga-machine sends
// to undo one effect of a step when the saga enters a failed state. It is
// shared by every step that names it and must not be modified.
type Compensation struct {
	Participant string            // who undoes the effect
	Topic       string            // the participant's command topic
	Command     string            // the undoing command
	Done        string            // the event Participant answers once the undo is done (or there was nothing to undo)
	Retry       *definition.Retry // re-send policy, never nil (definition.DefaultCompensationRetry when the file gives none); Exhausted is empty
}

// Undo is one compensable effect of a saga: a step whose event (Step.Undo)
// or command (CommandSpec.Compensate) has, or may have, changed something
// in a participant. The orchestrator keeps them, oldest first, in the saga
// instance; when the saga enters a failed state Plan says what to send.
//
// To store an Undo, keep Compensation.Participant and Compensation.Done
// (with Of and Compensated): Model.CompensationByDone gives the
// Compensation back, and it names one compensation of the model.
type Undo struct {
	Compensation *Compensation
	Of           string // id of the event or command whose effect it undoes
	Compensated  bool   // the participant answered Compensation.Done: nothing left to undo
	// Group names the parallel step the command belonged to (for example
	// the id of the event that started it), "" for a step of its own: the
	// compensations of one group are sent together (PlanGroup).
	Group string
}

// Undos lists the compensable effects of step, oldest first, to append to
// the saga's list: the event's (Step.Undo, which happened before the event
// was emitted) and then the command's (Send.Compensate, which may happen
// from the moment the command is sent). eventID and commandID are the ids of
// the event applied and of the command sent; they end up in Undo.Of.
func (s Step) Undos(eventID, commandID string) []Undo {
	var out []Undo
	if s.Undo != nil {
		out = append(out, Undo{Compensation: s.Undo, Of: eventID})
	}
	if s.Send != nil && s.Send.Compensate != nil {
		out = append(out, Undo{Compensation: s.Send.Compensate, Of: commandID})
	}
	return out
}

// Plan returns the compensations still to send for a saga that took the
// compensable steps taken (oldest first): those not yet compensated, newest
// first. Send the first, wait for its done event, mark it Compensated in
// taken, and plan again; the saga is compensated when Plan returns none.
// Plan is pure: it does not modify taken.
func Plan(taken []Undo) []Undo {
	var out []Undo
	for i := len(taken) - 1; i >= 0; i-- {
		if !taken[i].Compensated {
			out = append(out, taken[i])
		}
	}
	return out
}

// PlanGroup returns the compensations to send next, together: the newest
// one not yet compensated and, when it belongs to a parallel step (Group),
// every other one of that step not yet compensated, newest first. Send
// them all, wait for all their done events (marking each Compensated as it
// arrives), and plan again; the saga is compensated when PlanGroup returns
// none. Plan gives the whole order, PlanGroup the next batch of it: the
// completed branches of a failed parallel step are compensated together,
// steps one after the other. Pure: it does not modify taken.
func PlanGroup(taken []Undo) []Undo {
	plan := Plan(taken)
	if len(plan) == 0 || plan[0].Group == "" {
		return plan[:min(1, len(plan))]
	}
	var out []Undo
	for _, u := range plan {
		if u.Group == plan[0].Group {
			out = append(out, u)
		}
	}
	return out
}

// CompensationByDone reports whether event from participant is the done
// event of a compensation of m, and which one. A done event names one
// compensation of a model (the validator's done-reused rule), so it also
// gives back a stored Undo's Compensation.
func (m *Model) CompensationByDone(participant, event string) (*Compensation, bool) {
	c, ok := m.byDone[[2]string{participant, event}]
	return c, ok
}

// Compensable reports whether the model declares any compensation, that
// is whether entering a failed state may have compensations to send.
func (m *Model) Compensable() bool { return len(m.byDone) > 0 }

// compensation builds the model's Compensation of c, or nil for nil; one
// per (participant, done event), shared.
func (m *Model) compensation(c *definition.Compensation) (*Compensation, error) {
	if c == nil {
		return nil, nil
	}
	to := c.To.Value
	topic, ok := m.partTopics[to]
	if !ok {
		return nil, Errorf(CodeInvalid, "compile compensation", "compensation %s goes to unknown participant %q", c.Command.Value, to)
	}
	if c.Command.Value == "" || c.Done.Value == "" {
		return nil, Errorf(CodeInvalid, "compile compensation", "compensation at line %d has an empty command or done event", c.Pos.Line)
	}
	if m.known[c.Done.Value] {
		return nil, Errorf(CodeInvalid, "compile compensation", "done event %s of compensation %s also triggers a transition", c.Done.Value, c.Command.Value)
	}
	k := [2]string{to, c.Done.Value}
	if prev := m.byDone[k]; prev != nil {
		if prev.Command != c.Command.Value {
			return nil, Errorf(CodeInvalid, "compile compensation", "done event %s of %s names two compensations (%s and %s)", c.Done.Value, to, prev.Command, c.Command.Value)
		}
		return prev, nil
	}
	retry := c.Retry
	if retry == nil {
		retry = definition.DefaultCompensationRetry()
	}
	comp := &Compensation{Participant: to, Topic: topic, Command: c.Command.Value, Done: c.Done.Value, Retry: retry}
	m.byDone[k] = comp
	return comp, nil
}
