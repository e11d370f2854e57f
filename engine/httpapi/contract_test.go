package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// Regression tests for what contract fuzzing (internal/contractfuzz,
// schemathesis against the running system) found.

// TestAllowMatchesSpec: a method the spec does not list for a path gets
// 405 with an Allow header naming exactly the spec's methods for it; in
// particular OPTIONS /api/v1/definitions/validate advertised GET (the
// route /definitions/{name} matches "validate" and answers 404).
func TestAllowMatchesSpec(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	raw, err := schema.OpenAPI("saga-machine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}
	for path, item := range doc.Paths {
		var want []string
		for m := range item {
			if slices.Contains(methods, m) {
				want = append(want, strings.ToUpper(m))
			}
		}
		slices.Sort(want)
		target := strings.NewReplacer("{name}", "MANUAL_CREATE_ORDER", "{id}", "1").Replace(path)
		for _, method := range []string{http.MethodTrace, http.MethodOptions, http.MethodPut, http.MethodDelete} {
			if slices.Contains(want, method) {
				continue
			}
			rec := e.do(t, method, target, "")
			problemOf(t, rec, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed)
			got := strings.Split(rec.Header().Get("Allow"), ", ")
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: Allow %q, want %q", method, target, rec.Header().Get("Allow"), strings.Join(want, ", "))
			}
		}
	}
}

// TestProblemDetailsArePublic: a problem's detail says what is wrong
// without the layers it passed ("get saga definition: find saga
// definition: ...") and without internal names ("sqlstore: list sagas:
// bad cursor ...: illegal base64 data").
func TestProblemDetailsArePublic(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.seed(t)
	tests := []struct {
		target string
		status int
		code   engine.Code
		detail string // the whole detail
	}{
		{"/api/v1/sagas/nope", 404, engine.CodeNotFound, "no saga nope"},
		{"/api/v1/dead-letters/99", 404, engine.CodeNotFound, "no dead letter 99"},
		{"/api/v1/definitions/NOPE", 404, engine.CodeNotFound, "no saga NOPE is loaded (loaded: BASKET_ORDER, MANUAL_CREATE_ORDER, SUPPORT_CALLBACK)"},
		{"/api/v1/sagas?cursor=abc", 400, engine.CodeInvalid, `cursor "abc" is not one this API returned: pass the next of the previous page, or no cursor for the first page`},
		{"/api/v1/sagas?cursor=" + url.QueryEscape("¢Æ"), 400, engine.CodeInvalid, `cursor "¢Æ" is not one this API returned: pass the next of the previous page, or no cursor for the first page`},
		{"/api/v1/sagas?cursor=eyJ0IjoxfQ", 400, engine.CodeInvalid, `cursor "eyJ0IjoxfQ" is not one this API returned: pass the next of the previous page, or no cursor for the first page`},
		{"/api/v1/sagas?limit=0", 400, engine.CodeInvalid, `limit "0" must be an integer from 1 to 500`},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			p := problemOf(t, e.do(t, http.MethodGet, tt.target, ""), tt.status, tt.code)
			if p.Detail != tt.detail {
				t.Errorf("detail:\n got %q\nwant %q", p.Detail, tt.detail)
			}
			for _, internal := range []string{"sqlstore", "base64", "invalid character", "find saga definition", "list sagas:"} {
				if strings.Contains(p.Detail, internal) {
					t.Errorf("detail %q shows %q", p.Detail, internal)
				}
			}
		})
	}
}

