package engine

import "github.com/portfolio-counselor/sagamachine/engine/envelope"

// The message envelope lives in package engine/envelope, which the
// participant SDK shares without importing the engine; these are its names
// in the engine.

// EnvelopeVersion is envelope.Version.
const EnvelopeVersion = envelope.Version

// Kind is envelope.Kind: command or event.
type Kind = envelope.Kind

// The two kinds of message.
const (
	KindCommand = envelope.KindCommand
	KindEvent   = envelope.KindEvent
)

// Message is envelope.Message, the JSON envelope of every message on the bus.
type Message = envelope.Message

// EventCommandExpired is envelope.CommandExpired: a participant's reply to
// a command that reached it after its Deadline.
const EventCommandExpired = envelope.CommandExpired

// Kafka header names used beside the envelope.
const (
	HeaderTraceparent = envelope.HeaderTraceparent
	HeaderKind        = envelope.HeaderKind
	HeaderName        = envelope.HeaderName
)
