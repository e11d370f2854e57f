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

// ExamplePolicy_ACLs lists the ACLs ApplySetup makes for a saga bus with
// one participant: saga-machine writes its commands and reads its events,
// the participant reads its commands and writes only its own event topic.
func ExamplePolicy_ACLs() {
	pol := kafka.Policy{Participants: []kafka.ParticipantAccess{
		{Name: "profile", CommandTopic: "PROFILE_TOPIC", EventTopic: "SAGA_SERVER_TOPIC_PROFILE"},
	}}
	acls, err := pol.ACLs()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range acls {
		fmt.Println(a)
	}
	// Output:
	// User:profile READ GROUP:profile
	// User:profile READ TOPIC:PROFILE_TOPIC
	// User:profile WRITE TOPIC:SAGA_SERVER_TOPIC_PROFILE
	// User:saga-machine READ GROUP:saga-machine
	// User:saga-machine READ TOPIC:SAGA_SERVER_TOPIC_PROFILE
	// User:saga-machine WRITE TOPIC:PROFILE_TOPIC
}

// ExampleSASL shows that a configuration with credentials prints without
// its password.
func ExampleSASL() {
	cfg := kafka.Config{Brokers: []string{"kafka:9092"}, SASL: kafka.SASL{User: "deals", Password: "s3cret"}}
	fmt.Println(cfg.SASL, cfg.Validate())
	// Output:
	// SCRAM-SHA-512 user=deals password=<redacted> <nil>
}
