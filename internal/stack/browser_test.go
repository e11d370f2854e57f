package stack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// chromiumPath finds the browser: $SAGA_CHROMIUM, else chromium on PATH
// (Debian's package "chromium").
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
		dir = filepath.Join(repoRoot(tb), "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("create artifacts directory: %v", err)
	}
	return dir
}

func repoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs(".")
	if err != nil {
		tb.Fatalf("working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root
		}
		parent := filepath.Dir(root)
		if parent == root {
			tb.Fatal("no go.mod above the test's directory")
		}
		root = parent
	}
}

// browser drives one headless chromium with a profile of its own (its own
// cookies: one person).
type browser struct {
	tb   testing.TB
	ctx  context.Context
	dir  string
	name string
}

func newBrowser(tb testing.TB, name string) *browser {
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
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	tb.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("true")); err != nil {
		tb.Fatalf("start chromium %s: %v", path, err)
	}
	return &browser{tb: tb, ctx: ctx, dir: artifactsDir(tb), name: name}
}

// navigate loads url (it may redirect).
func (b *browser) navigate(url string) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		b.fail("navigate to "+url, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into v.
func (b *browser) eval(expr string, v any) error {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage]("(async () => JSON.stringify(await ("+expr+")))()",
		chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("evaluate %s: %w", expr, err)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("evaluate %s: result %s: %w", expr, raw, err)
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("evaluate %s: decode %s: %w", expr, s, err)
	}
	return nil
}

// mustEval is eval that fails the test.
func (b *browser) mustEval(expr string, v any) {
	b.tb.Helper()
	if err := b.eval(expr, v); err != nil {
		b.fail("evaluate", err)
	}
}

// waitJS waits (at most limit) until the JavaScript predicate (a value or
// a promise of one) is true in the current page, across navigations.
func (b *browser) waitJS(what, pred string, limit time.Duration) {
	b.tb.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		err := b.eval("(async () => { try { return !!(await ("+pred+")); } catch (e) { return false; } })()", &ok)
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(150 * time.Millisecond)
	}
	var href, text string
	_ = b.eval("location.href", &href)
	_ = b.eval("document.body ? document.body.innerText.slice(0, 2000) : ''", &text)
	b.fail(what, fmt.Errorf("not true within %s: %s (page %s, last error %v):\n%s", limit, pred, href, last, text))
}

// fail saves a screenshot of the page and stops the test.
func (b *browser) fail(what string, err error) {
	b.tb.Helper()
	b.screenshot("failed-" + b.name + "-" + strings.NewReplacer(" ", "-", "/", "-").Replace(what))
	b.tb.Fatalf("%s (%s's browser): %v", what, b.name, err)
}

// screenshot saves the whole page as stack-NAME.png in the artifacts
// directory.
func (b *browser) screenshot(name string) string {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.tb.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.dir, "stack-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.tb.Errorf("save screenshot: %v", err)
		return ""
	}
	b.tb.Logf("screenshot: %s", path)
	return path
}

// keycloakLogin fills Keycloak's login form and submits it with its
// button, as a person would.
func (b *browser) keycloakLogin(user, password string) {
	b.tb.Helper()
	var ok bool
	js := fmt.Sprintf(`(() => {
		const u = document.getElementById('username'), p = document.getElementById('password'), btn = document.getElementById('kc-login');
		if (!u || !p || !btn) return false;
		u.value = %q; p.value = %q;
		u.dispatchEvent(new Event('input', {bubbles: true})); p.dispatchEvent(new Event('input', {bubbles: true}));
		btn.click();
		return true;
	})()`, user, password)
	err := b.eval(js, &ok)
	if err != nil && !isNavigation(err) {
		b.fail("log in", err)
	}
	if err == nil && !ok {
		b.fail("log in", errors.New("no Keycloak login form (username, password, kc-login) on the page"))
	}
}

// isNavigation reports an evaluation cut short because the page navigated
// away (the click submitted the form).
func isNavigation(err error) bool {
	s := err.Error()
	return strings.Contains(s, "context") || strings.Contains(s, "navigat") || strings.Contains(s, "Inspected target")
}

// fetchResult is what page fetch returns.
type fetchResult struct {
	Status  int               `json:"status"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
}

// fetch calls the site from the page, as its JavaScript would: same
// origin, the browser's cookies (the oauth2-proxy session), JSON.
func (b *browser) fetch(method, path, body string, headers map[string]string) fetchResult {
	b.tb.Helper()
	h := map[string]string{"Accept": "application/json"}
	if body != "" {
		h["Content-Type"] = "application/json"
	}
	for k, v := range headers {
		h[k] = v
	}
	hj, _ := json.Marshal(h)
	bj := "undefined"
	if body != "" {
		bj = fmt.Sprintf("%q", body)
	}
	js := fmt.Sprintf(`fetch(%q, {method: %q, headers: %s, body: %s, credentials: 'same-origin', redirect: 'manual'}).then(async r => ({
		status: r.status, body: await r.text(), headers: Object.fromEntries(r.headers.entries())}))`, path, method, hj, bj)
	var res fetchResult
	b.mustEval(js, &res)
	return res
}
