package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// memPublisher is a fake bus that keeps what is published (the HTTP logic
// does not need a broker).
type memPublisher struct {
	mu   sync.Mutex
	recs []engine.Record
}

func (p *memPublisher) Publish(_ context.Context, recs []engine.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recs = append(p.recs, recs...)
	return nil
}

// env is an API over a real orchestrator and store.
type env struct {
	orch    *engine.Orchestrator
	store   *sqlstore.Store
	reg     *prometheus.Registry
	handler http.Handler
	logs    *bytes.Buffer
	logMu   *sync.Mutex
	offset  int64
	spec    *specChecker
}

// envOptions tweak newEnv.
type envOptions struct {
	auth    *auth.Authenticator
	ready   func(context.Context) error
	console console.Config  // the console's sign-in (console_browser_test.go)
	catalog *engine.Catalog // nil: testCatalog
}

// newEnv builds the API over an orchestrator on the store at dbURL
// (sqlite::memory: when empty) with the shipped sagas.
func newEnv(tb testing.TB, dbURL string, opts envOptions) *env {
	tb.Helper()
	if dbURL == "" {
		dbURL = "sqlite::memory:"
	}
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, dbURL)
	if err != nil {
		tb.Fatalf("open store %s: %v", dbURL, err)
	}
	tb.Cleanup(func() { st.Close() })
	cat := opts.catalog
	if cat == nil {
		cat = testCatalog(tb)
	}
	reg := prometheus.NewRegistry()
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		tb.Fatalf("NewMetrics: %v", err)
	}
	e := &env{store: st, reg: reg, logs: &bytes.Buffer{}, logMu: &sync.Mutex{}, spec: newSpecChecker(tb)}
	logger := slog.New(slog.NewJSONHandler(lockedWriter{e.logMu, e.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.orch, err = engine.New(engine.Config{Observer: metrics, Logger: logger}, cat, st, &memPublisher{})
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	e.handler, err = httpapi.New(httpapi.Config{Orchestrator: e.orch, Auth: opts.auth, Ready: opts.ready, Logger: logger, Registry: reg, Console: opts.console})
	if err != nil {
		tb.Fatalf("httpapi.New: %v", err)
	}
	return e
}

// testCatalog holds the shipped sagas (MANUAL_CREATE_ORDER, which opens no
// start to the API) and testdata/sagas (SUPPORT_CALLBACK, started over the
// API by support-agent or support-lead).
func testCatalog(tb testing.TB) *engine.Catalog {
	tb.Helper()
	shipped, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		tb.Fatalf("load shipped sagas: %v", problems)
	}
	extra, problems := definition.LoadDir(os.DirFS("testdata/sagas"))
	if len(problems) > 0 {
		tb.Fatalf("load testdata/sagas: %v", problems)
	}
	cat, err := engine.NewCatalog(append(shipped, extra...)...)
	if err != nil {
		tb.Fatalf("catalog: %v", err)
	}
	return cat
}

// as returns the dev headers of user with roles (auth in dev header mode).
func as(user string, roles ...string) []string {
	return []string{auth.HeaderDevUser, user, auth.HeaderDevRoles, strings.Join(roles, ",")}
}

// devAuth is an authenticator in dev header mode.
func devAuth(tb testing.TB) *auth.Authenticator {
	tb.Helper()
	a, err := auth.New(context.Background(), auth.Config{DevHeader: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatalf("auth.New: %v", err)
	}
	return a
}

// callback is a SUPPORT_CALLBACK start body for user.
func callback(user string) string {
	return `{"saga":"SUPPORT_CALLBACK","payload":{"callback":{"user_id":"` + user + `","phone":"+1 555 0100"}}}`
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (e *env) logText() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.logs.String()
}

// start starts a MANUAL_CREATE_ORDER saga for deal through the orchestrator.
func (e *env) start(tb testing.TB, deal string) engine.Instance {
	tb.Helper()
	inst, _, err := e.orch.Start(context.Background(), engine.StartRequest{
		Saga:    "MANUAL_CREATE_ORDER",
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"` + deal + `","user_id":"u-` + deal + `","amount":"100.00"}}`),
	})
	if err != nil {
		tb.Fatalf("start saga for deal %s: %v", deal, err)
	}
	return inst
}

// send delivers participant events as consumed records. They carry no
// causation id, as a participant outside the SDK may send them: an event
// the saga accepts from the receiver of the command it waits for answers
// that command.
func (e *env) send(tb testing.TB, sagaID string, events ...[2]string) {
	tb.Helper()
	msgs := make([]engine.Message, len(events))
	for i, ev := range events {
		msgs[i] = engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER",
			Kind: engine.KindEvent, Name: ev[0], Participant: ev[1], OccurredAt: time.Now().UTC()}
	}
	e.handle(tb, msgs...)
}

// answer delivers participant by's event name answering command causation
// (a compensation's done event must name its command).
func (e *env) answer(tb testing.TB, sagaID, name, by, causation string) {
	tb.Helper()
	e.handle(tb, engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "MANUAL_CREATE_ORDER",
		Kind: engine.KindEvent, Name: name, Participant: by, CausationID: causation, OccurredAt: time.Now().UTC()})
}

// handle hands messages to the orchestrator as consumed records.
func (e *env) handle(tb testing.TB, msgs ...engine.Message) {
	tb.Helper()
	recs := make([]engine.Record, len(msgs))
	for i, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			tb.Fatalf("encode event: %v", err)
		}
		e.offset++
		recs[i] = engine.Record{Topic: "SAGA_SERVER_TOPIC", Key: m.SagaID, Value: b, Offset: e.offset}
	}
	if err := e.orch.HandleRecords(context.Background(), recs); err != nil {
		tb.Fatalf("HandleRecords: %v", err)
	}
}

// seeded are the sagas seed made.
type seeded struct {
	approved, done, waiting, outOfOrder engine.Instance
}

// seed runs a few sagas: one approved, one rejected and notified, one still
// in DRAFT, and one whose DEAL_UPDATED came before ORDER_APPROVED (refused,
// dead-lettered, replayable now).
func (e *env) seed(tb testing.TB) seeded {
	tb.Helper()
	var s seeded
	s.approved = e.start(tb, "D-1")
	e.send(tb, s.approved.ID, [2]string{"ORDER_APPROVED", "profile"})
	s.done = e.start(tb, "D-2")
	e.send(tb, s.done.ID, [2]string{"ORDER_REJECTED", "profile"}, [2]string{"DEAL_UPDATED", "deals"})
	s.waiting = e.start(tb, "D-3")
	s.outOfOrder = e.start(tb, "D-4")
	e.send(tb, s.outOfOrder.ID, [2]string{"DEAL_UPDATED", "deals"})
	e.send(tb, s.outOfOrder.ID, [2]string{"ORDER_APPROVED", "profile"})
	return s
}

// do sends one request to the handler and returns the response.
func (e *env) do(tb testing.TB, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	e.spec.check(tb, req, rec)
	return rec
}

// decode unmarshals a JSON response, failing on a wrong status.
func decode[T any](tb testing.TB, rec *httptest.ResponseRecorder, wantStatus int) T {
	tb.Helper()
	var v T
	if rec.Code != wantStatus {
		tb.Fatalf("status = %d, want %d; body: %s", rec.Code, wantStatus, rec.Body.String())
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		tb.Fatalf("decode %T: %v; body: %s", v, err, rec.Body.String())
	}
	return v
}
