package engine

import "time"

// Observer receives hooks for metrics. The orchestrator calls them after the
// transaction that made the change committed, from several goroutines at
// once, so implementations must be safe for concurrent use and fast.
// Embed NopObserver to implement only some hooks.
type Observer interface {
	// SagaStarted is called once per created instance.
	SagaStarted(saga string, version int)
	// SagaFinished is called when an instance reaches a terminal state
	// (status completed or failed), including an operator's abort.
	SagaFinished(saga string, version int, state string, status Status)
	// EventApplied is called per accepted event (participants' and the
	// engine's own). latency runs from the event's occurred_at to the commit
	// that applied it and stored the command it causes in the outbox.
	EventApplied(saga, event string, latency time.Duration)
	// EventRefused is called per refused event (it is also dead-lettered).
	EventRefused(saga, event string, code Code)
	// DeadLettered is called per stored dead letter.
	DeadLettered(code Code)
	// CommandsPublished is called after the relay published n commands;
	// oldest is the age of the oldest of them (from its creation in the
	// outbox, i.e. from the event that caused it, to its publication).
	CommandsPublished(n int, oldest time.Duration)
	// CommandRetried is called per command re-sent by a retry policy.
	CommandRetried(saga, command string)
	// TimerFired is called per state timeout or exhausted retry raised.
	TimerFired(saga, event string)
}

// NopObserver implements Observer by doing nothing.
type NopObserver struct{}

// SagaStarted does nothing.
func (NopObserver) SagaStarted(string, int) {}

// SagaFinished does nothing.
func (NopObserver) SagaFinished(string, int, string, Status) {}

// EventApplied does nothing.
func (NopObserver) EventApplied(string, string, time.Duration) {}

// EventRefused does nothing.
func (NopObserver) EventRefused(string, string, Code) {}

// DeadLettered does nothing.
func (NopObserver) DeadLettered(Code) {}

// CommandsPublished does nothing.
func (NopObserver) CommandsPublished(int, time.Duration) {}

// CommandRetried does nothing.
func (NopObserver) CommandRetried(string, string) {}

// TimerFired does nothing.
func (NopObserver) TimerFired(string, string) {}

// IntakeObserver receives the intake's batches. An Observer that also
// implements it gets them (NopObserver does); the hook runs after the
// batch's commit.
type IntakeObserver interface {
	// BatchHandled is called per batch of records HandleRecords committed:
	// records is its size, took the time from its start to its commit
	// (claim, load, apply, write, commit; a batch run again after a
	// conflict counts every run and the waits between). The sum of took
	// over an interval is the share of it the intake was busy: the intake
	// handles one batch at a time, so near 1 it is the stage that limits
	// throughput.
	BatchHandled(records int, took time.Duration)
}

var _ IntakeObserver = NopObserver{}

// RelayObserver receives the outbox relay's rounds. An Observer that also
// implements it gets them (NopObserver does).
type RelayObserver interface {
	// RelayRound is called per round of the relay that did not fail:
	// published is how many commands it published (0: it found none, a
	// poll of an idle outbox), took its time (take, publish, delete). The
	// sum of took over an interval is the share of it the relay was busy.
	RelayRound(published int, took time.Duration)
}

var _ RelayObserver = NopObserver{}

// RelayRound does nothing.
func (NopObserver) RelayRound(int, time.Duration) {}

// BatchHandled does nothing.
func (NopObserver) BatchHandled(int, time.Duration) {}

// CompensationOutcome says what happened to a compensation, for
// CompensationObserver.Compensation.
type CompensationOutcome string

// Compensation outcomes.
const (
	CompensationSent     CompensationOutcome = "sent"     // first sent (re-sends are CommandRetried)
	CompensationDone     CompensationOutcome = "done"     // its done event was accepted
	CompensationFailed   CompensationOutcome = "failed"   // unanswered past its last attempt: the saga stopped as compensation_failed
	CompensationRetried  CompensationOutcome = "retried"  // an operator sent it again after it failed
	CompensationResolved CompensationOutcome = "resolved" // an operator said it was done by hand
)

// CompensationObserver receives the hooks of compensations, command
// deadlines and late replies. An Observer that also implements it gets
// them (NopObserver does); the hooks run like Observer's, after commit.
type CompensationObserver interface {
	// Compensation is called per step of a compensation (see the
	// CompensationOutcome constants).
	Compensation(saga, command string, outcome CompensationOutcome)
	// CommandExpired is called per COMMAND_EXPIRED reply to a command the
	// saga sent: the participant refused it for its deadline.
	CommandExpired(saga, command string)
	// LateReply is called per answer to a compensable command that the
	// saga no longer waited for (recorded in the timeline, not
	// dead-lettered).
	LateReply(saga, event string)
}

var _ CompensationObserver = NopObserver{}

// Compensation does nothing.
func (NopObserver) Compensation(string, string, CompensationOutcome) {}

// CommandExpired does nothing.
func (NopObserver) CommandExpired(string, string) {}

// LateReply does nothing.
func (NopObserver) LateReply(string, string) {}

// ResendObserver is implemented by an Observer that also counts the
// re-sends held back because the participant was behind (progress.go).
type ResendObserver interface {
	// CommandHeldBack is called per retry attempt counted but not sent.
	CommandHeldBack(saga, command string)
}
