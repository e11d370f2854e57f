package embedded_test

import (
	"strconv"
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

func startBench(b *testing.B) []string {
	b.Helper()
	br, err := embedded.Start(embedded.Options{})
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(br.Close)
	return br.Addrs()
}

// BenchmarkPublish measures Publish against the embedded broker.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchPublish(b, startBench(b), batch) })
	}
}

// BenchmarkRoundTrip measures publish + fetch + commit against the embedded broker.
func BenchmarkRoundTrip(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchRoundTrip(b, startBench(b), batch) })
	}
}
