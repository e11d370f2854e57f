package system

import (
	"context"
	"sync"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// Publisher adapts a kafka.Producer to engine.Publisher.
type Publisher struct{ P *kafka.Producer }

var _ engine.Publisher = Publisher{}

// Publish sends recs and returns when the broker has them all.
func (a Publisher) Publish(ctx context.Context, recs []engine.Record) error {
	out := make([]kafka.Record, len(recs))
	for i, r := range recs {
		out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return a.P.Publish(ctx, out)
}

// Consumer adapts a kafka.Consumer to engine.Consumer. kafka.Record carries
// an unexported leader epoch that Commit needs, so the fetched originals are
// kept and committed instead of records rebuilt from engine.Records.
type Consumer struct {
	c       *kafka.Consumer
	mu      sync.Mutex
	fetched map[tpo]kafka.Record
}

var _ engine.Consumer = (*Consumer)(nil)

type tpo struct {
	topic     string
	partition int32
	offset    int64
}

// NewConsumer wraps c.
func NewConsumer(c *kafka.Consumer) *Consumer {
	return &Consumer{c: c, fetched: map[tpo]kafka.Record{}}
}

// Fetch returns up to max records (see kafka.Consumer.Fetch).
func (a *Consumer) Fetch(ctx context.Context, max int) ([]engine.Record, error) {
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

// Commit commits the offsets of fetched records (see kafka.Consumer.Commit).
func (a *Consumer) Commit(ctx context.Context, recs []engine.Record) error {
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
