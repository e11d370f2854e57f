package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
)

// problemOf decodes a problem+json answer and checks status, type and
// content type.
func problemOf(tb testing.TB, rec interface {
	Result() *http.Response
}, wantStatus int, wantCode engine.Code) httpapi.Problem {
	tb.Helper()
	res := rec.Result()
	defer res.Body.Close()
	var p httpapi.Problem
	if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
		tb.Fatalf("decode problem: %v", err)
	}
	if got := res.Header.Get("Content-Type"); got != "application/problem+json" {
		tb.Errorf("Content-Type = %q, want application/problem+json", got)
	}
	if res.StatusCode != wantStatus || p.Status != wantStatus {
		tb.Errorf("status = %d (body %d), want %d; problem %+v", res.StatusCode, p.Status, wantStatus, p)
	}
	if got, want := p.Type, httpapi.ProblemType(wantCode); got != want {
		tb.Errorf("type = %q, want %q; detail %q", got, want, p.Detail)
	}
	if p.Title == "" || p.Detail == "" || p.Instance == "" {
		tb.Errorf("problem lacks title, detail or instance: %+v", p)
	}
	return p
}

func TestDefinitions(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.seed(t)

	list := decode[struct {
		Definitions []httpapi.DefinitionSummary `json:"definitions"`
	}](t, e.do(t, "GET", "/api/v1/definitions", ""), 200)
	// One summary per loaded version: BASKET_ORDER v1 to v4,
	// MANUAL_CREATE_ORDER v1 to v4 (the older ones kept for the sagas
	// started on them), then SUPPORT_CALLBACK.
	var names []string
	for _, d := range list.Definitions {
		names = append(names, fmt.Sprintf("%s v%d", d.Name, d.Version))
	}
	if got, want := strings.Join(names, ", "), "BASKET_ORDER v1, BASKET_ORDER v2, BASKET_ORDER v3, BASKET_ORDER v4, MANUAL_CREATE_ORDER v1, MANUAL_CREATE_ORDER v2, MANUAL_CREATE_ORDER v3, MANUAL_CREATE_ORDER v4, SUPPORT_CALLBACK v1"; got != want {
		t.Fatalf("got definitions %s, want %s", got, want)
	}
	// The seeded sagas started on the newest version; v1 to v3 count none.
	for _, tc := range []struct {
		d                          httpapi.DefinitionSummary
		counts                     map[string]int64
		running, completed, failed int64
	}{
		{list.Definitions[0], map[string]int64{"CHECKING": 0, "TRADING": 0, "EXECUTING": 0, "REJECTING": 0, "EXECUTED": 0, "REJECTED": 0, "FAILED": 0}, 0, 0, 0},
		{list.Definitions[1], map[string]int64{"CHECKING": 0, "TRADING": 0, "EXECUTING": 0, "REJECTING": 0, "EXECUTED": 0, "REJECTED": 0, "FAILED": 0}, 0, 0, 0},
		{list.Definitions[2], map[string]int64{"CHECKING": 0, "TRADING": 0, "EXECUTING": 0, "REJECTING": 0, "EXECUTED": 0, "REJECTED": 0, "FAILED": 0}, 0, 0, 0},
		{list.Definitions[3], map[string]int64{"CHECKING": 0, "TRADING": 0, "EXECUTING": 0, "REJECTING": 0, "EXECUTED": 0, "REJECTED": 0, "FAILED": 0, "CANCELLED": 0}, 0, 0, 0},
		{list.Definitions[4], map[string]int64{"DRAFT": 0, "APPROVED": 0, "REJECTED": 0, "NOTIFICATION": 0, "FAILED": 0}, 0, 0, 0},
		{list.Definitions[5], map[string]int64{"DRAFT": 0, "APPROVED": 0, "REJECTED": 0, "NOTIFICATION": 0, "FAILED": 0}, 0, 0, 0},
		{list.Definitions[6], map[string]int64{"DRAFT": 0, "APPROVED": 0, "REJECTED": 0, "NOTIFICATION": 0, "FAILED": 0, "CANCELLED": 0}, 0, 0, 0},
		{list.Definitions[7], map[string]int64{"DRAFT": 1, "APPROVED": 2, "REJECTED": 0, "NOTIFICATION": 1, "FAILED": 0, "CANCELLED": 0}, 3, 1, 0},
	} {
		d := tc.d
		if len(d.Counts) != len(tc.counts) {
			t.Errorf("v%d counts = %v, want every state of %v", d.Version, d.Counts, tc.counts)
		}
		for st, want := range tc.counts {
			if got, ok := d.Counts[st]; !ok || got != want {
				t.Errorf("v%d count of %s = %d (listed %v), want %d", d.Version, st, got, ok, want)
			}
		}
		if d.Running != tc.running || d.Completed != tc.completed || d.Failed != tc.failed {
			t.Errorf("v%d running/completed/failed = %d/%d/%d, want %d/%d/%d", d.Version, d.Running, d.Completed, d.Failed, tc.running, tc.completed, tc.failed)
		}
	}

	// Without ?version= the newest: v4, with its compensations drawn.
	newest := decode[httpapi.DefinitionDetail](t, e.do(t, "GET", "/api/v1/definitions/MANUAL_CREATE_ORDER", ""), 200)
	if newest.Version != 4 || !slices.Equal(newest.Versions, []int{1, 2, 3, 4}) {
		t.Errorf("newest = v%d of versions %v, want v4 of [1 2 3 4]", newest.Version, newest.Versions)
	}
	for _, want := range []string{"---\ntitle: MANUAL_CREATE_ORDER v4",
		"[*] --> DRAFT : REGISTER (deals, undo FAIL_DEAL → deals) / APPROVE_ORDER → profile (undo REVERT_ORDER → profile)",
		"DRAFT --> FAILED : PROFILE_UNAVAILABLE (engine, APPROVE_ORDER retries exhausted) / NOTIFY → notification"} {
		if !strings.Contains(newest.Diagram.Mermaid, want) {
			t.Errorf("v4 mermaid lacks %q:\n%s", want, newest.Diagram.Mermaid)
		}
	}
	if got, want := newest.Diagram.SVG, "/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg?version=4"; got != want {
		t.Errorf("v3 svg link = %q, want %q", got, want)
	}

	det := decode[httpapi.DefinitionDetail](t, e.do(t, "GET", "/api/v1/definitions/MANUAL_CREATE_ORDER?version=1", ""), 200)
	if det.Version != 1 || strings.Contains(det.Diagram.Mermaid, "undo") {
		t.Errorf("?version=1 = v%d, mermaid:\n%s\nwant v1 without compensations", det.Version, det.Diagram.Mermaid)
	}
	if got, want := len(det.Transitions), 7; got != want {
		t.Errorf("transitions = %d, want %d", got, want)
	}
	if got := det.StartEvents; len(got) != 1 || got[0] != "REGISTER" {
		t.Errorf("start events = %v, want [REGISTER]", got)
	}
	if !strings.HasPrefix(det.Diagram.Mermaid, "---\ntitle: MANUAL_CREATE_ORDER v1") || !strings.Contains(det.Diagram.Mermaid, "DRAFT --> APPROVED") {
		t.Errorf("mermaid text is not the model's diagram:\n%s", det.Diagram.Mermaid)
	}
	if got, want := det.Diagram.SVG, "/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg?version=1"; got != want {
		t.Errorf("svg link = %q, want %q", got, want)
	}
	var draft *httpapi.StateView
	for i := range det.StateInfo {
		if det.StateInfo[i].Name == "DRAFT" {
			draft = &det.StateInfo[i]
		}
	}
	if draft == nil || draft.Timeout == nil || draft.Timeout.Event != "APPROVAL_TIMED_OUT" {
		t.Errorf("DRAFT state info = %+v, want its timeout raising APPROVAL_TIMED_OUT", draft)
	}

	// The diagram of each version counts that version's sagas: the two in
	// APPROVED are on v3.
	badge := regexp.MustCompile(`<g class="count( zero)?" data-state="APPROVED"><title>instances in APPROVED</title><rect [^>]*/><text [^>]*>([0-9]+)</text></g>`)
	for link, want := range map[string]string{newest.Diagram.SVG: "2", det.Diagram.SVG: "0"} {
		svg := e.do(t, "GET", link, "")
		if svg.Code != 200 || svg.Header().Get("Content-Type") != "image/svg+xml" {
			t.Fatalf("diagram %s: status %d, type %q", link, svg.Code, svg.Header().Get("Content-Type"))
		}
		body := svg.Body.String()
		for _, want := range []string{`<svg xmlns="http://www.w3.org/2000/svg"`, `data-state="NOTIFICATION"`,
			"ORDER_APPROVED (profile) → APPROVE_DEAL to deals", "APPROVAL_TIMED_OUT (engine: timeout 10m)"} {
			if !strings.Contains(body, want) {
				t.Errorf("diagram %s lacks %q", link, want)
			}
		}
		if m := badge.FindStringSubmatch(body); m == nil || m[2] != want || (m[1] != "") != (want == "0") {
			t.Errorf("diagram %s: APPROVED badge = %q, want %s", link, m, want)
		}
	}

	for _, tc := range []struct {
		target string
		status int
		code   engine.Code
	}{
		{"/api/v1/definitions/NO_SUCH_SAGA", 404, engine.CodeNotFound},
		{"/api/v1/definitions/MANUAL_CREATE_ORDER?version=7", 404, engine.CodeNotFound},
		{"/api/v1/definitions/MANUAL_CREATE_ORDER?version=one", 400, engine.CodeInvalid},
		{"/api/v1/definitions/MANUAL_CREATE_ORDER?versoin=1", 400, engine.CodeInvalid},
		{"/api/v1/definitions/NO_SUCH_SAGA/diagram.svg", 404, engine.CodeNotFound},
	} {
		t.Run(tc.target, func(t *testing.T) { problemOf(t, e.do(t, "GET", tc.target, ""), tc.status, tc.code) })
	}
}

