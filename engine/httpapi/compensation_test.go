package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// compClock is a settable clock.
type compClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *compClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *compClock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// compEnv is the API over an orchestrator with COMPENSATED_ORDER (the
// language's test definition) and a settable clock, so that a test can run
// a compensation out of retries.
func compEnv(tb testing.TB, dbURL string, opts envOptions) (*env, *compClock) {
	tb.Helper()
	if dbURL == "" {
		dbURL = "sqlite::memory:"
	}
	clock := &compClock{now: time.Now().UTC()}
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, dbURL)
	if err != nil {
		tb.Fatalf("open store %s: %v", dbURL, err)
	}
	tb.Cleanup(func() { st.Close() })
	data, err := os.ReadFile("../definition/testdata/good/compensated_order.yaml")
	if err != nil {
		tb.Fatalf("read compensated_order.yaml: %v", err)
	}
	def, probs := definition.Parse("compensated_order.yaml", data)
	if len(probs) > 0 {
		tb.Fatalf("parse: %v", probs)
	}
	cat, err := engine.NewCatalog(def)
	if err != nil {
		tb.Fatalf("catalog: %v", err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		tb.Fatalf("NewMetrics: %v", err)
	}
	e := &env{store: st, reg: reg, logs: &bytes.Buffer{}, logMu: &sync.Mutex{}, spec: newSpecChecker(tb)}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	e.orch, err = engine.New(engine.Config{Observer: metrics, Logger: logger, Clock: clock.Now}, cat, st, &memPublisher{})
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	e.handler, err = httpapi.New(httpapi.Config{Orchestrator: e.orch, Auth: opts.auth, Logger: logger, Registry: reg})
	if err != nil {
		tb.Fatalf("httpapi.New: %v", err)
	}
	return e, clock
}

