package kafkalag_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/kafkalag"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// gather collects c once and returns its samples as "name{labels}" ->
// value (labels sorted by name, as the registry sorts them).
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			out[key+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestLagOnKafka: on the test Kafka cluster, a group that committed
// nothing lags by every record; after a commit of part of them it lags by
// the rest, partition by partition, and its committed offsets and the end
// offsets are reported.
func TestLagOnKafka(t *testing.T) {
	cfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic, group := testenv.Name(t, "lag"), testenv.Name(t, "lag-group")
	if err := kafka.EnsureTopics(ctx, cfg, 2, topic); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	prod, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var recs []kafka.Record
	for i := range 7 {
		recs = append(recs, kafka.Record{Topic: topic, Key: fmt.Sprintf("k%d", i), Value: []byte("{}")})
	}
	if err := prod.Publish(ctx, recs); err != nil {
		t.Fatalf("publish: %v", err)
	}
	col, err := kafkalag.New(cfg, group, topic)
	if err != nil {
		t.Fatal(err)
	}

	// Read every record to learn which partition each went to.
	cons, err := kafka.NewConsumer(cfg, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []kafka.Record
	for len(got) < len(recs) {
		batch, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got = append(got, batch...)
	}
	ends := map[int32]int64{}
	for _, r := range got {
		ends[r.Partition] = max(ends[r.Partition], r.Offset+1)
	}

	want := map[string]float64{"saga_kafka_lag_up{group=" + group + "}": 1}
	for p := range int32(2) {
		part := strconv.Itoa(int(p))
		want["saga_kafka_partition_end_offset{partition="+part+",topic="+topic+"}"] = float64(ends[p])
		want["saga_kafka_consumer_lag{group="+group+",partition="+part+",topic="+topic+"}"] = float64(ends[p])
	}
	if g := gather(t, col); !maps.Equal(g, want) {
		t.Errorf("before any commit:\n got %v\nwant %v", g, want)
	}

	// Commit the first record of each partition: the lag drops by one per
	// partition that had records, and the committed offset is 1 there.
	var first []kafka.Record
	seen := map[int32]bool{}
	for _, r := range got {
		if !seen[r.Partition] {
			seen[r.Partition] = true
			first = append(first, r)
		}
	}
	if err := cons.Commit(ctx, first); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// Commit only marks; Flush waits until the coordinator has the marks.
	if err := cons.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	for p := range int32(2) {
		part := strconv.Itoa(int(p))
		if seen[p] {
			want["saga_kafka_consumer_lag{group="+group+",partition="+part+",topic="+topic+"}"] = float64(ends[p] - 1)
			want["saga_kafka_consumer_committed_offset{group="+group+",partition="+part+",topic="+topic+"}"] = 1
		}
	}
	if g := gather(t, col); !maps.Equal(g, want) {
		t.Errorf("after committing the first record of each partition:\n got %v\nwant %v", g, want)
	}
}

// TestLagRefused: a collector whose credentials the brokers refuse (a
// wrong password) reports saga_kafka_lag_up 0 and no lag at all, not a
// lag of 0, and the scrape itself succeeds.
func TestLagRefused(t *testing.T) {
	cfg := testenv.KafkaSecured(t)
	cfg.SASL.Password = "not-the-password"
	col, err := kafkalag.New(cfg, "saga-machine", "SAGA_SERVER_TOPIC_DEALS")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"saga_kafka_lag_up{group=saga-machine}": 0}
	if g := gather(t, col); !maps.Equal(g, want) {
		t.Errorf("with a wrong password: got %v, want only %v", g, want)
	}
}

func TestNewRefuses(t *testing.T) {
	ok := kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, tc := range []struct {
		name   string
		cfg    kafka.Config
		group  string
		topics []string
	}{
		{"no brokers", kafka.Config{}, "g", []string{"t"}},
		{"no group", ok, "", []string{"t"}},
		{"no topics", ok, "g", nil},
		{"an empty topic", ok, "g", []string{"t", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := kafkalag.New(tc.cfg, tc.group, tc.topics...); err == nil {
				t.Errorf("New: got %v, want an error", c)
			}
		})
	}
	// Unreachable brokers: up 0, nothing else (and no hang past Timeout).
	col, err := kafkalag.New(kafka.Config{Brokers: []string{"127.0.0.1:1"}, DialTimeout: 200 * time.Millisecond}, "g", "t")
	if err != nil {
		t.Fatal(err)
	}
	if g := gather(t, col); !slices.Equal(slices.Sorted(maps.Keys(g)), []string{"saga_kafka_lag_up{group=g}"}) || g["saga_kafka_lag_up{group=g}"] != 0 {
		t.Errorf("unreachable brokers: got %v, want only saga_kafka_lag_up 0", g)
	}
}
