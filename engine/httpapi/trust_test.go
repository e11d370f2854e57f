package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
)

// snapshot describes everything an API call could change: every saga
// (state, rev, attempts, context), its timeline length, every dead letter
// (replayed or not) and the outbox backlog.
func (e *env) snapshot(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	var b strings.Builder
	page, err := e.store.ListInstances(ctx, engine.SagaFilter{Limit: 500})
	if err != nil {
		tb.Fatalf("list sagas: %v", err)
	}
	for _, in := range page.Sagas {
		hist, err := e.store.History(ctx, in.ID)
		if err != nil {
			tb.Fatalf("history of %s: %v", in.ID, err)
		}
		fmt.Fprintf(&b, "saga %s %s %s rev %d attempts %d context %s timeline %d\n", in.ID, in.Saga, in.State, in.Rev, in.Attempts, in.Context, len(hist))
	}
	dls, err := e.store.DeadLetters(ctx, 1000, true)
	if err != nil {
		tb.Fatalf("dead letters: %v", err)
	}
	for _, d := range dls {
		fmt.Fprintf(&b, "dead letter %d replayed %v by %q\n", d.ID, d.ReplayedAt != nil, d.ReplayedBy)
	}
	n, err := e.store.OutboxBacklog(ctx)
	if err != nil {
		tb.Fatalf("outbox backlog: %v", err)
	}
	fmt.Fprintf(&b, "outbox %d\n", n)
	return b.String()
}

// Users of the role matrix (dev headers).
var (
	mallory  = as("mallory")                 // authenticated, no roles
	vera     = as("vera", auth.RoleViewer)   // read-only operator
	olga     = as("olga", auth.RoleOperator) // operator
	sam      = as("sam", "support-agent")    // may start SUPPORT_CALLBACK, nothing else
	nobody   = []string{}                    // no credentials at all
	userList = map[string][]string{"mallory": mallory, "vera": vera, "olga": olga, "sam": sam, "nobody": nobody}
)

