package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Defaults of the command-line runner.
const (
	DefaultBrokers  = "127.0.0.1:9092" // the embedded broker saga-machine starts
	DefaultDataDir  = "./.saga-machine"
	shutdownTimeout = 10 * time.Second
)

// Participant is what a service package offers the runner.
type Participant interface {
	// RegisterHandlers registers the service's command handlers on p.
	RegisterHandlers(p *sdk.Participant)
	// Router is the service's HTTP handler.
	Router() http.Handler
}

// Deps are the dependencies the runner builds for a service.
type Deps struct {
	// DB is the service's database, migrated.
	DB *sqlx.DB
	// Participant is the service's SDK participant on DB.
	Participant *sdk.Participant
	// Auth authenticates the service's HTTP routes.
	Auth *auth.Authenticator
	// Logger is the process's JSON logger tagged with the service name.
	Logger *slog.Logger
}

// App describes one participant service for Run.
type App struct {
	// Name is the participant name, e.g. "deals".
	Name string
	// DefaultListen is the default HTTP address, e.g. 127.0.0.1:8082.
	DefaultListen string
	// Migrate applies the service's business migrations.
	Migrate func(ctx context.Context, db *sqlx.DB) error
	// Build constructs the service.
	Build func(d Deps) (Participant, error)
}

func (a App) env(suffix string) string {
	return strings.ToUpper(strings.ReplaceAll(a.Name, "-", "_")) + "_" + suffix
}

// kafkaName is what --command-topic, --event-topic and --group accept:
// Kafka's legal topic names (the saga definitions' rule).
var kafkaName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

// runConfig is the parsed command line.
type runConfig struct {
	db           string
	brokers      []string
	listen       string
	issuer       string
	audience     string
	skipAudience bool
	devHeader    bool
	migrate      bool
	logLevel     slog.Level
	// Kafka authentication (the service's own principal) and static
	// group membership (program.KafkaFlags).
	kafkaSASL  kafka.SASL
	kafkaTLS   *tls.Config
	instanceID string
	// Topics and consumer group (empty: the SDK's defaults), so that
	// several stacks can share one cluster (tests, staging).
	commandTopic, eventTopic, group string
	// tracing is --otlp-endpoint (internal/tracing; off by default).
	tracing *tracing.Config
	// metrics puts /metrics behind --metrics-token-file's token (or
	// leaves it open).
	metrics program.MetricsGuard
}

