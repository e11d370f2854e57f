package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
)

// Request limits.
const (
	// MaxJSONBody is the largest JSON request body accepted (1 MiB).
	MaxJSONBody = 1 << 20
	// MaxDefinitionBody is the largest definition accepted by validate (1 MiB).
	MaxDefinitionBody = 1 << 20
	// ReadyTimeout bounds the checks of /readyz and the store reads of a scrape.
	ReadyTimeout = 5 * time.Second
)

// Config configures New. Orchestrator is required; the zero value of every
// other field means the default.
type Config struct {
	// Orchestrator carries out the API's actions; its Store and Catalog are
	// read for listings. Required.
	Orchestrator *engine.Orchestrator
	// Auth authenticates /api/v1 requests and checks the operator role.
	// nil means NO authentication: only for tests and the explicit dev mode.
	Auth *auth.Authenticator
	// Ready checks the dependencies other than the database (the broker) for
	// /readyz. nil means only the database is checked.
	Ready func(ctx context.Context) error
	// Logger receives one structured line per request (with saga_id where
	// the request is about one saga) and every internal error. Default:
	// discard.
	Logger *slog.Logger
	// Registry is served at /metrics. New registers the store collector
	// (instances per state, outbox backlog) and the Go and process
	// collectors in it. Pass the registry given to NewMetrics so the
	// orchestrator's counters are served too. nil means a new registry.
	Registry *prometheus.Registry
}

// server holds what the handlers share.
type server struct {
	orch  *engine.Orchestrator
	store engine.Store
	cat   *engine.Catalog
	auth  *auth.Authenticator
	ready func(ctx context.Context) error
	log   *slog.Logger

	router *mux.Router // for the Allow header of 405 answers
}

// New returns the whole HTTP handler of saga-machine: API, health, metrics
// and console.
func New(cfg Config) (http.Handler, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	return s.logRequests(s.router), nil
}

// newServer checks cfg and builds the server and its router.
func newServer(cfg Config) (*server, error) {
	if cfg.Orchestrator == nil {
		return nil, engine.Errorf(engine.CodeInvalid, "new http api", "Config.Orchestrator is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &server{
		orch: cfg.Orchestrator, store: cfg.Orchestrator.Store(), cat: cfg.Orchestrator.Catalog(),
		auth: cfg.Auth, ready: cfg.Ready, log: cfg.Logger,
	}
	for _, c := range []prometheus.Collector{
		newStoreCollector(s.store),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := cfg.Registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, &engine.Error{Code: engine.CodeInvalid, Op: "new http api: register metrics", Err: err}
			}
		}
	}
	s.router = s.routes(promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}))
	return s, nil
}

// routes registers every route on a new router.
func (s *server) routes(metrics http.Handler) *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeProblem(w, req, engine.Errorf(engine.CodeNotFound, "", "no route %s %s", req.Method, req.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(s.methodNotAllowed)
	r.Use(noteRoute, sameOrigin)

	r.Handle("/healthz", http.HandlerFunc(s.healthz)).Methods(http.MethodGet)
	r.Handle("/readyz", http.HandlerFunc(s.readyz)).Methods(http.MethodGet)
	r.Handle("/metrics", metrics).Methods(http.MethodGet)

	// No mux subrouter: with one, gorilla/mux answers 404 instead of 405
	// for a known path with a wrong method.
	const api = "/api/v1"
	read := func(path string, h http.HandlerFunc, methods ...string) {
		r.Handle(api+path, s.authn(h)).Methods(methods...)
	}
	operate := func(path string, h http.HandlerFunc) {
		r.Handle(api+path, s.operator(h)).Methods(http.MethodPost)
	}
	read("/definitions", s.listDefinitions, http.MethodGet)
	read("/definitions/validate", s.validateDefinition, http.MethodPost)
	read("/definitions/{name}", s.getDefinition, http.MethodGet)
	read("/definitions/{name}/diagram.svg", s.diagramSVG, http.MethodGet)
	read("/sagas", s.listSagas, http.MethodGet)
	read("/sagas", s.startSaga, http.MethodPost)
	read("/sagas/{id}", s.getSaga, http.MethodGet)
	operate("/sagas/{id}/resend", s.resend)
	operate("/sagas/{id}/abort", s.abort)
	read("/dead-letters", s.listDeadLetters, http.MethodGet)
	read("/dead-letters/{id}", s.getDeadLetter, http.MethodGet)
	operate("/dead-letters/{id}/replay", s.replay)

	ui := console.Handler()
	r.Handle("/", http.RedirectHandler("/console/", http.StatusFound)).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/console/").Handler(http.StripPrefix("/console", ui)).Methods(http.MethodGet, http.MethodHead)
	return r
}

// methodNotAllowed answers 405 with the Allow header of the matched path.
func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if s.router.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
	}
	writeProblem(w, r, engine.Errorf(CodeMethodNotAllowed, "", "%s is not allowed on %s (allowed: %s)",
		r.Method, r.URL.Path, strings.Join(allowed, ", ")))
}

// sameOrigin refuses state-changing (non-GET/HEAD/OPTIONS) requests that a
// browser marks as cross-origin (Sec-Fetch-Site, else Origin against Host),
// with net/http's CrossOriginProtection. Without it, a web page could make
// the browser POST an abort or a replay to an API running without
// authentication on loopback (a body with no Content-Type is accepted as
// JSON). Clients other than browsers send neither header and pass.
func sameOrigin(next http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, engine.Errorf(CodeCrossOrigin, "", "%s %s from another origin (%s) is refused: state-changing requests must come from the console's own origin or from a non-browser client",
			r.Method, r.URL.Path, originOf(r)))
	}))
	return p.Handler(next)
}

// originOf names where a cross-origin request came from, for the problem
// detail.
func originOf(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		return o
	}
	return "Sec-Fetch-Site: " + r.Header.Get("Sec-Fetch-Site")
}

// authn requires an authenticated user when auth is on.
func (s *server) authn(h http.Handler) http.Handler {
	if s.auth == nil {
		return h
	}
	return s.auth.Middleware(noteUser(h))
}

// operator requires the saga-operator role when auth is on.
func (s *server) operator(h http.Handler) http.Handler {
	if s.auth == nil {
		return h
	}
	return s.auth.Middleware(noteUser(s.auth.RequireRole(auth.RoleOperator, h)))
}

// actor names the user acting: the token's subject, or "anonymous" when
// auth is off.
func actor(r *http.Request) string {
	if u, ok := auth.UserFrom(r.Context()); ok && u.Subject != "" {
		return u.Subject
	}
	return "anonymous"
}

// healthz answers 200 while the process serves HTTP.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyCheck is one dependency's result in /readyz.
type readyCheck struct {
	Status string `json:"status"` // ok | failed | skipped
	Error  string `json:"error,omitempty"`
}

// readyz pings the database and the broker; 503 if either fails.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
	defer cancel()
	checks := map[string]readyCheck{}
	ok := true
	run := func(name string, f func(context.Context) error) {
		if f == nil {
			checks[name] = readyCheck{Status: "skipped"}
			return
		}
		if err := f(ctx); err != nil {
			ok = false
			checks[name] = readyCheck{Status: "failed", Error: err.Error()}
			s.log.Warn("readiness check failed", "check", name, "err", err)
			return
		}
		checks[name] = readyCheck{Status: "ok"}
	}
	run("database", s.store.Ping)
	run("broker", s.ready)
	status, code := "ready", http.StatusOK
	if !ok {
		status, code = "not ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}
