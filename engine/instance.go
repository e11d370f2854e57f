package engine

import (
	"encoding/json"
	"strconv"
	"time"
)

// Status is the coarse life-cycle state of a saga instance.
type Status string

// Instance statuses.
const (
	StatusRunning   Status = "running"   // in a non-terminal state
	StatusCompleted Status = "completed" // in a final (success) state
	StatusFailed    Status = "failed"    // in a failed state (by the definition or by an operator abort)
	// StatusCompensating: in a failed state (or a final one, for effects
	// the saga abandoned), sending compensations one at a time; it becomes
	// failed (or completed) when the last one is done.
	StatusCompensating Status = "compensating"
	// StatusCompensationFailed: a compensation went unanswered past its
	// last attempt; the saga stopped and waits for an operator
	// (Orchestrator.RetryCompensation or ResolveCompensation).
	StatusCompensationFailed Status = "compensation_failed"
)

// Statuses lists every status, in life-cycle order.
func Statuses() []Status {
	return []Status{StatusRunning, StatusCompensating, StatusCompensationFailed, StatusCompleted, StatusFailed}
}

// Done reports whether a saga with status s has finished and will do
// nothing more by itself: completed or failed, every compensation done. A
// compensating saga is not done yet; a compensation_failed one waits for an
// operator.
func (s Status) Done() bool { return s == StatusCompleted || s == StatusFailed }

