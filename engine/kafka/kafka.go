package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// Defaults applied to the zero fields of a Config.
const (
	DefaultClientID = "saga-machine"
	DefaultLinger   = 5 * time.Millisecond
	// DefaultFetchLinger is the default Config.FetchLinger: none. Fetch
	// returns what has arrived; batches grow with the load by themselves
	// (what arrives while a batch is handled is the next batch).
	DefaultFetchLinger   = time.Duration(0)
	DefaultMaxBatchBytes = 1_000_000
	DefaultFetchMaxWait  = 500 * time.Millisecond
	// DefaultCommitInterval is the default Config.CommitInterval.
	DefaultCommitInterval  = 200 * time.Millisecond
	DefaultDeliveryTimeout = 30 * time.Second
	DefaultDialTimeout     = 5 * time.Second
	DefaultSessionTimeout  = 20 * time.Second
	// DefaultHeartbeatInterval is the default Config.HeartbeatInterval.
	DefaultHeartbeatInterval = 2 * time.Second
	// MaxRequestBytes caps one request this package's clients write to a
	// broker (kgo.BrokerMaxWriteBytes), far above one producer batch
	// (MaxBatchBytes per partition) and below Kafka's
	// socket.request.max.bytes; the embedded broker refuses larger frames.
	MaxRequestBytes = 16 << 20
)

// SASL mechanisms Config.SASL accepts.
const (
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	// MechanismPlain sends the password itself: only over TLS or loopback.
	MechanismPlain = "PLAIN"
)

// SASL is how a client authenticates to the brokers. The zero value means
// no authentication (the embedded development broker). Its String and
// LogValue never show the password, so a Config may be logged or printed.
type SASL struct {
	// Mechanism is SCRAM-SHA-512 (the default when User is set),
	// SCRAM-SHA-256 or PLAIN.
	Mechanism string
	// User is the principal's name (Kafka principal User:<User>).
	User string
	// Password is the user's password. Never logged.
	Password string
}

// Enabled reports whether s authenticates (a user is set).
func (s SASL) Enabled() bool { return s.User != "" }

// String shows the mechanism and user, never the password.
func (s SASL) String() string {
	if !s.Enabled() {
		return "none"
	}
	pw := "<empty>"
	if s.Password != "" {
		pw = "<redacted>"
	}
	return s.mechanism() + " user=" + s.User + " password=" + pw
}

// GoString is String: %#v must not print the password either.
func (s SASL) GoString() string { return "kafka.SASL{" + s.String() + "}" }

// LogValue is String for log/slog.
func (s SASL) LogValue() slog.Value { return slog.StringValue(s.String()) }

func (s SASL) mechanism() string {
	if s.Mechanism == "" {
		return MechanismSCRAMSHA512
	}
	return strings.ToUpper(s.Mechanism)
}

// validate reports an incomplete or unknown setting.
func (s SASL) validate() error {
	switch {
	case s.User == "" && (s.Password != "" || s.Mechanism != ""):
		return errors.New("kafka config: SASL password or mechanism given without a user")
	case s.User == "":
		return nil
	case s.Password == "":
		return fmt.Errorf("kafka config: SASL user %q has an empty password", s.User)
	case strings.ContainsAny(s.User, ",="):
		return fmt.Errorf("kafka config: SASL user %q contains ',' or '=' (not allowed in SCRAM user names)", s.User)
	}
	switch s.mechanism() {
	case MechanismSCRAMSHA512, MechanismSCRAMSHA256, MechanismPlain:
		return nil
	}
	return fmt.Errorf("kafka config: SASL mechanism %q: want %s, %s or %s", s.Mechanism, MechanismSCRAMSHA512, MechanismSCRAMSHA256, MechanismPlain)
}

// saslMechanism is the franz-go mechanism of a validated, enabled s.
func (s SASL) saslMechanism() sasl.Mechanism {
	switch s.mechanism() {
	case MechanismSCRAMSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
	case MechanismPlain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
	}
	return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
}