func TestValidateDefinition(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	good, err := os.ReadFile("../../sagas/manual_create_order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v1, err := os.ReadFile("../../sagas/manual_create_order.v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yamlHdr := []string{"Content-Type", "application/yaml"}
	res := decode[httpapi.ValidationResult](t, e.do(t, "POST", "/api/v1/definitions/validate", string(good), yamlHdr...), 200)
	if !res.Valid || res.Saga != "MANUAL_CREATE_ORDER" || res.Version != 4 || len(res.Problems) != 0 {
		t.Errorf("shipped saga: got %+v, want valid MANUAL_CREATE_ORDER v4", res)
	}
	res = decode[httpapi.ValidationResult](t, e.do(t, "POST", "/api/v1/definitions/validate", string(v1), yamlHdr...), 200)
	if !res.Valid || res.Saga != "MANUAL_CREATE_ORDER" || res.Version != 1 || len(res.Problems) != 0 {
		t.Errorf("shipped saga v1: got %+v, want valid MANUAL_CREATE_ORDER v1", res)
	}
	bad := strings.Replace(string(good), "to: APPROVED", "to: APROVED", 1)
	bad = strings.Replace(bad, "participants:", "participant:", 1)
	res = decode[httpapi.ValidationResult](t, e.do(t, "POST", "/api/v1/definitions/validate?file=mine.yaml", bad, yamlHdr...), 200)
	if res.Valid || len(res.Problems) == 0 {
		t.Fatalf("broken saga: got %+v, want problems", res)
	}
	for _, p := range res.Problems {
		if p.File != "mine.yaml" || p.Line == 0 || p.Rule == "" || p.Message == "" {
			t.Errorf("problem without file, position, rule or message: %+v", p)
		}
	}
	problemOf(t, e.do(t, "POST", "/api/v1/definitions/validate", "saga: X", "Content-Type", "application/json"), 415, httpapi.CodeMediaType)
	problemOf(t, e.do(t, "POST", "/api/v1/definitions/validate", strings.Repeat("#", httpapi.MaxDefinitionBody+1), yamlHdr...), 413, httpapi.CodeTooLarge)
}

func TestStartSaga(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	body := callback("U-9")
	first := e.do(t, "POST", "/api/v1/sagas", body, "Idempotency-Key", "call-U-9")
	inst := decode[engine.Instance](t, first, http.StatusCreated)
	if inst.Saga != "SUPPORT_CALLBACK" || inst.State != "REQUESTED" || inst.Status != engine.StatusRunning || inst.Keys["user_id"] != "U-9" {
		t.Errorf("started saga = %+v, want SUPPORT_CALLBACK in REQUESTED, running, user_id U-9", inst)
	}
	if got, want := first.Header().Get("Location"), "/api/v1/sagas/"+inst.ID; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+inst.ID, ""), 200)
	if h := det.Timeline[0]; h.Event != "CALLBACK_REQUESTED" || h.By != "api" || h.Actor != "anonymous" {
		t.Errorf("start entry = %s by %s actor %q, want CALLBACK_REQUESTED by api, actor anonymous (auth off)", h.Event, h.By, h.Actor)
	}
	again := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", body, "Idempotency-Key", "call-U-9"), http.StatusOK)
	if again.ID != inst.ID {
		t.Errorf("same Idempotency-Key gave saga %s, want %s", again.ID, inst.ID)
	}
	other := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", body, "Idempotency-Key", "call-U-10"), http.StatusCreated)
	if other.ID == inst.ID {
		t.Errorf("another Idempotency-Key gave the same saga %s", other.ID)
	}
	if !engine.ValidTraceparent(other.Traceparent) {
		t.Errorf("saga started without a traceparent header got trace %q, want a new valid one", other.Traceparent)
	}
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traced := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", body,
		"Idempotency-Key", "call-U-11", "traceparent", caller), http.StatusCreated)
	if got, want := traced.Traceparent, caller; got != want {
		t.Errorf("traceparent of a saga started with the caller's trace = %q, want %q", got, want)
	}
	named := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas",
		`{"saga":"SUPPORT_CALLBACK","version":1,"event":"CALLBACK_REQUESTED","payload":{}}`), http.StatusCreated)
	if named.State != "REQUESTED" {
		t.Errorf("start naming its event: state %s, want REQUESTED", named.State)
	}

	for _, tc := range []struct {
		name, body string
		hdr        []string
		status     int
		code       engine.Code
		detail     string
	}{
		{"unknown field", `{"saga":"SUPPORT_CALLBACK","payload":{},"extra":1}`, nil, 400, engine.CodeInvalid, `unknown field "extra"`},
		{"participant named", `{"saga":"SUPPORT_CALLBACK","by":"notification"}`, nil, 400, engine.CodeInvalid, `unknown field "by"`},
		{"wrong type", `{"saga":"SUPPORT_CALLBACK","version":"1"}`, nil, 400, engine.CodeInvalid, `field "version" must be a number`},
		{"syntax", `{"saga":`, nil, 400, engine.CodeInvalid, "cut short"},
		{"bad JSON", `{"saga" "x"}`, nil, 400, engine.CodeInvalid, "line 1, column"},
		{"trailing data", `{"saga":"SUPPORT_CALLBACK"} {}`, nil, 400, engine.CodeInvalid, "unexpected data"},
		{"empty", ``, nil, 400, engine.CodeInvalid, "empty"},
		{"no saga", `{"payload":{}}`, nil, 400, engine.CodeInvalid, `"saga" is required`},
		{"array payload", `{"saga":"SUPPORT_CALLBACK","payload":[1]}`, nil, 400, engine.CodeInvalid, `"payload" must be a JSON object`},
		{"negative version", `{"saga":"SUPPORT_CALLBACK","version":-1}`, nil, 400, engine.CodeInvalid, "positive"},
		{"unknown saga", `{"saga":"NOPE"}`, nil, 422, engine.CodeUnknownSaga, "no saga NOPE"},
		{"unknown version", `{"saga":"SUPPORT_CALLBACK","version":3}`, nil, 422, engine.CodeUnknownSaga, "no version 3"},
		{"unknown event", `{"saga":"SUPPORT_CALLBACK","event":"NOPE"}`, nil, 422, engine.CodeUnknownEvent, "no event NOPE"},
		{"participant's event", `{"saga":"SUPPORT_CALLBACK","event":"CLIENT_NOTIFIED"}`, nil, 403, engine.CodeForbidden, "never move one"},
		{"participant's start", `{"saga":"MANUAL_CREATE_ORDER","payload":{}}`, nil, 403, engine.CodeForbidden,
			"REGISTER is sent on the bus by participant deals"},
		{"participant's start named", `{"saga":"MANUAL_CREATE_ORDER","event":"REGISTER"}`, nil, 403, engine.CodeForbidden,
			"only when participant deals sends it on the bus"},
		{"form type", `saga=X`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, httpapi.CodeMediaType, "application/json"},
		{"too large", `{"saga":"` + strings.Repeat("x", httpapi.MaxJSONBody) + `"}`, nil, 413, httpapi.CodeTooLarge, "larger than"},
		{"long key", `{"saga":"SUPPORT_CALLBACK"}`, []string{"Idempotency-Key", strings.Repeat("k", 201)}, 400, engine.CodeInvalid, "Idempotency-Key"},
		{"key reused", callback("U-12"), []string{"Idempotency-Key", "call-U-9"}, 422, engine.CodeKeyReused, "different request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.do(t, "POST", "/api/v1/sagas", tc.body, tc.hdr...), tc.status, tc.code)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("detail = %q, want it to mention %q", p.Detail, tc.detail)
			}
		})
	}
	page := decode[engine.SagaPage](t, e.do(t, "GET", "/api/v1/sagas", ""), 200)
	if got, want := len(page.Sagas), 4; got != want {
		t.Errorf("%d sagas after the refusals, want the %d started", got, want)
	}
}

