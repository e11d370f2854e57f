package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// Built-in defaults, used when neither a flag nor its variable is set.
const (
	defaultDB         = "sqlite:./.saga-machine/saga.db"
	defaultKafkaData  = "./.saga-machine/kafka"
	defaultEmbedded   = "127.0.0.1:9092"
	defaultListen     = "127.0.0.1:8080"
	defaultTopic      = "SAGA_SERVER_TOPIC"
	defaultGroup      = "saga-machine"
	defaultPartitions = 3
)

// config is the daemon's configuration after flags and environment.
type config struct {
	sagasDir   string
	db         string
	brokers    []string
	kafkaData  string
	listen     string
	topic      string
	group      string
	partitions int
	logLevel   slog.Level
	// Tuning, mostly for tests.
	timerPoll      time.Duration
	batchSize      int
	sessionTimeout time.Duration
	// Kafka authentication and static group membership.
	kafkaSASL  kafka.SASL
	kafkaTLS   *tls.Config
	instanceID string
	// inboxRetention is engine.Config.InboxRetention: how long processed
	// message ids are kept to drop redelivered duplicates.
	inboxRetention time.Duration
	// sagaRetention is engine.Config.SagaRetention: how long finished
	// sagas are kept (0: forever).
	sagaRetention time.Duration
	// HTTP API authentication (engine/httpapi, internal/auth).
	issuer, audience string
	devHeader        bool
	// consoleClient is the operator console's OIDC client id at the issuer
	// ("" : the console does not sign in).
	consoleClient string
	tracing       *tracing.Config // --otlp-endpoint (tracing.go)
	// metrics puts /metrics behind --metrics-token-file's token (or
	// leaves it open).
	metrics program.MetricsGuard
}

// problemsError reports invalid definitions; they are printed already.
type problemsError struct{ n int }

func (e problemsError) Error() string { return fmt.Sprintf("%d problems in the saga definitions", e.n) }

