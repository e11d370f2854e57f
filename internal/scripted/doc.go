// Package scripted is a scripted saga participant for tests and benchmarks:
// it consumes command topics through engine/kafka and answers each command
// with the events its rules give, optionally dropping the first sends of a
// command (to exercise retries), staying silent (to exercise timeouts) or
// sending every reply twice (to exercise de-duplication).
//
// Replies get ids derived from the command id and the event name, so a
// command delivered twice (at-least-once) or re-sent by a retry is answered
// with the same event id, the way a participant with an inbox behaves.
package scripted
