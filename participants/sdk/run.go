package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// Run consumes the participant's commands and relays its outbox until ctx
// ends, then stops gracefully: commands under way finish (their retries do
// not), their offsets are committed and the outbox is relayed once more,
// all within Config.ShutdownTimeout. It returns nil after a graceful stop
// and an error only if it could not start (no brokers, bad configuration).
// Broker and database outages while running are logged and retried.
func (p *Participant) Run(ctx context.Context) error {
	if len(p.cfg.Brokers) == 0 {
		return fmt.Errorf("run participant %s: Config.Brokers is empty", p.cfg.Name)
	}
	kcfg := p.cfg.kafkaConfig()
	prod, err := kafka.NewProducer(kcfg)
	if err != nil {
		return fmt.Errorf("run participant %s: %w", p.cfg.Name, err)
	}
	defer prod.Close()
	cons, err := kafka.NewConsumer(kcfg, p.cfg.Group, p.cfg.CommandTopic)
	if err != nil {
		return fmt.Errorf("run participant %s: %w", p.cfg.Name, err)
	}
	defer cons.Close()

	// work carries the database and publish calls: it outlives ctx by at
	// most ShutdownTimeout so in-flight work can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var grace *time.Timer
	var graceMu sync.Mutex
	stopAfter := context.AfterFunc(ctx, func() {
		graceMu.Lock()
		grace = time.AfterFunc(p.cfg.ShutdownTimeout, cancelWork)
		graceMu.Unlock()
	})
	defer func() {
		stopAfter()
		graceMu.Lock()
		if grace != nil {
			grace.Stop()
		}
		graceMu.Unlock()
	}()

	p.log.Info("participant running", "command_topic", p.cfg.CommandTopic, "event_topic", p.cfg.EventTopic,
		"group", p.cfg.Group, "commands", p.Commands(), "db", string(p.dialect))
	publish := func(ctx context.Context, recs []Record) error {
		krecs := make([]kafka.Record, len(recs))
		for i, r := range recs {
			krecs[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
		}
		return prod.Publish(ctx, krecs)
	}
	loop := relay.Loop{
		Once:  func(ctx context.Context) (int, error) { return p.Flush(ctx, publish) },
		Batch: p.cfg.RelayBatch, Poll: p.cfg.RelayPoll, Wake: p.kick, Log: p.log,
	}
	stopRelay := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { loop.Run(work, stopRelay) })
	if p.cfg.InboxRetention < 0 {
		p.log.Info("inbox pruning disabled (negative InboxRetention): the inbox grows without bound")
	} else {
		wg.Go(func() { relay.Every(ctx, p.cfg.PruneEvery, p.pruneOnce) })
	}
	if p.dialect == dialectPostgres {
		// The planner statistics of every table of the participant's
		// database, the handlers' included (sqldb.RefreshStats).
		wg.Go(func() { relay.Every(ctx, sqldb.StatsEvery, p.refreshStats) })
	}
	p.consume(ctx, work, cons)
	close(stopRelay) // the batch under way is finished with work
	wg.Wait()
	// The replies of the last commands: bounded by ShutdownTimeout (work).
	if n, err := loop.Drain(work); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Warn("outbox relay at shutdown failed; the rest is published on the next start", "published", n, "err", err)
	}
	p.log.Info("participant stopped")
	return nil
}

// kafkaConfig is the configuration of the participant's Kafka clients.
func (c Config) kafkaConfig() kafka.Config {
	return kafka.Config{Brokers: c.Brokers, ClientID: "saga-participant-" + c.Name, FetchLinger: c.FetchLinger,
		SASL: c.KafkaSASL, TLS: c.KafkaTLS, InstanceID: c.KafkaInstanceID, SessionTimeout: c.KafkaSessionTimeout, Logger: c.Logger}
}

// Pruned counts what Prune deleted.
type Pruned struct {
	// Inbox is the number of inbox records deleted.
	Inbox int64
	// DeadLetters is the number of dead letters deleted with them: dead
	// letters whose command was handled since (replayed, or delivered
	// again successfully).
	DeadLetters int64
	// Compensated is the number of compensation barrier records deleted
	// (written more than Config.InboxRetention ago).
	Compensated int64
}

// Prune deletes the inbox records of commands handled more than
// Config.InboxRetention ago, the dead letters of those same commands
// (handled since they were parked), and the compensation barrier records
// written before the same time; the inbox record of a command compensated
// after that time stays until its barrier record goes. Dead letters still
// parked are never deleted. With a negative InboxRetention it deletes
// nothing. Run calls it at start and then every Config.PruneEvery.
//
// A command delivered again after its inbox record is gone is not
// recognised as a duplicate: its handler runs again and a second reply
// (with a new message id) is sent. Hence InboxRetention must exceed the
// longest time a command can be delivered again.
func (p *Participant) Prune(ctx context.Context) (Pruned, error) {
	if p.cfg.InboxRetention < 0 {
		return Pruned{}, nil
	}
	before := time.Now().Add(-p.cfg.InboxRetention).UTC()
	// Dead letters first: if the inbox delete then fails, the next run
	// finds the same records again.
	cond, args := p.dt.Prunable(before)
	q := p.db.Rebind(`DELETE FROM sdk_dead_letters WHERE message_id IN (SELECT message_id FROM sdk_inbox WHERE ` + cond + `)`)
	res, err := p.db.ExecContext(ctx, q, args...)
	if err != nil {
		return Pruned{}, fmt.Errorf("prune handled dead letters of %s: %w", p.cfg.Name, err)
	}
	dls, err := res.RowsAffected()
	if err != nil {
		return Pruned{}, fmt.Errorf("prune handled dead letters of %s: %w", p.cfg.Name, err)
	}
	n, err := p.PurgeInbox(ctx, before)
	if err != nil {
		return Pruned{DeadLetters: dls}, err
	}
	c, err := p.pruneCompensated(ctx, before)
	if err != nil {
		return Pruned{Inbox: n, DeadLetters: dls}, err
	}
	return Pruned{Inbox: n, DeadLetters: dls, Compensated: c}, nil
}

