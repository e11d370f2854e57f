package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
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
	// Orchestrator carries out the API's actions; its Catalog is read for
	// listings. Required.
	Orchestrator *engine.Orchestrator
	// Store is what the API reads (sagas, timelines, dead letters, the
	// outbox backlog). Default: the orchestrator's store, which must then
	// implement engine.Queries too (engine/sqlstore does).
	Store engine.Queries
	// Auth authenticates /api/v1 requests; the routes then check roles
	// (saga-viewer or saga-operator to read, saga-operator to act, a
	// definition's `by: api` roles to start). nil means NO authentication
	// and every action allowed: only for tests and the explicit dev mode.
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
	// Console configures the operator console at /console/: with
	// Console.OIDC it signs operators in (authorization code + PKCE) and
	// serves those public settings at /console/config.json. OIDC needs
	// Auth. The zero value is a console without sign-in.
	Console console.Config
}

// server holds what the handlers share.
type server struct {
	orch  *engine.Orchestrator
	store engine.Queries
	cat   *engine.Catalog
	auth  *auth.Authenticator
	ready func(ctx context.Context) error
	log   *slog.Logger

	router *mux.Router       // for the Allow header of 405 answers
	access map[string]access // "METHOD /path/{template}" → who may call it
	ui     http.Handler      // the console's files and config.json
}

