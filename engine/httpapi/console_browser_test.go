package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// chromiumPath finds the browser: $SAGA_CHROMIUM, else chromium on PATH
// (Debian's package "chromium" installs /usr/bin/chromium).
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("SAGA_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(tb, "chromium (apt-get install chromium)", err)
	}
	return p
}

// artifactsDir is $SAGA_ARTIFACTS_DIR, else test-artifacts/ at the
// repository root.
func artifactsDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("SAGA_ARTIFACTS_DIR")
	if dir == "" {
		root, err := filepath.Abs(".")
		if err != nil {
			tb.Fatalf("working directory: %v", err)
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				tb.Fatal("no go.mod above the test's directory")
			}
			root = parent
		}
		dir = filepath.Join(root, "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("create artifacts directory: %v", err)
	}
	return dir
}

// browser drives one headless chromium tab.
type browser struct {
	tb  testing.TB
	ctx context.Context
	dir string
}

func newBrowser(tb testing.TB) *browser {
	tb.Helper()
	path := chromiumPath(tb)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	tb.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser; it lives as long as ctx.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("true")); err != nil {
		tb.Fatalf("start chromium %s: %v", path, err)
	}
	return &browser{tb: tb, ctx: ctx, dir: artifactsDir(tb)}
}

// step runs actions with a deadline so that a console bug fails the test
// instead of hanging it.
func (b *browser) step(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.tb.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression into v.
func (b *browser) eval(expr string, v any) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage]("JSON.stringify("+expr+")"))
	if err != nil {
		b.tb.Fatalf("evaluate %s: %v", expr, err)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		b.tb.Fatalf("evaluate %s: result %s: %v", expr, raw, err)
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		b.tb.Fatalf("evaluate %s: decode %s: %v", expr, s, err)
	}
}

// waitFor evaluates a JavaScript predicate every 50 ms until it is true.
// It survives navigations (the sign-in goes to the issuer and back), which
// a chromedp.Poll does not: an evaluation that fails while a page is being
// replaced is tried again. 15 s bound the wait (liveness only).
func waitFor(pred string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		deadline := time.Now().Add(15 * time.Second)
		var last error
		for time.Now().Before(deadline) {
			ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok, err := chromedp.Evaluate[bool](pred)(ectx, t)
			cancel()
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			last = err
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w (last evaluation error: %v)", pred, ctx.Err(), last)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return chromedp.Void{}, fmt.Errorf("waiting for %s: not true after 15s (last evaluation error: %v)", pred, last)
	}
}

