package engine

import (
	"context"
	"sort"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// Record is envelope.Record: one record on the bus, an encoded Message
// with its topic, key and headers.
type Record = envelope.Record

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

// DefaultEventTopicBase is envelope.DefaultEventTopicBase, the base name of
// the participants' event topics.
const DefaultEventTopicBase = envelope.DefaultEventTopicBase

// EventTopic returns the topic participant publishes its events to
// (envelope.EventTopic), e.g. EventTopic("SAGA_SERVER_TOPIC", "deals") =
// "SAGA_SERVER_TOPIC_DEALS". saga-machine applies an event from a
// participant's topic only if the envelope names that participant.
func EventTopic(base, participant string) string { return envelope.EventTopic(base, participant) }

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
