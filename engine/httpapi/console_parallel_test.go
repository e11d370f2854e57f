package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// Hostile strings a participant (or a client starting a saga) can put into
// payloads: they reach the context, the business keys and the branch
// commands' built payloads, and the console must show them as text.
const (
	xssImg    = `<img src=x onerror="window.__xss='img'">`
	xssScript = `<script>window.__xss='script'</script>`
)

// rebalCatalog is testCatalog plus engine/testdata/v2/rebal.yaml (REBAL: a
// parallel step with a fan-out of PLACE_ORDER over the plan's lines and a
// RESERVE_CASH branch, joined with policy all).
func rebalCatalog(tb testing.TB) *engine.Catalog {
	tb.Helper()
	shipped, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		tb.Fatalf("load shipped sagas: %v", problems)
	}
	extra, problems := definition.LoadDir(os.DirFS("testdata/sagas"))
	if len(problems) > 0 {
		tb.Fatalf("load testdata/sagas: %v", problems)
	}
	v2, problems := definition.LoadDir(os.DirFS("../testdata/v2"))
	if len(problems) > 0 {
		tb.Fatalf("load ../testdata/v2: %v", problems)
	}
	cat, err := engine.NewCatalog(append(append(shipped, extra...), v2...)...)
	if err != nil {
		tb.Fatalf("catalog: %v", err)
	}
	return cat
}

// rebalEvent is an event of REBAL from by, answering causation ("" for none).
func rebalEvent(sagaID, name, by, causation, payload string) engine.Message {
	m := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: "REBAL", Kind: engine.KindEvent,
		Name: name, Participant: by, CausationID: causation, OccurredAt: time.Now().UTC()}
	if payload != "" {
		m.Payload = json.RawMessage(payload)
	}
	return m
}

// hostilePlan is a REBALANCE_REQUESTED payload whose portfolio id (also the
// saga's business key) and first line's isin are markup.
func hostilePlan(tb testing.TB) string {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"plan": map[string]any{
		"portfolio_id": xssImg, "cash_needed": 250.5,
		"lines": []map[string]any{{"isin": xssScript, "qty": 3}, {"isin": "FR2", "qty": 1}},
	}})
	if err != nil {
		tb.Fatalf("encode plan: %v", err)
	}
	return string(b)
}

// parallelSagas are the REBAL sagas tradingSagas made.
type parallelSagas struct {
	waiting, failed string
}

// tradingSagas brings two REBAL sagas with hostile plans into their
// parallel step (TRADING): waiting has its first order placed and waits
// for the others; failed had its cash refused (CASH_SHORT), so the join
// raised else and the saga compensates both orders together.
func (e *env) tradingSagas(tb testing.TB) parallelSagas {
	tb.Helper()
	s := parallelSagas{waiting: uuid.NewString(), failed: uuid.NewString()}
	for _, id := range []string{s.waiting, s.failed} {
		e.handle(tb, rebalEvent(id, "REBALANCE_REQUESTED", "advisor", "", hostilePlan(tb)))
		e.handle(tb, rebalEvent(id, "RISK_CHECKED", "profile", "", `{"risk":{"score":10}}`))
		br := e.branches(tb, id)
		e.handle(tb, rebalEvent(id, "ORDER_PLACED", "deals", br["1[0]"].ID, `{"orders":["o-1"]}`))
	}
	e.handle(tb, rebalEvent(s.failed, "CASH_SHORT", "profile", e.branches(tb, s.failed)["2"].ID, `{}`))
	return s
}

// branches returns saga id's join commands by label.
func (e *env) branches(tb testing.TB, id string) map[string]engine.BranchCommand {
	tb.Helper()
	in, err := e.store.GetInstance(context.Background(), id)
	if err != nil {
		tb.Fatalf("read saga %s: %v", id, err)
	}
	if in.Join == nil {
		tb.Fatalf("saga %s has no join (state %s %s)", id, in.State, in.Status)
	}
	out := map[string]engine.BranchCommand{}
	for _, c := range in.Join.Commands {
		out[c.Label()] = c
	}
	return out
}