// pruneOnce prunes and logs the outcome (Run's pruning job).
func (p *Participant) pruneOnce(ctx context.Context) {
	n, err := p.Prune(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		p.log.Warn("pruning the inbox failed, will retry", "err", err, "in", p.cfg.PruneEvery.String())
	case err == nil:
		p.log.Info("inbox pruned", "inbox_records", n.Inbox, "handled_dead_letters", n.DeadLetters, "compensation_records", n.Compensated,
			"retention", p.cfg.InboxRetention.String())
	}
}

// consume fetches batches until ctx ends; each batch is handled and its
// handled records committed.
func (p *Participant) consume(ctx, work context.Context, cons *kafka.Consumer) {
	failures := 0
	for ctx.Err() == nil {
		recs, err := cons.Fetch(ctx, p.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			p.log.Warn("fetching commands failed, will retry", "topic", p.cfg.CommandTopic, "err", err, "failures", failures)
			sleep(ctx.Done(), p.backoff(failures))
			continue
		}
		failures = 0
		done := p.handleBatch(work, ctx.Done(), recs)
		cctx, cancel := context.WithTimeout(work, 10*time.Second)
		if err := cons.Commit(cctx, done); err != nil {
			// The records are redelivered; the inbox drops them as duplicates.
			p.log.Warn("committing offsets failed; handled commands will be redelivered and dropped as duplicates", "records", len(done), "err", err)
		}
		cancel()
	}
}

type partitionKey struct {
	topic     string
	partition int32
}

// handleBatch handles a fetched batch: one that fits in one transaction
// (maxTxBatch records) in one pass, whatever its partitions; a larger one
// partition by partition, in parallel (up to Config.Concurrency), each
// partition in order. It returns the records that are done with (for each
// partition, a prefix of its records).
//
// Splitting a small batch by partition would only add transactions: at 32
// sagas in flight a fetch holds a few records of several partitions, and
// one transaction per partition cost a fifth of the throughput (measured
// with cmd/bench, docs/operations.md).
func (p *Participant) handleBatch(work context.Context, stop <-chan struct{}, recs []kafka.Record) []kafka.Record {
	if p.cfg.Concurrency == 1 || len(recs) <= maxTxBatch {
		return p.handlePartition(work, stop, recs)
	}
	var order []partitionKey
	groups := map[partitionKey][]kafka.Record{}
	for _, r := range recs {
		k := partitionKey{r.Topic, r.Partition}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	if len(order) == 1 {
		return p.handlePartition(work, stop, recs)
	}
	results := make([][]kafka.Record, len(order))
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, k := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = p.handlePartition(work, stop, groups[k])
		})
	}
	wg.Wait()
	var done []kafka.Record
	for _, r := range results {
		done = append(done, r...)
	}
	return done
}

// handlePartition handles records in order; it stops early (returning the
// done prefix) when stopping, and retries a record that cannot be stored
// (database down) until it can.
func (p *Participant) handlePartition(work context.Context, stop <-chan struct{}, recs []kafka.Record) []kafka.Record {
	done := 0
	for failures := 1; done < len(recs); failures++ {
		outs, err := p.process(work, stop, recs[done:])
		done += len(outs)
		if err == nil {
			break
		}
		if errors.Is(err, errStopped) || work.Err() != nil {
			return recs[:done]
		}
		rec := recs[done]
		p.log.Warn("command could not be stored, will retry", "topic", rec.Topic, "partition", rec.Partition,
			"offset", rec.Offset, "saga_id", rec.Key, "err", err)
		if !sleep(stop, p.backoff(failures)) {
			return recs[:done]
		}
	}
	return recs[:done]
}

// refreshStats is Run's statistics job: ANALYZE the tables of the
// participant's database that grew since their last ANALYZE, so that the
// cached plans of prepared statements follow them.
func (p *Participant) refreshStats(ctx context.Context) {
	analyzed, err := sqldb.RefreshStats(ctx, p.db)
	switch {
	case err != nil && ctx.Err() == nil:
		p.log.Warn("refresh planner statistics failed; trying again later", "err", err, "analyzed", analyzed)
	case len(analyzed) > 0:
		p.log.Debug("refreshed planner statistics", "tables", analyzed)
	}
}