// checkClean fails the test if the page shows JavaScript artefacts such
// as "[object HTMLElement]", "undefined" or "null" as text.
func (b *browser) checkClean(page string) {
	b.tb.Helper()
	var text string
	b.eval(`document.getElementById('main').innerText`, &text)
	for _, bad := range []string{"[object ", "undefined", "NaN"} {
		if strings.Contains(text, bad) {
			b.tb.Errorf("%s page shows %q:\n%s", page, bad, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "null" {
			b.tb.Errorf("%s page shows a line \"null\":\n%s", page, text)
			break
		}
	}
}

// screenshot saves the whole page as NAME.png in the artifacts directory.
func (b *browser) screenshot(name string) string {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	// A page that has just loaded (after a redirect, say) may not be laid
	// out yet: Chrome then refuses a screenshot "with 0 width". Wait for
	// the layout, and try again a few times.
	var png []byte
	_, err := chromedp.Run(ctx, waitFor(`document.readyState === 'complete' && document.documentElement.getBoundingClientRect().width > 0`))
	for attempt := 1; err == nil && attempt <= 3; attempt++ {
		if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil || attempt == 3 {
			break
		}
		b.tb.Logf("screenshot %s, attempt %d: %v; trying again", name, attempt, err)
		err = nil
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		b.tb.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.dir, "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.tb.Errorf("save screenshot: %v", err)
		return ""
	}
	b.tb.Logf("screenshot: %s", path)
	return path
}

// TestConsoleInBrowser loads every console page in headless chromium over a
// server with real sagas on SQLite, checks what each shows, replays a dead
// letter with the button and saves a screenshot of each page.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	e := newEnv(t, "", envOptions{})
	s := e.seed(t)
	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	b := newBrowser(t)

	// Definitions: the diagram with a count badge per state, one per
	// version. The seeded sagas run on MANUAL_CREATE_ORDER v4; v1 (kept for
	// the sagas started on it) counts none.
	const mco = `section[data-definition="MANUAL_CREATE_ORDER v4"]`
	const mcoV1 = `section[data-definition="MANUAL_CREATE_ORDER v1"]`
	b.step("open definitions",
		chromedp.Navigate(srv.URL+"/"),
		waitFor(`document.querySelectorAll('`+mco+` .diagram svg g.count').length === 6 && document.querySelectorAll('`+mcoV1+` .diagram svg g.count').length === 5`))
	for _, v := range []struct {
		section string
		want    map[string]string
	}{
		{mco, map[string]string{"DRAFT": "1", "APPROVED": "2", "REJECTED": "0", "NOTIFICATION": "1", "FAILED": "0"}},
		{mcoV1, map[string]string{"DRAFT": "0", "APPROVED": "0", "REJECTED": "0", "NOTIFICATION": "0", "FAILED": "0"}},
	} {
		var counts map[string]string
		b.eval(`Object.fromEntries([...document.querySelectorAll('`+v.section+` .diagram svg g.count[data-state]')].map(g => [g.dataset.state, g.querySelector('text').textContent]))`, &counts)
		for st, n := range v.want {
			if counts[st] != n {
				t.Errorf("%s: diagram count of %s = %q, want %q (all: %v)", v.section, st, counts[st], n, counts)
			}
		}
	}
	var chips string
	b.eval(`document.querySelector('`+mco+` .chips').innerText`, &chips)
	if !strings.Contains(chips, "3 running") || !strings.Contains(chips, "1 completed") {
		t.Errorf("summary chips = %q, want 3 running and 1 completed", chips)
	}
	b.checkClean("definitions")
	b.screenshot("definitions")

	// A new saga shows up in the counts at the next refresh.
	e.start(t, "D-5")
	b.step("counts refresh",
		waitFor(`document.querySelector('`+mco+` .diagram svg g.count[data-state="DRAFT"] text').textContent === "2"`))

	// Saga list, then a search by business key through the form.
	b.step("open saga list",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas"`),
		waitFor(`document.querySelectorAll('#saga-table tbody tr').length === 5`))
	var states []string
	b.eval(`[...document.querySelectorAll('#saga-table tbody tr')].map(r => r.cells[2].innerText)`, &states)
	if got, want := strings.Join(states, ","), "DRAFT,APPROVED,DRAFT,NOTIFICATION,APPROVED"; got != want {
		t.Errorf("listed states = %s, want %s", got, want)
	}
	b.checkClean("sagas")
	b.screenshot("sagas")
	b.step("search by key",
		chromedp.SetValue(chromedp.CSS(`#saga-filters input[name=key]`), "deal_id:D-2"),
		chromedp.Click(chromedp.CSS(`#saga-filters button[type=submit]`)),
		waitFor(`location.hash.includes("key=deal_id") && document.querySelectorAll('#saga-table tbody tr').length === 1`))
	var row string
	b.eval(`document.querySelector('#saga-table tbody tr').dataset.saga`, &row)
	if row != s.done.ID {
		t.Errorf("search deal_id:D-2 found %s, want %s", row, s.done.ID)
	}

	// One saga's timeline, reached by clicking its row.
	b.step("open saga",
		chromedp.Click(chromedp.CSS(`#saga-table tbody tr a`)),
		waitFor(`document.querySelectorAll('#timeline li').length === 3`))
	var entries []string
	b.eval(`[...document.querySelectorAll('#timeline li')].map(li => li.dataset.kind + ":" + li.querySelector('.event').innerText)`, &entries)
	if got, want := strings.Join(entries, " "), "event:REGISTER event:ORDER_REJECTED event:DEAL_UPDATED"; got != want {
		t.Errorf("timeline = %s, want %s", got, want)
	}
	var commands string
	b.eval(`document.querySelector('#timeline').innerText`, &commands)
	for _, want := range []string{"APPROVE_ORDER", "REJECT_DEAL", "NOTIFY", "REJECTED → NOTIFICATION"} {
		if !strings.Contains(commands, want) {
			t.Errorf("timeline text lacks %q:\n%s", want, commands)
		}
	}
	b.checkClean("saga")
	b.screenshot("saga")

	// An operator aborts the waiting saga from its page: on v3 the abort
	// first undoes what the saga did, newest first (REVERT_ORDER is sent,
	// FAIL_DEAL waits for its done event).
	b.step("abort",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+s.waiting.ID+`"`),
		waitFor(`document.querySelectorAll('#timeline li').length === 1`),
		chromedp.SetValue(chromedp.CSS(`form.actions input[name=reason]`), "client cancelled by phone"),
		chromedp.Click(chromedp.CSS(`form.actions button.danger`)),
		waitFor(`!!document.querySelector('.notice.ok') && document.querySelectorAll('#timeline li').length === 3`))
	var last string
	b.eval(`document.querySelector('#timeline li[data-kind="operator"]').innerText`, &last)
	for _, want := range []string{"ABORT", "DRAFT → FAILED", "client cancelled by phone", "by operator anonymous"} {
		if !strings.Contains(last, want) {
			t.Errorf("abort entry lacks %q:\n%s", want, last)
		}
	}
	var flash0, compensation string
	var undo []string
	b.eval(`document.querySelector('.notice.ok').innerText`, &flash0)
	b.eval(`document.querySelector('#timeline li:last-child').dataset.kind + ": " + document.querySelector('#timeline li:last-child').innerText`, &compensation)
	b.eval(`[...document.querySelectorAll('#compensations tbody tr')].map(r => r.cells[0].innerText + " " + r.cells[2].innerText.split("\n")[0])`, &undo)
	if !strings.Contains(flash0, "FAILED (compensating)") {
		t.Errorf("abort notice = %q, want the saga FAILED (compensating)", flash0)
	}
	if !strings.HasPrefix(compensation, "compensation: ") || !strings.Contains(compensation, "REVERT_ORDER") {
		t.Errorf("last timeline entry = %q, want the compensation sending REVERT_ORDER", compensation)
	}
	if got, want := strings.Join(undo, "; "), "FAIL_DEAL → deals replied; REVERT_ORDER → profile compensating"; got != want {
		t.Errorf("compensations table = %q, want %q", got, want)
	}
	b.checkClean("aborted saga")
	b.screenshot("saga-aborted")

	// Dead letters: replay the out-of-order DEAL_UPDATED with the button.
	b.step("open dead letters",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/dead-letters"`),
		waitFor(`document.querySelectorAll('#dead-letter-table button.replay').length === 1`))
	var reason string
	b.eval(`document.querySelector('#dead-letter-table tbody tr').innerText`, &reason)
	if !strings.Contains(reason, "DEAL_UPDATED by deals") || !strings.Contains(reason, "illegal-transition") {
		t.Errorf("dead letter row = %q, want the refused DEAL_UPDATED", reason)
	}
	b.checkClean("dead letters")
	b.screenshot("dead-letters")
	b.step("replay",
		chromedp.Click(chromedp.CSS(`#dead-letter-table button.replay`)),
		waitFor(`!!document.querySelector('.notice.ok') && document.querySelector('.notice.ok').innerText.includes("replayed")`))
	var flash string
	b.eval(`document.querySelector('.notice.ok').innerText`, &flash)
	if !strings.Contains(flash, "NOTIFICATION") {
		t.Errorf("replay notice = %q, want the saga's new state NOTIFICATION", flash)
	}
	b.checkClean("replayed dead letters")
	b.screenshot("dead-letters-replayed")
	inst, err := e.store.GetInstance(context.Background(), s.outOfOrder.ID)
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != "NOTIFICATION" {
		t.Errorf("saga after replay in the browser: %s, want NOTIFICATION", inst.State)
	}
	dls, err := e.store.DeadLetters(context.Background(), 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].ReplayedAt == nil || dls[0].ReplayedBy != "anonymous" {
		t.Errorf("dead letters after replay = %+v, want one replayed by anonymous", dls)
	}
}

