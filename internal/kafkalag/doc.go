// Package kafkalag reports how far a Kafka consumer group is behind on its
// topics as Prometheus metrics, read from the brokers at scrape time:
//
//	saga_kafka_consumer_lag{group,topic,partition}             records not yet consumed
//	saga_kafka_consumer_committed_offset{group,topic,partition} the group's committed offset
//	saga_kafka_partition_end_offset{topic,partition}           the partition's end (high watermark)
//	saga_kafka_lag_up{group}                                   1 if the brokers answered
//
// The lag is the end offset minus the committed offset, or minus the log
// start offset where the group has committed nothing yet (our consumers
// start a new group at the earliest offset: engine/kafka.NewConsumer). It
// is measured the way kafka-consumer-groups.sh or kminion measure it, from
// the committed offsets, not by the consumer itself: a consumer that hangs
// or died keeps its committed offsets where they were, so its lag grows,
// which is what the alerts are for. Every replica of a process reports the
// same values (they are the group's): aggregate with max by (group, topic,
// partition).
//
// saga-machine (internal/system) and every participant service
// (participants/internal/service) register a Collector for their group.
// It needs no more rights than the consumer has: OffsetFetch and
// ListOffsets are allowed by READ on the group and the topics.
package kafkalag
