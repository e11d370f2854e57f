package kafkatest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// ValueSize is the record value size the benchmarks use (about one envelope).
const ValueSize = 200

// benchRecords makes n records of ValueSize bytes with distinct keys.
func benchRecords(topic string, n, from int) []kafka.Record {
	value := make([]byte, ValueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	recs := make([]kafka.Record, n)
	for i := range recs {
		recs[i] = kafka.Record{Topic: topic, Key: "saga-" + strconv.Itoa(from+i), Value: value,
			Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	}
	return recs
}

func benchSetup(b *testing.B, cfg kafka.Config, base string) (context.Context, kafka.Config, string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	cfg.ClientID = "kafkatest-bench"
	topic := testenv.Name(b, base)
	if err := kafka.EnsureTopics(ctx, cfg, 3, topic); err != nil {
		b.Fatalf("EnsureTopics: %v", err)
	}
	return ctx, cfg, topic
}

// BenchPublish measures Publish of batches of batch records (ValueSize bytes
// each) to a 3-partition topic, reporting records/s and MB/s of values.
func BenchPublish(b *testing.B, cluster kafka.Config, batch int) {
	ctx, cfg, topic := benchSetup(b, cluster, "kt.bench.publish")
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		b.Fatalf("NewProducer: %v", err)
	}
	defer p.Close()
	recs := benchRecords(topic, batch, 0)
	if err := p.Publish(ctx, recs); err != nil { // connect and learn metadata
		b.Fatalf("Publish: %v", err)
	}
	b.SetBytes(int64(batch * ValueSize))
	n := 0
	for b.Loop() {
		if err := p.Publish(ctx, recs); err != nil {
			b.Fatalf("Publish: %v", err)
		}
		n++
	}
	b.ReportMetric(float64(n*batch)/b.Elapsed().Seconds(), "records/s")
}

// BenchRoundTrip measures publishing batch records and consuming and
// committing them in one group member: one op is one full round trip.
func BenchRoundTrip(b *testing.B, cluster kafka.Config, batch int) {
	ctx, cfg, topic := benchSetup(b, cluster, "kt.bench.roundtrip")
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		b.Fatalf("NewProducer: %v", err)
	}
	defer p.Close()
	c, err := kafka.NewConsumer(cfg, testenv.Name(b, "g"), topic)
	if err != nil {
		b.Fatalf("NewConsumer: %v", err)
	}
	defer c.Close()
	roundTrip := func(from int) {
		if err := p.Publish(ctx, benchRecords(topic, batch, from)); err != nil {
			b.Fatalf("Publish: %v", err)
		}
		for got := 0; got < batch; {
			recs, err := c.Fetch(ctx, batch-got)
			if err != nil {
				b.Fatalf("Fetch: %v", err)
			}
			if err := c.Commit(ctx, recs); err != nil {
				b.Fatalf("Commit: %v", err)
			}
			got += len(recs)
		}
	}
	roundTrip(0) // join the group first
	b.SetBytes(int64(batch * ValueSize))
	n := 0
	for b.Loop() {
		n++
		roundTrip(n * batch)
	}
	b.ReportMetric(float64(n*batch)/b.Elapsed().Seconds(), "records/s")
}
