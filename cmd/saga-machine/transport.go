package main

import (
	"context"
	"sync"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// publisher adapts a kafka.Producer to engine.Publisher.
type publisher struct{ p *kafka.Producer }

func (a publisher) Publish(ctx context.Context, recs []engine.Record) error {
	out := make([]kafka.Record, len(recs))
	for i, r := range recs {
		out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return a.p.Publish(ctx, out)
}

// consumer adapts a kafka.Consumer to engine.Consumer. kafka.Record carries
// an unexported leader epoch that Commit needs, so the fetched originals are
// kept and committed instead of records rebuilt from engine.Records.
type consumer struct {
	c       *kafka.Consumer
	mu      sync.Mutex
	fetched map[tpo]kafka.Record
}

type tpo struct {
	topic     string
	partition int32
	offset    int64
}

func newConsumer(c *kafka.Consumer) *consumer {
	return &consumer{c: c, fetched: map[tpo]kafka.Record{}}
}

func (a *consumer) Fetch(ctx context.Context, max int) ([]engine.Record, error) {
	recs, err := a.c.Fetch(ctx, max)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Record, len(recs))
	a.mu.Lock()
	for i, r := range recs {
		a.fetched[tpo{r.Topic, r.Partition, r.Offset}] = r
		out[i] = engine.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Partition: r.Partition, Offset: r.Offset}
	}
	a.mu.Unlock()
	return out, nil
}

func (a *consumer) Commit(ctx context.Context, recs []engine.Record) error {
	out := make([]kafka.Record, len(recs))
	a.mu.Lock()
	for i, r := range recs {
		k := tpo{r.Topic, r.Partition, r.Offset}
		if orig, ok := a.fetched[k]; ok {
			out[i] = orig
			delete(a.fetched, k)
		} else {
			out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Partition: r.Partition, Offset: r.Offset}
		}
	}
	a.mu.Unlock()
	return a.c.Commit(ctx, out)
}
