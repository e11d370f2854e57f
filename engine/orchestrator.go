package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
)

// Defaults applied to the zero fields of a Config.
const (
	DefaultBatchSize  = 500
	DefaultRelayBatch = 1000
	// DefaultRelayLease is how long the relay holds outbox records it
	// publishes before another replica may take them.
	DefaultRelayLease = 30 * time.Second
	DefaultRelayPoll  = 250 * time.Millisecond
	DefaultTimerPoll  = 200 * time.Millisecond
	DefaultTimerBatch = 200
	// DefaultShutdownTimeout bounds the last outbox flush when Run stops.
	DefaultShutdownTimeout = 10 * time.Second
	DefaultConflictRetry   = 8
	// DefaultInboxRetention is how long processed message ids are kept to
	// drop redelivered duplicates.
	DefaultInboxRetention = 7 * 24 * time.Hour
	// DefaultPruneEvery is how often Run prunes older inbox records.
	DefaultPruneEvery = time.Hour

	// DefaultDrainTimeout is the former name of DefaultShutdownTimeout.
	//
	// Deprecated: use DefaultShutdownTimeout.
	DefaultDrainTimeout = DefaultShutdownTimeout
	// DefaultInboxPurgeEvery is the former name of DefaultPruneEvery.
	//
	// Deprecated: use DefaultPruneEvery.
	DefaultInboxPurgeEvery = DefaultPruneEvery
)

// Config tunes an Orchestrator. Its zero value means "the defaults" (the
// Default* constants, a discarding logger, time.Now, no metrics). The
// delivery knobs (BatchSize, FetchLinger aside, RelayBatch, RelayLease,
// RelayPoll, ShutdownTimeout, InboxRetention, PruneEvery) have the same
// names and meanings as the participant SDK's (sdk.Config).
type Config struct {
	// Logger receives structured logs; every line about one saga carries
	// saga_id. Default: discard.
	Logger *slog.Logger
	// Clock returns the current time (tests pass a fake). Default time.Now.
	Clock func() time.Time
	// BatchSize is the most records fetched and applied in one transaction.
	// Default 500.
	BatchSize int
	// RelayBatch is the most outbox records published at once. Default
	// 1000.
	RelayBatch int
	// RelayLease is how long the relay holds the outbox records it
	// publishes (a lock on PostgreSQL, a lease on SQLite) before another
	// replica may publish them; a publish is retried within it. Default
	// 30s.
	RelayLease time.Duration
	// RelayPoll is how often an idle relay looks for outbox records that it
	// was not woken up for (other replicas' records, expired leases).
	// Default 250ms.
	RelayPoll time.Duration
	// TimerPoll is how often due timers (timeouts, retries) are looked for.
	// Default 200ms.
	TimerPoll time.Duration
	// TimerBatch is the most due timers handled per poll. Default 200.
	TimerBatch int
	// ShutdownTimeout bounds the last outbox flush when Run stops (the
	// batch in flight is always finished first). Default 10s.
	ShutdownTimeout time.Duration
	// ConflictRetries bounds how often a batch is retried at once after an
	// optimistic-lock conflict before HandleRecords returns the conflict.
	// Default 8.
	ConflictRetries int
	// Owner names this replica in outbox leases. Default: host name, process
	// id and a random suffix.
	Owner string
	// Observer receives metrics hooks; if it also implements
	// CompensationObserver, IntakeObserver or RelayObserver it gets those hooks too.
	// Default: none.
	Observer Observer
	// InboxRetention is how long the ids of processed messages are kept so
	// that redelivered duplicates are dropped; Run prunes older ones. It
	// must exceed how long the bus may redeliver a message (consumer lag,
	// retention of the event topic, replays from an earlier offset).
	// Default 7 days; negative: never prune (the inbox grows without bound).
	InboxRetention time.Duration
	// PruneEvery is how often Run prunes the inbox, and the finished
	// sagas past SagaRetention (also once at start). Default 1 hour.
	PruneEvery time.Duration
	// SagaRetention is how long a finished saga (completed or failed) is
	// kept after its last change, with its timeline, keys and idempotency
	// keys; Run removes older ones every PruneEvery. Running,
	// compensating and compensation_failed sagas and dead letters are
	// never removed. It must exceed how long operators and clients read a
	// finished saga (its timeline) and how long clients retry a start
	// under one Idempotency-Key (after that a retry starts a new saga).
	// The store must implement SagaPurger. Default 0: finished sagas are
	// kept forever.
	SagaRetention time.Duration
	// EventTopicBase, if set, binds senders to topics: an event is applied
	// only if it arrived on EventTopic(EventTopicBase, p) of the
	// participant p it names; any other event is dead-lettered
	// (CodeWrongParticipant). Set it whenever participants publish to
	// their own event topics (saga-machine always does). Empty: no check.
	EventTopicBase string

	// DrainTimeout is the former name of ShutdownTimeout, used when
	// ShutdownTimeout is zero.
	//
	// Deprecated: use ShutdownTimeout.
	DrainTimeout time.Duration
	// InboxPurgeEvery is the former name of PruneEvery, used when
	// PruneEvery is zero.
	//
	// Deprecated: use PruneEvery.
	InboxPurgeEvery time.Duration
}