// TestSagaDetailShowsJoin reads a saga in a parallel step over the API:
// the join with each branch command, the branch labels on the timeline's
// commands and the undo entries' group and branch, every response checked
// against the OpenAPI spec (e.do), hostile payload strings returned as
// they were sent.
func TestSagaDetailShowsJoin(t *testing.T) {
	e := newEnv(t, "", envOptions{catalog: rebalCatalog(t)})
	s := e.tradingSagas(t)

	d := decode[httpapi.SagaDetail](t, e.do(t, http.MethodGet, "/api/v1/sagas/"+s.waiting, ""), http.StatusOK)
	j := d.Saga.Join
	if j == nil {
		t.Fatalf("saga %s in %s: no join in the response", s.waiting, d.Saga.State)
	}
	if j.State != "TRADING" || j.Policy != "all" || j.Need != 3 || j.Outcome != "" || j.Event != "RISK_CHECKED" {
		t.Errorf("join = state %s policy %s need %d outcome %q event %s, want TRADING all 3 waiting RISK_CHECKED", j.State, j.Policy, j.Need, j.Outcome, j.Event)
	}
	var got []string
	for _, c := range j.Commands {
		got = append(got, c.Label()+":"+c.Name+"@"+c.Participant+"="+string(c.Status))
	}
	if want := "1[0]:PLACE_ORDER@deals=ok 1[1]:PLACE_ORDER@deals=pending 2:RESERVE_CASH@profile=pending"; strings.Join(got, " ") != want {
		t.Errorf("join commands = %s, want %s", strings.Join(got, " "), want)
	}
	if p := string(j.Commands[0].Payload); !strings.Contains(p, `\u003cscript\u003e`) && !strings.Contains(p, "<script>") {
		t.Errorf("first order's payload = %s, want the hostile isin as sent", p)
	}
	// The step's entry names every branch command; the reply's entry names
	// the command it answers.
	var labels []string
	for _, h := range d.Timeline {
		var l []string
		for _, c := range h.Commands {
			l = append(l, c.Branch)
		}
		labels = append(labels, h.Event+":"+strings.Join(l, ","))
	}
	if got, want := strings.Join(labels, " "), "REBALANCE_REQUESTED: RISK_CHECKED:1[0],1[1],2 ORDER_PLACED:1[0]"; got != want {
		t.Errorf("timeline branch labels = %s, want %s", got, want)
	}

	f := decode[httpapi.SagaDetail](t, e.do(t, http.MethodGet, "/api/v1/sagas/"+s.failed, ""), http.StatusOK)
	if f.Saga.Join == nil || f.Saga.Join.Outcome != engine.JoinResultFailed {
		t.Fatalf("failed saga's join = %+v, want outcome failed", f.Saga.Join)
	}
	var undo []string
	for _, u := range f.Saga.Undo {
		if u.Group != f.Saga.Join.Cause {
			t.Errorf("undo %s of branch %s: group %q, want the join's cause %q", u.Command, u.Branch, u.Group, f.Saga.Join.Cause)
		}
		undo = append(undo, u.Branch+":"+u.Command+"="+string(u.Status))
	}
	if want := "1[0]:CANCEL_ORDER=compensating 1[1]:CANCEL_ORDER=compensating 2:RELEASE_CASH=failed"; strings.Join(undo, " ") != want {
		t.Errorf("undo = %s, want %s", strings.Join(undo, " "), want)
	}
	// The list carries the join too, and must match the spec as well.
	e.do(t, http.MethodGet, "/api/v1/sagas?saga=REBAL", "")
}