// Config tells the transport where Kafka is and how to batch. Its zero value,
// apart from Brokers, means "use the defaults" (the Default* constants).
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// ClientID identifies this process to the brokers (logs, quotas).
	// Default "saga-machine".
	ClientID string
	// Linger is how long the producer waits to fill a batch before sending
	// it. Publish flushes on return anyway, so this only matters for
	// concurrent Publish calls. Default 5ms.
	Linger time.Duration
	// MaxBatchBytes bounds one record batch sent to one partition; it must
	// not exceed the topic's max.message.bytes. Default 1,000,000.
	MaxBatchBytes int32
	// FetchMaxWait is how long the broker holds a fetch that has no data
	// before answering empty. Records are returned as soon as they exist,
	// so this trades idle requests against nothing. Default 500ms.
	FetchMaxWait time.Duration
	// FetchLinger is how long Fetch, once it has records but fewer than
	// asked for, keeps collecting the records that arrive meanwhile before
	// it returns them. Default none (zero or negative): Fetch returns the
	// records that have arrived, and batches grow with the load by
	// themselves, since what arrives while one batch is handled is fetched
	// meanwhile and returned by the next Fetch. A linger adds its whole
	// length to every hop of an idle system (5 hops of a saga: 50 ms at
	// 10 ms each, measured), so it is only for tuning a loaded one.
	FetchLinger time.Duration
	// CommitInterval is how often a consumer sends the offsets that
	// Consumer.Commit marked to the group coordinator. Commit itself only
	// marks, so the consumer's loop never waits for a commit round trip,
	// and one request carries every batch of the interval. The marked
	// offsets are also committed, synchronously, before the group takes a
	// partition away (rebalance) and by Close. After a crash, the records
	// of at most the last interval are delivered again (at-least-once:
	// the inboxes drop them). Default 200ms.
	CommitInterval time.Duration
	// DeliveryTimeout bounds how long Publish keeps retrying one record
	// (broker down, leader moving) when ctx has no earlier deadline.
	// Default 30s.
	DeliveryTimeout time.Duration
	// DialTimeout bounds opening one connection. Default 5s.
	DialTimeout time.Duration
	// SessionTimeout is how long a consumer group member may go without
	// heartbeats before the group evicts it and gives its partitions to
	// the others; it must lie within the broker's
	// group.{min,max}.session.timeout.ms. A member that restarts with the
	// same InstanceID gets its partitions back at once, whatever this is.
	// Default 20s.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often a consumer group member heartbeats;
	// at most a third of SessionTimeout. Default 2s.
	HeartbeatInterval time.Duration
	// InstanceID, if set, makes a consumer a static member of its group
	// (KIP-345): a process restarted with the same id (after a crash or
	// kill -9) takes over its predecessor's partitions at once instead of
	// waiting for the session timeout. It must be stable per replica and
	// unique among the group's live members (e.g. the pod name). Empty:
	// dynamic membership.
	InstanceID string
	// SASL authenticates the clients. Zero: no authentication.
	SASL SASL
	// TLS, if set, makes every connection to the brokers TLS (a SASL_SSL
	// or SSL listener), verified with it: RootCAs the authorities that
	// sign the brokers' certificates (nil: the system's), ServerName the
	// name to verify (empty: each broker's host). nil: plaintext (a
	// SASL_PLAINTEXT listener, or the embedded broker). It is cloned per
	// client; it is never modified.
	TLS *tls.Config
	// Logger receives the client's warnings and errors (connection
	// failures, retried fetch errors). Default slog.Default().
	Logger *slog.Logger
}

// Validate reports what is wrong with cfg (no brokers, an empty broker
// address, a negative duration or size), as NewProducer and NewConsumer
// would.
func (cfg Config) Validate() error {
	_, err := cfg.withDefaults()
	return err
}

