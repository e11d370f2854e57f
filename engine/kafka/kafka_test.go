package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestConformance runs the conformance suite against real Apache Kafka
// (`make up`); it skips locally and fails under CI=true when Kafka is missing.
func TestConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T) []string { return testenv.KafkaBrokers(t) })
}

// BenchmarkPublish measures Publish against real Kafka.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchPublish(b, testenv.KafkaBrokers(b), batch) })
	}
}

// BenchmarkRoundTrip measures publish + fetch + commit against real Kafka.
func BenchmarkRoundTrip(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchRoundTrip(b, testenv.KafkaBrokers(b), batch) })
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  kafka.Config
	}{
		{"no brokers", kafka.Config{}},
		{"empty broker", kafka.Config{Brokers: []string{"127.0.0.1:9092", " "}}},
		{"negative linger", kafka.Config{Brokers: []string{"b:9092"}, Linger: -time.Millisecond}},
		{"negative batch bytes", kafka.Config{Brokers: []string{"b:9092"}, MaxBatchBytes: -1}},
		{"negative fetch wait", kafka.Config{Brokers: []string{"b:9092"}, FetchMaxWait: -time.Second}},
		{"negative delivery timeout", kafka.Config{Brokers: []string{"b:9092"}, DeliveryTimeout: -time.Second}},
		{"negative dial timeout", kafka.Config{Brokers: []string{"b:9092"}, DialTimeout: -time.Second}},
		{"negative session timeout", kafka.Config{Brokers: []string{"b:9092"}, SessionTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := kafka.NewProducer(tc.cfg); err == nil {
				p.Close()
				t.Errorf("NewProducer(%+v) = nil error, want one", tc.cfg)
			}
			if c, err := kafka.NewConsumer(tc.cfg, "g", "T"); err == nil {
				c.Close()
				t.Errorf("NewConsumer(%+v) = nil error, want one", tc.cfg)
			}
			if err := kafka.EnsureTopics(context.Background(), tc.cfg, 1, "T"); err == nil {
				t.Errorf("EnsureTopics(%+v) = nil error, want one", tc.cfg)
			}
			if err := kafka.Ping(context.Background(), tc.cfg); err == nil {
				t.Errorf("Ping(%+v) = nil error, want one", tc.cfg)
			}
		})
	}
}

func TestNewConsumerArguments(t *testing.T) {
	cfg := kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, tc := range []struct {
		name   string
		group  string
		topics []string
	}{
		{"empty group", "", []string{"T"}},
		{"no topics", "g", nil},
		{"empty topic", "g", []string{"T", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := kafka.NewConsumer(cfg, tc.group, tc.topics...); err == nil {
				c.Close()
				t.Errorf("NewConsumer(%q, %q) = nil error, want one", tc.group, tc.topics)
			}
		})
	}
}
