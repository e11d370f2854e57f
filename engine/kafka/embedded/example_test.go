package embedded_test

import (
	"context"
	"fmt"
	"log"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
)

// Start an embedded broker (persisting to a directory in the one-command
// run) and point package kafka at it, exactly as at a real cluster.
func ExampleStart() {
	broker, err := embedded.Start(embedded.Options{
		Addr:       "127.0.0.1:0", // e.g. "127.0.0.1:9092" for a fixed port
		Partitions: 3,
		Topics:     []string{"SAGA_SERVER_TOPIC", "DEALS_TOPIC"},
		// DataDir: "/var/lib/saga-machine/kafka", // keep messages and offsets across restarts
	})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	err = kafka.Ping(context.Background(), kafka.Config{Brokers: broker.Addrs()})
	fmt.Println("ready:", err == nil)
	// Output: ready: true
}