// issuerWatch serves a dev issuer and records, for the attack checks,
// how many login forms and token requests reached it and every redirect
// it sent back to the console (the authorization responses with codes).
type issuerWatch struct {
	*issuer.Issuer
	mu        sync.Mutex
	logins    int      // POST /login
	tokens    int      // POST /token
	callbacks []string // Location of redirects to the console's redirect URI
}

func (w *issuerWatch) counts() (logins, tokens int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logins, w.tokens
}

func (w *issuerWatch) lastCallback() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.callbacks) == 0 {
		return ""
	}
	return w.callbacks[len(w.callbacks)-1]
}

// locationRecorder notes the Location header of the answer.
type locationRecorder struct {
	http.ResponseWriter
	note func(string)
}

func (l *locationRecorder) WriteHeader(code int) {
	if loc := l.Header().Get("Location"); loc != "" {
		l.note(loc)
	}
	l.ResponseWriter.WriteHeader(code)
}

// signInSetup is the console over an API whose tokens come from a dev
// issuer where the console is registered (code flow + PKCE) and four
// people have accounts: olga (saga-operator), mallory (no role), vera
// (saga-viewer).
type signInSetup struct {
	iss  *issuerWatch
	e    *env
	s    seeded
	srv  *httptest.Server
	a    *auth.Authenticator
	b    *browser
	pass map[string]string
}

