package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

// newEnvWithCatalog is newEnv on SQLite with the definitions of cat only.
func newEnvWithCatalog(tb testing.TB, cat *engine.Catalog) *env {
	tb.Helper()
	st, err := sqlstore.Open(context.Background(), "sqlite::memory:")
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	e := &env{store: st, reg: reg, logs: &bytes.Buffer{}, logMu: &sync.Mutex{}, spec: newSpecChecker(tb)}
	logger := slog.New(slog.NewJSONHandler(lockedWriter{e.logMu, e.logs}, nil))
	if e.orch, err = engine.New(engine.Config{Logger: logger}, cat, st, &memPublisher{}); err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	if e.handler, err = httpapi.New(httpapi.Config{Orchestrator: e.orch, Logger: logger, Registry: reg}); err != nil {
		tb.Fatalf("httpapi.New: %v", err)
	}
	return e
}

// transition returns the view of the transition on event (the first one).
func transition(tb testing.TB, d httpapi.DefinitionDetail, event string) httpapi.TransitionView {
	tb.Helper()
	for _, tv := range d.Transitions {
		if tv.On == event {
			return tv
		}
	}
	tb.Fatalf("%s v%d has no transition on %s", d.Name, d.Version, event)
	return httpapi.TransitionView{}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v) // views always encode
	return string(b)
}

// TestDefinitionDetailShowsTheLanguage: GET /definitions/{name} shows the
// roles of a start over the HTTP API, the compensation of a transition and
// of a command with the policy in force (the definition's defaults filled
// in: the participant, the retry), and which failed states compensate
// first; a definition without them shows none of it. Every answer is
// checked against the OpenAPI document, whose transition and state schemas
// allow no undocumented field.
func TestDefinitionDetailShowsTheLanguage(t *testing.T) {
	shipped := newEnv(t, "", envOptions{})
	payment := newEnvWithCatalog(t, catalogOf(t, compile(t, "payment.yaml", paymentSaga).Definition()))
	get := func(e *env, target string) (httpapi.DefinitionDetail, string) {
		t.Helper()
		rec := e.do(t, "GET", target, "")
		return decode[httpapi.DefinitionDetail](t, rec, http.StatusOK), rec.Body.String()
	}
	v2, _ := get(shipped, "/api/v1/definitions/MANUAL_CREATE_ORDER")
	v1, v1Body := get(shipped, "/api/v1/definitions/MANUAL_CREATE_ORDER?version=1")
	callback, _ := get(shipped, "/api/v1/definitions/SUPPORT_CALLBACK")
	pay, _ := get(payment, "/api/v1/definitions/PAYMENT")

	retry20 := httpapi.CompensationRetryView{Attempts: 20, Backoff: "1s", MaxBackoff: "1m0s"}
	failDeal := &httpapi.CompensationView{To: "deals", Command: "FAIL_DEAL", Done: "DEAL_FAILED", Topic: "DEALS_TOPIC", Retry: retry20}
	revertOrder := &httpapi.CompensationView{To: "profile", Command: "REVERT_ORDER", Done: "ORDER_REVERTED", Topic: "PROFILE_TOPIC", Retry: retry20}
	tests := []struct {
		name        string
		detail      httpapi.DefinitionDetail
		event       string
		roles       []string
		compensate  *httpapi.CompensationView
		sendCompens *httpapi.CompensationView
	}{
		{"v2 start: the draft deal and the order's effect are undone", v2, "REGISTER", nil, failDeal, revertOrder},
		{"v2 approval: the deal's execution is undone", v2, "ORDER_APPROVED", nil, nil, failDeal},
		{"v2 rejection: the deal's rejection is undone", v2, "ORDER_REJECTED", nil, nil, failDeal},
		{"v2 engine event: nothing to undo", v2, "PROFILE_UNAVAILABLE", nil, nil, nil},
		{"v1: no compensation", v1, "REGISTER", nil, nil, nil},
		{"start over the API with its roles", callback, "CALLBACK_REQUESTED", []string{"support-agent", "support-lead"}, nil, nil},
		{"defaults filled in: to = by, the default retry; to = send.to, the file's retry", pay, "ORDERED", nil,
			&httpapi.CompensationView{To: "shop", Command: "CANCEL_ORDER", Done: "ORDER_CANCELLED", Topic: "SHOP_TOPIC",
				Retry: httpapi.CompensationRetryView{Attempts: 10, Backoff: "1s", MaxBackoff: "1m0s"}},
			&httpapi.CompensationView{To: "bank", Command: "REFUND", Done: "REFUNDED", Topic: "BANK_TOPIC",
				Retry: httpapi.CompensationRetryView{Attempts: 4, Backoff: "2s", MaxBackoff: "8s"}}},
		{"second start over the API", pay, "PHONE_ORDER", []string{"cashier", "shop-lead"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tv := transition(t, tt.detail, tt.event)
			if !reflect.DeepEqual(tv.Roles, tt.roles) {
				t.Errorf("roles = %v, want %v", tv.Roles, tt.roles)
			}
			if wantBy := tv.By == definition.API; wantBy != (tt.roles != nil) {
				t.Errorf("by = %s with roles %v", tv.By, tv.Roles)
			}
			if !reflect.DeepEqual(tv.Compensate, tt.compensate) {
				t.Errorf("compensate = %s, want %s", jsonText(tv.Compensate), jsonText(tt.compensate))
			}
			var got *httpapi.CompensationView
			if tv.Send != nil {
				got = tv.Send.Compensate
			}
			if !reflect.DeepEqual(got, tt.sendCompens) {
				t.Errorf("send.compensate = %s, want %s", jsonText(got), jsonText(tt.sendCompens))
			}
		})
	}

	// Failed states compensate first only where there is something to undo.
	for _, tc := range []struct {
		d           httpapi.DefinitionDetail
		compensable bool
	}{{v2, true}, {pay, true}, {v1, false}, {callback, false}} {
		if tc.d.Compensable != tc.compensable {
			t.Errorf("%s v%d: compensable = %t, want %t", tc.d.Name, tc.d.Version, tc.d.Compensable, tc.compensable)
		}
		for _, st := range tc.d.StateInfo {
			if want := st.Failed && tc.compensable; st.CompensatesFirst != want {
				t.Errorf("%s v%d state %s (failed %t): compensates_first = %t, want %t", tc.d.Name, tc.d.Version, st.Name, st.Failed, st.CompensatesFirst, want)
			}
		}
	}

	// What a definition does not have is absent from the JSON, not empty.
	for _, key := range []string{`"roles"`, `"compensate"`} {
		if strings.Contains(v1Body, key) {
			t.Errorf("MANUAL_CREATE_ORDER v1's detail has a %s key: %s", key, v1Body)
		}
	}
}