// deliver applies one COMPENSATED_ORDER event answering causation.
func (e *env) deliver(tb testing.TB, sagaID, name, by, causation string) {
	tb.Helper()
	m := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "COMPENSATED_ORDER",
		Kind: engine.KindEvent, Name: name, Participant: by, CausationID: causation, OccurredAt: time.Now().UTC(),
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"D-` + sagaID[:4] + `"}}`)}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatalf("encode: %v", err)
	}
	e.offset++
	if err := e.orch.HandleRecords(context.Background(), []engine.Record{{Topic: "SAGA_SERVER_TOPIC", Key: sagaID, Value: b, Offset: e.offset}}); err != nil {
		tb.Fatalf("HandleRecords: %v", err)
	}
}

// runDown fires the saga's timers until its status is want.
func (e *env) runDown(tb testing.TB, clock *compClock, id string, want engine.Status) engine.Instance {
	tb.Helper()
	ctx := context.Background()
	for range 100 {
		in, err := e.store.GetInstance(ctx, id)
		if err != nil {
			tb.Fatalf("GetInstance: %v", err)
		}
		if in.Status == want {
			return in
		}
		if in.TimerAt == nil {
			tb.Fatalf("saga %s is %s with no timer, never %s", id, in.Status, want)
		}
		clock.set(in.TimerAt.Add(time.Millisecond))
		if _, err := e.orch.FireTimers(ctx); err != nil {
			tb.Fatalf("FireTimers: %v", err)
		}
	}
	tb.Fatalf("saga %s never reached %s", id, want)
	return engine.Instance{}
}

// TestCompensationActions: an approved order is aborted, its REVERT_ORDER
// goes unanswered until the saga stops as compensation_failed. Callers
// without saga-operator (no credentials, no role, saga-viewer, another
// application's role) are refused and nothing moves; an operator's retry
// and resolve of a saga that is not stuck are 409 and nothing moves; a
// missing reason and an unknown saga are refused; then the operator
// retries (same command id) and resolves, both recorded with her name.
// Listing by the new statuses and the metrics follow.
func TestCompensationActions(t *testing.T) {
	for _, db := range []struct {
		name string
		url  func(t *testing.T) string
	}{{"sqlite", func(*testing.T) string { return "" }}, {"postgres", func(t *testing.T) string { return testenv.Postgres(t) }}} {
		t.Run(db.name, func(t *testing.T) { testCompensationActions(t, db.url(t)) })
	}
}

func testCompensationActions(t *testing.T, dbURL string) {
	ctx := context.Background()
	e, clock := compEnv(t, dbURL, envOptions{auth: devAuth(t)})
	stuck, running := uuid.NewString(), uuid.NewString()
	e.deliver(t, stuck, "REGISTER", "deals", "")
	in, _ := e.store.GetInstance(ctx, stuck)
	e.deliver(t, stuck, "ORDER_APPROVED", "profile", in.Pending.ID)
	inst := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+stuck+"/abort", `{"reason":"client withdrew"}`, olga...), 200)
	if inst.State != "FAILED" || inst.Status != engine.StatusCompensating {
		t.Fatalf("after abort: %s %s, want FAILED compensating (an abort undoes what the saga did)", inst.State, inst.Status)
	}
	stuckInst := e.runDown(t, clock, stuck, engine.StatusCompensationFailed)
	revertID := stuckInst.Undo[1].CommandID
	e.deliver(t, running, "REGISTER", "deals", "") // after the clock moved on: its timers are not due

	paths := []string{"/compensation/retry", "/compensation/resolve"}
	before := e.snapshot(t)
	for _, path := range paths {
		for _, u := range []struct {
			who    string
			hdr    []string
			status int
		}{{"nobody", nobody, 401}, {"mallory", mallory, 403}, {"vera", vera, 403}, {"sam", sam, 403}} {
			rec := e.do(t, "POST", "/api/v1/sagas/"+stuck+path, `{"reason":"attack"}`, u.hdr...)
			if rec.Code != u.status {
				t.Errorf("%s as %s: %d, want %d; %s", path, u.who, rec.Code, u.status, rec.Body)
			}
			if u.status == 403 {
				p := problemOf(t, rec, 403, engine.CodeForbidden)
				if strings.Contains(rec.Body.String(), "REVERT_ORDER") || !strings.Contains(p.Detail, u.who) {
					t.Errorf("refusal %q leaks the saga or does not name %s", p.Detail, u.who)
				}
			}
		}
		// Wrong state: the running saga has nothing stuck.
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+running+path, `{"reason":"x"}`, olga...), 409, engine.CodeConflict)
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+uuid.NewString()+path, `{"reason":"x"}`, olga...), 404, engine.CodeNotFound)
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+stuck+path, `{"reason":"  "}`, olga...), 400, engine.CodeInvalid)
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+stuck+path, `{"reason":"x","attempts":99}`, olga...), 400, engine.CodeInvalid)
		// A browser page on another origin cannot make an operator's browser act.
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+stuck+path, `{"reason":"x"}`, append([]string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, olga...)...), 403, httpapi.CodeCrossOrigin)
	}
	if after := e.snapshot(t); after != before {
		t.Fatalf("refused calls changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got, _ := e.store.GetInstance(ctx, stuck); got.Rev != stuckInst.Rev || got.Status != engine.StatusCompensationFailed {
		t.Fatalf("stuck saga after refusals: rev %d %s, want rev %d compensation_failed", got.Rev, got.Status, stuckInst.Rev)
	}

	// Listing by the new statuses; an unknown one names them.
	page := decode[engine.SagaPage](t, e.do(t, "GET", "/api/v1/sagas?status=compensation_failed", "", vera...), 200)
	if len(page.Sagas) != 1 || page.Sagas[0].ID != stuck {
		t.Errorf("status=compensation_failed lists %+v, want %s", page.Sagas, stuck)
	}
	if p := problemOf(t, e.do(t, "GET", "/api/v1/sagas?status=stuck", "", vera...), 400, engine.CodeInvalid); !strings.Contains(p.Detail, "compensation_failed") {
		t.Errorf("bad status detail %q does not list compensation_failed", p.Detail)
	}
	metrics := e.do(t, "GET", "/metrics", "").Body.String()
	for _, want := range []string{
		`saga_machine_compensations_total{command="REVERT_ORDER",outcome="failed",saga="COMPENSATED_ORDER"} 1`,
		`saga_machine_compensations_total{command="REVERT_ORDER",outcome="sent",saga="COMPENSATED_ORDER"} 1`,
		`saga_machine_instances_by_status{saga="COMPENSATED_ORDER",status="compensation_failed",version="1"} 1`,
		`saga_machine_instances_by_status{saga="COMPENSATED_ORDER",status="running",version="1"} 1`,
		`saga_machine_instances{saga="COMPENSATED_ORDER",state="FAILED",version="1"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The operator retries: same command id, compensating again.
	pub := len(e.outbox(t))
	got := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+stuck+"/compensation/retry", `{"reason":"profile is back"}`, olga...), 200)
	if got.Status != engine.StatusCompensating || got.Undo[1].CommandID != revertID || got.Undo[1].Attempts != 1 {
		t.Errorf("after retry: %s %+v", got.Status, got.Undo[1])
	}
	if sent := e.outbox(t)[pub:]; len(sent) != 1 || sent[0].Name != "REVERT_ORDER" || sent[0].ID != revertID {
		t.Errorf("retry published %+v, want REVERT_ORDER %s", sent, revertID)
	}
	e.runDown(t, clock, stuck, engine.StatusCompensationFailed)
	got = decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+stuck+"/compensation/resolve", `{"reason":"cash given back by hand, ticket 7"}`, olga...), 200)
	if got.Status != engine.StatusCompensating || got.Undo[1].Status != engine.UndoResolved || got.Undo[1].ResolvedBy != "olga" {
		t.Errorf("after resolve: %s %+v", got.Status, got.Undo[1])
	}
	// deals fails the deal; the saga is failed.
	e.deliver(t, stuck, "DEAL_FAILED", "deals", got.Undo[0].CommandID)
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+stuck, "", vera...), 200)
	if det.Saga.Status != engine.StatusFailed {
		t.Errorf("final status %s, want failed", det.Saga.Status)
	}
	var ops []string
	for _, h := range det.Timeline {
		if h.Kind == engine.EntryOperator {
			ops = append(ops, h.Event+"/"+h.Actor+"/"+h.Reason)
		}
	}
	want := []string{"ABORT/olga/client withdrew", "COMPENSATION_RETRY/olga/profile is back", "COMPENSATION_RESOLVE/olga/cash given back by hand, ticket 7"}
	if strings.Join(ops, "|") != strings.Join(want, "|") {
		t.Errorf("operator entries = %v, want %v", ops, want)
	}
	// Nothing stuck any more: both actions are 409 again.
	for _, path := range paths {
		problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+stuck+path, `{"reason":"again"}`, olga...), 409, engine.CodeConflict)
	}
}

