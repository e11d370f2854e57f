package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// shutdownTimeout bounds the HTTP servers' graceful shutdown.
const shutdownTimeout = 10 * time.Second

// URLs are the base URLs the system serves on.
type URLs struct {
	SagaMachine, Deals, Profile, Notification, Issuer string
}

// Service is one running participant service.
type Service struct {
	// Name is the participant name (deals, profile or notification).
	Name string
	// DB is the service's own database.
	DB *sqlx.DB
	// DBURL is its URL.
	DBURL string
	// Participant is the service's SDK participant.
	Participant *sdk.Participant
	// Handler is the service's HTTP router.
	Handler http.Handler

	ln      net.Listener
	running bool // its consumer was started (System.resumeMu)
}

// serviceImpl is what a participant service package offers.
type serviceImpl interface {
	RegisterHandlers(p *sdk.Participant)
	Router() http.Handler
}

// System is the whole system running in this process. Create it with
// Start; stop it with Close.
type System struct {
	// URLs are where the HTTP servers listen.
	URLs URLs
	// Brokers are the Kafka brokers in use (the embedded broker's, if
	// none were configured).
	Brokers []string
	// Embedded tells whether the embedded broker is in use.
	Embedded bool
	// Topics are the topic names in use.
	Topics Topics
	// Issuer is the in-process OIDC issuer every component trusts.
	Issuer *issuer.Issuer
	// SagaMachine is the orchestrator and its API.
	SagaMachine *SagaMachine
	// SagaDBURL is saga-machine's database URL.
	SagaDBURL string
	// Deals, Profile and Notification are the participant services.
	Deals, Profile, Notification *Service

	cfg        Config
	log        *slog.Logger
	broker     *embedded.Broker
	stopIssuer func()
	smLn       net.Listener
	servers    []*http.Server
	runCtx     context.Context // the consumers' context
	cancel     context.CancelFunc
	resumeMu   sync.Mutex
	workers    sync.WaitGroup // orchestrator and participants
	httpWG     sync.WaitGroup
	failed     chan error
	stopping   chan struct{} // closed when Close begins stopping the consumers
	closeOnce  sync.Once
	closeErr   error
}