func newSignInSetup(t *testing.T) *signInSetup {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	w := &issuerWatch{Issuer: iss}
	h := iss.Handler()
	issSrv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/login":
			w.logins++
		case r.Method == http.MethodPost && r.URL.Path == "/token":
			w.tokens++
		}
		w.mu.Unlock()
		h.ServeHTTP(&locationRecorder{ResponseWriter: rw, note: func(loc string) {
			if strings.Contains(loc, "/console/?") {
				w.mu.Lock()
				w.callbacks = append(w.callbacks, loc)
				w.mu.Unlock()
			}
		}}, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = issSrv.Serve(ln) }()
	t.Cleanup(func() { issSrv.Close() })

	a, err := auth.New(context.Background(), auth.Config{Issuer: iss.URL(), Audience: issuer.DefaultAudience,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	oidc, err := console.Discover(context.Background(), nil, iss.URL(), console.DefaultClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "", envOptions{auth: a, console: console.Config{OIDC: oidc}})
	st := &signInSetup{iss: w, e: e, s: e.seed(t), a: a,
		pass: map[string]string{"olga": "olga-pw-1", "mallory": "mallory-pw-2", "vera": "vera-pw-3"}}
	st.srv = httptest.NewServer(e.handler)
	t.Cleanup(st.srv.Close)
	if err := iss.RegisterClient(issuer.Client{
		ID: console.DefaultClientID, RedirectURIs: []string{st.srv.URL + "/console/"},
		PostLogoutRedirectURIs: []string{st.srv.URL + "/console/signed-out.html"}, WebOrigins: []string{st.srv.URL},
	}); err != nil {
		t.Fatal(err)
	}
	for user, roles := range map[string][]string{"olga": {auth.RoleOperator}, "mallory": nil, "vera": {auth.RoleViewer}} {
		if err := iss.AddUser(issuer.User{Username: user, Password: st.pass[user], Roles: roles}); err != nil {
			t.Fatal(err)
		}
	}
	st.b = newBrowser(t)
	return st
}

// login types user's password into the issuer's login page, as a person
// does, and presses Sign in.
func (st *signInSetup) login(user, password string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		return chromedp.Void{}, chromedp.Do(ctx,
			waitFor(`location.origin === "`+st.iss.URL()+`" && !!document.getElementById('login-form')`),
			chromedp.SetValue(chromedp.CSS(`#username`), user),
			chromedp.SetValue(chromedp.CSS(`#password`), password),
			chromedp.Click(chromedp.CSS(`#sign-in`)))
	}
}