// TestRoleMatrix calls every /api/v1 route as each kind of user and checks
// the status: reading the orchestrator needs saga-viewer or saga-operator,
// acting needs saga-operator, a start needs the roles its definition
// names, and who-am-I and validate need only a login. Every refusal is a
// problem+json that leaks nothing it refused to show, and after all the
// refused calls the store is exactly as before.
func TestRoleMatrix(t *testing.T) {
	e := newEnv(t, "", envOptions{auth: devAuth(t)})
	s := e.seed(t)
	dls, err := e.store.DeadLetters(context.Background(), 10, false)
	if err != nil || len(dls) != 1 {
		t.Fatalf("seeded dead letters = %d, %v; want 1", len(dls), err)
	}
	dl := fmt.Sprint(dls[0].ID)
	yaml := "saga: X\nversion: 1\n"
	type call struct {
		method, target, body string
		hdr                  []string
	}
	read := func(target string) call { return call{"GET", target, "", nil} }
	post := func(target, body string) call { return call{"POST", target, body, nil} }
	const (
		open, readOnly, operate, support, none = "open", "read", "operate", "support", "none"
	)
	// want[class][user] is the status.
	want := map[string]map[string]int{
		open:     {"nobody": 401, "mallory": 200, "vera": 200, "olga": 200, "sam": 200},
		readOnly: {"nobody": 401, "mallory": 403, "vera": 200, "olga": 200, "sam": 403},
		operate:  {"nobody": 401, "mallory": 403, "vera": 403, "olga": 0, "sam": 403}, // 0: olga acts after the refusals
		support:  {"nobody": 401, "mallory": 403, "vera": 403, "olga": 403, "sam": 0},
		none:     {"nobody": 401, "mallory": 403, "vera": 403, "olga": 403, "sam": 403},
	}
	routes := []struct {
		class string
		call  call
	}{
		{open, read("/api/v1/me")},
		{open, call{"POST", "/api/v1/definitions/validate", yaml, []string{"Content-Type", "application/yaml"}}},
		{readOnly, read("/api/v1/definitions")},
		{readOnly, read("/api/v1/definitions/MANUAL_CREATE_ORDER")},
		{readOnly, read("/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg")},
		{readOnly, read("/api/v1/sagas")},
		{readOnly, read("/api/v1/sagas?key=user_id:u-D-1")},
		{readOnly, read("/api/v1/sagas/" + s.approved.ID)},
		{readOnly, read("/api/v1/dead-letters")},
		{readOnly, read("/api/v1/dead-letters/" + dl)},
		{operate, post("/api/v1/sagas/"+s.approved.ID+"/resend", `{"reason":"attack"}`)},
		{operate, post("/api/v1/sagas/"+s.waiting.ID+"/abort", `{"reason":"attack"}`)},
		{operate, post("/api/v1/dead-letters/"+dl+"/replay", `{}`)},
		{operate, post("/api/v1/sagas/"+s.waiting.ID+"/migrations", `{"to":2,"dry_run":false,"reason":"attack"}`)},
		{operate, post("/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":"attack"}`)},
		{support, post("/api/v1/sagas", callback("U-1"))},
		{none, post("/api/v1/sagas", `{"saga":"MANUAL_CREATE_ORDER","payload":{"deal_context":{"deal_id":"X","user_id":"u-D-1"}}}`)},
	}
	before := e.snapshot(t)
	for _, rt := range routes {
		for user, hdr := range userList {
			status := want[rt.class][user]
			if status == 0 {
				continue
			}
			t.Run(rt.call.method+" "+rt.call.target+" as "+user, func(t *testing.T) {
				rec := e.do(t, rt.call.method, rt.call.target, rt.call.body, append(append([]string{}, rt.call.hdr...), hdr...)...)
				if rec.Code != status {
					t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
				}
				switch status {
				case 401:
					if rec.Header().Get("WWW-Authenticate") == "" {
						t.Errorf("401 without WWW-Authenticate")
					}
				case 403:
					p := problemOf(t, rec, 403, engine.CodeForbidden)
					// A role refusal names the user and the roles; a start
					// the definition keeps for a participant names it.
					if mention := map[bool]string{true: "participant deals", false: user}[rt.class == none]; !strings.Contains(p.Detail, mention) {
						t.Errorf("refusal %q does not mention %q", p.Detail, mention)
					}
					for _, secret := range []string{s.approved.ID, s.waiting.ID, s.outOfOrder.ID, "deal_context", "100.00", "APPROVE_ORDER"} {
						if strings.Contains(rec.Body.String(), secret) && !strings.Contains(rt.call.target, secret) {
							t.Errorf("refusal leaks %q: %s", secret, rec.Body)
						}
					}
				}
			})
		}
	}
	if after := e.snapshot(t); after != before {
		t.Fatalf("refused calls changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The roles that were refused above are enough where the matrix says so.
	decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.approved.ID+"/resend", `{"reason":"deals restarted"}`, olga...), 200)
	decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.waiting.ID+"/abort", `{"reason":"client called"}`, olga...), 200)
	decode[httpapi.ReplayResult](t, e.do(t, "POST", "/api/v1/dead-letters/"+dl+"/replay", `{}`, olga...), 200)
	started := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", callback("U-1"), sam...), 201)
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.approved.ID, "", vera...), 200)
	if last := det.Timeline[len(det.Timeline)-1]; last.Event != "RESEND" || last.Actor != "olga" || last.Reason != "deals restarted" {
		t.Errorf("last timeline entry = %+v, want RESEND by olga", last)
	}
	det = decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+started.ID, "", vera...), 200)
	if h := det.Timeline[0]; h.Event != "CALLBACK_REQUESTED" || h.By != "api" || h.Actor != "sam" {
		t.Errorf("start entry = %s by %s actor %q, want CALLBACK_REQUESTED by api, actor sam", h.Event, h.By, h.Actor)
	}
	for _, public := range []string{"/healthz", "/readyz", "/metrics", "/console/"} {
		if got := e.do(t, "GET", public, ""); got.Code != 200 {
			t.Errorf("GET %s without credentials: %d, want 200", public, got.Code)
		}
	}
	if !strings.Contains(e.logText(), `"user":"mallory"`) {
		t.Error("request log does not name the refused user mallory")
	}
}

// TestMe tells each user what the API takes her for.
func TestMe(t *testing.T) {
	e := newEnv(t, "", envOptions{auth: devAuth(t)})
	for _, tc := range []struct {
		hdr               []string
		subject           string
		roles             string
		mayRead, mayOpera bool
	}{
		{mallory, "mallory", "", false, false},
		{vera, "vera", auth.RoleViewer, true, false},
		{olga, "olga", auth.RoleOperator, true, true},
		{as("both", auth.RoleViewer, auth.RoleOperator), "both", auth.RoleViewer + "," + auth.RoleOperator, true, true},
		{sam, "sam", "support-agent", false, false},
	} {
		t.Run(tc.subject, func(t *testing.T) {
			me := decode[httpapi.Me](t, e.do(t, "GET", "/api/v1/me", "", tc.hdr...), 200)
			if me.Subject != tc.subject || strings.Join(me.Roles, ",") != tc.roles || me.Auth != "on" ||
				me.MayRead != tc.mayRead || me.MayOperate != tc.mayOpera {
				t.Errorf("me = %+v, want subject %s roles [%s] auth on, may read %v, may operate %v",
					me, tc.subject, tc.roles, tc.mayRead, tc.mayOpera)
			}
		})
	}
	problemOf(t, e.do(t, "GET", "/api/v1/me?x=1", "", olga...), 400, engine.CodeInvalid)
	off := newEnv(t, "", envOptions{})
	me := decode[httpapi.Me](t, off.do(t, "GET", "/api/v1/me", ""), 200)
	if me.Subject != "anonymous" || me.Auth != "off" || !me.MayRead || !me.MayOperate {
		t.Errorf("me without auth = %+v, want anonymous, auth off, may read and operate", me)
	}
}

// TestStartAttackReported reproduces the reported attack at the API: a
// user with no roles starts MANUAL_CREATE_ORDER with another user's
// user_id and portfolio_id. It is refused (403, naming deals and the bus)
// however it is dressed up, and no saga, timeline or command exists after.
func TestStartAttackReported(t *testing.T) {
	e := newEnv(t, "", envOptions{auth: devAuth(t)})
	victim := `"deal_context":{"deal_id":"11111111-1111-1111-1111-111111111111","user_id":"alice","portfolio_id":"22222222-2222-2222-2222-222222222222",` +
		`"side":"buy","instrument":"ACME","quantity":"100","price":"100.00","amount":"10000.00","currency":"USD"}`
	before := e.snapshot(t)
	for _, tc := range []struct {
		name, body string
		hdr        []string
		status     int
		code       engine.Code
		detail     string
	}{
		{"as in the report", `{"saga":"MANUAL_CREATE_ORDER","payload":{` + victim + `}}`, mallory, 403, engine.CodeForbidden,
			"REGISTER is sent on the bus by participant deals"},
		{"naming REGISTER", `{"saga":"MANUAL_CREATE_ORDER","event":"REGISTER","payload":{` + victim + `}}`, mallory, 403, engine.CodeForbidden,
			"only when participant deals sends it on the bus"},
		{"pinning the version", `{"saga":"MANUAL_CREATE_ORDER","version":1,"payload":{` + victim + `}}`, mallory, 403, engine.CodeForbidden, "deals"},
		{"with an Idempotency-Key", `{"saga":"MANUAL_CREATE_ORDER","payload":{` + victim + `}}`,
			append([]string{"Idempotency-Key", "k-1"}, mallory...), 403, engine.CodeForbidden, "deals"},
		{"claiming to be deals", `{"saga":"MANUAL_CREATE_ORDER","by":"deals","payload":{` + victim + `}}`, mallory, 400, engine.CodeInvalid, `unknown field "by"`},
		{"as an operator", `{"saga":"MANUAL_CREATE_ORDER","payload":{` + victim + `}}`, olga, 403, engine.CodeForbidden, "deals"},
		{"as everyone", `{"saga":"MANUAL_CREATE_ORDER","payload":{` + victim + `}}`,
			as("root", auth.RoleOperator, auth.RoleViewer, "support-agent", "deals", "admin"), 403, engine.CodeForbidden, "deals"},
		{"moving a saga instead", `{"saga":"MANUAL_CREATE_ORDER","event":"ORDER_APPROVED","payload":{` + victim + `}}`, olga, 403, engine.CodeForbidden, "never move one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.do(t, "POST", "/api/v1/sagas", tc.body, tc.hdr...), tc.status, tc.code)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("detail = %q, want it to mention %q", p.Detail, tc.detail)
			}
		})
	}
	if after := e.snapshot(t); after != before {
		t.Fatalf("the refused starts changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	page, err := e.store.ListInstances(context.Background(), engine.SagaFilter{KeyName: "user_id", KeyValue: "alice"})
	if err != nil || len(page.Sagas) != 0 {
		t.Errorf("sagas of alice = %d (%v), want none", len(page.Sagas), err)
	}
	if n, err := e.store.OutboxBacklog(context.Background()); err != nil || n != 0 {
		t.Errorf("outbox backlog = %d (%v), want 0: no APPROVE_ORDER may be on its way to profile", n, err)
	}
}

// TestIdempotencyKeyAttacks: a key is the caller's own. Another caller
// using the same key gets a saga of her own (not the first caller's saga,
// nor its payload); the same caller reusing her key with a different body
// gets 422 and nothing changes.
func TestIdempotencyKeyAttacks(t *testing.T) {
	e := newEnv(t, "", envOptions{auth: devAuth(t)})
	sue := as("sue", "support-lead")
	key := []string{"Idempotency-Key", "callback-1"}
	samSaga := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", callback("U-sam"), append(key, sam...)...), http.StatusCreated)

	// sue guesses sam's key and sends sam's body: she gets her own saga.
	rec := e.do(t, "POST", "/api/v1/sagas", callback("U-sam"), append(key, sue...)...)
	sueSaga := decode[engine.Instance](t, rec, http.StatusCreated)
	if sueSaga.ID == samSaga.ID {
		t.Fatalf("sue's start with sam's key returned sam's saga %s", samSaga.ID)
	}
	// ... and with another body: again her own, not sam's.
	rec = e.do(t, "POST", "/api/v1/sagas", callback("U-other"), append([]string{"Idempotency-Key", "callback-2"}, sue...)...)
	if got := decode[engine.Instance](t, rec, http.StatusCreated); got.ID == samSaga.ID || got.ID == sueSaga.ID {
		t.Errorf("sue's second key gave saga %s, want a new one", got.ID)
	}
	// sam's retry still finds his saga.
	again := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", callback("U-sam"), append(key, sam...)...), http.StatusOK)
	if again.ID != samSaga.ID {
		t.Errorf("sam's retry gave saga %s, want %s", again.ID, samSaga.ID)
	}
	// The same body with other whitespace and key order is the same request.
	reordered := `{ "payload": {"callback": {"phone":"+1 555 0100", "user_id":"U-sam"}}, "saga": "SUPPORT_CALLBACK" }`
	if got := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", reordered, append(key, sam...)...), http.StatusOK); got.ID != samSaga.ID {
		t.Errorf("sam's retry re-encoded gave saga %s, want %s", got.ID, samSaga.ID)
	}

	before := e.snapshot(t)
	for _, tc := range []struct {
		name, body string
	}{
		{"other payload", callback("U-victim")},
		{"event named", `{"saga":"SUPPORT_CALLBACK","event":"CALLBACK_REQUESTED","payload":{"callback":{"user_id":"U-sam","phone":"+1 555 0100"}}}`},
		{"version pinned", `{"saga":"SUPPORT_CALLBACK","version":1,"payload":{"callback":{"user_id":"U-sam","phone":"+1 555 0100"}}}`},
		{"no payload", `{"saga":"SUPPORT_CALLBACK"}`},
	} {
		t.Run("sam reuses his key with "+tc.name, func(t *testing.T) {
			p := problemOf(t, e.do(t, "POST", "/api/v1/sagas", tc.body, append(key, sam...)...), http.StatusUnprocessableEntity, engine.CodeKeyReused)
			if !strings.Contains(p.Detail, "callback-1") || !strings.Contains(p.Detail, samSaga.ID) {
				t.Errorf("detail %q does not name the key and the saga it started", p.Detail)
			}
		})
	}
	// sue reusing sam's key with another body is not refused: it is her key.
	if got := e.do(t, "POST", "/api/v1/sagas", callback("U-victim"), append([]string{"Idempotency-Key", "callback-1"}, as("sue2", "support-lead")...)...); got.Code != http.StatusCreated {
		t.Errorf("a third caller with the same key and another body: %d, want 201", got.Code)
	}
	after := e.snapshot(t)
	// Only the third caller's saga was added.
	if strings.Count(after, "saga ") != strings.Count(before, "saga ")+1 {
		t.Errorf("sagas before %d, after %d; want exactly one more (the third caller's)", strings.Count(before, "saga "), strings.Count(after, "saga "))
	}
	got, err := e.store.GetInstance(context.Background(), samSaga.ID)
	if err != nil || !strings.Contains(string(got.Context), `"U-sam"`) || strings.Contains(string(got.Context), "U-victim") {
		t.Errorf("sam's saga context = %s (%v), want his first payload only", got.Context, err)
	}
}