// Run is the whole program of one participant service as its own process:
//
//	<name> [flags]           serve HTTP and consume commands until ctx ends
//	<name> migrate [--db]    apply the SDK's and the service's migrations, then exit
//
// Flags (and environment variables): --db (<NAME>_DB_URL), --brokers
// (SAGA_KAFKA_BROKERS), --listen (<NAME>_LISTEN), --issuer (OIDC_ISSUER),
// --otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT; tracing, off by default),
// --audience (OIDC_AUDIENCE), --skip-audience, --dev-header (explicit only,
// no variable), --migrate, --log-level (<NAME>_LOG_LEVEL), --command-topic
// (<NAME>_COMMAND_TOPIC), --event-topic (<NAME>_EVENT_TOPIC) and --group
// (<NAME>_GROUP) (default: the SDK's, e.g. DEALS_TOPIC,
// SAGA_SERVER_TOPIC_DEALS and deals), and the Kafka
// client flags of program.RegisterKafkaFlags (--kafka-user,
// --kafka-password-file, --kafka-instance-id, ...: SAGA_KAFKA_*), and
// --metrics-token-file (SAGA_METRICS_TOKEN_FILE: GET /metrics then needs
// that bearer token; program.RegisterMetricsFlag). A --db or
// Kafka password holding the placeholder CHANGE_ME is refused. With
// --dev-header, or an --issuer on loopback (the dev issuer), the service
// answers only loopback Host names (LocalOnly); --dev-header also needs a
// loopback --listen. The server is program.NewServer (timeouts, header
// limit). A graceful stop (ctx ends, e.g. on SIGTERM) stops accepting
// requests, finishes those under way, finishes in-flight commands and
// relays the outbox.
func Run(ctx context.Context, app App, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "migrate" {
		return runMigrate(ctx, app, args[1:], env, stdout, stderr)
	}
	cfg, err := parseRunFlags(app, args, env, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("service", app.Name)
	stopTracing, err := tracing.Setup(ctx, *cfg.tracing)
	if err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("tracing shutdown", "error", err)
		}
	}()
	db, err := OpenDB(ctx, cfg.db)
	if err != nil {
		return err
	}
	defer db.Close()
	if cfg.migrate {
		if err := migrateAll(ctx, app, db); err != nil {
			return err
		}
	}
	a, err := auth.New(ctx, auth.Config{Issuer: cfg.issuer, Audience: cfg.audience, SkipAudience: cfg.skipAudience,
		DevHeader: cfg.devHeader, Logger: log})
	if err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	p, err := sdk.New(sdk.Config{Name: app.Name, DB: db, Brokers: cfg.brokers, KafkaSASL: cfg.kafkaSASL, KafkaTLS: cfg.kafkaTLS, KafkaInstanceID: cfg.instanceID,
		CommandTopic: cfg.commandTopic, EventTopic: cfg.eventTopic, Group: cfg.group, Logger: log})
	if err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	svc, err := app.Build(Deps{DB: db, Participant: p, Auth: a, Logger: log})
	if err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	svc.RegisterHandlers(p)
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", app.Name, cfg.listen, err)
	}
	h := cfg.metrics(svc.Router(), log)
	if cfg.devHeader || LoopbackIssuer(cfg.issuer) {
		// No production identity provider: answer loopback host names only
		// (DNS rebinding).
		h = LocalOnly(app.Name, h)
	}
	srv := program.NewServer(h)
	log.Info("serving", "listen", ln.Addr().String(), "db", Redact(cfg.db), "brokers", cfg.brokers, "issuer", cfg.issuer, "dev_header", cfg.devHeader)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("%s: serve HTTP: %w", app.Name, err)
			cancel()
		}
	})
	wg.Go(func() {
		if err := p.Run(ctx); err != nil {
			errs <- fmt.Errorf("%s: %w", app.Name, err)
			cancel()
		}
	})
	<-ctx.Done()
	log.Info("stopping")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP shutdown", "error", err)
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	log.Info("stopped")
	return errors.Join(all...)
}

func migrateAll(ctx context.Context, app App, db *sqlx.DB) error {
	if err := sdk.Migrate(ctx, db); err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	if err := app.Migrate(ctx, db); err != nil {
		return fmt.Errorf("%s: %w", app.Name, err)
	}
	return nil
}

func runMigrate(ctx context.Context, app App, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(app.Name+" migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", envOr(env, app.env("DB_URL"), defaultDB(app)), "database URL: postgres://… or sqlite:PATH (env "+app.env("DB_URL")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s migrate: unexpected arguments %q", app.Name, fs.Args())
	}
	if err := program.RefusePlaceholders(program.Secret{Name: "--db (" + app.env("DB_URL") + ")", Value: *db}); err != nil {
		return fmt.Errorf("%s migrate: %w", app.Name, err)
	}
	conn, err := OpenDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := migrateAll(ctx, app, conn); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: database %s migrated\n", app.Name, Redact(*db))
	return nil
}

func defaultDB(app App) string { return "sqlite:" + DefaultDataDir + "/" + app.Name + ".db" }

func envOr(env func(string) string, name, def string) string {
	if v := env(name); v != "" {
		return v
	}
	return def
}