// run is the whole program: args without the program name, env like
// os.Getenv. It returns when ctx ends (after a graceful stop) or on a fatal
// error.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "migrate" {
		return runMigrate(ctx, args[1:], env, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "kafka-setup" {
		return runKafkaSetup(ctx, args[1:], env, stdout, stderr)
	}
	cfg, err := parseFlags("saga-machine", args, env, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	stopTracing, err := startTracing(ctx, cfg.tracing, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	d, err := start(ctx, cfg, log, stderr)
	if err != nil {
		return err
	}
	return d.serve(ctx)
}

func runMigrate(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("saga-machine migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", envOr(env, "SAGA_DB_URL", defaultDB), "database URL (env SAGA_DB_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := program.RefusePlaceholders(program.Secret{Name: "--db (SAGA_DB_URL)", Value: *db}); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := system.PrepareSQLiteDir(*db); err != nil {
		return err
	}
	if err := sqlstore.MigrateOnly(ctx, *db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fmt.Fprintln(stdout, "saga-machine: database migrated")
	return nil
}

func envOr(env func(string) string, name, def string) string {
	if v := env(name); v != "" {
		return v
	}
	return def
}

func parseFlags(name string, args []string, env func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var brokers, level, parts string
	fs.StringVar(&cfg.sagasDir, "sagas", env("SAGA_SAGAS_DIR"), "directory of saga definitions (env SAGA_SAGAS_DIR; default: the built-in definitions)")
	fs.StringVar(&cfg.db, "db", envOr(env, "SAGA_DB_URL", defaultDB), "database URL: postgres://… or sqlite:PATH (env SAGA_DB_URL)")
	fs.StringVar(&brokers, "brokers", env("SAGA_KAFKA_BROKERS"), "Kafka brokers, comma-separated (env SAGA_KAFKA_BROKERS; default: start an embedded broker on "+defaultEmbedded+")")
	fs.StringVar(&cfg.kafkaData, "kafka-data", envOr(env, "SAGA_KAFKA_DATA_DIR", defaultKafkaData), "data directory of the embedded broker (env SAGA_KAFKA_DATA_DIR)")
	fs.StringVar(&cfg.listen, "listen", envOr(env, "SAGA_LISTEN", defaultListen), "HTTP listen address (env SAGA_LISTEN)")
	fs.StringVar(&cfg.topic, "topic", envOr(env, "SAGA_SERVER_TOPIC", defaultTopic), "base name of the participants' event topics: participant p sends to <base>_<P> (env SAGA_SERVER_TOPIC)")
	fs.StringVar(&cfg.group, "group", envOr(env, "SAGA_GROUP", defaultGroup), "Kafka consumer group (env SAGA_GROUP)")
	fs.StringVar(&parts, "partitions", envOr(env, "SAGA_PARTITIONS", strconv.Itoa(defaultPartitions)), "partitions of topics created at start (env SAGA_PARTITIONS)")
	fs.StringVar(&level, "log-level", envOr(env, "SAGA_LOG_LEVEL", "info"), "debug, info, warn or error (env SAGA_LOG_LEVEL)")
	fs.DurationVar(&cfg.timerPoll, "timer-poll", 0, "how often due timers are looked for (default 200ms)")
	fs.IntVar(&cfg.batchSize, "batch-size", 0, "events applied per transaction (default 500)")
	var session string
	fs.StringVar(&session, "kafka-session-timeout", env("SAGA_KAFKA_SESSION_TIMEOUT"), "consumer group session timeout: how soon the partitions of a replica that died and did not come back move (a replica restarted with the same --kafka-instance-id gets them back at once) (env SAGA_KAFKA_SESSION_TIMEOUT; default 20s)")
	kf := program.RegisterKafkaFlags(fs, env)
	ma := program.RegisterMetricsFlag(fs, env)
	cfg.tracing = tracing.RegisterFlags(fs, "saga-machine", env)
	var retention string
	var sagaRetention string
	fs.StringVar(&sagaRetention, "saga-retention", envOr(env, "SAGA_SAGA_RETENTION", "0"), "how long a finished saga (completed or failed) is kept after its last change, with its timeline, keys and idempotency keys; longer than operators read timelines and clients retry a start under one Idempotency-Key (env SAGA_SAGA_RETENTION; 0: forever)")
	fs.StringVar(&retention, "inbox-retention", envOr(env, "SAGA_INBOX_RETENTION", engine.DefaultInboxRetention.String()), "how long processed message ids are kept to drop redelivered duplicates; must exceed how long Kafka may redeliver (env SAGA_INBOX_RETENTION; negative: never purge)")
	fs.StringVar(&cfg.issuer, "issuer", env("OIDC_ISSUER"), "OIDC issuer URL of the API's bearer tokens, e.g. https://keycloak.example/auth/realms/portfolio (env OIDC_ISSUER)")
	fs.StringVar(&cfg.audience, "audience", env("OIDC_AUDIENCE"), "expected token audience: saga-machine's client id (env OIDC_AUDIENCE)")
	fs.StringVar(&cfg.consoleClient, "console-client-id", envOr(env, "OIDC_CONSOLE_CLIENT_ID", console.DefaultClientID), "with --issuer: the operator console's client id at the issuer (a public client, authorization code flow with PKCE S256, redirect URI <console URL>/console/); empty: the console does not sign in (env OIDC_CONSOLE_CLIENT_ID)")
	fs.BoolVar(&cfg.devHeader, "dev-header", false, "DEV ONLY: trust X-Dev-User/X-Dev-Roles on API requests without a token (explicit; never in a deployment)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q (the subcommands are migrate and kafka-setup)", fs.Args())
	}
	if err := checkClientID(cfg.consoleClient); err != nil {
		return cfg, err
	}
	if err := program.RefusePlaceholders(program.Secret{Name: "--db (SAGA_DB_URL)", Value: cfg.db}); err != nil {
		return cfg, err
	}
	var err error
	if cfg.metrics, err = ma.Middleware(); err != nil {
		return cfg, err
	}
	if cfg.kafkaSASL, err = kf.SASL(); err != nil {
		return cfg, err
	}
	if cfg.kafkaTLS, err = kf.TLS(); err != nil {
		return cfg, err
	}
	cfg.instanceID = kf.InstanceID()
	if brokers != "" {
		for _, b := range strings.Split(brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				cfg.brokers = append(cfg.brokers, b)
			}
		}
	}
	if cfg.kafkaSASL.Enabled() && len(cfg.brokers) == 0 {
		return cfg, fmt.Errorf("--kafka-user %s needs --brokers: the embedded broker has no authentication", cfg.kafkaSASL.User)
	}
	if cfg.kafkaTLS != nil && len(cfg.brokers) == 0 {
		return cfg, errors.New("--kafka-tls (or --kafka-tls-ca-file) needs --brokers: the embedded broker has no TLS")
	}
	n, err := strconv.Atoi(parts)
	if err != nil || n <= 0 {
		return cfg, fmt.Errorf("--partitions %q: want a positive number", parts)
	}
	cfg.partitions = n
	if session != "" {
		if cfg.sessionTimeout, err = time.ParseDuration(session); err != nil || cfg.sessionTimeout <= 0 {
			return cfg, fmt.Errorf("--kafka-session-timeout %q: want a positive duration such as 10s", session)
		}
	}
	if cfg.sagaRetention, err = time.ParseDuration(sagaRetention); err != nil || cfg.sagaRetention < 0 {
		return cfg, fmt.Errorf("--saga-retention %q: want a Go duration such as 2160h (90 days), or 0 to keep finished sagas forever", sagaRetention)
	}
	if cfg.inboxRetention, err = time.ParseDuration(retention); err != nil || cfg.inboxRetention == 0 {
		return cfg, fmt.Errorf("--inbox-retention %q: want a Go duration such as 168h (negative: never purge)", retention)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return cfg, nil
}

// loadCatalog loads and validates every definition (system.LoadCatalog); on
// problems it prints each as FILE:LINE:COL: message.
func loadCatalog(dir string, stderr io.Writer) (*engine.Catalog, error) {
	var fsys fs.FS = sagas.FS
	if dir != "" {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("saga definitions directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("saga definitions directory %s is not a directory", dir)
		}
		fsys = os.DirFS(dir)
	}
	cat, err := system.LoadCatalog(fsys, nil)
	if err == nil {
		cat, err = loadMigrations(fsys, cat)
	}
	var probs definition.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			if dir != "" {
				p.File = filepath.Join(dir, p.File)
			}
			fmt.Fprintln(stderr, p.String())
		}
		return nil, problemsError{len(probs)}
	}
	return cat, err
}