// withDefaults validates cfg and fills its zero fields.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Brokers) == 0 {
		return cfg, errors.New("kafka config: no brokers (Config.Brokers is empty)")
	}
	for i, b := range cfg.Brokers {
		if strings.TrimSpace(b) == "" {
			return cfg, fmt.Errorf("kafka config: broker %d is empty", i)
		}
	}
	if cfg.TLS != nil && cfg.TLS.InsecureSkipVerify {
		// A TLS that trusts any certificate gives whoever sits on the path
		// the records and, with PLAIN, the password.
		return cfg, errors.New("kafka config: TLS without verifying the brokers' certificates (InsecureSkipVerify) is refused: give the CA that signs them")
	}
	type check struct {
		name string
		neg  bool
	}
	for _, c := range []check{
		{"Linger", cfg.Linger < 0},
		{"MaxBatchBytes", cfg.MaxBatchBytes < 0},
		{"FetchMaxWait", cfg.FetchMaxWait < 0},
		{"CommitInterval", cfg.CommitInterval < 0},
		{"DeliveryTimeout", cfg.DeliveryTimeout < 0},
		{"DialTimeout", cfg.DialTimeout < 0},
		{"SessionTimeout", cfg.SessionTimeout < 0},
		{"HeartbeatInterval", cfg.HeartbeatInterval < 0},
	} {
		if c.neg {
			return cfg, fmt.Errorf("kafka config: %s is negative", c.name)
		}
	}
	if err := cfg.SASL.validate(); err != nil {
		return cfg, err
	}
	if strings.TrimSpace(cfg.InstanceID) != cfg.InstanceID {
		return cfg, fmt.Errorf("kafka config: InstanceID %q has surrounding spaces", cfg.InstanceID)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.FetchLinger == 0 {
		cfg.FetchLinger = DefaultFetchLinger
	}
	if cfg.FetchMaxWait == 0 {
		cfg.FetchMaxWait = DefaultFetchMaxWait
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = DefaultCommitInterval
	}
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = min(DefaultHeartbeatInterval, cfg.SessionTimeout/3)
	}
	if cfg.HeartbeatInterval*3 > cfg.SessionTimeout {
		return cfg, fmt.Errorf("kafka config: HeartbeatInterval %s is more than a third of SessionTimeout %s", cfg.HeartbeatInterval, cfg.SessionTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// ClientOpts returns the franz-go options of a client for cfg (brokers,
// client id, dial timeout, request size cap, SASL, logger), for code that
// needs a kgo.Client of its own (admin tools, tests) with the same
// connection settings. It validates cfg first.
func (cfg Config) ClientOpts() ([]kgo.Opt, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return cfg.clientOpts(), nil
}

// NewAdmin returns an admin client of the cluster cfg names, with
// ClientOpts' settings, for tools that create, list or delete topics,
// groups or users. Close it when done (it closes its connections).
func (cfg Config) NewAdmin() (*kadm.Client, error) {
	opts, err := cfg.ClientOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// clientOpts are the options every client of this package shares.
func (cfg Config) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.DialTimeout(cfg.DialTimeout),
		kgo.BrokerMaxWriteBytes(MaxRequestBytes),
		kgo.WithLogger(kgoLogger{cfg.Logger.With("component", "kafka", "client_id", cfg.ClientID)}),
	}
	if cfg.SASL.Enabled() {
		opts = append(opts, kgo.SASL(cfg.SASL.saslMechanism()))
	}
	if cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(cfg.TLS.Clone()))
	}
	return opts
}

// TLSWithCAFile is a Config.TLS that verifies the brokers, with TLS 1.2 or
// later, against the CA certificates in the PEM file at path (all of
// them: a rotation may list the old and the new CA). A file that cannot
// be read (the error wraps the read's *fs.PathError) or that holds no
// certificate is an error.
func TLSWithCAFile(path string) (*tls.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the Kafka TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("the Kafka TLS CA file %s holds no PEM certificate", path)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// kgoLogger passes franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (g kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	g.l.Log(context.Background(), lvl, msg, keyvals...)
}

