// Package kafka is saga-machine's message transport: a thin layer over
// github.com/twmb/franz-go (kgo) used by both the engine and the participant
// SDK, against real Apache Kafka and the embedded kfake broker alike.
//
// It offers exactly what the outbox/inbox design needs and nothing more:
//
//   - [Producer.Publish] sends a batch and returns only when every record is
//     acknowledged by all in-sync replicas (idempotent producer, acks=all).
//     Records with the same key (the saga id) land on the same partition and
//     keep their order.
//   - [Consumer.Fetch] / [Consumer.Commit] consume as a member of a consumer
//     group. Between a Fetch and its Commit the group cannot rebalance the
//     fetched partitions away, so no other member processes the same
//     records; the caller commits only after its database transaction
//     committed. Commit marks the offsets; they reach the group coordinator
//     every Config.CommitInterval, before a rebalance and on Close
//     ([Consumer.Flush] waits for them): at-least-once delivery, duplicates
//     dropped by the caller's inbox.
//   - [EnsureTopics] creates topics idempotently (and accepts a principal
//     without CREATE when the topics exist), [Ping] checks readiness.
//   - [Config.SASL] authenticates with SASL/SCRAM-SHA-512 (or SHA-256,
//     PLAIN); the password is never printed or logged.
//   - [Config.InstanceID] makes a consumer a static group member: a process
//     restarted with the same id gets its partitions back at once;
//     [Consumer.Close] still leaves the group, so a graceful stop hands
//     them over at once too.
//   - [Policy] is the access policy of the saga bus (saga-machine writes
//     commands and reads events; each participant reads its command topic
//     and writes only its own event topic) and [ApplySetup] makes it true
//     on a cluster: topics, SCRAM users, exactly its ACLs.
//
// Headers are plain strings: the W3C trace context travels as the
// "traceparent" header. With tracing on (internal/tracing), Publish records
// a "publish <topic>" producer span per record whose traceparent is valid
// and sends the span's traceparent instead (the caller's headers are not
// changed), and Fetch records a "receive <topic>" consumer span per record,
// a child of its traceparent (a new trace when that is not valid), and
// hands the span's traceparent on in the record's headers. Off, headers
// pass unchanged.
//
// The zero value of [Config] (apart from Brokers) gives sensible defaults;
// constructors validate it.
package kafka
