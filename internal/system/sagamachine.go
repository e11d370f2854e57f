package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/kafkalag"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// LoadCatalog loads and validates every definition in fsys (sagas.FS for
// the shipped ones) and renames participant topics found in rename (old →
// new name; nil renames nothing). Invalid definitions give a
// definition.Problems error listing each problem as FILE:LINE:COL: message.
func LoadCatalog(fsys fs.FS, rename map[string]string) (*engine.Catalog, error) {
	defs, probs := definition.LoadDir(fsys)
	if len(probs) > 0 {
		return nil, probs
	}
	for _, d := range defs {
		for _, p := range d.Participants {
			if n, ok := rename[p.Topic]; ok && n != "" {
				p.Topic = n
			}
		}
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		return nil, fmt.Errorf("load saga definitions: %w", err)
	}
	return cat, nil
}

// CatalogTopics lists the command topics of every participant of every
// definition in cat, without duplicates, in a stable order.
func CatalogTopics(cat *engine.Catalog) []string {
	var topics []string
	seen := map[string]bool{}
	for _, m := range cat.List() {
		for _, p := range m.Participants() {
			if t := m.Topic(p); t != "" && !seen[t] {
				seen[t] = true
				topics = append(topics, t)
			}
		}
	}
	return topics
}

// SagaMachineConfig configures OpenSagaMachine.
type SagaMachineConfig struct {
	// Catalog holds the loaded definitions. Required.
	Catalog *engine.Catalog
	// DB is the database URL: postgres://… or sqlite:PATH (its directory is
	// created). Required.
	DB string
	// Kafka is the broker configuration; Brokers is required.
	Kafka kafka.Config
	// Topic is the base name of the participants' event topics: each
	// participant p of the catalog sends its events to
	// engine.EventTopic(Topic, p), and an event naming another participant
	// than its topic's is refused (engine.Config.EventTopicBase). Required.
	Topic string
	// Group is the consumer group of the event topics. Required.
	Group string
	// Partitions of the topics created when missing (the event topics and
	// every participant topic of the catalog). Default 3.
	Partitions int
	// Engine tunes the orchestrator; Observer is set to the HTTP API's
	// metrics and Logger defaults to Logger.
	Engine engine.Config
	// Auth authenticates the HTTP API. nil means NO authentication (the
	// caller must allow that only on loopback or in tests).
	Auth *auth.Authenticator
	// Console configures the operator console's sign-in (OIDC code flow
	// with PKCE; needs Auth). The zero value: no sign-in.
	Console console.Config
	// Logger receives the logs. Default: discard.
	Logger *slog.Logger
}

// SagaMachine is a connected saga-machine: store, Kafka clients,
// orchestrator and HTTP handler (API, console, probes, metrics). Run it
// with Run; release it with Close.
type SagaMachine struct {
	// Orchestrator is the engine.
	Orchestrator *engine.Orchestrator
	// Store is saga-machine's database.
	Store *sqlstore.Store
	// Handler is the whole HTTP surface (engine/httpapi).
	Handler http.Handler
	// Registry holds the metrics served at /metrics.
	Registry *prometheus.Registry

	kcfg kafka.Config
	prod *kafka.Producer
	cons *kafka.Consumer
}