// Instance is one running or finished saga.
type Instance struct {
	ID          string            `json:"id"`
	Saga        string            `json:"saga"`
	SagaVersion int               `json:"saga_version"`
	State       string            `json:"state"`
	Status      Status            `json:"status"`
	Context     json.RawMessage   `json:"context"` // JSON object: merged payloads of accepted events
	Keys        map[string]string `json:"keys,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	EnteredAt   time.Time         `json:"entered_at"` // when the current state was entered
	// Rev is the optimistic-lock version: every update must name the Rev it
	// read and increments it.
	Rev int64 `json:"rev"`
	// Pending is the last command sent in the current state (nil if none); the
	// retry timer and an operator's re-send send it again with the same id.
	Pending *Message `json:"pending,omitempty"`
	// Attempts counts sends of Pending so far.
	Attempts int `json:"attempts,omitempty"`
	// TimerAt is when the engine must next look at this saga (a retry or a
	// state timeout), nil when nothing is armed.
	TimerAt *time.Time `json:"timer_at,omitempty"`
	// Traceparent is the W3C trace context (HeaderTraceparent) of the
	// latest accepted event: re-sent commands and the events the engine
	// raises for this saga carry it. Empty when none is known.
	Traceparent string `json:"traceparent,omitempty"`
	// Undo lists the saga's compensable effects, oldest first: one entry
	// per compensable step taken (Step.Undos), with where it stands. Empty
	// for definitions without compensations.
	Undo []UndoEntry `json:"undo,omitempty"`
	// Deferred is the command of the transition into a failed state, held
	// back until every compensation is done; nil when none waits. Its
	// payload is empty, or, for a command with a payload mapping, the
	// payload built when the saga failed (the command is built again from
	// the context of when it is sent; this one is kept should that fail).
	Deferred *Message `json:"deferred,omitempty"`
	// Join is the saga's latest parallel step: its branch commands and
	// where each stands. While Outcome is empty the saga waits in
	// Join.State for the step's join; afterwards the record stays (until
	// the next parallel step) so that replies arriving late are
	// recognised. nil when the saga never took a parallel step.
	Join *Join `json:"join,omitempty"`
}

// Join is where one parallel step of a saga stands: the commands its
// branches sent (one per element of a fan-out) and their replies. The
// engine counts them with Parallel.Outcome and raises the join's then or
// else event when it decides.
type Join struct {
	// Step is the parallel step (Parallel.ID) in the saga's version.
	Step int `json:"step"`
	// Event and Cause are the event that started the step and its id; Cause
	// is also the Group of the branches' undo entries.
	Event string `json:"event"`
	Cause string `json:"cause"`
	// State is where the saga waits for the join.
	State string `json:"state"`
	// Policy and Need say how many commands must succeed (all, first,
	// at_least N) and how many that is for this step's commands.
	Policy string `json:"policy"`
	Need   int    `json:"need"`
	// Outcome is "" while the saga waits; JoinDone or JoinFailed once the
	// join decided (it raised then or else), JoinLeft when the saga left
	// the state by another event (a timeout, an operator's abort) first.
	Outcome JoinResult `json:"outcome,omitempty"`
	// Commands are the branch commands, in the order they were sent.
	Commands []BranchCommand `json:"commands"`
}

// JoinResult is how a parallel step ended (Join.Outcome).
type JoinResult string

// Join results.
const (
	JoinResultDone   JoinResult = "done"   // enough commands succeeded: the join raised then
	JoinResultFailed JoinResult = "failed" // enough can no longer succeed: the join raised else
	JoinResultLeft   JoinResult = "left"   // the saga left the state by another event before the join decided
)

// Waiting reports whether the saga still waits for the join of j (nil: no).
func (j *Join) Waiting() bool { return j != nil && j.Outcome == "" }

// Count returns how many of j's commands succeeded and failed so far.
func (j *Join) Count() (succeeded, failed int) {
	for i := range j.Commands {
		switch j.Commands[i].Status {
		case BranchOK:
			succeeded++
		case BranchFailed:
			failed++
		}
	}
	return succeeded, failed
}

// BranchStatus is where one branch command of a parallel step stands.
type BranchStatus string

// Branch command statuses.
const (
	BranchPending BranchStatus = "pending" // sent, not answered
	BranchOK      BranchStatus = "ok"      // the participant answered the branch's ok reply
	// BranchFailed: the participant answered the fail reply, the command's
	// retries ran out, or the participant refused it for its deadline
	// (COMMAND_EXPIRED). Why says which.
	BranchFailed BranchStatus = "failed"
)

// BranchCommand is one command of a parallel step: a branch's command, or
// one of a fan-out branch's (Element is then its position in the for_each
// list).
type BranchCommand struct {
	ID          string       `json:"id"`
	Branch      int          `json:"branch"`            // the branch's position in the step, from 0
	Element     *int         `json:"element,omitempty"` // fan-out: the element's index in the for_each list
	Name        string       `json:"name"`
	Participant string       `json:"participant"`
	Status      BranchStatus `json:"status"`
	// Why says why a failed command failed: its fail reply, its retries
	// ran out, or it expired.
	Why string `json:"why,omitempty"`
	// Attempts counts sends (held-back re-sends included); NextAt is when
	// the engine re-sends it (or, after its last send, gives up on it), nil
	// without a retry.
	Attempts int        `json:"attempts"`
	NextAt   *time.Time `json:"next_at,omitempty"`
	// SentAt is when it was first sent, for holding back a re-send while
	// its participant is behind (zero in sagas stored before it was kept:
	// their re-sends are never held back).
	SentAt time.Time `json:"sent_at,omitzero"`
	// Deadline is the command's deadline (see CommandDeadline), zero for none.
	Deadline time.Time `json:"deadline,omitzero"`
	// Payload is the payload it was sent with: re-sends send it again,
	// whatever the context became meanwhile.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Label names the command's branch for humans and timelines: "1" for the
// first branch, "2[3]" for the element at index 3 of the second branch's
// fan-out.
func (c *BranchCommand) Label() string { return branchLabel(c.Branch, c.Element) }

// branchLabel is BranchCommand.Label of a branch position and element.
func branchLabel(branch int, element *int) string {
	s := strconv.Itoa(branch + 1)
	if element != nil {
		s += "[" + strconv.Itoa(*element) + "]"
	}
	return s
}

// UndoStatus is where one compensable effect of a saga stands.
type UndoStatus string

// Undo entry statuses.
const (
	// UndoOpen: the command was sent and not answered; it may have been
	// applied, so a failing saga compensates it.
	UndoOpen UndoStatus = "open"
	// UndoReplied: the effect happened and the saga went on with it (its
	// event, or the reply to its command, was accepted). A failing saga
	// compensates it; a succeeding one keeps it.
	UndoReplied UndoStatus = "replied"
	// UndoLate: the command was answered after the saga gave up on it (the
	// reply was not accepted): an effect the saga does not want, undone
	// whether the saga fails or succeeds.
	UndoLate UndoStatus = "late"
	// UndoExpired: the participant refused the command for its deadline
	// (COMMAND_EXPIRED): no effect, nothing to undo.
	UndoExpired UndoStatus = "expired"
	// UndoFailed: the participant answered a parallel step's branch
	// command with the branch's fail reply: no effect, nothing to undo.
	UndoFailed UndoStatus = "failed"
	// UndoCompensating: the compensation was sent; saga-machine waits for
	// its done event.
	UndoCompensating UndoStatus = "compensating"
	// UndoCompensated: the participant answered the done event.
	UndoCompensated UndoStatus = "compensated"
	// UndoResolved: an operator said the effect was undone by hand.
	UndoResolved UndoStatus = "resolved"
)

// UndoEntry is one compensable effect of a saga instance and its
// compensation's progress. Model.CompensationByDone(Participant, Done)
// gives back the compensation (topic, retry).
type UndoEntry struct {
	Participant string `json:"participant"` // who undoes the effect (receives Command)
	Command     string `json:"command"`     // the compensating command
	Done        string `json:"done"`        // the event Participant answers once the undo is done
	// Of is the id of the message whose effect this undoes: the forward
	// command (OfKind command) or the event (OfKind event).
	Of            string     `json:"of"`
	OfKind        Kind       `json:"of_kind"`
	OfName        string     `json:"of_name"`        // the forward command's or the event's name
	OfParticipant string     `json:"of_participant"` // the forward command's receiver, or the event's sender
	Status        UndoStatus `json:"status"`
	// CommandID is the compensation command's id once sent; re-sends and
	// an operator's retry keep it, and the done event's causation_id
	// must name it.
	CommandID string `json:"command_id,omitempty"`
	// Cause is the id of what made saga-machine compensate: the event that
	// failed (or ended) the saga, a late reply, or an operator's abort.
	Cause string `json:"cause,omitempty"`
	// Attempts counts sends since the compensation was started or an
	// operator retried it (the retry policy's count); Sent counts all
	// sends (the command's attempt number).
	Attempts int `json:"attempts,omitempty"`
	Sent     int `json:"sent,omitempty"`
	// ResolvedBy and Reason record an operator's resolve.
	ResolvedBy string `json:"resolved_by,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Group names the parallel step the forward command belonged to (the
	// id of the event that started it; see Join.Cause), "" for a step of
	// its own. The compensations of one group are sent together
	// (PlanGroup). Branch is the command's branch label (BranchCommand.Label).
	Group  string `json:"group,omitempty"`
	Branch string `json:"branch,omitempty"`
	// Payload is the payload the forward command was sent with when a
	// payload mapping built it (a branch's, a fan-out element's): its
	// compensation carries the same payload, so that it can tell which
	// element to undo. Empty otherwise: the compensation then carries the
	// saga's context at the time it is sent.
	Payload json.RawMessage `json:"payload,omitempty"`
	// SentAt is when the compensation was first sent, for holding back a
	// re-send while its participant is behind (zero before it is sent, and
	// in sagas stored before it was kept: their re-sends are never held
	// back).
	SentAt time.Time `json:"sent_at,omitzero"`
	// NextAt is when the compensation in flight is re-sent (or, after its
	// last attempt, given up), set while it is compensating; several
	// compensations of one group are in flight at once, each on its own
	// retry policy.
	NextAt *time.Time `json:"next_at,omitempty"`
	// Stuck: the compensation went unanswered past its last attempt
	// (status compensating); an operator retries or resolves it.
	Stuck bool `json:"stuck,omitempty"`
}

