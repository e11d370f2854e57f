package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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

// waitFor polls a JavaScript predicate until it is true.
func waitFor(pred string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](pred, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))(ctx, t)
		return chromedp.Void{}, err
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
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
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
	// version. The seeded sagas run on MANUAL_CREATE_ORDER v2; v1 (kept for
	// the sagas started on it) counts none.
	const mco = `section[data-definition="MANUAL_CREATE_ORDER v2"]`
	const mcoV1 = `section[data-definition="MANUAL_CREATE_ORDER v1"]`
	b.step("open definitions",
		chromedp.Navigate(srv.URL+"/"),
		waitFor(`document.querySelectorAll('`+mco+` .diagram svg g.count').length === 5 && document.querySelectorAll('`+mcoV1+` .diagram svg g.count').length === 5`))
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

	// An operator aborts the waiting saga from its page: on v2 the abort
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

// TestConsoleRefusesWithoutRole signs into the console with real tokens of
// the dev issuer: a user without roles gets the "Access refused" page
// naming her and the roles needed (and the API refuses her data calls); a
// saga-viewer sees sagas but the action buttons are off with a note, and
// her abort, forced through the API, is refused and changes nothing.
func TestConsoleRefusesWithoutRole(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start issuer: %v", err)
	}
	defer stop()
	a, err := auth.New(context.Background(), auth.Config{Issuer: iss.URL(), Audience: issuer.DefaultAudience,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	e := newEnv(t, "", envOptions{auth: a})
	s := e.seed(t)
	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	token := func(sub string, roles ...string) string {
		tok, err := iss.Token(sub, issuer.TokenOptions{Name: sub, Roles: roles})
		if err != nil {
			t.Fatalf("token for %s: %v", sub, err)
		}
		return tok
	}
	b := newBrowser(t)
	// signIn pastes a token into the header's field and presses Save, as a
	// person does.
	signIn := func(tok string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			return chromedp.Void{}, chromedp.Do(ctx,
				chromedp.SetValue(chromedp.CSS(`#token`), tok),
				chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
		}
	}

	b.step("open as mallory",
		chromedp.Navigate(srv.URL+"/console/"),
		signIn(token("mallory")),
		waitFor(`!!document.getElementById('access-refused')`))
	var page string
	b.eval(`document.getElementById('main').innerText`, &page)
	for _, want := range []string{"Access refused", "mallory", "none", "saga-viewer or saga-operator"} {
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
	b.checkClean("access refused")
	b.screenshot("access-refused")
	b.step("mallory on the sagas page",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+s.waiting.ID+`"`),
		waitFor(`!!document.getElementById('access-refused') && !document.getElementById('timeline')`))

	b.step("open as vera (saga-viewer)",
		signIn(token("vera", auth.RoleViewer)),
		waitFor(`document.querySelectorAll('#timeline li').length === 1`))
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
	before := e.snapshot(t)
	var code string
	b.step("vera forces an abort through the API",
		chromedp.Evaluate[chromedp.Void](`fetch("/api/v1/sagas/`+s.waiting.ID+`/abort", {method: "POST",
			headers: {"Content-Type": "application/json", Authorization: "Bearer " + localStorage.getItem("saga-machine.token")},
			body: JSON.stringify({reason: "viewer"})}).then(r => r.json()).then(p => { window.abortResult = p.status + " " + p.code; })`),
		waitFor(`!!window.abortResult`))
	b.eval(`window.abortResult`, &code)
	if code != "403 forbidden" {
		t.Errorf("viewer's abort through the API: %q, want 403 forbidden", code)
	}
	if after := e.snapshot(t); after != before {
		t.Errorf("the viewer's refused abort changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