// Record is one Kafka record as this transport sees it.
type Record struct {
	// Topic the record is (to be) written to. Required to publish.
	Topic string
	// Key is the saga id: records with the same key go to the same
	// partition and keep their order.
	Key string
	// Value is the payload (the JSON envelope).
	Value []byte
	// Headers travel beside the value, e.g. "traceparent".
	Headers map[string]string
	// Partition is set on consumed records.
	Partition int32
	// Offset is set on consumed records.
	Offset int64

	// leaderEpoch is set on consumed records and committed with the offset
	// so the client can detect log truncation on resume.
	leaderEpoch int32
}

func toKgo(r Record) *kgo.Record {
	kr := &kgo.Record{Topic: r.Topic, Value: r.Value}
	if r.Key != "" {
		kr.Key = []byte(r.Key)
	}
	if len(r.Headers) > 0 {
		names := make([]string, 0, len(r.Headers))
		for k := range r.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		kr.Headers = make([]kgo.RecordHeader, 0, len(names))
		for _, k := range names {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: k, Value: []byte(r.Headers[k])})
		}
	}
	return kr
}

func fromKgo(kr *kgo.Record) Record {
	r := Record{
		Topic:       kr.Topic,
		Key:         string(kr.Key),
		Value:       kr.Value,
		Partition:   kr.Partition,
		Offset:      kr.Offset,
		leaderEpoch: kr.LeaderEpoch,
	}
	if len(kr.Headers) > 0 {
		r.Headers = make(map[string]string, len(kr.Headers))
		for _, h := range kr.Headers {
			r.Headers[h.Key] = string(h.Value)
		}
	}
	return r
}

// Producer publishes records with acks=all and an idempotent producer. It is
// safe for concurrent use.
type Producer struct {
	cl        *kgo.Client
	closeOnce sync.Once
}

// NewProducer returns a producer for cfg. It does not contact the brokers;
// the first Publish does.
func NewProducer(cfg Config) (*Producer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := append(cfg.clientOpts(),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence needs acks=all and is on by default
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(cfg.MaxBatchBytes),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		// Default partitioner: murmur2 of the key (Java-compatible), sticky for nil keys.
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("new kafka producer for %v: %w", cfg.Brokers, err)
	}
	return &Producer{cl: cl}, nil
}

// Publish sends all records and returns once every one is acknowledged by all
// in-sync replicas, or returns an error naming how many records failed and
// the first cause. Records with the same Key keep their order, also across
// sequential Publish calls. On error some records may have been written:
// callers republish, and consumers drop duplicates by message id.
func (p *Producer) Publish(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	var spans []trace.Span
	if tracing.Enabled() {
		recs, spans = traceProduce(ctx, recs) // tracing.go
	}
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		if r.Topic == "" {
			endProduce(spans, nil, nil) // tracing.go; nothing when spans is nil
			return fmt.Errorf("publish %d records: record %d (key %q) has no topic", len(recs), i, r.Key)
		}
		krs[i] = toKgo(r)
	}
	results := p.cl.ProduceSync(ctx, krs...)
	if spans != nil {
		endProduce(spans, krs, results)
	}
	failed := 0
	var first error
	for _, res := range results {
		if res.Err != nil {
			failed++
			if first == nil {
				first = res.Err
			}
		}
	}
	if first == nil {
		return nil
	}
	return fmt.Errorf("publish %d records to %s: %d failed: %w", len(recs), topicList(recs), failed, first)
}

// Close releases the producer's connections. Publish
// calls in flight fail. Close may be called more than once.
func (p *Producer) Close() { p.closeOnce.Do(p.cl.Close) }

