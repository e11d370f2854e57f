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
//     group with auto-commit off. Between a Fetch and its Commit the group
//     cannot rebalance the fetched partitions away, so no other member
//     processes the same records; the caller commits only after its database
//     transaction committed (at-least-once delivery, duplicates dropped by the
//     caller's inbox).
//   - [EnsureTopics] creates topics idempotently, [Ping] checks readiness.
//
// Headers are plain strings: the W3C trace context travels as the
// "traceparent" header without any tracing library.
//
// The zero value of [Config] (apart from Brokers) gives sensible defaults;
// constructors validate it.
package kafka