func TestGetAndListSagas(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	s := e.seed(t)

	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.done.ID, ""), 200)
	if det.Saga.State != "NOTIFICATION" || det.Saga.Status != engine.StatusCompleted {
		t.Errorf("saga = %s/%s, want NOTIFICATION/completed", det.Saga.State, det.Saga.Status)
	}
	var events []string
	for _, h := range det.Timeline {
		events = append(events, h.Event+":"+h.FromState+">"+h.ToState)
	}
	if got, want := strings.Join(events, " "), "REGISTER:>DRAFT ORDER_REJECTED:DRAFT>REJECTED DEAL_UPDATED:REJECTED>NOTIFICATION"; got != want {
		t.Errorf("timeline = %s, want %s", got, want)
	}
	if len(det.Timeline) > 0 && (len(det.Timeline[0].Commands) != 1 || det.Timeline[0].Commands[0].Name != "APPROVE_ORDER") {
		t.Errorf("REGISTER entry commands = %+v, want APPROVE_ORDER", det.Timeline[0].Commands)
	}
	refused := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.outOfOrder.ID, ""), 200)
	found := false
	for _, h := range refused.Timeline {
		if h.Kind == engine.EntryRefused && h.Event == "DEAL_UPDATED" && h.Code == engine.CodeIllegal {
			found = true
		}
	}
	if !found {
		t.Errorf("timeline of the out-of-order saga lacks the refused DEAL_UPDATED: %+v", refused.Timeline)
	}
	problemOf(t, e.do(t, "GET", "/api/v1/sagas/no-such-saga", ""), 404, engine.CodeNotFound)

	ids := func(target string) []string {
		t.Helper()
		page := decode[engine.SagaPage](t, e.do(t, "GET", target, ""), 200)
		var out []string
		for _, in := range page.Sagas {
			out = append(out, in.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{s.outOfOrder.ID, s.waiting.ID, s.done.ID, s.approved.ID}},
		{"?state=APPROVED", []string{s.outOfOrder.ID, s.approved.ID}},
		{"?status=completed", []string{s.done.ID}},
		{"?saga=MANUAL_CREATE_ORDER&status=running&state=DRAFT", []string{s.waiting.ID}},
		{"?key=deal_id:D-2", []string{s.done.ID}},
		{"?key=user_id:u-D-4", []string{s.outOfOrder.ID}},
		{"?key=deal_id:nope", nil},
		{"?from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z", nil},
	} {
		t.Run("filter"+tc.query, func(t *testing.T) {
			if got := ids("/api/v1/sagas" + tc.query); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	// Pages of one follow each other without gaps or repeats.
	var paged []string
	target := "/api/v1/sagas?limit=1"
	for range 10 {
		page := decode[engine.SagaPage](t, e.do(t, "GET", target, ""), 200)
		for _, in := range page.Sagas {
			paged = append(paged, in.ID)
		}
		if page.Next == "" {
			break
		}
		target = "/api/v1/sagas?limit=1&cursor=" + page.Next
	}
	if got, want := strings.Join(paged, ","), strings.Join(ids("/api/v1/sagas"), ","); got != want {
		t.Errorf("paged = %s, want %s", got, want)
	}

	for _, q := range []string{"?status=done", "?key=deal_id", "?key=:x", "?from=yesterday", "?limit=0", "?limit=501",
		"?cursor=bm90LWEtY3Vyc29y", "?sage=X", "?saga=NOPE", "?state=A&state=B", "?to="} { // from after to: TestListSagasQueryEdges
		t.Run("bad"+q, func(t *testing.T) { problemOf(t, e.do(t, "GET", "/api/v1/sagas"+q, ""), 400, engine.CodeInvalid) })
	}
}

func TestOperatorActions(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	s := e.seed(t)

	inst := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.waiting.ID+"/resend", `{"reason":"profile was down"}`), 200)
	if inst.Attempts != 2 {
		t.Errorf("attempts after re-send = %d, want 2", inst.Attempts)
	}
	inst = decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.waiting.ID+"/abort", `{"reason":"client cancelled by phone"}`), 200)
	// MANUAL_CREATE_ORDER v4: the abort takes the definition's ABORT
	// transition into FAILED. It first undoes what the saga did, newest
	// first: REVERT_ORDER for APPROVE_ORDER, then FAIL_DEAL for REGISTER;
	// the transition's NOTIFY is held back until both are done.
	if inst.State != "FAILED" || inst.Status != engine.StatusCompensating || len(inst.Undo) != 2 ||
		inst.Undo[1].Command != "REVERT_ORDER" || inst.Undo[1].Status != engine.UndoCompensating ||
		inst.Deferred == nil || inst.Deferred.Name != "NOTIFY" {
		t.Fatalf("after abort: %s/%s undo %+v deferred %+v, want FAILED/compensating with REVERT_ORDER under way and NOTIFY held back",
			inst.State, inst.Status, inst.Undo, inst.Deferred)
	}
	notifies := func() int {
		n := 0
		for _, m := range e.outbox(t) {
			if m.SagaID == s.waiting.ID && m.Name == "NOTIFY" {
				n++
			}
		}
		return n
	}
	if n := notifies(); n != 0 {
		t.Fatalf("%d NOTIFY sent while compensating, want none yet", n)
	}
	e.answer(t, s.waiting.ID, "ORDER_REVERTED", "profile", inst.Undo[1].CommandID)
	inst = decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.waiting.ID, ""), 200).Saga
	if inst.Status != engine.StatusCompensating || inst.Undo[0].Command != "FAIL_DEAL" || inst.Undo[0].Status != engine.UndoCompensating {
		t.Fatalf("after ORDER_REVERTED: %s undo %+v, want FAIL_DEAL under way", inst.Status, inst.Undo)
	}
	e.answer(t, s.waiting.ID, "DEAL_FAILED", "deals", inst.Undo[0].CommandID)
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.waiting.ID, ""), 200)
	if det.Saga.State != "FAILED" || det.Saga.Status != engine.StatusFailed || det.Saga.Deferred != nil {
		t.Errorf("after the compensations: %s/%s deferred %+v, want FAILED/failed, nothing held back", det.Saga.State, det.Saga.Status, det.Saga.Deferred)
	}
	if n := notifies(); n != 1 {
		t.Errorf("%d NOTIFY sent after the compensations, want 1 (the client is told of the abort)", n)
	}
	var ops []string
	for _, h := range det.Timeline {
		if h.Kind == engine.EntryOperator {
			ops = append(ops, h.Event+" by "+h.Actor+": "+h.Reason)
		}
	}
	if got, want := strings.Join(ops, "; "), "RESEND by anonymous: profile was down; ABORT by anonymous: client cancelled by phone"; got != want {
		t.Errorf("operator entries = %q, want %q", got, want)
	}

	for _, tc := range []struct {
		name, target, body string
		status             int
		code               engine.Code
	}{
		{"no reason", "/api/v1/sagas/" + s.approved.ID + "/resend", `{}`, 400, engine.CodeInvalid},
		{"blank reason", "/api/v1/sagas/" + s.approved.ID + "/abort", `{"reason":"  "}`, 400, engine.CodeInvalid},
		{"unknown field", "/api/v1/sagas/" + s.approved.ID + "/abort", `{"reason":"x","why":"y"}`, 400, engine.CodeInvalid},
		{"not a failed state", "/api/v1/sagas/" + s.approved.ID + "/abort", `{"reason":"x","state":"NOTIFICATION"}`, 400, engine.CodeInvalid},
		// v4 aborts from APPROVED into FAILED (its ABORT transition).
		{"not the definition's abort state", "/api/v1/sagas/" + s.approved.ID + "/abort", `{"reason":"x","state":"CANCELLED"}`, 400, engine.CodeInvalid},
		{"abort finished", "/api/v1/sagas/" + s.done.ID + "/abort", `{"reason":"x"}`, 409, engine.CodeFinished},
		// (A re-send without a pending command, 409, is TestResendAndAbort's
		// in engine: after its abort s.waiting's last command is the NOTIFY.)
		{"unknown saga", "/api/v1/sagas/nope/resend", `{"reason":"x"}`, 404, engine.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { problemOf(t, e.do(t, "POST", tc.target, tc.body), tc.status, tc.code) })
	}
	// The refused aborts moved nothing.
	if got := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.approved.ID, ""), 200).Saga; got.State != "APPROVED" || got.Status != engine.StatusRunning {
		t.Errorf("after the refused aborts: %s/%s, want APPROVED/running", got.State, got.Status)
	}
	if !strings.Contains(e.logText(), `"saga_id":"`+s.waiting.ID+`"`) {
		t.Errorf("request log has no line with saga_id %s", s.waiting.ID)
	}
}

