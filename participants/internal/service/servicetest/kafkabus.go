package servicetest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// KafkaBus is a participant's command and event topics on the test broker
// (testenv.KafkaBrokers, with its SASL credentials), fresh for one test,
// and a consumer group of its own.
type KafkaBus struct {
	Kafka                    kafka.Config
	CommandTopic, EventTopic string
	Group                    string
}

// NewKafkaBus creates the topics of a test's participant: its command
// topic, named after commandTopic (e.g. DEALS_TOPIC), and an event topic,
// with partitions each. It fails the test if the broker refuses them.
func NewKafkaBus(ctx context.Context, tb testing.TB, participant, commandTopic string, partitions int32) KafkaBus {
	tb.Helper()
	brokers := testenv.KafkaBrokers(tb)
	b := KafkaBus{
		Kafka:        kafka.Config{Brokers: brokers, SASL: testenv.KafkaSASLFor(brokers)},
		CommandTopic: testenv.Name(tb, commandTopic),
		EventTopic:   testenv.Name(tb, "SAGA_SERVER_TOPIC"),
		Group:        testenv.Name(tb, participant),
	}
	if err := kafka.EnsureTopics(ctx, b.Kafka, partitions, b.CommandTopic, b.EventTopic); err != nil {
		tb.Fatalf("create the topics of %s: %v", participant, err)
	}
	return b
}

// Config is the sdk.Config of participant name on db that consumes the
// bus's command topic and answers on its event topic; set retries and the
// like on it before sdk.New.
func (b KafkaBus) Config(name string, db *sqlx.DB, log *slog.Logger) sdk.Config {
	return sdk.Config{Name: name, DB: db, Logger: log, Brokers: b.Kafka.Brokers, KafkaSASL: b.Kafka.SASL,
		CommandTopic: b.CommandTopic, EventTopic: b.EventTopic, Group: b.Group}
}

// Producer returns a producer on the bus's broker, closed when tb ends.
func (b KafkaBus) Producer(tb testing.TB) *kafka.Producer {
	tb.Helper()
	prod, err := kafka.NewProducer(b.Kafka)
	if err != nil {
		tb.Fatalf("producer: %v", err)
	}
	tb.Cleanup(func() { prod.Close() })
	return prod
}

// Publish publishes recs (to the command topic, as they name it) with a
// producer of its own.
func (b KafkaBus) Publish(ctx context.Context, tb testing.TB, recs []kafka.Record) {
	tb.Helper()
	if err := b.Producer(tb).Publish(ctx, recs); err != nil {
		tb.Fatalf("publish %d records: %v", len(recs), err)
	}
}

// Replies returns a consumer of the bus's event topic from its start (the
// participant's replies), in a group of its own, closed when tb ends.
func (b KafkaBus) Replies(tb testing.TB) *kafka.Consumer {
	tb.Helper()
	cons, err := kafka.NewConsumer(b.Kafka, testenv.Name(tb, "reader"), b.EventTopic)
	if err != nil {
		tb.Fatalf("reply consumer: %v", err)
	}
	tb.Cleanup(func() { cons.Close() })
	return cons
}

// Run runs p (sdk.Participant.Run) until tb ends, then stops it and waits
// for it to return.
func Run(ctx context.Context, tb testing.TB, p *sdk.Participant) {
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	tb.Cleanup(func() { stop(); <-done })
}