// Start starts everything cfg describes and returns once every server
// listens and every consumer runs. Components keep running until Close;
// Failed reports one that stops on its own. On error Start releases what
// it acquired.
func Start(ctx context.Context, cfg Config) (_ *System, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &System{cfg: cfg, log: cfg.Logger, Topics: cfg.Topics, failed: make(chan error, 8), stopping: make(chan struct{})}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	// The issuer first: every component verifies its tokens.
	if s.Issuer, s.stopIssuer, err = issuer.Start(cfg.IssuerListen); err != nil {
		return nil, fmt.Errorf("start the OIDC issuer: %w", err)
	}
	s.URLs.Issuer = s.Issuer.URL()
	authn, err := auth.New(ctx, auth.Config{Issuer: s.Issuer.URL(), Audience: issuer.DefaultAudience, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("set up authentication against %s: %w", s.Issuer.URL(), err)
	}
	// The console signs in at the issuer (code flow + PKCE); its client is
	// registered once saga-machine's address is known.
	consoleOIDC, err := console.Discover(ctx, nil, s.Issuer.URL(), ConsoleClientID, "")
	if err != nil {
		return nil, fmt.Errorf("set up the console's sign-in: %w", err)
	}

	// Databases.
	dbURLs := map[string]string{}
	for _, name := range []string{Saga, Deals, Profile, Notification} {
		u, create, err := cfg.databaseURL(name)
		if err != nil {
			return nil, err
		}
		if create != "" {
			if err := ensureDatabase(ctx, cfg.Postgres, create); err != nil {
				return nil, err
			}
		}
		dbURLs[name] = u
	}
	s.SagaDBURL = dbURLs[Saga]

	// Kafka.
	s.Brokers = cfg.Brokers
	if len(s.Brokers) == 0 {
		dir := filepath.Join(cfg.DataDir, "kafka")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create the embedded broker's data directory: %w", err)
		}
		s.broker, err = embedded.Start(embedded.Options{Addr: cfg.EmbeddedKafka, Partitions: int32(cfg.Partitions), DataDir: dir})
		if err != nil {
			return nil, fmt.Errorf("start the embedded Kafka broker (give brokers to use a real Kafka): %w", err)
		}
		s.Brokers, s.Embedded = s.broker.Addrs(), true
	}
	kcfg := kafka.Config{Brokers: s.Brokers, ClientID: "saga-machine", Logger: cfg.Logger, SASL: cfg.KafkaSASL, TLS: cfg.KafkaTLS}

	// saga-machine.
	cat, err := LoadCatalog(cfg.Sagas, cfg.Topics.rename())
	if err != nil {
		return nil, err
	}
	s.SagaMachine, err = OpenSagaMachine(ctx, SagaMachineConfig{
		Catalog: cat, DB: dbURLs[Saga], Kafka: kcfg, Topic: cfg.Topics.Events,
		Group: cfg.GroupPrefix + "saga-machine", Partitions: cfg.Partitions,
		Engine: cfg.Engine, Auth: authn, Console: console.Config{OIDC: consoleOIDC}, Logger: cfg.Logger.With("service", "saga-machine"),
	})
	if err != nil {
		return nil, err
	}
	if s.smLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("saga-machine: listen on %s: %w", cfg.Listen, err)
	}
	s.URLs.SagaMachine = "http://" + s.smLn.Addr().String()
	if err := s.registerConsole(cfg.Logins); err != nil {
		return nil, err
	}

	// Participant services.
	type build func(db *sqlx.DB, p *sdk.Participant, log *slog.Logger) (serviceImpl, func(context.Context, *sqlx.DB) error, error)
	specs := []struct {
		name   string
		listen string
		dst    **Service
		url    *string
		build  build
	}{
		{Profile, cfg.ProfileListen, &s.Profile, &s.URLs.Profile, func(db *sqlx.DB, p *sdk.Participant, log *slog.Logger) (serviceImpl, func(context.Context, *sqlx.DB) error, error) {
			svc, err := profile.New(profile.Config{DB: db, Participant: p, Auth: authn, Logger: log})
			return svc, profile.Migrate, err
		}},
		{Deals, cfg.DealsListen, &s.Deals, &s.URLs.Deals, func(db *sqlx.DB, p *sdk.Participant, log *slog.Logger) (serviceImpl, func(context.Context, *sqlx.DB) error, error) {
			svc, err := deals.New(deals.Config{DB: db, Participant: p, Auth: authn, Logger: log})
			return svc, deals.Migrate, err
		}},
		{Notification, cfg.NotificationListen, &s.Notification, &s.URLs.Notification, func(db *sqlx.DB, p *sdk.Participant, log *slog.Logger) (serviceImpl, func(context.Context, *sqlx.DB) error, error) {
			svc, err := notification.New(notification.Config{DB: db, Participant: p, Auth: authn, Logger: log})
			return svc, notification.Migrate, err
		}},
	}
	for _, sp := range specs {
		svc := &Service{Name: sp.name, DBURL: dbURLs[sp.name]}
		*sp.dst = svc
		log := cfg.Logger.With("service", sp.name)
		maxConns := 10
		if c := cfg.ParticipantConcurrency; c > 0 {
			maxConns = max(maxConns, 2*c+4)
		}
		if svc.DB, err = openServiceDB(ctx, svc.DBURL, maxConns); err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		if err := sdk.Migrate(ctx, svc.DB); err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		pcfg := sdk.Config{
			Name: sp.name, DB: svc.DB, Brokers: s.Brokers,
			CommandTopic: cfg.Topics.Command(sp.name), EventTopic: engine.EventTopic(cfg.Topics.Events, sp.name),
			Group: cfg.GroupPrefix + sp.name, Concurrency: cfg.ParticipantConcurrency, Logger: log, KafkaSASL: cfg.KafkaSASL, KafkaTLS: cfg.KafkaTLS,
		}
		if cfg.Participant != nil {
			cfg.Participant(sp.name, &pcfg)
		}
		svc.Participant, err = sdk.New(pcfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		impl, migrate, err := sp.build(svc.DB, svc.Participant, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		if err := migrate(ctx, svc.DB); err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		impl.RegisterHandlers(svc.Participant)
		svc.Handler = impl.Router()
		if svc.ln, err = net.Listen("tcp", sp.listen); err != nil {
			return nil, fmt.Errorf("%s: listen on %s: %w", sp.name, sp.listen, err)
		}
		*sp.url = "http://" + svc.ln.Addr().String()
	}

	// Run.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.runCtx, s.cancel = runCtx, cancel
	s.goWorker("saga-machine", func() error { return s.SagaMachine.Run(runCtx) })
	for _, svc := range s.services() {
		if slices.Contains(cfg.Paused, svc.Name) {
			s.log.Info("consumer paused until Resume", "service", svc.Name)
			continue
		}
		svc.running = true
		s.goWorker(svc.Name, func() error { return svc.Participant.Run(runCtx) })
	}
	s.serve("saga-machine", s.smLn, s.SagaMachine.Handler)
	for _, svc := range s.services() {
		s.serve(svc.Name, svc.ln, svc.Handler)
	}
	s.log.Info("system running", "saga_machine", s.URLs.SagaMachine, "deals", s.URLs.Deals, "profile", s.URLs.Profile,
		"notification", s.URLs.Notification, "issuer", s.URLs.Issuer, "brokers", s.Brokers, "embedded_kafka", s.Embedded)
	return s, nil
}

// Resume starts the Kafka consumer of a participant service that
// Config.Paused kept from starting: it then handles the commands that
// waited on the bus, as a service that comes back does. Resuming a service
// that runs is an error.
func (s *System) Resume(name string) error {
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	for _, svc := range s.services() {
		if svc.Name != name {
			continue
		}
		if svc.running {
			return fmt.Errorf("resume %s: its consumer runs already", name)
		}
		if s.cancelled() {
			return fmt.Errorf("resume %s: the system is stopping", name)
		}
		svc.running = true
		s.goWorker(svc.Name, func() error { return svc.Participant.Run(s.runCtx) })
		s.log.Info("consumer resumed", "service", name)
		return nil
	}
	return fmt.Errorf("resume %s: no such participant service", name)
}

func (s *System) services() []*Service {
	var out []*Service
	for _, svc := range []*Service{s.Profile, s.Deals, s.Notification} {
		if svc != nil {
			out = append(out, svc)
		}
	}
	return out
}

// goWorker runs a consumer; its stopping before Close is a failure.
func (s *System) goWorker(name string, run func() error) {
	s.workers.Go(func() {
		err := run()
		if s.cancelled() {
			if err != nil {
				s.log.Warn("stopped with an error", "service", name, "err", err)
			}
			return
		}
		if err == nil {
			err = errors.New("stopped on its own")
		}
		s.fail(fmt.Errorf("%s: %w", name, err))
	})
}

// serve serves h on ln. Every server of the system trusts the in-process
// dev issuer, which mints any token for anyone: it answers only requests
// addressed to a loopback host name (program.LoopbackHostOnly), so a web
// page cannot drive it through DNS rebinding.
func (s *System) serve(name string, ln net.Listener, h http.Handler) {
	srv := program.NewServer(program.LoopbackHostOnly(name, h))
	s.servers = append(s.servers, srv)
	s.httpWG.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("%s: serve HTTP on %s: %w", name, ln.Addr(), err))
		}
	})
}