// storageEmpty fails the test unless the console's origin keeps nothing
// in localStorage, sessionStorage or script-readable cookies.
func (st *signInSetup) storageEmpty(t *testing.T, when string) {
	t.Helper()
	var got struct {
		Origin  string `json:"origin"`
		Local   int    `json:"local"`
		Session int    `json:"session"`
		Cookie  string `json:"cookie"`
		Href    string `json:"href"`
	}
	st.b.eval(`({origin: location.origin, local: localStorage.length, session: sessionStorage.length, cookie: document.cookie, href: location.href})`, &got)
	if got.Origin != st.srv.URL {
		t.Fatalf("%s: the page is on %s, want the console's origin %s", when, got.Origin, st.srv.URL)
	}
	if got.Local != 0 || got.Session != 0 || got.Cookie != "" {
		t.Errorf("%s: localStorage %d items, sessionStorage %d items, document.cookie %q; want all empty", when, got.Local, got.Session, got.Cookie)
	}
	if strings.Contains(got.Href, "code=") || strings.Contains(got.Href, "state=") || strings.Contains(got.Href, "token") {
		t.Errorf("%s: the address bar still holds the authorization response: %s", when, got.Href)
	}
}

// TestConsoleSignIn logs into the console through the dev issuer's login
// page (authorization code + PKCE) as a person would: a wrong password
// first, then the right one; the console shows the sagas with nothing in
// localStorage, sessionStorage or the URL; a reload signs in again through
// the issuer's session without the login page; a forged and a replayed
// authorization response are refused by the console before any token
// request; sign-out ends the session, and the console asks for the
// password again.
func TestConsoleSignIn(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	st := newSignInSetup(t)
	b := st.b

	b.step("open the console: the issuer's login page",
		chromedp.Navigate(st.srv.URL+"/console/#/sagas"),
		waitFor(`location.origin === "`+st.iss.URL()+`" && !!document.getElementById('login-form')`))
	var client string
	b.eval(`document.getElementById('client').innerText`, &client)
	if client != console.DefaultClientID {
		t.Errorf("login page names client %q, want %s", client, console.DefaultClientID)
	}
	b.screenshot("signin-login-page")
	b.step("wrong password",
		st.login("olga", "not-her-password"),
		waitFor(`!!document.getElementById('login-error')`))
	var msg string
	b.eval(`document.getElementById('login-error').innerText`, &msg)
	if msg != "Invalid username or password." {
		t.Errorf("login error = %q", msg)
	}
	b.screenshot("signin-wrong-password")

	b.step("sign in as olga",
		st.login("olga", st.pass["olga"]),
		waitFor(`location.origin === "`+st.srv.URL+`" && document.querySelectorAll('#saga-table tbody tr').length === 4`))
	var who string
	b.eval(`document.getElementById('whoami').innerText`, &who)
	if !strings.Contains(who, "olga") || !strings.Contains(who, "operator") {
		t.Errorf("header says %q, want olga · operator", who)
	}
	var hash string
	b.eval(`location.hash`, &hash)
	if hash != "#/sagas" {
		t.Errorf("after sign-in the console shows %q, want #/sagas (where the operator was going)", hash)
	}
	st.storageEmpty(t, "after sign-in")
	b.checkClean("sagas after sign-in")
	b.screenshot("signin-console")
	logins, tokens := st.iss.counts()
	if logins != 2 || tokens != 1 {
		t.Errorf("issuer saw %d login posts and %d token requests, want 2 and 1", logins, tokens)
	}

	// An action works with the in-memory token (and is recorded as olga).
	const abortedByOlga = `[...document.querySelectorAll('#timeline li[data-kind=operator]')].some(li => li.innerText.includes("ABORT") && li.innerText.includes("by operator olga"))`
	b.step("abort as olga",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+st.s.waiting.ID+`"`),
		waitFor(`document.querySelectorAll('#timeline li').length === 1`),
		chromedp.SetValue(chromedp.CSS(`form.actions input[name=reason]`), "client cancelled by phone"),
		chromedp.Click(chromedp.CSS(`form.actions button.danger`)),
		waitFor(`!!document.querySelector('.notice.ok') && `+abortedByOlga))
	st.storageEmpty(t, "after an action")

	// Reload: the tokens are gone from memory; the issuer's session signs
	// the console in again without the login page.
	b.step("reload",
		chromedp.Reload(),
		waitFor(`location.origin === "`+st.srv.URL+`" && `+abortedByOlga))
	st.storageEmpty(t, "after reload")
	logins, tokens = st.iss.counts()
	if logins != 2 || tokens != 2 {
		t.Errorf("after reload the issuer saw %d login posts and %d token requests, want 2 (no new login) and 2", logins, tokens)
	}

	// Attacks on the console's redirect URI: a forged authorization
	// response, and a replay of the real one just used. Both are refused by
	// the state check, before any token request.
	replay := st.iss.lastCallback()
	if !strings.Contains(replay, "code=") {
		t.Fatalf("no authorization response recorded: %q", replay)
	}
	for _, attack := range []struct{ name, url string }{
		{"forged", st.srv.URL + "/console/?code=forged-code&state=forged-state"},
		{"replayed", replay},
	} {
		b.step(attack.name+" authorization response",
			chromedp.Navigate(attack.url),
			waitFor(`!!document.getElementById('sign-in-refused')`))
		var text string
		b.eval(`document.getElementById('sign-in-refused').innerText`, &text)
		if !strings.Contains(text, "state does not match") {
			t.Errorf("%s response: page says %q, want the state refusal", attack.name, text)
		}
		if _, n := st.iss.counts(); n != 2 {
			t.Errorf("%s response: the issuer got %d token requests, want still 2 (nothing exchanged)", attack.name, n)
		}
		st.storageEmpty(t, attack.name+" response")
		b.screenshot("signin-refused-" + attack.name)
	}

	// Back to work (silent), then sign out.
	b.step("sign in again",
		chromedp.Click(chromedp.CSS(`#sign-in-again`)),
		waitFor(`location.origin === "`+st.srv.URL+`" && document.querySelectorAll('section[data-definition]').length > 0 && document.querySelectorAll('section[data-definition] .diagram svg').length === document.querySelectorAll('section[data-definition]').length`))
	b.checkClean("definitions after sign-in")
	b.screenshot("signin-definitions")
	if st.iss.Sessions() != 1 {
		t.Errorf("issuer sessions = %d, want 1", st.iss.Sessions())
	}
	b.step("sign out",
		chromedp.Click(chromedp.CSS(`#sign-out`)),
		waitFor(`location.pathname === "/console/signed-out.html" && !!document.getElementById('signed-out')`))
	b.screenshot("signed-out")
	if st.iss.Sessions() != 0 {
		t.Errorf("issuer sessions after sign-out = %d, want 0", st.iss.Sessions())
	}
	st.storageEmpty(t, "after sign-out")
	b.step("the console asks for the password again",
		chromedp.Click(chromedp.CSS(`#sign-in-again`)),
		waitFor(`location.origin === "`+st.iss.URL()+`" && !!document.getElementById('login-form')`))
}