func (c Config) withDefaults() (Config, error) {
	neg := func(name string, bad bool) error {
		if bad {
			return Errorf(CodeInvalid, "orchestrator config", "%s is negative", name)
		}
		return nil
	}
	if err := errors.Join(
		neg("BatchSize", c.BatchSize < 0), neg("RelayBatch", c.RelayBatch < 0),
		neg("RelayLease", c.RelayLease < 0), neg("RelayPoll", c.RelayPoll < 0),
		neg("TimerPoll", c.TimerPoll < 0), neg("TimerBatch", c.TimerBatch < 0),
		neg("ShutdownTimeout", c.ShutdownTimeout < 0), neg("DrainTimeout", c.DrainTimeout < 0),
		neg("ConflictRetries", c.ConflictRetries < 0),
		neg("PruneEvery", c.PruneEvery < 0), neg("InboxPurgeEvery", c.InboxPurgeEvery < 0),
		neg("SagaRetention", c.SagaRetention < 0),
	); err != nil {
		return c, err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.BatchSize, DefaultBatchSize)
	def(&c.RelayBatch, DefaultRelayBatch)
	def(&c.TimerBatch, DefaultTimerBatch)
	def(&c.ConflictRetries, DefaultConflictRetry)
	defD(&c.RelayLease, DefaultRelayLease)
	defD(&c.RelayPoll, DefaultRelayPoll)
	defD(&c.TimerPoll, DefaultTimerPoll)
	defD(&c.ShutdownTimeout, c.DrainTimeout)
	defD(&c.ShutdownTimeout, DefaultShutdownTimeout)
	defD(&c.InboxRetention, DefaultInboxRetention)
	defD(&c.PruneEvery, c.InboxPurgeEvery)
	defD(&c.PruneEvery, DefaultPruneEvery)
	c.DrainTimeout, c.InboxPurgeEvery = c.ShutdownTimeout, c.PruneEvery
	if c.Owner == "" {
		c.Owner = relay.Owner()
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	return c, nil
}

// Orchestrator is the durable saga runtime: it applies participants' events
// to saga instances (intake), publishes the commands they cause (relay),
// fires state timeouts and command retries (timers), and carries out
// operator actions. All state lives in the Store, so any number of
// replicas may run against one database and one consumer group.
type Orchestrator struct {
	cfg Config
	cat *Catalog
	st  Store
	pub Publisher
	log *slog.Logger
	obs Observer
	cob CompensationObserver // obs if it implements it, else NopObserver
	iob IntakeObserver       // obs if it implements it, else NopObserver
	rob RelayObserver        // obs if it implements it, else NopObserver
	// purger is st if it can remove finished sagas (SagaPurger); New
	// requires it when SagaRetention is set.
	purger SagaPurger

	wake relay.Signal // wakes the relay

	// progress is how far each participant got through its commands, as
	// seen from its answers: the retry timers hold back re-sends that would
	// land behind the original (progress.go).
	progress progress
}

// New checks cfg and returns an orchestrator over the definitions in cat,
// the store st and the publisher pub. pub may be nil when Run is never
// called (for example in tests of HandleRecords alone).
func New(cfg Config, cat *Catalog, st Store, pub Publisher) (*Orchestrator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cat == nil {
		return nil, Errorf(CodeInvalid, "new orchestrator", "catalog is nil")
	}
	if st == nil {
		return nil, Errorf(CodeInvalid, "new orchestrator", "store is nil")
	}
	purger, _ := st.(SagaPurger)
	if cfg.SagaRetention > 0 && purger == nil {
		return nil, Errorf(CodeInvalid, "new orchestrator", "SagaRetention %v: the store (%T) cannot remove finished sagas (no PurgeFinished)", cfg.SagaRetention, st)
	}
	return &Orchestrator{
		cfg:    cfg,
		cat:    cat,
		st:     st,
		pub:    pub,
		log:    cfg.Logger,
		obs:    cfg.Observer,
		cob:    hooks[CompensationObserver](cfg.Observer),
		iob:    hooks[IntakeObserver](cfg.Observer),
		rob:    hooks[RelayObserver](cfg.Observer),
		purger: purger,
		wake:   relay.NewSignal(),
	}, nil
}

// hooks is obs as the optional observer interface H when it implements
// it, else NopObserver (which implements them all).
func hooks[H any](obs Observer) H {
	if h, ok := obs.(H); ok {
		return h
	}
	return any(NopObserver{}).(H)
}

// Catalog returns the loaded saga definitions.
func (o *Orchestrator) Catalog() *Catalog { return o.cat }

// Store returns the store the orchestrator works on.
func (o *Orchestrator) Store() Store { return o.st }

// Run consumes events from c, relays the outbox, fires timers and prunes
// the inbox (Config.InboxRetention) until ctx is done. Then it stops
// fetching, finishes the batch in flight (its transaction and its offset
// commit), flushes the outbox for at most Config.ShutdownTimeout and
// returns nil. It returns an error only if it cannot start (no publisher).
func (o *Orchestrator) Run(ctx context.Context, c Consumer) error {
	if o.pub == nil {
		return Errorf(CodeInvalid, "run orchestrator", "no publisher: New was given a nil Publisher")
	}
	if c == nil {
		return Errorf(CodeInvalid, "run orchestrator", "consumer is nil")
	}
	o.log.Info("orchestrator running", "owner", o.cfg.Owner, "batch_size", o.cfg.BatchSize)

	loop := relay.Loop{Once: o.RelayOnce, Batch: o.cfg.RelayBatch, Poll: o.cfg.RelayPoll, Wake: o.wake, Log: o.log}
	// The relay's work outlives ctx by at most ShutdownTimeout: the batch
	// under way at shutdown is finished (published and deleted), then the
	// outbox is drained.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopRelay := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { loop.Run(work, stopRelay) })
	timerCtx, stopTimers := context.WithCancel(ctx)
	wg.Go(func() { o.timerLoop(timerCtx) })
	if o.cfg.InboxRetention > 0 || o.cfg.SagaRetention > 0 {
		wg.Go(func() { relay.Every(timerCtx, o.cfg.PruneEvery, o.pruneOnce) })
	}
	if rs, ok := o.st.(statsRefresher); ok {
		wg.Go(func() { relay.Every(timerCtx, rs.StatsEvery(), func(ctx context.Context) { o.refreshStats(ctx, rs) }) })
	}

	o.intakeLoop(ctx, c)

	// Stop the background loops, then flush what the last batches enqueued
	// (one relay at a time, so nothing is leased twice by this replica).
	grace := time.AfterFunc(o.cfg.ShutdownTimeout, cancelWork)
	defer grace.Stop()
	stopTimers()
	close(stopRelay)
	wg.Wait()
	n, err := loop.Drain(work)
	if err != nil {
		o.log.Warn("outbox not fully flushed at shutdown; the next start publishes the rest", "published", n, "err", err)
	} else {
		o.log.Info("orchestrator stopped", "flushed", n)
	}
	return nil
}

// pruneOnce prunes the inbox and the finished sagas past their retention
// and logs the outcome (Run's pruning job).
func (o *Orchestrator) pruneOnce(ctx context.Context) {
	n, err := o.Prune(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		o.log.Warn("prune inbox failed; trying again later", "err", err, "retention", o.cfg.InboxRetention)
	case n > 0:
		o.log.Info("pruned inbox", "removed", n, "retention", o.cfg.InboxRetention)
	}
	n, err = o.PruneSagas(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		o.log.Warn("remove finished sagas failed; trying again later", "err", err, "retention", o.cfg.SagaRetention)
	case n > 0:
		o.log.Info("removed finished sagas past their retention", "removed", n, "retention", o.cfg.SagaRetention)
	}
}

// SagaPurger is a store that can remove finished sagas
// (Config.SagaRetention); engine/sqlstore's Store is one.
type SagaPurger interface {
	// PurgeFinished removes up to limit (<= 0: all) sagas that finished
	// (completed or failed) before olderThan, with their keys, timeline
	// and idempotency keys, and returns how many it removed. It never
	// removes a running, compensating or compensation_failed saga.
	PurgeFinished(ctx context.Context, olderThan time.Time, limit int) (int64, error)
}

// PruneSagas removes the finished sagas whose last change is older than
// Config.SagaRetention (nothing when it is zero) and returns how many it
// removed. Run calls it every PruneEvery.
func (o *Orchestrator) PruneSagas(ctx context.Context) (int64, error) {
	if o.cfg.SagaRetention <= 0 {
		return 0, nil
	}
	n, err := o.purger.PurgeFinished(ctx, o.cfg.Clock().Add(-o.cfg.SagaRetention), 0)
	if err != nil {
		return n, fmt.Errorf("remove finished sagas older than %v: %w", o.cfg.SagaRetention, err)
	}
	return n, nil
}

// statsRefresher is a store that keeps its tables' planner statistics up
// to date as they grow (sqlstore on PostgreSQL: sqldb.RefreshStats). Run
// calls RefreshStats every StatsEvery: the store knows how often its
// database needs it (the engine's root imports no database code).
type statsRefresher interface {
	RefreshStats(ctx context.Context) ([]string, error)
	StatsEvery() time.Duration
}

// refreshStats is Run's statistics job.
func (o *Orchestrator) refreshStats(ctx context.Context, rs statsRefresher) {
	analyzed, err := rs.RefreshStats(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		o.log.Warn("refresh planner statistics failed; trying again later", "err", err, "analyzed", analyzed)
	case len(analyzed) > 0:
		o.log.Debug("refreshed planner statistics", "tables", analyzed)
	}
}

// Prune forgets the ids of messages processed more than
// Config.InboxRetention ago and returns how many it removed (none when the
// retention is negative). Run calls it every Config.PruneEvery.
func (o *Orchestrator) Prune(ctx context.Context) (int64, error) {
	if o.cfg.InboxRetention < 0 {
		return 0, nil
	}
	n, err := o.st.PurgeInbox(ctx, o.cfg.Clock().Add(-o.cfg.InboxRetention))
	if err != nil {
		return n, fmt.Errorf("prune inbox records older than %v: %w", o.cfg.InboxRetention, err)
	}
	return n, nil
}

// PurgeInbox is the former name of Prune.
//
// Deprecated: use Prune.
func (o *Orchestrator) PurgeInbox(ctx context.Context) (int64, error) { return o.Prune(ctx) }

// Wake tells the relay that the outbox has new records.
func (o *Orchestrator) Wake() { o.wake.Notify() }