// EntryKind classifies timeline entries.
type EntryKind string

// Timeline entry kinds.
const (
	EntryEvent    EntryKind = "event"    // a participant's event was accepted
	EntryRefused  EntryKind = "refused"  // an event was refused (also dead-lettered)
	EntryTimer    EntryKind = "timer"    // the engine raised an event: a timeout, an exhausted retry, a join's then/else, or a branch command given up on
	EntryRetry    EntryKind = "retry"    // a command was re-sent by the retry policy (or the attempt held back: progress.go)
	EntryOperator EntryKind = "operator" // an operator action (re-send, abort, replay, compensation retry or resolve)
	// EntryCompensation: a compensation was sent, its done event was
	// accepted, or the saga's compensations finished (and the held-back
	// command of its failed state was sent).
	EntryCompensation EntryKind = "compensation"
	// EntryCompensationFailed: a compensation went unanswered past its last
	// attempt and the saga stopped (status compensation_failed).
	EntryCompensationFailed EntryKind = "compensation_failed"
	// EntryExpired: a participant refused a command for its deadline
	// (COMMAND_EXPIRED); the command had no effect.
	EntryExpired EntryKind = "expired"
	// EntryLate: an answer to a command the saga no longer waited for
	// (it moved on, is compensating or finished); not a dead letter. The
	// reason says whether the effect is, was or will be compensated.
	EntryLate EntryKind = "late"
)

