package embedded_test

import (
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
)

// TestConformance runs the transport's conformance suite against one
// embedded broker shared by all subtests (each uses its own topics).
func TestConformance(t *testing.T) {
	b, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(b.Close)
	kafkatest.Run(t, func(*testing.T) []string { return b.Addrs() })
}
