package stack_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/ingress"
	"github.com/portfolio-counselor/sagamachine/internal/stack"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// loadEnv reads the running stack's addresses; without a stack the test
// skips (fails under CI=true).
func loadEnv(tb testing.TB) stack.Env {
	tb.Helper()
	env, err := stack.LoadEnv("")
	if err != nil {
		testenv.Missing(tb, "the local full stack (make stack)", err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(env.Issuer + "/.well-known/openid-configuration")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s/.well-known/openid-configuration: %s", env.Issuer, resp.Status)
		}
	}
	if err != nil {
		testenv.Missing(tb, "the local full stack (make stack): Keycloak through nginx", err)
	}
	return env
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// client calls the front door like Postman or curl: plain HTTP, its own
// bearer token, no cookies, redirects not followed.
type client struct {
	tb   testing.TB
	c    *http.Client
	base string
}

func newClient(tb testing.TB, base string) *client {
	return &client{tb: tb, base: base, c: &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body[:min(len(r.body), 600)]))
}

// do sends a request; token "" sends none; hdr may set Host and Origin.
func (c *client) do(method, path, token, body string, hdr map[string]string) response {
	c.tb.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return response{resp.StatusCode, resp.Header, b}
}

// json sends a request that must answer want and decodes the body into out.
func (c *client) json(method, path, token, body string, hdr map[string]string, want int, out any) response {
	c.tb.Helper()
	r := c.do(method, path, token, body, hdr)
	if r.status != want {
		c.tb.Fatalf("%s %s: got %s, want %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			c.tb.Fatalf("%s %s: decode %s: %v", method, path, r, err)
		}
	}
	return r
}

// refusedAtIngress checks that nginx answered the request itself with the
// redirect to the login (the service never saw it).
func refusedAtIngress(tb testing.TB, what string, r response) {
	tb.Helper()
	loc := r.header.Get("Location")
	if r.status != http.StatusFound || !strings.Contains(loc, "/oauth2/start?rd=") {
		tb.Errorf("%s: got %s (Location %q), want 302 to /oauth2/start: refused at the ingress", what, r, loc)
	}
}

type deal struct {
	ID, SagaID, Status, Reason, PortfolioID string
}

