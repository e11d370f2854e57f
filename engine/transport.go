package engine

import (
	"context"
	"sort"
	"strings"
)

// Record is one Kafka record as the orchestrator sees it. It has exactly the
// fields of engine/kafka.Record, in the same order, so a kafka.Record r
// converts with engine.Record(r) (and back) without copying field by field.
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

// Publisher sends records to the bus. Publish returns only when every record
// is durably accepted by the broker; on error some may have been written, and
// the caller publishes them again (consumers drop duplicates by message id).
type Publisher interface {
	Publish(ctx context.Context, recs []Record) error
}

// Consumer reads the saga-machine's event topic as one member of a consumer
// group. Fetch blocks until records are available or ctx ends and returns at
// most max records; Commit marks records as processed (offsets) once their
// effects are durable. Between a Fetch and the following Commit the fetched
// partitions stay with this member.
type Consumer interface {
	Fetch(ctx context.Context, max int) ([]Record, error)
	Commit(ctx context.Context, recs []Record) error
}

// DefaultEventTopicBase is the base name of the participants' event topics.
const DefaultEventTopicBase = "SAGA_SERVER_TOPIC"

// EventTopic returns the topic participant publishes its events to:
// base + "_" + the participant name in upper case, e.g.
// EventTopic("SAGA_SERVER_TOPIC", "deals") = "SAGA_SERVER_TOPIC_DEALS".
// Each participant writes only its own event topic (broker ACLs), and
// saga-machine applies an event from a participant's topic only if the
// envelope names that participant, so a participant cannot speak for
// another. The engine and the participant SDK both use this function.
func EventTopic(base, participant string) string {
	return base + "_" + strings.ToUpper(participant)
}

// EventTopics returns the event topics of every participant of the
// catalog's definitions (EventTopic(base, p)), sorted, each once.
func EventTopics(base string, cat *Catalog) []string {
	seen := map[string]bool{}
	var topics []string
	for _, m := range cat.List() {
		for _, p := range m.Participants() {
			if t := EventTopic(base, p); !seen[t] {
				seen[t] = true
				topics = append(topics, t)
			}
		}
	}
	sort.Strings(topics)
	return topics
}

// topicOwners maps each participant event topic of cat to its participant.
func topicOwners(base string, cat *Catalog) map[string]string {
	owners := map[string]string{}
	for _, m := range cat.List() {
		for _, p := range m.Participants() {
			owners[EventTopic(base, p)] = p
		}
	}
	return owners
}
