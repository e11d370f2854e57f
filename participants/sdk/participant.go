package sdk

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultEventTopic is the base of the default Config.EventTopic
	// (envelope.DefaultEventTopicBase): a participant's events go to
	// envelope.EventTopic(DefaultEventTopic, Name).
	DefaultEventTopic      = envelope.DefaultEventTopicBase
	DefaultMaxAttempts     = 5
	DefaultBackoff         = 100 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	DefaultBatchSize       = 500
	DefaultRelayBatch      = 1000
	DefaultRelayPoll       = 100 * time.Millisecond
	DefaultRelayLease      = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultTxIdleTimeout bounds how long a handler's transaction may sit
	// idle on PostgreSQL (Config.TxIdleTimeout).
	DefaultTxIdleTimeout = 15 * time.Second
	// DefaultInboxRetention is how long inbox records of handled commands
	// are kept (Config.InboxRetention).
	DefaultInboxRetention = 7 * 24 * time.Hour
	// DefaultPruneEvery is how often Run prunes the inbox
	// (Config.PruneEvery).
	DefaultPruneEvery = time.Hour
	// DefaultRelayInterval is the former name of DefaultRelayPoll.
	//
	// Deprecated: use DefaultRelayPoll.
	DefaultRelayInterval = DefaultRelayPoll
	// DefaultConcurrencyPostgres is how many partitions of a fetched batch
	// are handled at once on PostgreSQL; SQLite handles one at a time.
	DefaultConcurrencyPostgres = 4
)

// Config configures a Participant. The zero value of every field but Name
// and DB means its default; New validates the rest. The delivery knobs
// (BatchSize, FetchLinger, RelayBatch, RelayLease, RelayPoll,
// ShutdownTimeout, InboxRetention, PruneEvery) have the same names and
// meanings as saga-machine's (engine.Config).
type Config struct {
	// Name is the participant name as written in the saga definitions,
	// e.g. "profile". Required.
	Name string
	// DB is the participant's own database: PostgreSQL (driver "pgx",
	// github.com/jackc/pgx/v5/stdlib, or "postgres", lib/pq) or SQLite
	// (driver "sqlite", modernc.org/sqlite), with the SDK tables created by
	// Migrate. Required.
	DB *sqlx.DB
	// Brokers are the Kafka (or embedded broker) addresses. Required by Run;
	// a participant used only through Dispatch (e.g. in sdktest) needs none.
	Brokers []string
	// CommandTopic is the topic the participant's commands arrive on.
	// Default strings.ToUpper(Name)+"_TOPIC", e.g. PROFILE_TOPIC.
	CommandTopic string
	// EventTopic is where replies and saga-starting events go: the
	// participant's own event topic, the only one its Kafka principal may
	// write and the only one saga-machine accepts its events from. Default
	// envelope.EventTopic(envelope.DefaultEventTopicBase, Name), e.g.
	// SAGA_SERVER_TOPIC_PROFILE.
	EventTopic string
	// KafkaSASL authenticates the participant's Kafka clients (its own
	// principal, e.g. user "profile"). Zero: no authentication (the
	// embedded development broker).
	KafkaSASL kafka.SASL
	// KafkaTLS, if set, makes the participant's Kafka connections TLS
	// (kafka.Config.TLS), for a SASL_SSL listener. nil: plaintext.
	KafkaTLS *tls.Config
	// KafkaInstanceID makes the command consumer a static group member
	// (kafka.Config.InstanceID): a replica restarted after a crash gets its
	// partitions back at once. Stable per replica, unique among replicas
	// (e.g. the pod name). Empty: dynamic membership.
	KafkaInstanceID string
	// KafkaSessionTimeout is kafka.Config.SessionTimeout: how long a
	// replica that died without a restart keeps its partitions. Zero:
	// kafka.DefaultSessionTimeout.
	KafkaSessionTimeout time.Duration
	// Group is the Kafka consumer group. Default Name.
	Group string
	// MaxAttempts is how many times a failing handler runs for one
	// delivery before the command is parked as a dead letter. Default 5.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt; it doubles after
	// each further failure up to MaxBackoff. Defaults 100ms and 5s.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// BatchSize is the most records fetched from Kafka at once. Default 500.
	BatchSize int
	// FetchLinger is how long a fetch that got some commands (fewer than
	// BatchSize) keeps collecting the ones arriving meanwhile before they
	// are handled (kafka.Config.FetchLinger). Default none (zero or
	// negative): commands are handled as soon as they arrive, and batches
	// grow with the load by themselves.
	FetchLinger time.Duration
	// Concurrency is how many partitions of a fetched batch are handled at
	// the same time (commands of one partition, and so of one saga, stay in
	// order). A batch that fits in one transaction (32 commands) is handled
	// in one pass whatever this is. Default 4 on PostgreSQL, 1 on SQLite.
	Concurrency int
	// RelayBatch is the most outbox rows published at once. Default 1000.
	RelayBatch int
	// RelayLease is how long the relay holds the outbox rows it publishes
	// (a lock on PostgreSQL, a lease on SQLite) before another replica may
	// publish them; a publish is retried within it. Default 30s.
	RelayLease time.Duration
	// RelayPoll is how often an idle relay looks at the outbox when nothing
	// woke it (saga starts written by other processes, expired leases).
	// Default 100ms.
	RelayPoll time.Duration
	// ShutdownTimeout bounds how long Run keeps finishing in-flight commands
	// and relaying the outbox after its context ends. Default 10s.
	ShutdownTimeout time.Duration
	// InboxRetention is how long the inbox keeps the record of a handled
	// command; Run prunes older records at start and then every PruneEvery
	// (see Prune). A command delivered again after its record is gone runs
	// again, so this must exceed the longest time a command can be
	// delivered again: the command topic's Kafka retention and saga-machine's
	// retry and timeout policies. Default 7 days; negative: never prune.
	InboxRetention time.Duration
	// PruneEvery is how often Run prunes the inbox (also once at start).
	// Default 1 hour.
	PruneEvery time.Duration
	// RelayInterval is the former name of RelayPoll, used when RelayPoll
	// is zero.
	//
	// Deprecated: use RelayPoll.
	RelayInterval time.Duration
	// Logger receives the SDK's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock the SDK compares command deadlines with. Default
	// time.Now; tests pin it.
	Now func() time.Time
	// DeadlineMargin makes the SDK refuse a command this long before its
	// deadline rather than at it: a command is refused (reply
	// COMMAND_EXPIRED, handler not run) unless its deadline is after
	// Now()+DeadlineMargin. Set it to the clock skew between this host and
	// saga-machine's plus the time a reply takes to reach saga-machine, so
	// that an effect applied just before the deadline is not reported after
	// it (which saga-machine then has to compensate). Default 0: refused
	// once the deadline is not after Now(). Must not be negative: accepting
	// commands after their deadline would apply effects saga-machine has
	// given up on. Compensation commands ignore deadlines (see
	// Command.Compensates).
	DeadlineMargin time.Duration
	// TxIdleTimeout bounds, on PostgreSQL, how long the transaction in
	// which handlers run may sit idle (no statement running) before the
	// server ends it and its session (idle_in_transaction_session_timeout,
	// set for that transaction only). A paused or hung replica then
	// releases the inbox and business rows it locked instead of holding
	// them until it resumes: once its partitions move, the new owner
	// handles the same commands without waiting on those locks, and the
	// paused replica's transaction rolls back. A handler must not spend
	// longer than this between two statements of its transaction (calls
	// to slow outside services belong outside it). Default 15s, below
	// Kafka's session timeout so that the rows are free by the time the
	// partitions move. Ignored on SQLite (one process owns the file).
	TxIdleTimeout time.Duration
}