// TestConsoleShowsParallelStep opens sagas in a parallel step in headless
// chromium: the "Parallel step" panel lists every branch command (label,
// participant, command, status, attempts, next re-send, deadline, payload),
// the timeline's commands carry their branch labels, the compensations
// name their branch. Attack: the plan's portfolio id (also the business
// key) and an isin are <img onerror> and <script> markup, and a join with
// markup in every field (label, command, participant, why, policy, outcome,
// payload) is rendered by the page's own joinPanel: all show as text, no
// element is created from them and no script runs.
func TestConsoleShowsParallelStep(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	e := newEnv(t, "", envOptions{catalog: rebalCatalog(t)})
	s := e.tradingSagas(t)
	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	b := newBrowser(t)

	b.step("open waiting saga",
		chromedp.Navigate(srv.URL+"/console/#/sagas/"+s.waiting),
		waitFor(`document.querySelectorAll('#branch-table tbody tr').length === 3 && document.querySelectorAll('#timeline li').length >= 2`))
	var rows []string
	b.eval(`[...document.querySelectorAll('#branch-table tbody tr')].map(r => r.dataset.branch + "|" + [...r.cells].slice(0, 5).map(c => c.innerText.replace(/\s+/g, " ").trim()).join("|"))`, &rows)
	want := []string{
		"1[0]|branch 1[0]|deals|PLACE_ORDER",
		"1[1]|branch 1[1]|deals|PLACE_ORDER",
		"2|branch 2|profile|RESERVE_CASH",
	}
	wantStatus := []string{"|ok|1", "|pending|1", "|pending|1"}
	if len(rows) != len(want) {
		t.Fatalf("branch rows = %q, want %d", rows, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(rows[i], want[i]) || !strings.HasSuffix(rows[i], wantStatus[i]) {
			t.Errorf("branch row %d = %q, want %s…%s", i, rows[i], want[i], wantStatus[i])
		}
	}
	var panel string
	b.eval(`document.getElementById('parallel-step').innerText`, &panel)
	for _, w := range []string{"Parallel step (3 commands)", "RISK_CHECKED", "TRADING", "all", "3 of 3 needed", "1 ok, 0 failed, 2 pending", "waiting for the join", "Next re-send", "Deadline", "TRADED or TRADING_FAILED"} {
		if !strings.Contains(panel, w) {
			t.Errorf("parallel step panel lacks %q:\n%s", w, panel)
		}
	}
	// Every branch command has a deadline (TRADING has a time limit);
	// RESERVE_CASH retries, so it has a next re-send.
	var deadlines, nextAt []string
	b.eval(`[...document.querySelectorAll('#branch-table tbody tr')].map(r => r.cells[6].innerText)`, &deadlines)
	b.eval(`[...document.querySelectorAll('#branch-table tbody tr')].map(r => r.cells[5].innerText)`, &nextAt)
	for i, d := range deadlines {
		if d == "none" || d == "" {
			t.Errorf("branch row %d shows no deadline", i)
		}
	}
	if len(nextAt) == 3 && (nextAt[2] == "—" || nextAt[2] == "") {
		t.Errorf("RESERVE_CASH (retry 3×1s) shows no next re-send: %q", nextAt)
	}
	// The built payload of the first order, opened: the hostile isin as text.
	var payload string
	b.eval(`(() => { const d = document.querySelector('#branch-table tbody tr details'); d.open = true; return d.querySelector('pre').textContent; })()`, &payload)
	if !strings.Contains(payload, xssScript) || !strings.Contains(payload, `"line_no": 0`) {
		t.Errorf("first order's payload shown as %q, want the built payload with the isin %s as text", payload, xssScript)
	}
	// Timeline: the step's entry names each command's branch.
	// Timeline: the step's entry names each command's branch; the reply's
	// entry says which branch command it answers.
	var timelineBranches []string
	b.eval(`[...document.querySelectorAll('#timeline .command[data-branch]')].map(c => c.dataset.verb + " " + c.dataset.branch + ":" + c.querySelector('.pill.branch').innerText)`, &timelineBranches)
	if got, want := strings.Join(timelineBranches, " "), "sent 1[0]:branch 1[0] sent 1[1]:branch 1[1] sent 2:branch 2 answers 1[0]:branch 1[0]"; got != want {
		t.Errorf("timeline branches = %q, want %q", got, want)
	}
	b.checkClean("parallel step")
	checkInert(t, b, "waiting saga")
	b.screenshot("saga-parallel")

	// The failed step: outcome failed, the else event named, both orders
	// compensated together, each compensation labelled with its branch.
	b.step("open failed saga",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sagas/`+s.failed+`"`),
		waitFor(`!!document.querySelector('#parallel-step') && document.querySelectorAll('#compensations tbody tr').length === 3 && document.querySelector('h1 .mono').innerText === "`+s.failed+`"`))
	b.eval(`document.getElementById('parallel-step').innerText`, &panel)
	for _, w := range []string{"failed: raised else", "TRADING_FAILED", "1 ok, 1 failed, 1 pending"} {
		if !strings.Contains(panel, w) {
			t.Errorf("failed step's panel lacks %q:\n%s", w, panel)
		}
	}
	var undo []string
	b.eval(`[...document.querySelectorAll('#compensations tbody tr')].map(r => r.dataset.branch + "|" + r.cells[0].innerText + "|" + r.cells[1].querySelector('.pill.branch').innerText + "|" + r.cells[2].innerText.split("\n")[0])`, &undo)
	if got, want := strings.Join(undo, "; "), "1[0]|CANCEL_ORDER → deals|branch 1[0]|compensating; 1[1]|CANCEL_ORDER → deals|branch 1[1]|compensating; 2|RELEASE_CASH → profile|branch 2|failed"; got != want {
		t.Errorf("compensations = %q, want %q", got, want)
	}
	b.checkClean("failed parallel step")
	checkInert(t, b, "failed saga")
	b.screenshot("saga-parallel-failed")

	// Every field of a join hostile: rendered by the page's joinPanel.
	hostile, err := json.Marshal(map[string]any{
		"step": 1, "event": xssImg, "cause": xssScript, "state": xssImg, "policy": xssScript, "need": 1, "outcome": xssImg,
		"commands": []map[string]any{{
			"id": xssImg, "branch": xssScript, "element": xssImg, "name": xssScript, "participant": xssImg,
			"status": xssScript, "why": xssImg, "attempts": xssScript, "next_at": xssImg, "deadline": xssScript,
			"payload": map[string]any{xssImg: xssScript},
		}},
	})
	if err != nil {
		t.Fatalf("encode hostile join: %v", err)
	}
	var text string
	b.eval(`(() => { const p = joinPanel(`+string(hostile)+`, []); p.id = "hostile-join"; p.querySelector('details').open = true; document.getElementById('main').append(p); return p.innerText; })()`, &text)
	for _, w := range []string{xssImg, xssScript} {
		if !strings.Contains(text, w) {
			t.Errorf("hostile join panel does not show %s as text:\n%s", w, text)
		}
	}
	checkInert(t, b, "hostile join")
	b.eval(`(() => { const li = timelineEntry({kind: "event", at: "x", event: "E", commands: [{id: "i", name: "`+jsString(xssImg)+`", participant: "p", attempt: 1, branch: "`+jsString(xssScript)+`"}]}); document.getElementById('main').append(li); return li.innerText; })()`, &text)
	if !strings.Contains(text, "branch "+xssScript) || !strings.Contains(text, xssImg) {
		t.Errorf("hostile timeline entry does not show the branch and command as text:\n%s", text)
	}
	checkInert(t, b, "hostile timeline entry")
}

// checkInert fails the test when the page holds an element made from the
// hostile strings (an img, or a script inside main) or one of them ran.
func checkInert(tb testing.TB, b *browser, what string) {
	tb.Helper()
	var got struct {
		XSS     string `json:"xss"`
		Imgs    int    `json:"imgs"`
		Scripts int    `json:"scripts"`
		Shown   bool   `json:"shown"`
	}
	b.eval(`({xss: String(window.__xss || ""), imgs: document.querySelectorAll('#main img, #main [onerror]').length, scripts: document.querySelectorAll('#main script').length, shown: document.getElementById('main').innerText.includes("onerror=")})`, &got)
	if got.XSS != "" || got.Imgs != 0 || got.Scripts != 0 {
		tb.Errorf("%s: hostile markup became live: window.__xss=%q, %d img/onerror elements, %d scripts in the page", what, got.XSS, got.Imgs, got.Scripts)
	}
	if !got.Shown {
		tb.Errorf("%s: the hostile strings are not shown as text at all (the check would prove nothing)", what)
	}
}

// jsString escapes s for a JavaScript double-quoted string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always encodes
	return string(b[1 : len(b)-1])
}