// topicList is "A" or "A, B" for error messages.
func topicList(recs []Record) string {
	seen := map[string]bool{}
	var names []string
	for _, r := range recs {
		if !seen[r.Topic] {
			seen[r.Topic] = true
			names = append(names, r.Topic)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Consumer is one member of a consumer group. Offsets move only past records
// passed to Commit, which marks them; the marks reach the group coordinator
// every Config.CommitInterval, before a rebalance takes a partition away, on
// Flush and on Close. A new group starts at the earliest offset.
//
// Fetch and Commit are meant to be called in turn from one goroutine: between
// a Fetch and the following Commit the group cannot rebalance the fetched
// partitions away, so a record is never processed by two members at once.
// Keep the work between them well below the rebalance timeout (60s).
type Consumer struct {
	cl        *kgo.Client
	cfg       Config // with defaults
	linger    time.Duration
	closeOnce sync.Once
	group     string
	topics    []string
	log       *slog.Logger
}

// NewConsumer joins group (asynchronously, on the first Fetch) consuming the
// given topics.
func NewConsumer(cfg Config, group string, topics ...string) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if group == "" {
		return nil, errors.New("new kafka consumer: empty group")
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("new kafka consumer for group %s: no topics", group)
	}
	for i, t := range topics {
		if t == "" {
			return nil, fmt.Errorf("new kafka consumer for group %s: topic %d is empty", group, i)
		}
	}
	opts := append(cfg.clientOpts(),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		// Commit marks; the client sends the marks every CommitInterval
		// and, in its default OnPartitionsRevoked, synchronously before
		// a partition is revoked (the rebalance waits for Commit, see
		// BlockRebalanceOnPoll).
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(cfg.CommitInterval),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(cfg.FetchMaxWait),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.HeartbeatInterval(cfg.HeartbeatInterval),
		// Balancer: the default cooperative-sticky.
	)
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("new kafka consumer for group %s on %v: %w", group, cfg.Brokers, err)
	}
	return &Consumer{cl: cl, cfg: cfg, linger: cfg.FetchLinger, group: group, topics: append([]string(nil), topics...), log: cfg.Logger}, nil
}

// Fetch blocks until at least one record is available or ctx ends, and
// returns up to max records (in partition order). Having some, it keeps
// collecting for at most Config.FetchLinger while there are fewer than max. After a Fetch that returned
// records, the group does not rebalance until Commit (or Close).
//
// A record that is fetched and never committed is not fetched again by this
// member; it is redelivered after a rebalance or restart (at-least-once). A
// caller that cannot process a record should retry it, or Close the consumer
// so another member gets it.
func (c *Consumer) Fetch(ctx context.Context, max int) ([]Record, error) {
	if max <= 0 {
		return nil, fmt.Errorf("fetch from %s (group %s): max must be positive, got %d", strings.Join(c.topics, ", "), c.group, max)
	}
	for {
		fetches := c.cl.PollRecords(ctx, max)
		var recs []Record
		fetches.EachRecord(func(kr *kgo.Record) { recs = append(recs, fromKgo(kr)) })
		if len(recs) > 0 {
			// Errors of other partitions in the same poll are not lost:
			// they are logged here and reported again by a later poll.
			fetches.EachError(c.logBeside)
			recs = c.lingerFor(ctx, recs, max)
			if tracing.Enabled() {
				c.traceReceive(ctx, recs) // tracing.go
			}
			return recs, nil
		}
		// Nothing to process: let the group rebalance (a poll that
		// returns no records still counts as a poll).
		c.cl.AllowRebalance()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("fetch from %s (group %s): %w", strings.Join(c.topics, ", "), c.group, err)
		}
		var fatal []error
		fetches.EachError(func(topic string, partition int32, err error) {
			if topic != "" {
				err = fmt.Errorf("%s[%d]: %w", topic, partition, err)
			}
			if transient(err) {
				c.log.Warn("kafka fetch error, retrying", "group", c.group, "err", err)
				return
			}
			fatal = append(fatal, err)
		})
		if len(fatal) > 0 {
			return nil, fmt.Errorf("fetch from %s (group %s): %w", strings.Join(c.topics, ", "), c.group, errors.Join(fatal...))
		}
		// Only empty or transient results (e.g. a partition moved, a
		// topic still being created): poll again.
	}
}

