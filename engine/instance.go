package engine

import (
	"encoding/json"
	"time"
)

// Status is the coarse life-cycle state of a saga instance.
type Status string

// Instance statuses.
const (
	StatusRunning   Status = "running"   // in a non-terminal state
	StatusCompleted Status = "completed" // in a final (success) state
	StatusFailed    Status = "failed"    // in a failed state (by the definition or by an operator abort)
)

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
}

// EntryKind classifies timeline entries.
type EntryKind string

// Timeline entry kinds.
const (
	EntryEvent    EntryKind = "event"    // a participant's event was accepted
	EntryRefused  EntryKind = "refused"  // an event was refused (also dead-lettered)
	EntryTimer    EntryKind = "timer"    // a timeout or exhausted retry raised an event
	EntryRetry    EntryKind = "retry"    // a command was re-sent by the retry policy
	EntryOperator EntryKind = "operator" // an operator action (re-send, abort, replay)
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

// StateCount is the number of instances of one definition in one state.
type StateCount struct {
	Saga        string `json:"saga"`
	SagaVersion int    `json:"saga_version"`
	State       string `json:"state"`
	Count       int64  `json:"count"`
}