// catalogOf is a catalog of defs.
func catalogOf(tb testing.TB, defs ...*definition.Definition) *engine.Catalog {
	tb.Helper()
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		tb.Fatalf("catalog: %v", err)
	}
	return cat
}

// errorRecorder is a testing.TB that records Errorf instead of failing.
type errorRecorder struct {
	testing.TB
	errs []string
}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *errorRecorder) Helper() {}

// TestDefinitionSpecIsStrict: the response check of these tests would see
// a field the OpenAPI document does not describe, or a compensation
// without its done event. (Otherwise a new field in a view could ship
// undocumented and every test still pass.)
func TestDefinitionSpecIsStrict(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	req := httptest.NewRequest("GET", "/api/v1/definitions/MANUAL_CREATE_ORDER", nil)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	good := rec.Body.String()
	for _, tc := range []struct{ name, from, to string }{
		{"the genuine answer", "", ""},
		{"an undocumented transition field", `"on":"REGISTER",`, `"on":"REGISTER","secret":1,`},
		{"an undocumented state field", `"name":"DRAFT",`, `"name":"DRAFT","secret":1,`},
		{"a compensation without its done event", `"done":"DEAL_FAILED",`, ``},
		{"a compensation retry with an exhausted event", `"retry":{"attempts":20,`, `"retry":{"exhausted":"X","attempts":20,`},
		{"a state without compensates_first", `,"compensates_first":true`, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := good
			if tc.from != "" {
				if !strings.Contains(body, tc.from) {
					t.Fatalf("the answer lacks %s: %s", tc.from, body)
				}
				body = strings.Replace(body, tc.from, tc.to, 1)
			}
			forged := httptest.NewRecorder()
			for k, v := range rec.Header() {
				forged.Header()[k] = v
			}
			forged.WriteHeader(http.StatusOK)
			io.WriteString(forged, body)
			r := &errorRecorder{TB: t}
			e.spec.check(r, req, forged)
			if refused := len(r.errs) > 0; refused != (tc.from != "") {
				t.Errorf("spec check errors %v, want refused = %t", r.errs, tc.from != "")
			}
		})
	}
}