// outbox lists the commands waiting in the outbox, oldest first (no relay
// runs in these tests).
func (e *env) outbox(tb testing.TB) []engine.Message {
	tb.Helper()
	recs, err := e.store.ClaimOutbox(context.Background(), "test", 10000, time.Minute)
	if err != nil {
		tb.Fatalf("ClaimOutbox: %v", err)
	}
	out := make([]engine.Message, len(recs))
	for i, r := range recs {
		out[i] = r.Message
	}
	return out
}

// TestConsoleCompensationActions: a stuck saga's page shows its status,
// its compensations and the two actions; the operator retries and then
// resolves from the page, and the store says so.
func TestConsoleCompensationActions(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	ctx := context.Background()
	e, clock := compEnv(t, "", envOptions{})
	id := uuid.NewString()
	e.deliver(t, id, "REGISTER", "deals", "")
	in, _ := e.store.GetInstance(ctx, id)
	e.deliver(t, id, "ORDER_APPROVED", "profile", in.Pending.ID)
	if _, err := e.orch.Abort(ctx, id, "", "olga", "client withdrew"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	e.runDown(t, clock, id, engine.StatusCompensationFailed)
	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	b := newBrowser(t)
	retry := `[...document.querySelectorAll('form.actions button')].find(x => x.innerText === 'Retry compensation')`
	resolve := `[...document.querySelectorAll('form.actions button')].find(x => x.innerText === 'Mark compensation done by hand')`
	b.step("open stuck saga",
		chromedp.Navigate(srv.URL+"/console/#/sagas/"+id),
		waitFor(`!!document.querySelector('#compensations') && !!(`+retry+`)`))
	var text string
	b.eval(`document.getElementById('main').innerText`, &text)
	for _, want := range []string{"compensation_failed", "REVERT_ORDER", "FAIL_DEAL", "compensation failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("stuck saga page lacks %q", want)
		}
	}
	b.checkClean("stuck saga")
	b.screenshot("saga-compensation-failed")
	b.step("retry compensation",
		chromedp.SetValue(chromedp.CSS(`form.actions input[name=reason]`), "profile is back"),
		chromedp.Evaluate[chromedp.Void](retry+`.click()`),
		waitFor(`!!document.querySelector('.notice.ok') && document.querySelector('.notice.ok').innerText.includes("compensating")`))
	if got, _ := e.store.GetInstance(ctx, id); got.Status != engine.StatusCompensating {
		t.Fatalf("after the retry button: %s, want compensating", got.Status)
	}
	e.runDown(t, clock, id, engine.StatusCompensationFailed)
	b.step("resolve compensation",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas"`),
		waitFor(`document.querySelectorAll('#saga-table tbody tr').length === 1`),
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+id+`"`),
		waitFor(`!!(`+resolve+`)`),
		chromedp.SetValue(chromedp.CSS(`form.actions input[name=reason]`), "refunded by hand"),
		chromedp.Evaluate[chromedp.Void](resolve+`.click()`),
		waitFor(`!!document.querySelector('.notice.ok') && document.querySelector('#compensations').innerText.includes("resolved")`))
	got, _ := e.store.GetInstance(ctx, id)
	if got.Undo[1].Status != engine.UndoResolved || got.Undo[1].ResolvedBy != "anonymous" || got.Undo[1].Reason != "refunded by hand" {
		t.Errorf("after the resolve button: %+v", got.Undo[1])
	}
	b.checkClean("resolved saga")
	b.screenshot("saga-compensation-resolved")
}