// OpenSagaMachine opens (and migrates) the database, creates missing
// topics, connects to Kafka and builds the orchestrator and its HTTP API.
// On error it releases what it acquired.
func OpenSagaMachine(ctx context.Context, cfg SagaMachineConfig) (_ *SagaMachine, err error) {
	switch {
	case cfg.Catalog == nil:
		return nil, errors.New("open saga-machine: Catalog is nil")
	case cfg.DB == "":
		return nil, errors.New("open saga-machine: DB is empty")
	case len(cfg.Kafka.Brokers) == 0:
		return nil, errors.New("open saga-machine: Kafka.Brokers is empty")
	case cfg.Topic == "":
		return nil, errors.New("open saga-machine: Topic is empty")
	case cfg.Group == "":
		return nil, errors.New("open saga-machine: Group is empty")
	case cfg.Partitions < 0:
		return nil, fmt.Errorf("open saga-machine: Partitions %d is negative", cfg.Partitions)
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &SagaMachine{kcfg: cfg.Kafka}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := PrepareSQLiteDir(cfg.DB); err != nil {
		return nil, err
	}
	if m.Store, err = sqlstore.Open(ctx, cfg.DB); err != nil {
		return nil, fmt.Errorf("open saga-machine database %s: %w", redact(cfg.DB), err)
	}
	eventTopics := engine.EventTopics(cfg.Topic, cfg.Catalog)
	topics := append(append([]string(nil), eventTopics...), CatalogTopics(cfg.Catalog)...)
	if err := kafka.EnsureTopics(ctx, cfg.Kafka, int32(cfg.Partitions), topics...); err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	if m.prod, err = kafka.NewProducer(cfg.Kafka); err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	if m.cons, err = kafka.NewConsumer(cfg.Kafka, cfg.Group, eventTopics...); err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	m.Registry = prometheus.NewRegistry()
	metrics, err := httpapi.NewMetrics(m.Registry)
	if err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	// The event consumer group's lag, read from the brokers at scrape time.
	lag, err := kafkalag.New(cfg.Kafka, cfg.Group, eventTopics...)
	if err == nil {
		err = m.Registry.Register(lag)
	}
	if err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	ecfg := cfg.Engine
	ecfg.Observer = metrics
	ecfg.EventTopicBase = cfg.Topic
	if ecfg.Logger == nil {
		ecfg.Logger = cfg.Logger
	}
	if m.Orchestrator, err = engine.New(ecfg, cfg.Catalog, m.Store, Publisher{m.prod}); err != nil {
		return nil, fmt.Errorf("open saga-machine: %w", err)
	}
	m.Handler, err = httpapi.New(httpapi.Config{
		Orchestrator: m.Orchestrator,
		Auth:         cfg.Auth,
		Console:      cfg.Console,
		Ready:        func(ctx context.Context) error { return kafka.Ping(ctx, cfg.Kafka) },
		Logger:       cfg.Logger,
		Registry:     m.Registry,
	})
	if err != nil {
		return nil, fmt.Errorf("open saga-machine: build the HTTP API: %w", err)
	}
	return m, nil
}

// Run consumes events and runs the orchestrator until ctx ends, then
// finishes the batch in flight and flushes the outbox (engine.Orchestrator.Run).
func (m *SagaMachine) Run(ctx context.Context) error {
	return m.Orchestrator.Run(ctx, NewConsumer(m.cons))
}

// Close releases the Kafka clients and the database. Call it after Run
// returned.
func (m *SagaMachine) Close() {
	if m.cons != nil {
		m.cons.Close()
	}
	if m.prod != nil {
		m.prod.Close()
	}
	if m.Store != nil {
		m.Store.Close()
	}
}

// PrepareSQLiteDir prepares the file of a SQLite database URL as
// engine/sqlstore reads it (sqlite:PATH, sqlite://PATH, file:PATH or a PATH
// ending in .db, .sqlite or .sqlite3) with sqldb.PrepareSQLiteFile: its
// directory is created 0700 and the file 0600 (its -wal and -shm files
// follow). Other URLs, and in-memory databases, are left alone.
func PrepareSQLiteDir(url string) error {
	path, ok := sqliteFile(url)
	if !ok {
		return nil
	}
	if err := sqldb.PrepareSQLiteFile(path); err != nil {
		return fmt.Errorf("prepare the database file: %w", err)
	}
	return nil
}

// sqliteFile is the file of a SQLite file URL, the way engine/sqlstore
// parses it.
func sqliteFile(url string) (string, bool) {
	var path string
	switch {
	case sqldb.IsPostgres(url), url == "sqlite::memory:", url == "sqlite:memory", url == ":memory:", url == "file::memory:":
		return "", false
	case strings.HasPrefix(url, "sqlite://"):
		path = strings.TrimPrefix(url, "sqlite://")
	case strings.HasPrefix(url, "sqlite:"):
		path = strings.TrimPrefix(url, "sqlite:")
	case strings.HasPrefix(url, "file:"):
		path = strings.TrimPrefix(url, "file:")
	case strings.HasSuffix(url, ".db"), strings.HasSuffix(url, ".sqlite"), strings.HasSuffix(url, ".sqlite3"):
		path = url
	default:
		return "", false
	}
	if path == "" || path == ":memory:" || strings.ContainsRune(path, '?') {
		return "", false // sqlstore refuses or keeps it in memory
	}
	return path, true
}