// TestValidateSpecMatchesTheLimits: the OpenAPI description of POST
// /definitions/validate states the limits the handler enforces (file name
// length, body size, number of problems) and the refusals it answers, and
// those refusals match the spec.
func TestValidateSpecMatchesTheLimits(t *testing.T) {
	doc := loadSpec(t)
	op := doc.Paths.Find("/api/v1/definitions/validate").Post
	if op == nil {
		t.Fatal("the spec has no POST /api/v1/definitions/validate")
	}
	file := op.Parameters.GetByInAndName("query", "file")
	if file == nil || file.Schema.Value.MaxLength == nil || *file.Schema.Value.MaxLength != 255 {
		t.Errorf("file parameter %+v: want maxLength 255", file)
	}
	for ct, mt := range op.RequestBody.Value.Content {
		if ml := mt.Schema.Value.MaxLength; ml == nil || *ml != uint64(definition.MaxFileBytes) {
			t.Errorf("request body %s: maxLength %v, want %d (definition.MaxFileBytes)", ct, ml, definition.MaxFileBytes)
		}
	}
	for _, status := range []int{200, 400, 401, 413, 415, 503} {
		if op.Responses.Status(status) == nil {
			t.Errorf("the spec lists no %d answer", status)
		}
	}
	problems := doc.Components.Schemas["ValidationResult"].Value.Properties["problems"].Value
	if problems.MaxItems == nil || *problems.MaxItems != uint64(definition.MaxProblems+1) || !strings.Contains(problems.Description, "too-many-problems") {
		t.Errorf("problems: maxItems %v, description %q: want %d and the too-many-problems rule", problems.MaxItems, problems.Description, definition.MaxProblems+1)
	}

	// The refusals, checked against the spec (e.do does).
	e := newEnv(t, "", envOptions{})
	problemOf(t, e.do(t, "POST", "/api/v1/definitions/validate?file="+strings.Repeat("f", 256), "saga: X\n", yamlHeader...), http.StatusBadRequest, engine.CodeInvalid)
	problemOf(t, e.do(t, "POST", "/api/v1/definitions/validate", strings.Repeat("#", definition.MaxFileBytes+1), yamlHeader...), http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge)
	problemOf(t, e.do(t, "POST", "/api/v1/definitions/validate", "saga: X\n", "Content-Type", "application/json"), http.StatusUnsupportedMediaType, httpapi.CodeMediaType)
	res := decode[httpapi.ValidationResult](t, e.do(t, "POST", "/api/v1/definitions/validate",
		"saga: X\nversion: 1\nparticipants:\n  shop: { topic: T }\ntransitions:\n  - { on: E, by: shop, from: [], to: A }\nfinal: [A"+strings.Repeat(", A", 500)+"]\n", yamlHeader...), http.StatusOK)
	if n := len(res.Problems); n != definition.MaxProblems+1 || res.Problems[n-1].Rule != "too-many-problems" {
		t.Errorf("%d problems, the last %+v: want %d, the last too-many-problems", n, res.Problems[len(res.Problems)-1], definition.MaxProblems+1)
	}
	// A caller that gave up waiting for a slot: 503, as the spec says. Both
	// slots are held by callers whose bodies have not arrived yet.
	var wg sync.WaitGroup
	writers := make([]*io.PipeWriter, 2)
	for i := range writers {
		pr, pw := io.Pipe()
		writers[i] = pw
		req := httptest.NewRequest("POST", "/api/v1/definitions/validate", pr)
		req.Header.Set("Content-Type", "application/yaml")
		wg.Go(func() { e.handler.ServeHTTP(httptest.NewRecorder(), req) })
		if _, err := io.WriteString(pw, "s"); err != nil { // returns once the handler holds a slot and reads
			t.Fatalf("write body %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v1/definitions/validate", strings.NewReader("saga: X\n"))
	req.Header.Set("Content-Type", "application/yaml")
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	e.spec.check(t, req, rec)
	problemOf(t, rec, http.StatusServiceUnavailable, engine.CodeUnavailable)
	for _, pw := range writers {
		pw.Close()
	}
	wg.Wait()
}
