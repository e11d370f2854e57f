package kafka_test

import (
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestConformance runs the conformance suite against real Apache Kafka
// (`make up`); it skips locally and fails under CI=true when Kafka is missing.
func TestConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T) []string { return testenv.KafkaBrokers(t) })
}