// loadMigrations adds to cat the migrations of running sagas in the
// directory migrations of fsys (sagas/migrations), if there is one: each
// must fit two loaded versions of its saga. A problem in any is returned
// as definition.Problems, with the file named under migrations/.
func loadMigrations(fsys fs.FS, cat *engine.Catalog) (*engine.Catalog, error) {
	st, err := fs.Stat(fsys, "migrations")
	if errors.Is(err, fs.ErrNotExist) {
		return cat, nil
	}
	if err != nil {
		return nil, fmt.Errorf("saga migrations directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("saga migrations: migrations is not a directory")
	}
	sub, err := fs.Sub(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("saga migrations directory: %w", err)
	}
	var defs []*definition.Definition
	for _, m := range cat.List() {
		defs = append(defs, m.Definition())
	}
	migs, probs := definition.LoadMigrations(sub, defs)
	if len(probs) > 0 {
		for i := range probs {
			probs[i].File = path.Join("migrations", probs[i].File)
		}
		return nil, probs
	}
	return cat.WithMigrations(migs...)
}

// daemon is a started saga-machine.
type daemon struct {
	cfg     config
	log     *slog.Logger
	broker  *embedded.Broker
	sm      *system.SagaMachine // store, Kafka clients, orchestrator, HTTP API
	ln      net.Listener
	noAuth  bool          // the API runs without authentication (loopback only)
	console *console.OIDC // the console's sign-in; nil: none
}

// start loads, migrates, connects and listens; on error it releases what it
// acquired.
func start(ctx context.Context, cfg config, log *slog.Logger, stderr io.Writer) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	cat, err := loadCatalog(cfg.sagasDir, stderr)
	if err != nil {
		return nil, err
	}
	for _, m := range cat.List() {
		log.Info("saga definition loaded", "saga", m.Name(), "saga_version", m.Version())
	}
	for _, m := range cat.Migrations() {
		log.Info("saga migration loaded", "saga", m.Saga, "from_version", m.From, "to_version", m.To, "file", m.File)
	}
	authn, err := d.authenticator(ctx)
	if err != nil {
		return nil, err
	}
	d.noAuth = authn == nil

	brokers := cfg.brokers
	if len(brokers) == 0 {
		if cfg.kafkaData != "" {
			if err := os.MkdirAll(cfg.kafkaData, 0o755); err != nil {
				return nil, fmt.Errorf("create embedded broker data directory: %w", err)
			}
		}
		d.broker, err = embedded.Start(embedded.Options{Addr: defaultEmbedded, Partitions: int32(cfg.partitions), DataDir: cfg.kafkaData})
		if err != nil {
			return nil, fmt.Errorf("start the embedded broker (pass --brokers to use a real Kafka): %w", err)
		}
		brokers = d.broker.Addrs()
		log.Info("embedded Kafka broker started", "addrs", brokers, "data_dir", cfg.kafkaData)
	}
	d.sm, err = system.OpenSagaMachine(ctx, system.SagaMachineConfig{
		Catalog:    cat,
		DB:         cfg.db,
		Kafka:      kafka.Config{Brokers: brokers, ClientID: "saga-machine", SessionTimeout: cfg.sessionTimeout, SASL: cfg.kafkaSASL, TLS: cfg.kafkaTLS, InstanceID: cfg.instanceID},
		Topic:      cfg.topic,
		Group:      cfg.group,
		Partitions: cfg.partitions,
		Engine:     engine.Config{Logger: log, TimerPoll: cfg.timerPoll, BatchSize: cfg.batchSize, InboxRetention: cfg.inboxRetention, SagaRetention: cfg.sagaRetention},
		Auth:       authn,
		Console:    console.Config{OIDC: d.console},
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	log.Info("database ready", "dialect", d.sm.Store.Dialect())
	log.Info("topics ready", "event_topics", engine.EventTopics(cfg.topic, cat), "command_topics", system.CatalogTopics(cat), "brokers", brokers,
		"kafka_auth", cfg.kafkaSASL, "kafka_tls", cfg.kafkaTLS != nil, "instance_id", cfg.instanceID)
	if d.ln, err = net.Listen("tcp", cfg.listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	return d, nil
}

// authenticator sets up the HTTP API's authentication. With --issuer tokens
// are verified (OIDC); with --dev-header X-Dev-User is trusted; with
// neither, the API is served without authentication (nil), which is
// allowed on a loopback address only.
func (d *daemon) authenticator(ctx context.Context) (*auth.Authenticator, error) {
	cfg := d.cfg
	switch {
	case cfg.issuer != "" || cfg.devHeader:
		a, err := auth.New(ctx, auth.Config{Issuer: cfg.issuer, Audience: cfg.audience, DevHeader: cfg.devHeader, Logger: d.log})
		if err != nil {
			return nil, fmt.Errorf("set up API authentication: %w", err)
		}
		if cfg.issuer != "" && cfg.consoleClient != "" {
			if d.console, err = console.Discover(ctx, nil, cfg.issuer, cfg.consoleClient, ""); err != nil {
				return nil, fmt.Errorf("set up the console's sign-in (--console-client-id %s): %w", cfg.consoleClient, err)
			}
			d.log.Info("console signs in with OIDC", "issuer", cfg.issuer, "client_id", cfg.consoleClient)
		}
		return a, nil
	case !loopbackAddr(cfg.listen):
		return nil, fmt.Errorf("--listen %s is not a loopback address: set --issuer (or OIDC_ISSUER) and --audience so the API checks tokens (or --dev-header for a trial)", cfg.listen)
	default:
		d.log.Warn("API AUTHENTICATION IS OFF: no --issuer and no --dev-header; anyone who can reach " + cfg.listen + " can act as an operator. Allowed on loopback only.")
		return nil, nil
	}
}

// loopbackAddr reports whether a listen address binds to loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// routes is the HTTP surface: API, console, probes and metrics
// (engine/httpapi), built by start. Without authentication it answers only
// requests addressed to a loopback host name, so a web page on another
// domain that resolves to 127.0.0.1 (DNS rebinding) cannot read or drive it.
func (d *daemon) routes() http.Handler {
	h := d.sm.Handler
	if d.cfg.metrics != nil {
		h = d.cfg.metrics(h, d.log)
	}
	if d.noAuth {
		return loopbackHostOnly(h)
	}
	return h
}

// loopbackHostOnly refuses (421 Misdirected Request) requests whose Host is
// not localhost or a loopback IP address, whatever the port.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusMisdirectedRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"type":   "urn:saga-machine:problem:misdirected",
				"title":  "Misdirected Request",
				"status": http.StatusMisdirectedRequest,
				"detail": "without authentication this API answers only requests to localhost or a loopback address, not " + r.Host,
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serve runs the orchestrator and the HTTP server until ctx ends, then stops
// them gracefully.
func (d *daemon) serve(ctx context.Context) error {
	defer d.close()
	srv := program.NewServer(d.routes()) // read/write/idle timeouts and a header limit
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(d.ln) }()
	d.log.Info("saga-machine running", "listen", d.ln.Addr().String(), "topic", d.cfg.topic, "group", d.cfg.group)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	orchDone := make(chan error, 1)
	go func() { orchDone <- d.sm.Run(runCtx) }()

	var err error
	select {
	case err = <-orchDone:
	case err = <-httpErr:
		err = fmt.Errorf("http server stopped: %w", err)
		cancel()
		<-orchDone
	case <-ctx.Done():
		d.log.Info("stopping: finishing the batch in flight and flushing the outbox")
		err = <-orchDone
	}
	shutCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	if serr := srv.Shutdown(shutCtx); serr != nil && err == nil {
		err = fmt.Errorf("http shutdown: %w", serr)
	}
	d.log.Info("saga-machine stopped")
	return err
}

func (d *daemon) close() {
	if d.ln != nil {
		d.ln.Close()
	}
	if d.sm != nil {
		d.sm.Close()
	}
	if d.broker != nil {
		d.broker.Close()
	}
}
