package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestConformance runs the conformance suite against real Apache Kafka
// (`make up`); it skips locally and fails under CI=true when Kafka is missing.
func TestConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T) kafka.Config { return testenv.Kafka(t) })
}

// BenchmarkPublish measures Publish against real Kafka.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchPublish(b, testenv.Kafka(b), batch) })
	}
}

// BenchmarkRoundTrip measures publish + fetch + commit against real Kafka.
func BenchmarkRoundTrip(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchRoundTrip(b, testenv.Kafka(b), batch) })
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
		{"negative commit interval", kafka.Config{Brokers: []string{"b:9092"}, CommitInterval: -time.Second}},
		{"negative delivery timeout", kafka.Config{Brokers: []string{"b:9092"}, DeliveryTimeout: -time.Second}},
		{"negative dial timeout", kafka.Config{Brokers: []string{"b:9092"}, DialTimeout: -time.Second}},
		{"negative session timeout", kafka.Config{Brokers: []string{"b:9092"}, SessionTimeout: -time.Second}},
		{"negative heartbeat", kafka.Config{Brokers: []string{"b:9092"}, HeartbeatInterval: -time.Second}},
		{"heartbeat above a third of the session", kafka.Config{Brokers: []string{"b:9092"}, SessionTimeout: 6 * time.Second, HeartbeatInterval: 3 * time.Second}},
		{"SASL user without password", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{User: "deals"}}},
		{"SASL password without user", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{Password: "pw"}}},
		{"SASL unknown mechanism", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{Mechanism: "GSSAPI", User: "u", Password: "p"}}},
		{"SASL user with a comma", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{User: "a,b", Password: "p"}}},
		{"instance id with spaces", kafka.Config{Brokers: []string{"b:9092"}, InstanceID: " deals-0"}},
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

// TestSASLNeverPrintsThePassword: a Config (or its SASL) printed with any
// verb or logged with slog shows the user, never the password.
func TestSASLNeverPrintsThePassword(t *testing.T) {
	const pw = "very-secret-pw"
	cfg := kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{User: "deals", Password: pw}}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "sasl", cfg.SASL, "cfg", cfg)
	for _, out := range []string{
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%s", cfg.SASL), fmt.Sprintf("%v", cfg.SASL), fmt.Sprintf("%#v", cfg.SASL), logged.String(),
	} {
		if strings.Contains(out, pw) {
			t.Errorf("output shows the password: %s", out)
		}
		if !strings.Contains(out, "deals") {
			t.Errorf("output does not name the user: %s", out)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