// Participant is one participant service's connection to the saga bus:
// registered handlers, its database, and (in Run) its Kafka clients.
type Participant struct {
	cfg        Config
	db         *sqlx.DB
	sql        *sqldb.Statements // the SDK's own statements
	dt         *delivery.Tables  // inbox and outbox: the delivery core shared with saga-machine
	owner      string            // this replica's name in outbox leases
	dialect    dialect
	log        *slog.Logger
	kick       relay.Signal  // wakes the relay: a transaction that wrote to the outbox committed
	batchStats batchCounters // the committed batches of runBatch (Stats)
	relayStats relayCounters // the rounds of Flush (Stats)
	txSettings string        // txbound.go: bounds a handler transaction's idle time (PostgreSQL)

	mu       sync.RWMutex
	handlers map[string]handlerFunc
	batches  map[string]batchFunc // HandleBatch (batchhandler.go)
}

// New validates cfg, applies the defaults and returns a Participant. It
// does not connect to Kafka; Run does.
func New(cfg Config) (*Participant, error) {
	if strings.TrimSpace(cfg.Name) == "" {
		return nil, errors.New("new participant: Config.Name is empty")
	}
	if cfg.DB == nil {
		return nil, fmt.Errorf("new participant %s: Config.DB is nil", cfg.Name)
	}
	d, err := detectDialect(cfg.DB)
	if err != nil {
		return nil, fmt.Errorf("new participant %s: %w", cfg.Name, err)
	}
	if len(cfg.Brokers) > 0 || cfg.KafkaSASL.Enabled() || cfg.KafkaTLS != nil { // optional here: Run needs them, the test kit does not
		if err := cfg.kafkaConfig().Validate(); err != nil {
			return nil, fmt.Errorf("new participant %s: %w", cfg.Name, err)
		}
	}
	type check struct {
		name string
		bad  bool
	}
	for _, c := range []check{
		{"MaxAttempts", cfg.MaxAttempts < 0},
		{"Backoff", cfg.Backoff < 0},
		{"MaxBackoff", cfg.MaxBackoff < 0},
		{"BatchSize", cfg.BatchSize < 0},
		{"Concurrency", cfg.Concurrency < 0},
		{"RelayBatch", cfg.RelayBatch < 0},
		{"RelayLease", cfg.RelayLease < 0},
		{"RelayPoll", cfg.RelayPoll < 0},
		{"RelayInterval", cfg.RelayInterval < 0},
		{"PruneEvery", cfg.PruneEvery < 0},
		{"ShutdownTimeout", cfg.ShutdownTimeout < 0},
		{"DeadlineMargin", cfg.DeadlineMargin < 0},
		{"TxIdleTimeout", cfg.TxIdleTimeout < 0},
	} {
		if c.bad {
			return nil, fmt.Errorf("new participant %s: Config.%s is negative", cfg.Name, c.name)
		}
	}
	if cfg.CommandTopic == "" {
		cfg.CommandTopic = envelope.CommandTopic(cfg.Name)
	}
	if cfg.EventTopic == "" {
		cfg.EventTopic = envelope.EventTopic(DefaultEventTopic, cfg.Name)
	}
	if cfg.Group == "" {
		cfg.Group = cfg.Name
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.Backoff {
		return nil, fmt.Errorf("new participant %s: Config.MaxBackoff %s is below Backoff %s", cfg.Name, cfg.MaxBackoff, cfg.Backoff)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
		if d == dialectPostgres {
			cfg.Concurrency = DefaultConcurrencyPostgres
		}
	}
	if cfg.RelayBatch == 0 {
		cfg.RelayBatch = DefaultRelayBatch
	}
	if cfg.RelayPoll == 0 {
		cfg.RelayPoll = cfg.RelayInterval
	}
	if cfg.RelayPoll == 0 {
		cfg.RelayPoll = DefaultRelayPoll
	}
	cfg.RelayInterval = cfg.RelayPoll
	if cfg.RelayLease == 0 {
		cfg.RelayLease = DefaultRelayLease
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = DefaultPruneEvery
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.InboxRetention == 0 {
		cfg.InboxRetention = DefaultInboxRetention
	}
	if cfg.TxIdleTimeout == 0 {
		cfg.TxIdleTimeout = DefaultTxIdleTimeout
	}
	if cfg.TxIdleTimeout < time.Millisecond {
		return nil, fmt.Errorf("new participant %s: Config.TxIdleTimeout %s is below 1ms (PostgreSQL counts it in milliseconds)", cfg.Name, cfg.TxIdleTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stmts := sqldb.NewStatements(cfg.DB)
	dt, err := delivery.New(cfg.DB, delivery.ParticipantTables, delivery.Options{Statements: stmts})
	if err != nil {
		return nil, fmt.Errorf("new participant %s: %w", cfg.Name, err)
	}
	return &Participant{
		cfg:        cfg,
		db:         cfg.DB,
		sql:        stmts,
		dt:         dt,
		owner:      relay.Owner(),
		dialect:    d,
		log:        cfg.Logger.With("participant", cfg.Name),
		kick:       relay.NewSignal(),
		txSettings: txSettingsSQL(cfg.TxIdleTimeout.Milliseconds()),
		handlers:   map[string]handlerFunc{},
	}, nil
}

// Name returns the participant name.
func (p *Participant) Name() string { return p.cfg.Name }

// DB returns the participant's database.
func (p *Participant) DB() *sqlx.DB { return p.db }

// Config returns the configuration with every default applied.
func (p *Participant) Config() Config { return p.cfg }

// Commands returns the names of the registered commands.
func (p *Participant) Commands() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	names := make([]string, 0, len(p.handlers))
	for n := range p.handlers {
		names = append(names, n)
	}
	return names
}

// wake tells the relay there is something new in the outbox: call it
// after the commit that wrote it.
func (p *Participant) wake() { p.kick.Notify() }

// Wake tells Run's relay that a transaction which wrote to the outbox
// (StartSaga, StartSagaWithID, StartSagas, EmitEvent) has committed, so
// that its events are published at once. Call it right after the commit:
// those methods cannot see the commit, and without Wake the relay finds
// the events at its next poll (Config.RelayPoll). (They do not wake the
// relay themselves: woken before the commit, it would look before the rows
// are visible and find nothing, a round of three statements for nothing.)
// Wake never blocks; calls made while the relay is busy collapse into one.
func (p *Participant) Wake() { p.kick.Notify() }

// backoff returns the wait after the n-th failure (n >= 1).
func (p *Participant) backoff(n int) time.Duration {
	return relay.Backoff(n, p.cfg.Backoff, p.cfg.MaxBackoff)
}
