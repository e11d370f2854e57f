package kafkalag_test

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/kafkalag"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestLagOfANewGroup: a group that never joined nor committed lags by
// every record of its topic (it will start at the earliest offset), on
// the embedded broker (which answers GROUP_ID_NOT_FOUND) and on Kafka
// (which answers with no offsets).
func TestLagOfANewGroup(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) kafka.Config
	}{
		{"embedded", func(t *testing.T) kafka.Config {
			b, err := embedded.Start(embedded.Options{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return kafka.Config{Brokers: b.Addrs()}
		}},
		{"kafka", func(t *testing.T) kafka.Config { return testenv.Kafka(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			ctx := context.Background()
			topic, group := testenv.Name(t, "lag-new"), testenv.Name(t, "never-joined")
			if err := kafka.EnsureTopics(ctx, cfg, 1, topic); err != nil {
				t.Fatal(err)
			}
			prod, err := kafka.NewProducer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			if err := prod.Publish(ctx, []kafka.Record{{Topic: topic, Key: "a", Value: []byte("1")}, {Topic: topic, Key: "b", Value: []byte("2")}}); err != nil {
				t.Fatal(err)
			}
			col, err := kafkalag.New(cfg, group, topic)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]float64{
				"saga_kafka_lag_up{group=" + group + "}":                                            1,
				fmt.Sprintf("saga_kafka_consumer_lag{group=%s,partition=0,topic=%s}", group, topic): 2,
				"saga_kafka_partition_end_offset{partition=0,topic=" + topic + "}":                  2,
			}
			if got := gather(t, col); !maps.Equal(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}