// New returns the whole HTTP handler of saga-machine: API, health, metrics
// and console.
func New(cfg Config) (http.Handler, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	return s.traced(s.logRequests(s.router)), nil
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
	if cfg.Store == nil {
		q, ok := cfg.Orchestrator.Store().(engine.Queries)
		if !ok {
			return nil, engine.Errorf(engine.CodeInvalid, "new http api", "Config.Store is nil and the orchestrator's store %T does not implement engine.Queries", cfg.Orchestrator.Store())
		}
		cfg.Store = q
	}
	s := &server{
		orch: cfg.Orchestrator, store: cfg.Store, cat: cfg.Orchestrator.Catalog(),
		auth: cfg.Auth, ready: cfg.Ready, log: cfg.Logger,
	}
	if cfg.Console.OIDC != nil && cfg.Auth == nil {
		return nil, engine.Errorf(engine.CodeInvalid, "new http api", "Config.Console.OIDC is set but Config.Auth is nil: the console would sign in to an API that checks no token")
	}
	ui, err := console.New(cfg.Console)
	if err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: "new http api: console", Err: err}
	}
	s.ui = ui
	cols := []prometheus.Collector{
		newStoreCollector(s.store),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if ages := newAgeCollector(s.store, time.Now); ages != nil {
		cols = append(cols, ages)
	}
	for _, c := range cols {
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
	// for a known path with a wrong method. Each route names who may call
	// it (see the role matrix in docs/http-api.md).
	const api = "/api/v1"
	s.access = map[string]access{}
	route := func(path string, need access, h http.HandlerFunc, method string) {
		s.access[method+" "+api+path] = need
		r.Handle(api+path, s.guard(need, h)).Methods(method)
	}
	route("/me", anyUser, s.me, http.MethodGet)
	route("/definitions", reader, s.listDefinitions, http.MethodGet)
	route("/definitions/validate", anyUser, s.validateDefinition, http.MethodPost)
	route("/definitions/{name}", reader, s.getDefinition, http.MethodGet)
	route("/definitions/{name}/diagram.svg", reader, s.diagramSVG, http.MethodGet)
	route("/sagas", reader, s.listSagas, http.MethodGet)
	route("/sagas", anyUser, s.startSaga, http.MethodPost) // the definition's roles decide (engine.Caller)
	route("/sagas/{id}", reader, s.getSaga, http.MethodGet)
	route("/sagas/{id}/resend", operator, s.resend, http.MethodPost)
	route("/sagas/{id}/abort", operator, s.abort, http.MethodPost)
	route("/sagas/{id}/compensation/retry", operator, s.retryCompensation, http.MethodPost)
	route("/sagas/{id}/compensation/resolve", operator, s.resolveCompensation, http.MethodPost)
	route("/sagas/{id}/migrations", operator, s.migrateSaga, http.MethodPost)
	route("/migrations", operator, s.migrateSagas, http.MethodPost)
	route("/dead-letters", reader, s.listDeadLetters, http.MethodGet)
	route("/dead-letters/{id}", reader, s.getDeadLetter, http.MethodGet)
	route("/dead-letters/{id}/replay", operator, s.replay, http.MethodPost)

	r.Handle("/", http.RedirectHandler("/console/", http.StatusFound)).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/console/").Handler(http.StripPrefix("/console", s.ui)).Methods(http.MethodGet, http.MethodHead)
	return r
}

// methodNotAllowed answers 405 with the Allow header of the matched path.
// When routes of several path templates match the path (the literal
// /definitions/validate beside /definitions/{name}), the path belongs to
// the one registered first and only its methods count: OPTIONS
// /definitions/validate does not advertise the GET of {name}, which
// answers 404 there.
func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	order := map[*mux.Route]int{}
	_ = s.router.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		order[rt] = len(order)
		return nil
	})
	var allowed []string
	owner, ownerIndex := "", -1
	templates := map[string]string{}
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if s.router.Match(probe, &match) && match.MatchErr == nil && match.Route != nil {
			tpl, _ := match.Route.GetPathTemplate()
			templates[m] = tpl
			if i := order[match.Route]; ownerIndex < 0 || i < ownerIndex {
				owner, ownerIndex = tpl, i
			}
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		if tpl, ok := templates[m]; ok && tpl == owner {
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

// access is who may call a route when auth is on.
type access int

const (
	// anyUser: any authenticated user, whatever her roles. Only routes
	// that read nothing of the orchestrator's data: who am I, validate a
	// definition sent in the body, and start a saga (which the
	// definition's `by: api` roles then allow or refuse).
	anyUser access = iota
	// reader: saga-viewer or saga-operator (readRoles): definitions with
	// their live counts, sagas, timelines, dead letters.
	reader
	// operator: saga-operator (operateRoles): re-send, abort, replay.
	operator
)

// readRoles may read the orchestrator's data (any one suffices);
// operateRoles may also change sagas and dead letters.
var (
	readRoles    = []string{auth.RoleViewer, auth.RoleOperator}
	operateRoles = []string{auth.RoleOperator}
)

// roles returns the roles a route of this access needs (nil: none).
func (a access) roles() []string {
	switch a {
	case reader:
		return readRoles
	case operator:
		return operateRoles
	}
	return nil
}

// guard authenticates the request and checks the roles need asks for, when
// auth is on; without auth (tests and the explicit dev mode) it lets every
// request through.
func (s *server) guard(need access, h http.Handler) http.Handler {
	if s.auth == nil {
		return h
	}
	roles := need.roles()
	if len(roles) == 0 {
		return s.auth.Middleware(noteUser(h))
	}
	return s.auth.Middleware(noteUser(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := auth.UserFrom(r.Context())
		for _, role := range roles {
			if u.HasRole(role) {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
		writeProblem(w, r, engine.Errorf(engine.CodeForbidden, "", "%s %s needs the role %s; user %q has %s",
			r.Method, r.URL.Path, strings.Join(roles, " or "), u.Subject, rolesText(u.Roles)))
	})))
}

// rolesText names a user's roles for a refusal.
func rolesText(roles []string) string {
	if len(roles) == 0 {
		return "no roles"
	}
	return "the roles " + strings.Join(roles, ", ")
}

// caller is the engine's view of the request's user: the token's subject
// and roles, or "anonymous" with every role when auth is off.
func (s *server) caller(r *http.Request) *engine.Caller {
	if u, ok := auth.UserFrom(r.Context()); ok && s.auth != nil {
		return &engine.Caller{Subject: u.Subject, Roles: u.Roles}
	}
	return &engine.Caller{Subject: "anonymous", AllRoles: true}
}

// actor names the user acting: the token's subject, or "anonymous" when
// auth is off.
func actor(r *http.Request) string {
	if u, ok := auth.UserFrom(r.Context()); ok && u.Subject != "" {
		return u.Subject
	}
	return "anonymous"
}

// Me is GET /me: who the API takes the caller for and what she may do.
type Me struct {
	Subject string   `json:"subject"`        // token subject; "anonymous" when auth is off
	Name    string   `json:"name,omitempty"` // preferred_username or name
	Roles   []string `json:"roles"`
	// Auth is "on" (tokens are verified) or "off" (no authentication:
	// tests and the explicit dev mode; every action is allowed).
	Auth string `json:"auth"`
	// MayRead: the caller may read definitions, sagas, timelines and dead
	// letters (saga-viewer or saga-operator).
	MayRead bool `json:"may_read"`
	// MayOperate: the caller may re-send, abort and replay (saga-operator).
	MayOperate bool `json:"may_operate"`
	// ReadRoles and OperateRoles are the roles that grant each.
	ReadRoles    []string `json:"read_roles"`
	OperateRoles []string `json:"operate_roles"`
}

// me answers GET /me, so that the console can tell a user what she may do.
func (s *server) me(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "who am i"); err != nil {
		writeProblem(w, r, err)
		return
	}
	m := Me{Subject: "anonymous", Roles: []string{}, Auth: "off", MayRead: true, MayOperate: true,
		ReadRoles: slices.Clone(readRoles), OperateRoles: slices.Clone(operateRoles)}
	if u, ok := auth.UserFrom(r.Context()); ok && s.auth != nil {
		m = Me{Subject: u.Subject, Name: u.Name, Roles: u.Roles, Auth: "on", ReadRoles: slices.Clone(readRoles), OperateRoles: slices.Clone(operateRoles)}
		if m.Roles == nil {
			m.Roles = []string{}
		}
		for _, role := range readRoles {
			m.MayRead = m.MayRead || u.HasRole(role)
		}
		for _, role := range operateRoles {
			m.MayOperate = m.MayOperate || u.HasRole(role)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, m)
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
