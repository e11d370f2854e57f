// Package envelope is the contract on the bus between saga-machine and its
// participants: the JSON envelope every Kafka record carries (Message,
// schema/envelope.schema.json), the record itself (Record), the topic names
// (EventTopic, CommandTopic), the Kafka headers beside the envelope, and
// CommandExpired, the one event name the SDK answers with itself, and
// NewID, the ids the engine, the SDK and the services give messages, sagas
// and business rows (UUIDs ordered by time).
//
// It also holds the envelope's codec. AppendMessage and UnmarshalMessage
// encode and decode without reflection the envelopes the engine and the SDK
// write, and fall back to encoding/json for anything else; Merge and Lookup
// work on the bytes of a JSON object payload (the saga context). Each is
// several times faster than encoding/json (BenchmarkCodec) and is fuzzed
// against it (FuzzUnmarshalMessage, FuzzAppendMessage, FuzzMerge,
// FuzzLookup).
//
// The package imports nothing of the repository, so the participant SDK
// uses it without pulling in the engine; engine.Message and the other
// engine names of these types are aliases.
package envelope