func (d *deal) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID          string `json:"id"`
		SagaID      string `json:"saga_id"`
		Status      string `json:"status"`
		Reason      string `json:"reason"`
		PortfolioID string `json:"portfolio_id"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*d = deal{raw.ID, raw.SagaID, raw.Status, raw.Reason, raw.PortfolioID}
	return nil
}

type portfolio struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Currency string `json:"currency"`
	Cash     string `json:"cash"`
}

// TestFrontDoor is the seed's scenario end to end through the local stack
// (make stack) in a real browser: a user registered through Keycloak's
// admin API logs in through oauth2-proxy, sees her data, opens a
// portfolio, gets it funded by a funding operator, places a deal whose
// saga finishes, and reads her notification; a Postman-style client does
// the same with a token of the realm; attackers are refused at the door;
// an operator reads the saga's timeline in the console and the user is
// refused there.
func TestFrontDoor(t *testing.T) {
	if testing.Short() {
		t.Skip("the full stack's browser test: skipped with -short")
	}
	env := loadEnv(t)
	ctx := context.Background()
	api := newClient(t, env.URL)

	// 2.2: register a new user through Keycloak's admin API, as Postman would.
	admin, err := stack.NewAdmin(ctx, nil, env.KeycloakURL, env.AdminUser, env.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	name, password := "una-"+randomHex(4), "pw-"+randomHex(12)
	userID, err := admin.CreateUser(ctx, stack.Realm, stack.User{Username: name, Password: password,
		Email: name + "@example.com", FirstName: "Una", LastName: "Tester"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := admin.DeleteUser(context.Background(), stack.Realm, userID); err != nil {
			t.Logf("delete user %s: %v", name, err)
		}
	})
	t.Logf("registered user %s (%s) through %s/admin/realms/portfolio/users", name, userID, env.KeycloakURL)

	// She opens the site and is sent to Keycloak's login page.
	ub := newBrowser(t, "user")
	ub.navigate(env.URL + "/profile/api/v1/login")
	loginPage := env.KeycloakURL + "/realms/portfolio/protocol/openid-connect/auth?"
	ub.waitJS("Keycloak's login page", fmt.Sprintf("location.href.startsWith(%q) && document.getElementById('kc-login')", loginPage), 30*time.Second)
	var loginURL string
	ub.mustEval("location.href", &loginURL)
	if q, _ := url.Parse(loginURL); q.Query().Get("client_id") != "oauth2-proxy" || q.Query().Get("code_challenge_method") != "S256" {
		t.Errorf("login page %s: want the code flow of client oauth2-proxy with PKCE S256", loginURL)
	}
	ub.screenshot("keycloak-login")

	// She logs in (code flow through oauth2-proxy) and is back at 4.1.
	ub.keycloakLogin(name, password)
	ub.waitJS("her data after login", fmt.Sprintf("location.href === %q && document.body.innerText.includes('\"user_id\"')", env.URL+"/profile/api/v1/login"), 30*time.Second)
	var me struct {
		UserID string   `json:"user_id"`
		Name   string   `json:"name"`
		Email  string   `json:"email"`
		Roles  []string `json:"roles"`
	}
	ub.mustEval("JSON.parse(document.body.innerText)", &me)
	if me.UserID != userID || me.Name != name || me.Email != name+"@example.com" {
		t.Fatalf("GET /profile/api/v1/login shows %+v, want user %s (%s, %s@example.com)", me, userID, name, name)
	}

	// She creates a portfolio from the page (the session's cookie; the
	// ingress hands profile her access token).
	r := ub.fetch("POST", "/profile/api/v1/portfolios", `{"name":"Retirement","currency":"USD"}`, nil)
	var pf portfolio
	if r.Status != http.StatusCreated || json.Unmarshal([]byte(r.Body), &pf) != nil || pf.ID == "" {
		t.Fatalf("POST /profile/api/v1/portfolios from the page: %d %s", r.Status, r.Body)
	}
	if !sameAmount(pf.Cash, "0") {
		t.Errorf("new portfolio's cash %q, want 0", pf.Cash)
	}

	// A funding operator funds it through the funding operation (Postman
	// style: a token of the realm, plain HTTP).
	fred := env.Accounts["funding"]
	fredTok, err := stack.PasswordToken(ctx, nil, env.KeycloakURL, stack.Realm, stack.APIClient, fred[0], fred[1])
	if err != nil {
		t.Fatal(err)
	}
	api.json("POST", "/profile/api/v1/portfolios/"+pf.ID+"/deposits", fredTok.AccessToken,
		`{"amount":"10000.00","currency":"USD","reason":"incoming wire transfer"}`,
		map[string]string{"Idempotency-Key": "fund-" + pf.ID}, http.StatusCreated, nil)

	// She places a deal through the ingress, from the page.
	r = ub.fetch("POST", "/deals/api/v1/deals",
		fmt.Sprintf(`{"portfolio_id":%q,"side":"buy","instrument":"AAPL","quantity":"10","price":"150.00","currency":"USD"}`, pf.ID),
		map[string]string{"Idempotency-Key": "buy-" + pf.ID})
	var d deal
	if r.Status != http.StatusCreated || json.Unmarshal([]byte(r.Body), &d) != nil || d.SagaID == "" {
		t.Fatalf("POST /deals/api/v1/deals from the page: %d %s", r.Status, r.Body)
	}
	t.Logf("deal %s, saga %s", d.ID, d.SagaID)

	// The saga finishes: the deal is executed and her notification listed.
	ub.waitJS("deal executed", fmt.Sprintf(`fetch('/deals/api/v1/deals/%s', {headers: {Accept: 'application/json'}}).then(r => r.json()).then(d => d.status === 'executed')`, d.ID), 90*time.Second)
	ub.waitJS("her notification", fmt.Sprintf(`fetch('/notification/api/v1/notifications', {headers: {Accept: 'application/json'}}).then(r => r.text()).then(t => t.includes(%q))`, d.ID), 90*time.Second)
	ub.navigate(env.URL + "/notification/api/v1/notifications")
	ub.waitJS("her notification on the page", fmt.Sprintf("document.body.innerText.includes(%q)", d.ID), 10*time.Second)
	var notes struct {
		Items []struct {
			DealID string `json:"deal_id"`
			SagaID string `json:"saga_id"`
			Status string `json:"status"`
			Text   string `json:"text"`
		} `json:"items"`
	}
	ub.mustEval("JSON.parse(document.body.innerText)", &notes)
	if len(notes.Items) != 1 || notes.Items[0].DealID != d.ID || notes.Items[0].SagaID != d.SagaID ||
		!strings.Contains(notes.Items[0].Text, "executed") {
		t.Errorf("her notifications %+v, want one: deal %s executed", notes.Items, d.ID)
	}
	ub.screenshot("user-notification")

	// Postman style: a token from 2.1 works with plain HTTP on the same routes.
	tok, err := stack.PasswordToken(ctx, nil, env.KeycloakURL, stack.Realm, stack.APIClient, name, password)
	if err != nil {
		t.Fatal(err)
	}
	var pfs struct {
		Items []portfolio `json:"items"`
	}
	api.json("GET", "/profile/api/v1/portfolios", tok.AccessToken, "", nil, http.StatusOK, &pfs)
	if len(pfs.Items) != 1 || pfs.Items[0].ID != pf.ID || !sameAmount(pfs.Items[0].Cash, "8500") {
		t.Errorf("GET /profile/api/v1/portfolios with her token: %+v, want %s with cash 8500 (10000 funded, 10 AAPL at 150 bought)", pfs.Items, pf.ID)
	}
	var got deal
	api.json("GET", "/deals/api/v1/deals/"+d.ID, tok.AccessToken, "", nil, http.StatusOK, &got)
	if got.Status != "executed" {
		t.Errorf("deal through the ingress: %+v, want executed", got)
	}

	// The operator sees the saga finished (saga-machine's API, her token).
	olga := env.Accounts["operator"]
	opTok, err := stack.PasswordToken(ctx, nil, env.KeycloakURL, stack.Realm, stack.APIClient, olga[0], olga[1])
	if err != nil {
		t.Fatal(err)
	}
	var sg struct {
		Saga struct {
			State  string `json:"state"`
			Status string `json:"status"`
		} `json:"saga"`
		Timeline []json.RawMessage `json:"timeline"`
	}
	api.json("GET", "/api/v1/sagas/"+d.SagaID, opTok.AccessToken, "", nil, http.StatusOK, &sg)
	if sg.Saga.State != "NOTIFICATION" || sg.Saga.Status != "completed" || len(sg.Timeline) != 3 {
		t.Errorf("saga %s: state %q status %q, %d timeline entries; want NOTIFICATION, completed, 3 entries (REGISTER, ORDER_APPROVED, DEAL_UPDATED)",
			d.SagaID, sg.Saga.State, sg.Saga.Status, len(sg.Timeline))
	}

	t.Run("every Ingress path is served", func(t *testing.T) {
		routes(t, env, api, tok.AccessToken, userID)
	})

	t.Run("attacks", func(t *testing.T) {
		attacks(t, env, api, admin, tok, opTok.AccessToken, pf, d)
	})

	// An operator logs into the console through the same front door and
	// sees the saga's timeline.
	ob := newBrowser(t, "operator")
	ob.navigate(env.URL + "/console/#/sagas/" + d.SagaID)
	ob.waitJS("the ingress sends the operator to Keycloak", fmt.Sprintf("location.href.startsWith(%q) && document.getElementById('kc-login')", loginPage), 30*time.Second)
	var consoleLogin string
	ob.mustEval("location.href", &consoleLogin)
	if q, _ := url.Parse(consoleLogin); q.Query().Get("client_id") != "oauth2-proxy" || !strings.Contains(q.Query().Get("redirect_uri"), "/oauth2/callback") {
		t.Errorf("login page for the console %s: want oauth2-proxy's code flow (the ingress asks first)", consoleLogin)
	}
	ob.keycloakLogin(olga[0], olga[1])
	// Back at /console/ (a URL's #fragment never reaches the server, so the
	// login returns to the console's first page); she opens the saga.
	ob.waitJS("the console after login", fmt.Sprintf("location.pathname === '/console/' && document.getElementById('whoami') && document.getElementById('whoami').innerText.includes(%q)", olga[0]), 45*time.Second)
	ob.mustEval(fmt.Sprintf("(location.hash = %q, true)", "#/sagas/"+d.SagaID), new(bool))
	ob.waitJS("the saga's timeline in the console", "document.querySelectorAll('#timeline li').length === 3", 45*time.Second)
	var page string
	ob.mustEval("document.getElementById('main').innerText", &page)
	for _, want := range []string{d.SagaID[:8], "REGISTER", "ORDER_APPROVED", "DEAL_UPDATED", "APPROVED → NOTIFICATION", "sent NOTIFY to notification"} {
		if !strings.Contains(page, want) {
			t.Errorf("console saga page lacks %q:\n%s", want, page)
		}
	}
	var who string
	ob.mustEval("document.getElementById('whoami') ? document.getElementById('whoami').innerText : document.body.innerText", &who)
	if !strings.Contains(who, olga[0]) {
		t.Errorf("the console does not show the operator %s as signed in: %q", olga[0], who)
	}
	var stored int
	ob.mustEval("localStorage.length", &stored)
	if stored != 0 {
		t.Errorf("the console left %d items in localStorage, want none (tokens stay in memory)", stored)
	}
	ob.screenshot("console-saga")
	// Past the ingress the console signed in itself (code + PKCE at the
	// client saga-console, silently on Keycloak's session).
	users, err := admin.ClientSessionUsers(ctx, stack.Realm, "saga-console")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(users, olga[0]) {
		t.Errorf("sessions of client saga-console: %v, want %s's (the console's own sign-in)", users, olga[0])
	}

	// The user (no operator role) opens the console: a clear refusal page.
	ub.navigate(env.URL + "/console/")
	ub.waitJS("the console's refusal page", "document.getElementById('access-refused')", 45*time.Second)
	var refusal string
	ub.mustEval("document.getElementById('access-refused').innerText", &refusal)
	if !strings.Contains(refusal, "Access refused") || !strings.Contains(refusal, "saga-viewer") {
		t.Errorf("refusal page does not say why:\n%s", refusal)
	}
	var tables int
	ub.mustEval("document.querySelectorAll('#timeline, #saga-table').length", &tables)
	if tables != 0 {
		t.Errorf("the refused user sees %d saga tables", tables)
	}
	ub.screenshot("console-refused")
}

// routes sends, for every path of k8s/ingress.yaml, a request through the
// running nginx with a user's token and checks that the right program
// answered it (by what only that program says).
func routes(t *testing.T, env stack.Env, api *client, tok, userID string) {
	ings, err := ingress.ParseFile(repoRoot(t) + "/k8s/ingress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	probes := map[string]struct {
		path, want string
	}{
		"/auth":                         {"/auth/realms/portfolio", `"realm":"portfolio"`},
		"/oauth2":                       {"/oauth2/userinfo", `"email":`},
		"/api/v1":                       {"/api/v1/me", `"subject":"` + userID + `"`},
		"/console":                      {"/console/config.json", `"client_id":"saga-console"`},
		"/deals/api/v1(/|$)(.*)":        {"/deals/api/v1/deals", `"items":[`},
		"/profile/api/v1(/|$)(.*)":      {"/profile/api/v1/login", `"user_id":"` + userID + `"`},
		"/notification/api/v1(/|$)(.*)": {"/notification/api/v1/notifications", `"text":`},
	}
	seen := map[string]bool{}
	for _, r := range ingress.Routes(ings) {
		seen[r.Path] = true
		p, ok := probes[r.Path]
		if !ok {
			t.Errorf("route %s of %s (→ %s) has no probe in this test: add one", r.Path, r.Ingress, r.Backend)
			continue
		}
		if got := api.do("GET", p.path, tok, "", nil); got.status != http.StatusOK || !strings.Contains(string(got.body), p.want) {
			t.Errorf("route %s (→ %s): GET %s got %s, want 200 with %s", r.Path, r.Backend, p.path, got, p.want)
		}
	}
	for path := range probes {
		if !seen[path] {
			t.Errorf("probe for %s, which k8s/ingress.yaml does not route", path)
		}
	}
}

// attacks are the front door's attacker tests: each asserts the refusal
// and that nothing moved.
func attacks(t *testing.T, env stack.Env, api *client, admin *stack.Admin, user stack.Token, opTok string, pf portfolio, d deal) {
	userTok := user.AccessToken
	deals := func() int {
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		api.json("GET", "/deals/api/v1/deals?limit=100", userTok, "", nil, http.StatusOK, &list)
		return len(list.Items)
	}
	cash := func() string {
		var p portfolio
		api.json("GET", "/profile/api/v1/portfolios/"+pf.ID, userTok, "", nil, http.StatusOK, &p)
		return p.Cash
	}
	before, cashBefore := deals(), cash()
	dealBody := fmt.Sprintf(`{"portfolio_id":%q,"side":"buy","instrument":"MSFT","quantity":"1","price":"10.00","currency":"USD"}`, pf.ID)
	nothingMoved := func(t *testing.T) {
		t.Helper()
		if n, c := deals(), cash(); n != before || c != cashBefore {
			t.Errorf("after the refused calls: %d deals (want %d), cash %s (want %s)", n, before, c, cashBefore)
		}
	}

	t.Run("no token is refused at the ingress", func(t *testing.T) {
		for _, p := range []struct{ method, path, body string }{
			{"GET", "/profile/api/v1/login", ""},
			{"GET", "/profile/api/v1/portfolios/" + pf.ID, ""},
			{"POST", "/deals/api/v1/deals", dealBody},
			{"GET", "/notification/api/v1/notifications", ""},
			{"GET", "/api/v1/sagas/" + d.SagaID, ""},
			{"POST", "/api/v1/sagas/" + d.SagaID + "/abort", `{"reason":"x"}`},
		} {
			refusedAtIngress(t, p.method+" "+p.path+" without a token", api.do(p.method, p.path, "", p.body, map[string]string{"Idempotency-Key": "no-token-" + randomHex(4)}))
		}
		nothingMoved(t)
	})

	t.Run("forged tokens are refused at the ingress and by the services", func(t *testing.T) {
		forged := forge(t, userTok, func(c map[string]any) { c["realm_access"] = map[string]any{"roles": []string{"saga-operator"}} })
		expired := forge(t, userTok, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
		if user.IDToken == "" {
			t.Fatal("the token endpoint gave no ID token for scope openid")
		}
		for name, tok := range map[string]string{"forged role": forged, "re-signed expired": expired, "garbage": "not.a.jwt",
			"her own ID token (typ ID, aud postman)": user.IDToken} {
			refusedAtIngress(t, name+" through the ingress", api.do("POST", "/deals/api/v1/deals", tok, dealBody, map[string]string{"Idempotency-Key": "forged-" + randomHex(4)}))
			// Behind the door (a caller inside the network): each service refuses it itself.
			for svc, path := range map[string]string{"deals": "/deals", "profile": "/portfolios/" + pf.ID, "notification": "/notifications", "saga-machine": "/api/v1/sagas/" + d.SagaID} {
				r := newClient(t, env.Direct[svc]).do("GET", path, tok, "", nil)
				if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
					t.Errorf("%s token straight to %s: got %s (WWW-Authenticate %q), want 401 invalid_token", name, svc, r, r.header.Get("WWW-Authenticate"))
				}
			}
		}
		nothingMoved(t)
	})

	t.Run("an expired token of Keycloak is refused", func(t *testing.T) {
		// A client whose access tokens live one second (deleted afterwards).
		clientID := "t-expiry-" + randomHex(4)
		aud := func(a string) map[string]any {
			return map[string]any{"name": "aud-" + a, "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
				"config": map[string]string{"included.client.audience": a, "access.token.claim": "true", "id.token.claim": "false"}}
		}
		id, err := admin.CreateClient(context.Background(), stack.Realm, map[string]any{"clientId": clientID, "enabled": true, "publicClient": true,
			"standardFlowEnabled": false, "directAccessGrantsEnabled": true, "attributes": map[string]string{"access.token.lifespan": "1"},
			"protocolMappers": []any{aud("deals"), aud("oauth2-proxy")}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.DeleteClient(context.Background(), stack.Realm, id) }()
		tok, err := stack.PasswordToken(context.Background(), nil, env.KeycloakURL, stack.Realm, clientID, env.Accounts["user"][0], env.Accounts["user"][1])
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Exp int64 `json:"exp"`
		}
		claims(t, tok.AccessToken, &c)
		if c.Exp == 0 || c.Exp > time.Now().Add(time.Minute).Unix() {
			t.Fatalf("token of %s expires at %d, want within seconds", clientID, c.Exp)
		}
		for time.Now().Unix() <= c.Exp+1 { // wait until it is past its exp
			time.Sleep(200 * time.Millisecond)
		}
		refusedAtIngress(t, "expired token through the ingress", api.do("POST", "/deals/api/v1/deals", tok.AccessToken, dealBody, map[string]string{"Idempotency-Key": "expired-" + randomHex(4)}))
		r := newClient(t, env.Direct["deals"]).do("POST", "/deals", tok.AccessToken, dealBody, map[string]string{"Idempotency-Key": "expired-" + randomHex(4)})
		if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), "expired") {
			t.Errorf("expired token straight to deals: got %s (WWW-Authenticate %q), want 401 saying it expired", r, r.header.Get("WWW-Authenticate"))
		}
		nothingMoved(t)
	})

	t.Run("a foreign Host or Origin on a state-changing call is refused", func(t *testing.T) {
		key := map[string]string{"Idempotency-Key": "host-" + randomHex(4), "Host": "evil.example"}
		if r := api.do("POST", "/deals/api/v1/deals", userTok, dealBody, key); r.status != http.StatusNotFound {
			t.Errorf("POST with Host evil.example: got %s, want 404 from the ingress's default server", r)
		}
		for _, origin := range []string{"http://evil.example", "http://127.0.0.1:1"} {
			hdr := map[string]string{"Idempotency-Key": "origin-" + randomHex(4), "Origin": origin, "Sec-Fetch-Site": "cross-site"}
			if r := api.do("POST", "/deals/api/v1/deals", userTok, dealBody, hdr); r.status != http.StatusForbidden {
				t.Errorf("POST /deals/api/v1/deals with Origin %s: got %s, want 403", origin, r)
			}
			if r := api.do("POST", "/profile/api/v1/portfolios", userTok, `{"name":"x","currency":"USD"}`, hdr); r.status != http.StatusForbidden {
				t.Errorf("POST /profile/api/v1/portfolios with Origin %s: got %s, want 403", origin, r)
			}
		}
		// Behind the door: a service trusting a loopback issuer answers
		// loopback host names only.
		if r := newClient(t, env.Direct["deals"]).do("POST", "/deals", userTok, dealBody, key); r.status != http.StatusMisdirectedRequest {
			t.Errorf("POST straight to deals with Host evil.example: got %s, want 421", r)
		}
		nothingMoved(t)
		var pfs struct {
			Items []portfolio `json:"items"`
		}
		api.json("GET", "/profile/api/v1/portfolios", userTok, "", nil, http.StatusOK, &pfs)
		if len(pfs.Items) != 1 {
			t.Errorf("she has %d portfolios after the refused creations, want 1", len(pfs.Items))
		}
	})

	t.Run("a user's token on saga-machine's operator routes is 403", func(t *testing.T) {
		for _, p := range []struct{ method, path, body string }{
			{"GET", "/api/v1/sagas", ""},
			{"GET", "/api/v1/sagas/" + d.SagaID, ""},
			{"POST", "/api/v1/sagas/" + d.SagaID + "/resend", `{"reason":"attack"}`},
			{"POST", "/api/v1/sagas/" + d.SagaID + "/abort", `{"reason":"attack"}`},
			{"GET", "/api/v1/dead-letters", ""},
			{"GET", "/deals/api/v1/admin/dead-letters", ""},
		} {
			if r := api.do(p.method, p.path, userTok, p.body, nil); r.status != http.StatusForbidden {
				t.Errorf("%s %s with a user's token: got %s, want 403", p.method, p.path, r)
			}
		}
		var sg struct {
			Saga struct {
				State string `json:"state"`
			} `json:"saga"`
			Timeline []json.RawMessage `json:"timeline"`
		}
		api.json("GET", "/api/v1/sagas/"+d.SagaID, opTok, "", nil, http.StatusOK, &sg)
		if sg.Saga.State != "NOTIFICATION" {
			t.Errorf("saga after the refused operator calls: %q, want NOTIFICATION", sg.Saga.State)
		}
		nothingMoved(t)
	})
}

// sameAmount compares two decimal strings by value ("8500" = "8500.00").
func sameAmount(a, b string) bool {
	x, ok1 := new(big.Rat).SetString(a)
	y, ok2 := new(big.Rat).SetString(b)
	return ok1 && ok2 && x.Cmp(y) == 0
}

// claims decodes a JWT's payload into v (no verification).
func claims(tb testing.TB, jwt string, v any) {
	tb.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		tb.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		tb.Fatalf("JWT payload: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("JWT payload: %v", err)
	}
}

// forge copies a real token's header (its kid) and claims, changes the
// claims with edit and signs the result with a key of its own: what an
// attacker without Keycloak's key can make.
func forge(tb testing.TB, jwt string, edit func(map[string]any)) string {
	tb.Helper()
	parts := strings.Split(jwt, ".")
	var c map[string]any
	claims(tb, jwt, &c)
	edit(c)
	payload, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	signing := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