// logBeside logs a fetch error of a poll that also returned records.
func (c *Consumer) logBeside(topic string, partition int32, err error) {
	c.log.Warn("kafka fetch error beside records", "group", c.group, "topic", topic, "partition", partition, "err", err)
}

// lingerFor appends to recs the records that arrive within the consumer's
// FetchLinger, up to max in all. Later polls return later offsets of each
// partition, so every partition stays in order. An error of such a poll
// (other than the linger's own deadline) is logged and left for the next
// Fetch, like an error beside records.
func (c *Consumer) lingerFor(ctx context.Context, recs []Record, max int) []Record {
	if c.linger <= 0 || len(recs) >= max {
		return recs
	}
	lctx, cancel := context.WithTimeout(ctx, c.linger)
	defer cancel()
	for len(recs) < max && lctx.Err() == nil {
		fetches := c.cl.PollRecords(lctx, max-len(recs))
		fetches.EachRecord(func(kr *kgo.Record) { recs = append(recs, fromKgo(kr)) })
		failed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			failed = true
			if lctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
				return
			}
			c.logBeside(topic, partition, err)
		})
		if failed {
			break
		}
	}
	return recs
}

// denied reports an authentication or authorization failure: no retry
// fixes it, an administrator must (credentials, ACLs).
func denied(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.SaslAuthenticationFailed)
}

// transient reports whether the client recovers from err by itself, so Fetch
// keeps polling instead of returning it.
func transient(err error) bool {
	if denied(err) {
		return false
	}
	var groupErr *kgo.ErrGroupSession
	var lossErr *kgo.ErrDataLoss
	return kerr.IsRetriable(err) || errors.As(err, &groupErr) || errors.As(err, &lossErr)
}

// Commit marks, per partition, the offset after the highest record of recs
// (normally everything the last Fetch returned) as done, then lets the group
// rebalance. Call it only after the records' effects are durable. It does
// not wait for the broker: the marks are sent every Config.CommitInterval,
// and synchronously before a rebalance revokes a partition, so a record
// marked here is never fetched again by another member after a clean
// handover; after a crash, the last interval's records are redelivered. Use
// Flush to wait until the marks are committed. Committing no records just
// allows the rebalance.
func (c *Consumer) Commit(ctx context.Context, recs []Record) error {
	defer c.cl.AllowRebalance()
	if len(recs) == 0 {
		return nil
	}
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		if r.Topic == "" || r.Offset < 0 {
			return fmt.Errorf("commit %d records for group %s: record %d is not a consumed record (topic %q, offset %d)", len(recs), c.group, i, r.Topic, r.Offset)
		}
		krs[i] = &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, LeaderEpoch: r.leaderEpoch}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit %d records of %s for group %s: %w", len(recs), topicList(recs), c.group, err)
	}
	c.cl.MarkCommitRecords(krs...)
	return nil
}

// Flush sends the offsets marked by Commit to the group coordinator and waits
// until they are committed (for an operator's tooling, tests and shutdown).
func (c *Consumer) Flush(ctx context.Context) error {
	if err := c.cl.CommitMarkedOffsets(ctx); err != nil {
		return fmt.Errorf("flush the marked offsets of group %s: %w", c.group, err)
	}
	return nil
}