func TestDeadLetters(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	s := e.seed(t)

	list := decode[struct {
		DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
	}](t, e.do(t, "GET", "/api/v1/dead-letters", ""), 200)
	if len(list.DeadLetters) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(list.DeadLetters))
	}
	dl := list.DeadLetters[0]
	if dl.SagaID != s.outOfOrder.ID || dl.Code != engine.CodeIllegal || !strings.Contains(dl.Raw, `"name":"DEAL_UPDATED"`) {
		t.Errorf("dead letter = %+v, want the refused DEAL_UPDATED of %s", dl, s.outOfOrder.ID)
	}
	one := decode[httpapi.DeadLetterView](t, e.do(t, "GET", "/api/v1/dead-letters/"+itoa(dl.ID), ""), 200)
	if one.MessageID != dl.MessageID {
		t.Errorf("get dead letter: message %s, want %s", one.MessageID, dl.MessageID)
	}
	res := decode[httpapi.ReplayResult](t, e.do(t, "POST", "/api/v1/dead-letters/"+itoa(dl.ID)+"/replay", ""), 200)
	if res.DeadLetter.ReplayedAt == nil || res.DeadLetter.ReplayedBy != "anonymous" {
		t.Errorf("replayed dead letter = %+v, want replayed by anonymous", res.DeadLetter)
	}
	if res.Saga == nil || res.Saga.State != "NOTIFICATION" {
		t.Errorf("saga after replay = %+v, want NOTIFICATION", res.Saga)
	}
	problemOf(t, e.do(t, "POST", "/api/v1/dead-letters/"+itoa(dl.ID)+"/replay", "{}"), 409, engine.CodeConflict)
	list = decode[struct {
		DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
	}](t, e.do(t, "GET", "/api/v1/dead-letters", ""), 200)
	if len(list.DeadLetters) != 0 {
		t.Errorf("unreplayed dead letters after replay = %d, want 0", len(list.DeadLetters))
	}
	list = decode[struct {
		DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
	}](t, e.do(t, "GET", "/api/v1/dead-letters?include_replayed=true&limit=5", ""), 200)
	if len(list.DeadLetters) != 1 {
		t.Errorf("dead letters with replayed = %d, want 1", len(list.DeadLetters))
	}
	for _, tc := range []struct {
		method, target, body string
		status               int
		code                 engine.Code
	}{
		{"GET", "/api/v1/dead-letters/999", "", 404, engine.CodeNotFound},
		{"GET", "/api/v1/dead-letters/abc", "", 400, engine.CodeInvalid},
		{"GET", "/api/v1/dead-letters?limit=0", "", 400, engine.CodeInvalid},
		{"GET", "/api/v1/dead-letters?include_replayed=maybe", "", 400, engine.CodeInvalid},
		{"POST", "/api/v1/dead-letters/999/replay", "", 404, engine.CodeNotFound},
		{"POST", "/api/v1/dead-letters/1/replay", `{"force":true}`, 400, engine.CodeInvalid},
	} {
		t.Run(tc.method+tc.target, func(t *testing.T) { problemOf(t, e.do(t, tc.method, tc.target, tc.body), tc.status, tc.code) })
	}
}