// TestConsoleRefusesWithoutRole signs into the console through the dev
// issuer's login page: a user without roles gets the Access refused page
// naming her and the roles needed (and none of the saga data); a
// saga-viewer sees sagas with the action buttons off, and her abort forced
// through the API is refused and changes nothing.
func TestConsoleRefusesWithoutRole(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	st := newSignInSetup(t)
	b := st.b
	s := st.s

	b.step("sign in as mallory",
		chromedp.Navigate(st.srv.URL+"/console/"),
		st.login("mallory", st.pass["mallory"]),
		waitFor(`location.origin === "`+st.srv.URL+`" && !!document.getElementById('access-refused')`))
	var page string
	b.eval(`document.getElementById('main').innerText`, &page)
	for _, want := range []string{"Access refused", "mallory", "none", "saga-viewer or saga-operator", "sign out"} {
		if !strings.Contains(page, want) {
			t.Errorf("refusal page lacks %q:\n%s", want, page)
		}
	}
	for _, secret := range []string{s.approved.ID[:8], "DRAFT", "MANUAL_CREATE_ORDER"} {
		if strings.Contains(page, secret) {
			t.Errorf("refusal page shows %q:\n%s", secret, page)
		}
	}
	var who string
	b.eval(`document.getElementById('whoami').innerText`, &who)
	if !strings.Contains(who, "mallory") || !strings.Contains(who, "no access") {
		t.Errorf("header says %q, want mallory with no access", who)
	}
	st.storageEmpty(t, "mallory signed in")
	b.checkClean("access refused")
	b.screenshot("access-refused")
	b.step("mallory on the saga page",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+s.waiting.ID+`"`),
		waitFor(`!!document.getElementById('access-refused') && !document.getElementById('timeline')`))
	b.step("mallory signs out",
		chromedp.Click(chromedp.CSS(`#sign-out`)),
		waitFor(`!!document.getElementById('signed-out')`))

	b.step("sign in as vera (saga-viewer)",
		chromedp.Navigate(st.srv.URL+"/console/#/sagas/"+s.waiting.ID),
		st.login("vera", st.pass["vera"]),
		waitFor(`location.origin === "`+st.srv.URL+`" && document.querySelectorAll('#timeline li').length === 1`))
	var disabled []bool
	b.eval(`[...document.querySelectorAll('form.actions button, form.actions input')].map(x => x.disabled)`, &disabled)
	if len(disabled) != 3 || !disabled[0] || !disabled[1] || !disabled[2] {
		t.Errorf("action controls disabled = %v, want all three off for a viewer", disabled)
	}
	var note string
	b.eval(`document.querySelector('.read-only').innerText`, &note)
	if !strings.Contains(note, "read-only") || !strings.Contains(note, "saga-operator") {
		t.Errorf("viewer note = %q, want it to say read-only and name saga-operator", note)
	}
	b.checkClean("viewer saga")
	b.screenshot("viewer-saga")

	// Vera's abort forced through the API from the page, with a viewer
	// token of the same issuer: 403, nothing changed.
	tok, err := st.iss.Token("vera", issuer.TokenOptions{Name: "vera", Roles: []string{auth.RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	before := st.e.snapshot(t)
	var code string
	b.step("vera forces an abort through the API",
		chromedp.Evaluate[chromedp.Void](`fetch("/api/v1/sagas/`+s.waiting.ID+`/abort", {method: "POST",
			headers: {"Content-Type": "application/json", Authorization: "Bearer `+tok+`"},
			body: JSON.stringify({reason: "viewer"})}).then(r => r.json()).then(p => { window.abortResult = p.status + " " + p.code; })`),
		waitFor(`!!window.abortResult`))
	b.eval(`window.abortResult`, &code)
	if code != "403 forbidden" {
		t.Errorf("viewer's abort through the API: %q, want 403 forbidden", code)
	}
	if after := st.e.snapshot(t); after != before {
		t.Errorf("the viewer's refused abort changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestConsolePlainSHA256 checks the console's JavaScript SHA-256 (used for
// the PKCE challenge where crypto.subtle is missing: plain HTTP on a
// non-loopback host) against Go's, on lengths around the block edges.
func TestConsolePlainSHA256(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	e := newEnv(t, "", envOptions{})
	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	b := newBrowser(t)
	b.step("open", chromedp.Navigate(srv.URL+"/console/"), waitFor(`typeof sha256Plain === "function"`))
	for _, n := range []int{0, 1, 3, 43, 55, 56, 63, 64, 65, 119, 128, 1000} {
		msg := strings.Repeat("aZ9-._~", n/7+1)[:n]
		var got string
		b.eval(`[...sha256Plain(new TextEncoder().encode("`+msg+`"))].map(x => x.toString(16).padStart(2, "0")).join("")`, &got)
		sum := sha256.Sum256([]byte(msg))
		if want := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("sha256Plain(%d bytes) = %s, want %s", n, got, want)
		}
	}
}

// TestConsoleSignInNeedsAuth: the API refuses a console that would sign
// in while the API checks no token, and serves the console's settings.
func TestConsoleSignInNeedsAuth(t *testing.T) {
	oidc := &console.OIDC{Issuer: "http://127.0.0.1:1", ClientID: "saga-console", Scope: "openid",
		AuthorizationEndpoint: "http://127.0.0.1:1/authorize", TokenEndpoint: "http://127.0.0.1:1/token"}
	e := newEnv(t, "", envOptions{})
	if _, err := httpapi.New(httpapi.Config{Orchestrator: e.orch, Console: console.Config{OIDC: oidc}}); err == nil {
		t.Errorf("httpapi.New with Console.OIDC and no Auth: nil error, want a refusal")
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/console/config.json", nil))
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"auth":"none"}` {
		t.Errorf("GET /console/config.json = %d %s, want 200 {\"auth\":\"none\"}", rec.Code, rec.Body)
	}
}