// Close commits the offsets marked by Commit (within a few seconds), leaves
// the group cleanly (its partitions go to the other members at once) and
// releases the connections. Fetched, uncommitted records are
// redelivered to the member that gets their partition. A static member
// (Config.InstanceID) is not left by franz-go's close, so Close then sends
// the LeaveGroup for its instance id itself, within a few seconds: a
// graceful stop (rolling update, scale-down) hands the partitions over at
// once, while a crash keeps them reserved for the restarted process.
// Close may be called more than once.
func (c *Consumer) Close() {
	c.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Flush(ctx); err != nil {
			c.log.Warn("close: the marked offsets were not committed; their records are delivered again", "group", c.group, "err", err)
		}
		cancel()
		c.cl.CloseAllowingRebalance()
		if c.cfg.InstanceID != "" {
			c.leaveStatic()
		}
	})
}

// leaveStatic removes this consumer's static member from the group.
func (c *Consumer) leaveStatic() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(c.cfg.clientOpts()...)
	if err != nil {
		c.log.Warn("leave group: cannot create a client; partitions move after the session timeout", "group", c.group, "instance_id", c.cfg.InstanceID, "err", err)
		return
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(c.group).InstanceIDs(c.cfg.InstanceID).Reason("consumer closed"))
	if err == nil {
		err = resp.Error()
	}
	if err != nil && !errors.Is(err, kerr.UnknownMemberID) {
		c.log.Warn("leave group failed; partitions move after the session timeout", "group", c.group, "instance_id", c.cfg.InstanceID, "err", err)
	}
}

// EnsureTopics creates the topics that do not exist yet, with the given number
// of partitions and the broker's default replication factor. Existing topics
// are left as they are (even with another partition count). Idempotent.
// A principal that may not create topics (no CREATE ACL) succeeds when the
// topics exist already, and fails naming the missing ones otherwise.
func EnsureTopics(ctx context.Context, cfg Config, partitions int32, topics ...string) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if partitions <= 0 {
		return fmt.Errorf("ensure topics %v: partitions must be positive, got %d", topics, partitions)
	}
	if len(topics) == 0 {
		return nil
	}
	for i, t := range topics {
		if t == "" {
			return fmt.Errorf("ensure topics %v: topic %d is empty", topics, i)
		}
	}
	adm, err := cfg.NewAdmin()
	if err != nil {
		return fmt.Errorf("ensure topics %v: %w", topics, err)
	}
	defer adm.Close()
	resps, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("ensure topics %v on %v: %w", topics, cfg.Brokers, err)
	}
	var errs []error
	var denied []string
	for _, r := range resps.Sorted() {
		switch {
		case r.Err == nil || errors.Is(r.Err, kerr.TopicAlreadyExists):
		case errors.Is(r.Err, kerr.TopicAuthorizationFailed) || errors.Is(r.Err, kerr.ClusterAuthorizationFailed):
			denied = append(denied, r.Topic)
		default:
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Err))
		}
	}
	if len(denied) > 0 {
		// A principal without CREATE (the normal case once an administrator
		// set up topics and ACLs): fine as long as the topics exist.
		if err := topicsExist(ctx, adm, denied); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ensure topics %v: %w", topics, errors.Join(errs...))
	}
	return nil
}

// topicsExist reports the topics that do not exist (or that the principal
// may not even describe).
func topicsExist(ctx context.Context, adm *kadm.Client, topics []string) error {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("check that topics %v exist: %w", topics, err)
	}
	var missing []string
	for _, t := range topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("topics %v do not exist (or are not visible) and this principal may not create them: create them with the administrator's credentials (saga-machine kafka-setup)", missing)
	}
	return nil
}

// Ping checks that a broker is reachable and answers a metadata request that
// names at least one broker (for readiness probes).
func Ping(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(cfg.clientOpts()...)
	if err != nil {
		return fmt.Errorf("ping kafka %v: %w", cfg.Brokers, err)
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("ping kafka %v: %w", cfg.Brokers, err)
	}
	if len(md.Brokers) == 0 {
		return fmt.Errorf("ping kafka %v: metadata lists no brokers", cfg.Brokers)
	}
	return nil
}