func TestRoutingProblems(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	rec := e.do(t, "DELETE", "/api/v1/sagas", "")
	problemOf(t, rec, 405, httpapi.CodeMethodNotAllowed)
	if got, want := rec.Header().Get("Allow"), "GET, POST"; got != want {
		t.Errorf("Allow = %q, want %q", got, want)
	}
	problemOf(t, e.do(t, "GET", "/api/v1/nothing-here", ""), 404, engine.CodeNotFound)
	if got := e.do(t, "GET", "/healthz", ""); got.Code != 200 {
		t.Errorf("healthz = %d, want 200", got.Code)
	}
	if got := e.do(t, "GET", "/", ""); got.Code != http.StatusFound || got.Header().Get("Location") != "/console/" {
		t.Errorf("GET / = %d to %q, want 302 to /console/", got.Code, got.Header().Get("Location"))
	}
	page := e.do(t, "GET", "/console/", "")
	if page.Code != 200 || !strings.Contains(page.Body.String(), "saga-machine console") || page.Header().Get("Content-Security-Policy") == "" {
		t.Errorf("console index: %d, CSP %q", page.Code, page.Header().Get("Content-Security-Policy"))
	}
}

func TestReadiness(t *testing.T) {
	down := errors.New("broker 127.0.0.1:1 refused the connection")
	for _, tc := range []struct {
		name   string
		ready  func(context.Context) error
		status int
		broker string
	}{
		{"no broker check", nil, 200, "skipped"},
		{"broker up", func(context.Context) error { return nil }, 200, "ok"},
		{"broker down", func(context.Context) error { return down }, 503, "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "", envOptions{ready: tc.ready})
			got := decode[struct {
				Status string `json:"status"`
				Checks map[string]struct {
					Status, Error string
				} `json:"checks"`
			}](t, e.do(t, "GET", "/readyz", ""), tc.status)
			if got.Checks["database"].Status != "ok" || got.Checks["broker"].Status != tc.broker {
				t.Errorf("checks = %+v, want database ok, broker %s", got.Checks, tc.broker)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.seed(t)
	rec := e.do(t, "GET", "/metrics", "")
	if !strings.Contains(rec.Body.String(), "saga_machine_outbox_backlog 8") {
		t.Fatal("seed left no 8 commands in the outbox")
	}
	// The relay: a round that publishes seed's 8 commands, then one that
	// finds none.
	for _, want := range []int{8, 0} {
		if n, err := e.orch.RelayOnce(context.Background()); err != nil || n != want {
			t.Fatalf("RelayOnce = %d, %v; want %d", n, err, want)
		}
	}
	rec = e.do(t, "GET", "/metrics", "")
	if rec.Code != 200 {
		t.Fatalf("metrics status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		// The seeded sagas started on the newest MANUAL_CREATE_ORDER, v4.
		`saga_machine_sagas_started_total{saga="MANUAL_CREATE_ORDER",version="4"} 4`,
		`saga_machine_sagas_finished_total{saga="MANUAL_CREATE_ORDER",state="NOTIFICATION",status="completed",version="4"} 1`,
		`saga_machine_instances{saga="MANUAL_CREATE_ORDER",state="APPROVED",version="4"} 2`,
		`saga_machine_instances{saga="MANUAL_CREATE_ORDER",state="DRAFT",version="4"} 1`,
		`saga_machine_dead_letters_total{code="illegal-transition"} 1`,
		`saga_machine_events_refused_total{code="illegal-transition",event="DEAL_UPDATED",saga="MANUAL_CREATE_ORDER"} 1`,
		`saga_machine_event_to_command_seconds_count{saga="MANUAL_CREATE_ORDER"} 8`,
		"saga_machine_outbox_backlog 0",
		"saga_machine_commands_published_total 8",
		`saga_machine_relay_rounds_total{result="published"} 1`,
		`saga_machine_relay_rounds_total{result="empty"} 1`,
		"saga_machine_relay_seconds_total ",
		// seed hands the orchestrator four batches of consumed records
		// (1, 2, 1 and 1 events; the starts are not intake batches).
		"saga_machine_intake_batch_records_count 4",
		"saga_machine_intake_batch_records_sum 5",
		"saga_machine_intake_batch_seconds_count 4",
		"saga_machine_store_up 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A second API over the same registry is refused nothing (collectors are shared).
	if _, err := httpapi.NewMetrics(e.reg); err == nil {
		t.Error("NewMetrics on a registry that has them: got nil error, want already registered")
	}
}

func itoa(n int64) string { return strings.TrimSpace(strings.Replace(jsonString(n), `"`, "", -1)) }

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