// TestListSagasQueryEdges: from at or after to is an empty range (200,
// no sagas), not a refusal of a request the spec allows; a typed
// parameter given empty (?to=, ?status=, ?limit=) is refused instead of
// read as absent, as the spec has no empty date-time, status or limit.
func TestListSagasQueryEdges(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.seed(t)
	all := decode[engine.SagaPage](t, e.do(t, http.MethodGet, "/api/v1/sagas", ""), 200)
	if len(all.Sagas) == 0 {
		t.Fatal("the seeded sagas are not listed")
	}
	for _, q := range []string{
		"from=2030-01-02T00:00:00Z&to=2020-01-02T00:00:00Z",
		"from=2020-01-02T00:00:00Z&to=2020-01-02T00:00:00Z",
	} {
		page := decode[engine.SagaPage](t, e.do(t, http.MethodGet, "/api/v1/sagas?"+q, ""), 200)
		if len(page.Sagas) != 0 || page.Next != "" {
			t.Errorf("%s: got %d sagas (next %q), want none", q, len(page.Sagas), page.Next)
		}
	}
	for _, q := range []string{"to=", "from=", "status=", "limit=", "key="} {
		p := problemOf(t, e.do(t, http.MethodGet, "/api/v1/sagas?"+q, ""), 400, engine.CodeInvalid)
		if !strings.Contains(p.Detail, "is empty") {
			t.Errorf("%s: detail %q, want it to say the parameter is empty", q, p.Detail)
		}
	}
	for _, q := range []string{"limit=", "include_replayed="} {
		problemOf(t, e.do(t, http.MethodGet, "/api/v1/dead-letters?"+q, ""), 400, engine.CodeInvalid)
	}
	// Absent and empty free-text parameters still list everything.
	page := decode[engine.SagaPage](t, e.do(t, http.MethodGet, "/api/v1/sagas?saga=&state=&cursor=", ""), 200)
	if len(page.Sagas) != len(all.Sagas) {
		t.Errorf("saga=&state=&cursor=: got %d sagas, want %d", len(page.Sagas), len(all.Sagas))
	}
}

// TestReplayStillRefused: replaying a dead letter whose message is still
// refused is 409 replay-failed with the reason, not 400 invalid (the
// request is valid; contract fuzzing found the 400 once it had real dead
// letters to replay), and it changes nothing: the dead letter stays
// unreplayed and can be read and replayed again.
func TestReplayStillRefused(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.offset++
	if err := e.orch.HandleRecords(context.Background(), []engine.Record{
		{Topic: "SAGA_SERVER_TOPIC_DEALS", Key: "s-1", Value: []byte(`{"v":1,"id":"x-1","kind":"command"}`), Offset: e.offset},
	}); err != nil {
		t.Fatal(err)
	}
	list := decode[struct {
		DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
	}](t, e.do(t, http.MethodGet, "/api/v1/dead-letters", ""), 200)
	if len(list.DeadLetters) != 1 {
		t.Fatalf("dead letters: %d, want the undecodable record", len(list.DeadLetters))
	}
	id := strconv.FormatInt(list.DeadLetters[0].ID, 10)
	for range 2 {
		p := problemOf(t, e.do(t, http.MethodPost, "/api/v1/dead-letters/"+id+"/replay", "{}"), http.StatusConflict, httpapi.CodeReplayFailed)
		if !strings.HasPrefix(p.Detail, "the message still cannot be decoded: ") {
			t.Errorf("detail %q, want the reason", p.Detail)
		}
		dl := decode[httpapi.DeadLetterView](t, e.do(t, http.MethodGet, "/api/v1/dead-letters/"+id, ""), 200)
		if dl.ReplayedAt != nil || dl.ReplayedBy != "" {
			t.Errorf("a failed replay marked the dead letter replayed: %+v", dl)
		}
	}
	page := decode[engine.SagaPage](t, e.do(t, http.MethodGet, "/api/v1/sagas", ""), 200)
	if len(page.Sagas) != 0 {
		t.Errorf("sagas after failed replays: %d, want 0", len(page.Sagas))
	}
}

// TestDefinitionVersionParam: ?version= given empty or twice is refused
// (contract fuzzing: ?version=&version=U drew the newest version), for the
// detail and the diagram alike; a start's null version, event and payload
// are as absent, as the spec now says (nullable).
func TestDefinitionVersionParam(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	for _, path := range []string{"/api/v1/definitions/MANUAL_CREATE_ORDER", "/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg"} {
		for _, q := range []string{"?version=", "?version=&version=U", "?version=1&version=2", "?version=U"} {
			problemOf(t, e.do(t, http.MethodGet, path+q, ""), http.StatusBadRequest, engine.CodeInvalid)
		}
		if rec := e.do(t, http.MethodGet, path+"?version=1", ""); rec.Code != http.StatusOK {
			t.Errorf("%s?version=1: got %d, want 200", path, rec.Code)
		}
	}
	rec := e.do(t, http.MethodPost, "/api/v1/sagas", `{"saga":"SUPPORT_CALLBACK","version":null,"event":null,"payload":null}`)
	inst := decode[engine.Instance](t, rec, http.StatusCreated)
	if inst.Saga != "SUPPORT_CALLBACK" || inst.SagaVersion != 1 || inst.State != "REQUESTED" {
		t.Errorf("start with null version, event and payload: %+v, want SUPPORT_CALLBACK v1 in REQUESTED", inst)
	}
}