func (s *System) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

func (s *System) cancelled() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// Kafka is how the system's components reach its brokers (Brokers, with
// Config.KafkaSASL and Config.KafkaTLS), for a client of clientID: tools
// and tests that read or write the system's topics use it.
func (s *System) Kafka(clientID string) kafka.Config {
	return kafka.Config{Brokers: s.Brokers, ClientID: clientID, SASL: s.cfg.KafkaSASL, TLS: s.cfg.KafkaTLS}
}

// Failed delivers the error of a component that stopped on its own (a
// consumer or an HTTP server); the system should then be closed.
func (s *System) Failed() <-chan error { return s.failed }

// Token returns a bearer token for subject with roles, signed by the
// in-process issuer for audience issuer.DefaultAudience, valid for
// DefaultTokenTTL: every service of the system accepts it.
func (s *System) Token(subject string, roles ...string) (string, error) {
	return s.Issuer.Token(subject, issuer.TokenOptions{Roles: roles, Name: subject, TTL: DefaultTokenTTL})
}

// Client returns an API client of the system acting as subject with roles.
func (s *System) Client(subject string, roles ...string) (*Client, error) {
	tok, err := s.Token(subject, roles...)
	if err != nil {
		return nil, err
	}
	return NewClient(s.URLs, tok, nil), nil
}

// Fund deposits amount (a decimal string) in currency into portfolio
// portfolioID as TreasuryUser, the system's funding operator (a token with
// the funding-operator role from the in-process issuer), the way an
// operator funds a client's portfolio. idempotencyKey is required (see
// Client.Deposit).
func (s *System) Fund(ctx context.Context, portfolioID, amount, currency, reason, idempotencyKey string) (profile.Deposit, bool, error) {
	c, err := s.Client(TreasuryUser, auth.RoleFundingOperator)
	if err != nil {
		return profile.Deposit{}, false, fmt.Errorf("fund portfolio %s: %w", portfolioID, err)
	}
	return c.Deposit(ctx, portfolioID, amount, currency, reason, idempotencyKey)
}

// Close stops the system gracefully: the HTTP servers stop accepting
// requests and finish those under way; the orchestrator and the
// participants finish their batches in flight, commit and flush their
// outboxes; then databases, broker and issuer are released. It returns the
// first error of a component that failed while stopping. Close may be
// called more than once.
func (s *System) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for _, srv := range s.servers {
			if err := srv.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
		}
		s.httpWG.Wait()
		s.resumeMu.Lock() // no Resume starts a consumer from here on
		close(s.stopping)
		s.resumeMu.Unlock()
		if s.cancel != nil {
			s.cancel()
		}
		s.workers.Wait()
		s.release()
		s.log.Info("system stopped")
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// release frees every resource acquired so far (also after a failed Start).
func (s *System) release() {
	if s.smLn != nil {
		s.smLn.Close()
	}
	for _, svc := range s.services() {
		if svc.ln != nil {
			svc.ln.Close()
		}
		if svc.DB != nil {
			svc.DB.Close()
		}
	}
	if s.SagaMachine != nil {
		s.SagaMachine.Close()
	}
	if s.broker != nil {
		s.broker.Close()
	}
	if s.stopIssuer != nil {
		s.stopIssuer()
	}
}
