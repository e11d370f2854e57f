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