// HistoryEntry is one line of a saga's timeline. Entries are append-only.
type HistoryEntry struct {
	Seq       int64     `json:"seq"` // assigned by the store, increasing per store
	SagaID    string    `json:"saga_id"`
	At        time.Time `json:"at"`
	Kind      EntryKind `json:"kind"`
	MessageID string    `json:"message_id,omitempty"`
	Event     string    `json:"event,omitempty"`
	By        string    `json:"by,omitempty"`
	FromState string    `json:"from_state,omitempty"`
	ToState   string    `json:"to_state,omitempty"`
	// Commands are the ids and names of the commands this entry caused.
	Commands []CommandRef `json:"commands,omitempty"`
	Code     Code         `json:"code,omitempty"`   // for refused entries
	Reason   string       `json:"reason,omitempty"` // refusal reason, or the operator's "why"
	Actor    string       `json:"actor,omitempty"`  // operator who acted
}

// CommandRef names a command in the timeline.
type CommandRef struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Participant string `json:"participant"`
	Attempt     int    `json:"attempt"`
	// Branch is the parallel step's branch the command belongs to
	// (BranchCommand.Label: "2", or "2[3]" for an element of a fan-out),
	// "" for a command of its own.
	Branch string `json:"branch,omitempty"`
}

// OutboxRecord is a message waiting to be published by the relay.
type OutboxRecord struct {
	Seq     int64 // assigned by the store
	Topic   string
	Key     string
	Message Message
	// Traceparent is the W3C trace context (HeaderTraceparent) of the event
	// that caused the command; the relay publishes it as a header. Empty
	// for none.
	Traceparent string
}

// DeadLetter is a message that could not be processed, kept with its reason
// until an operator replays or discards it.
type DeadLetter struct {
	ID         int64      `json:"id"`
	MessageID  string     `json:"message_id,omitempty"` // empty if the message could not be decoded
	SagaID     string     `json:"saga_id,omitempty"`
	Topic      string     `json:"topic"`
	Partition  int32      `json:"partition"`
	Offset     int64      `json:"offset"`
	Raw        []byte     `json:"raw"` // the record value exactly as received
	Code       Code       `json:"code"`
	Reason     string     `json:"reason"`
	CreatedAt  time.Time  `json:"created_at"`
	ReplayedAt *time.Time `json:"replayed_at,omitempty"`
	ReplayedBy string     `json:"replayed_by,omitempty"`
}

// SagaFilter selects sagas for listing. Zero fields match everything.
type SagaFilter struct {
	Saga     string
	Version  int // only sagas on this definition version; 0 = any
	State    string
	Status   Status
	From, To time.Time // created_at range, inclusive from, exclusive to
	KeyName  string    // business key name, e.g. deal_id
	KeyValue string
	// Cursor is the opaque value returned as Next by the previous page.
	Cursor string
	Limit  int // default 50, max 500
}

// SagaPage is one page of a listing; Next is empty on the last page.
type SagaPage struct {
	Sagas []Instance `json:"sagas"`
	Next  string     `json:"next,omitempty"`
}

// StateCount is the number of instances of one definition in one state
// with one status.
type StateCount struct {
	Saga        string `json:"saga"`
	SagaVersion int    `json:"saga_version"`
	State       string `json:"state"`
	Status      Status `json:"status"` // instances in one state may differ in status (failed, compensating, ...)
	Count       int64  `json:"count"`
}
