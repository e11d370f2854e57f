package kafka_test

import (
	"context"
	"fmt"
	"log"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
)

// Publish commands keyed by saga id, then consume them as a group member and
// commit once their effects are durable. The embedded broker stands in for
// Kafka; with a real cluster only Config.Brokers changes.
func Example() {
	broker, err := embedded.Start(embedded.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	ctx := context.Background()
	cfg := kafka.Config{Brokers: broker.Addrs()}

	if err := kafka.EnsureTopics(ctx, cfg, 3, "DEALS_TOPIC"); err != nil {
		log.Fatal(err)
	}

	producer, err := kafka.NewProducer(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	err = producer.Publish(ctx, []kafka.Record{
		{Topic: "DEALS_TOPIC", Key: "saga-42", Value: []byte(`{"name":"APPROVE_DEAL"}`),
			Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
	})
	if err != nil {
		log.Fatal(err)
	}

	consumer, err := kafka.NewConsumer(cfg, "deals", "DEALS_TOPIC")
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	recs, err := consumer.Fetch(ctx, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		// Process r in a database transaction (inbox + effect + outbox) ...
		fmt.Println(r.Key, string(r.Value), r.Headers["traceparent"][:2])
	}
	// ... and commit the offsets only after that transaction committed.
	if err := consumer.Commit(ctx, recs); err != nil {
		log.Fatal(err)
	}
	// Output: saga-42 {"name":"APPROVE_DEAL"} 00
}
