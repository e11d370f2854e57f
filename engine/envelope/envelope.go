package envelope

import (
	"encoding/json"
	"time"
)

// Version is the version of the envelope this code writes. Readers accept
// envelopes whose version they know; see schema/envelope.schema.json.
const Version = 1

// Kind tells commands (engine → participant) from events (participant → engine).
type Kind string

// The two kinds of message.
const (
	KindCommand Kind = "command"
	KindEvent   Kind = "event"
)

// Message is the JSON envelope of every message on the bus. The Kafka record
// key is SagaID, so one saga's messages stay in order on one partition.
type Message struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// ID is a unique message id (UUID); consumers use it to drop duplicates.
	ID string `json:"id"`
	// SagaID identifies the saga instance (UUID).
	SagaID string `json:"saga_id"`
	// Saga is the definition name, e.g. MANUAL_CREATE_ORDER.
	Saga string `json:"saga"`
	// SagaVersion is the definition version the instance runs on. On a
	// starting event 0 means "the newest loaded version".
	SagaVersion int `json:"saga_version,omitempty"`
	// Kind is command or event.
	Kind Kind `json:"kind"`
	// Name is the command or event name, e.g. APPROVE_ORDER, ORDER_APPROVED.
	Name string `json:"name"`
	// Participant is, for an event, the participant that emitted it; for a
	// command, the participant it is sent to.
	Participant string `json:"participant"`
	// CausationID is the id of the message this one answers, if any.
	CausationID string `json:"causation_id,omitempty"`
	// OccurredAt is when the sender created the message.
	OccurredAt time.Time `json:"occurred_at"`
	// Attempt counts sends of the same command (1 for the first send); a
	// re-sent command keeps its ID so participants can drop the duplicate.
	Attempt int `json:"attempt,omitempty"`
	// Reason explains a business rejection or failure, for humans.
	Reason string `json:"reason,omitempty"`
	// Deadline, on a command, is when saga-machine stops waiting for it
	// (its step's retry budget or state time limit). A participant must not
	// apply a command after its deadline: the SDK answers such a command
	// with CommandExpired instead of running the handler. Zero: none.
	Deadline time.Time `json:"deadline,omitzero"`
	// Compensates, on a compensation command, is the id of the message
	// whose effect it undoes: the forward command (for a step's send) or
	// the event (for what a participant did before emitting it). The SDK
	// records it so that a forward command arriving after its
	// compensation is refused instead of applied.
	Compensates string `json:"compensates,omitempty"`
	// Payload is a JSON object. Events merge their top-level keys into the
	// saga's context document (Merge); commands carry the whole context.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// CommandExpired is the standard reply of a participant to a command that
// reached it after its Deadline (or after a compensation undid it): the
// handler did not run and the command had no effect. Its CausationID is
// the expired command's id. No saga definition may use this name for an
// event of its own (engine/definition refuses it).
const CommandExpired = "COMMAND_EXPIRED"

// Kafka header names used beside the envelope.
const (
	HeaderTraceparent = "traceparent" // W3C trace context
	HeaderKind        = "kind"        // command | event, for routing without decoding
	HeaderName        = "name"        // command or event name
)

// Record is one record on the bus as saga-machine and the SDK see it: an
// encoded Message with its topic, key and headers. engine/kafka turns it
// into a Kafka record and back.
type Record struct {
	// Topic the record is (to be) written to.
	Topic string
	// Key is the saga id: one saga's records share a partition and stay in order.
	Key string
	// Value is the JSON envelope (a Message).
	Value []byte
	// Headers travel beside the value, e.g. "traceparent".
	Headers map[string]string
	// Partition is set on consumed records.
	Partition int32
	// Offset is set on consumed records.
	Offset int64
}