func parseRunFlags(app App, args []string, env func(string) string, stderr io.Writer) (runConfig, error) {
	fs := flag.NewFlagSet(app.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg runConfig
	var brokers, level string
	fs.StringVar(&cfg.db, "db", envOr(env, app.env("DB_URL"), defaultDB(app)), "database URL: postgres://… or sqlite:PATH (env "+app.env("DB_URL")+")")
	fs.StringVar(&brokers, "brokers", envOr(env, "SAGA_KAFKA_BROKERS", DefaultBrokers), "Kafka brokers, comma-separated (env SAGA_KAFKA_BROKERS; default: the embedded broker saga-machine starts)")
	fs.StringVar(&cfg.listen, "listen", envOr(env, app.env("LISTEN"), app.DefaultListen), "HTTP listen address (env "+app.env("LISTEN")+")")
	fs.StringVar(&cfg.issuer, "issuer", env("OIDC_ISSUER"), "OIDC issuer URL, e.g. https://keycloak.example/auth/realms/portfolio (env OIDC_ISSUER)")
	fs.StringVar(&cfg.audience, "audience", env("OIDC_AUDIENCE"), "expected token audience: this service's client id (env OIDC_AUDIENCE)")
	fs.BoolVar(&cfg.skipAudience, "skip-audience", false, "do not check the token audience (explicit)")
	fs.BoolVar(&cfg.devHeader, "dev-header", false, "DEV ONLY: trust X-Dev-User/X-Dev-Roles on requests without a token (explicit; never in a deployment)")
	fs.BoolVar(&cfg.migrate, "migrate", true, "apply pending migrations at start (set false when a migration job does it)")
	fs.StringVar(&level, "log-level", envOr(env, app.env("LOG_LEVEL"), "info"), "debug, info, warn or error (env "+app.env("LOG_LEVEL")+")")
	fs.StringVar(&cfg.commandTopic, "command-topic", env(app.env("COMMAND_TOPIC")), "Kafka topic of this service's commands (env "+app.env("COMMAND_TOPIC")+"; default "+strings.ToUpper(app.Name)+"_TOPIC, as in the saga definitions)")
	fs.StringVar(&cfg.eventTopic, "event-topic", env(app.env("EVENT_TOPIC")), "Kafka topic this service writes its events to (env "+app.env("EVENT_TOPIC")+"; default SAGA_SERVER_TOPIC_"+strings.ToUpper(app.Name)+", saga-machine's --topic + _"+strings.ToUpper(app.Name)+")")
	fs.StringVar(&cfg.group, "group", env(app.env("GROUP")), "Kafka consumer group (env "+app.env("GROUP")+"; default "+app.Name+")")
	kf := program.RegisterKafkaFlags(fs, env)
	ma := program.RegisterMetricsFlag(fs, env)
	cfg.tracing = tracing.RegisterFlags(fs, app.Name, env)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%s: unexpected arguments %q (the only subcommand is migrate)", app.Name, fs.Args())
	}
	for _, n := range []struct{ flag, value string }{{"--command-topic", cfg.commandTopic}, {"--event-topic", cfg.eventTopic}, {"--group", cfg.group}} {
		if n.value != "" && !kafkaName.MatchString(n.value) {
			return cfg, fmt.Errorf("%s: %s %q: want 1 to 249 characters of A-Z a-z 0-9 . _ -", app.Name, n.flag, n.value)
		}
	}
	if cfg.commandTopic != "" && cfg.commandTopic == cfg.eventTopic {
		return cfg, fmt.Errorf("%s: --command-topic and --event-topic are both %q: the service would consume its own events", app.Name, cfg.commandTopic)
	}
	if err := program.RefusePlaceholders(program.Secret{Name: "--db (" + app.env("DB_URL") + ")", Value: cfg.db}); err != nil {
		return cfg, fmt.Errorf("%s: %w", app.Name, err)
	}
	var kerr error
	if cfg.metrics, kerr = ma.Middleware(); kerr != nil {
		return cfg, fmt.Errorf("%s: %w", app.Name, kerr)
	}
	if cfg.kafkaSASL, kerr = kf.SASL(); kerr != nil {
		return cfg, fmt.Errorf("%s: %w", app.Name, kerr)
	}
	if cfg.kafkaTLS, kerr = kf.TLS(); kerr != nil {
		return cfg, fmt.Errorf("%s: %w", app.Name, kerr)
	}
	cfg.instanceID = kf.InstanceID()
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.brokers = append(cfg.brokers, b)
		}
	}
	if len(cfg.brokers) == 0 {
		return cfg, fmt.Errorf("%s: --brokers %q names no broker", app.Name, brokers)
	}
	if cfg.issuer == "" && !cfg.devHeader {
		return cfg, fmt.Errorf("%s: --issuer (or OIDC_ISSUER) is required; for a local trial without an issuer pass --dev-header explicitly", app.Name)
	}
	if cfg.devHeader && !program.IsLoopbackAddr(cfg.listen) {
		return cfg, fmt.Errorf("%s: --dev-header trusts X-Dev-User from anyone who can connect: --listen %q must be a loopback address (127.0.0.1, ::1 or localhost)", app.Name, cfg.listen)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("%s: --log-level %q: %w", app.Name, level, err)
	}
	return cfg, nil
}
