package monitoring_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// shortBudget is the shipped definitions with MANUAL_CREATE_ORDER v3's
// APPROVE_ORDER retry budget cut to 2 sends 200ms apart, so that a saga
// whose profile is down fails (and compensates) within the test.
func shortBudget(t *testing.T) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	files, err := fs.Glob(sagas.FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := fs.ReadFile(sagas.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		if f == "manual_create_order.yaml" {
			const shipped = "retry: { attempts: 5, backoff: 2s, max_backoff: 1m, exhausted: PROFILE_UNAVAILABLE }"
			if !bytes.Contains(b, []byte(shipped)) {
				t.Fatalf("%s has no %q to shorten", f, shipped)
			}
			b = bytes.Replace(b, []byte(shipped), []byte("retry: { attempts: 2, backoff: 200ms, exhausted: PROFILE_UNAVAILABLE }"), 1)
		}
		out[f] = &fstest.MapFile{Data: b}
	}
	return out
}

// waitFor polls cond until it holds; ctx bounds the wait.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting until %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// exported are the metric names of one scrape: a histogram's family name
// gives its _bucket, _sum and _count series, a summary's its own, _sum
// and _count.
type exported map[string]string // series name -> the process that exports it

var typeLine = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$`)

// scrape reads url's /metrics and adds its series names to into.
func scrape(ctx context.Context, t *testing.T, process, url string, into exported) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", process, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", process, resp.StatusCode, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	families := map[string]string{}
	samples := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		if m := typeLine.FindStringSubmatch(line); m != nil {
			families[m[1]] = m[2]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		samples[name] = true
	}
	for fam, typ := range families {
		names := []string{fam}
		switch typ {
		case "histogram":
			names = []string{fam + "_bucket", fam + "_sum", fam + "_count"}
		case "summary":
			names = []string{fam, fam + "_sum", fam + "_count"}
		}
		for _, n := range names {
			if !samples[n] {
				t.Errorf("scrape %s: family %s (%s) without samples of %s", process, fam, typ, n)
			}
			if _, ok := into[n]; !ok {
				into[n] = process
			}
		}
	}
	return string(body)
}

// grafanaVars replaces the dashboard's variables by what Grafana sends.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$saga", ".*", "${saga}", ".*")

// queries returns every PromQL expression of the rules and the dashboard,
// by where it comes from, and the metrics the dashboard's variables read.
func queries(t *testing.T) (exprs map[string]string, varMetrics map[string]string) {
	t.Helper()
	exprs, varMetrics = map[string]string{}, map[string]string{}
	for _, r := range readRules(t, rulesFile) {
		exprs["alert "+r.Alert+" "+r.Expr] = r.Expr
	}
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			e := grafanaVars.Replace(tg.Expr)
			if strings.Contains(e, "$") {
				t.Errorf("panel %q %s: unknown variable in %q", p.Title, tg.RefID, tg.Expr)
			}
			exprs[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = e
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, v.Definition)
			continue
		}
		varMetrics["variable "+v.Name] = m[1]
	}
	return exprs, varMetrics
}

// selected runs promql-selectors on the expressions: the metric names
// each selects, or its parse error.
func selected(t *testing.T, tl tools, exprs map[string]string) map[string][]string {
	t.Helper()
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	in := make([]string, len(keys))
	for i, k := range keys {
		in[i] = exprs[k]
	}
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tl.selectors)
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promql-selectors: %v", err)
	}
	var res []struct {
		Expr    string   `json:"expr"`
		Metrics []string `json:"metrics"`
		Error   string   `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(keys) {
		t.Fatalf("promql-selectors answered %d results for %d queries: %v", len(res), len(keys), err)
	}
	names := map[string][]string{}
	for i, r := range res {
		if r.Expr != in[i] {
			t.Fatalf("promql-selectors answered out of order")
		}
		if r.Error != "" {
			t.Errorf("%s: PromQL does not parse: %s\n%s", keys[i], r.Error, r.Expr)
			continue
		}
		if len(r.Metrics) == 0 && !strings.HasPrefix(keys[i], "alert SagaMachineAbsent") {
			t.Errorf("%s: selects no metric: %s", keys[i], r.Expr)
		}
		names[keys[i]] = r.Metrics
	}
	return names
}

// TestPromQLParserCatches: the parser step can fail: a syntax error, a
// selector without a name, and a name nobody exports are reported.
func TestPromQLParserCatches(t *testing.T) {
	tl := needTools(t)
	in := map[string]string{"good": "sum by (saga) (rate(saga_machine_sagas_started_total[5m]))"}
	got := selected(t, tl, in)
	if !slices.Equal(got["good"], []string{"saga_machine_sagas_started_total"}) {
		t.Errorf("good query: got %v", got["good"])
	}
	body, _ := json.Marshal([]string{"sum(rate(x[5m])", `{__name__=~"saga_.*"}`})
	cmd := exec.Command(tl.selectors)
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var res []struct{ Error string }
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 2 || res[0].Error == "" || res[1].Error == "" {
		t.Errorf("a syntax error and a nameless selector: got %s, want two errors", out)
	}
}

// TestQueriesUseExportedMetrics runs the system (SQLite, the embedded
// broker) twice and drives sagas through every path the rules and the
// dashboard watch: a saga whose profile is down fails, compensates and,
// once profile is back, gets COMMAND_EXPIRED (first run) or a late
// approval that is compensated (second run, profile's clock an hour
// behind); an event saga-machine refuses and bytes that are no envelope; a
// malformed command deals parks; notification down, so its group lags;
// then a saga that completes. It scrapes /metrics of saga-machine and of
// each participant meanwhile and checks that every metric each alert rule
// and dashboard query names (parsed with Prometheus' PromQL parser) is
// among the exported series.
func TestQueriesUseExportedMetrics(t *testing.T) {
	tl := needTools(t)
	got := exported{}
	t.Run("expired", func(t *testing.T) { runScenario(t, 0, got) })
	t.Run("late", func(t *testing.T) { runScenario(t, time.Hour, got) })
	if t.Failed() {
		return
	}
	exprs, varMetrics := queries(t)
	for where, names := range selected(t, tl, exprs) {
		for _, n := range names {
			if _, ok := got[n]; !ok {
				t.Errorf("%s names %s, which no binary exported in the scrapes", where, n)
			}
		}
	}
	for where, n := range varMetrics {
		if _, ok := got[n]; !ok {
			t.Errorf("%s reads %s, which no binary exported in the scrapes", where, n)
		}
	}
	if t.Failed() {
		var all []string
		for n, p := range got {
			all = append(all, p+": "+n)
		}
		sort.Strings(all)
		t.Logf("exported:\n%s", strings.Join(all, "\n"))
	}
}

// runScenario runs the system once (profile's clock behind by behind) and
// adds what its processes export to got.
func runScenario(t *testing.T, behind time.Duration, got exported) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := system.Config{
		DataDir: t.TempDir(), EphemeralPorts: true, Sagas: shortBudget(t),
		Paused: []string{system.Profile, system.Notification},
	}
	if behind != 0 {
		cfg.Participant = func(name string, c *sdk.Config) {
			if name == system.Profile {
				c.Now = func() time.Time { return time.Now().Add(-behind) }
			}
		}
	}
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	c, err := sys.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx); err != nil {
		t.Fatalf("login: %v", err)
	}
	pf, err := c.CreatePortfolio(ctx, "Main", "USD")
	if err != nil {
		t.Fatalf("create portfolio: %v", err)
	}
	if _, _, err := sys.Fund(ctx, pf.ID, "1000.00", "USD", "funding", "fund-"+pf.ID); err != nil {
		t.Fatalf("fund: %v", err)
	}
	buy := system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "1", Price: "10.00", Currency: "USD"}

	// profile is down: the saga's APPROVE_ORDER is re-sent, runs out, the
	// saga fails and waits, compensating, for profile's REVERT_ORDER.
	failing, _, err := c.CreateDeal(ctx, buy, "")
	if err != nil {
		t.Fatalf("POST /deals: %v", err)
	}
	waitFor(ctx, t, "the saga fails and compensates", func() (bool, error) {
		inst, err := sys.SagaMachine.Store.GetInstance(ctx, failing.SagaID)
		return err == nil && inst.State == "FAILED" && inst.Status == engine.StatusCompensating, nil
	})

	// An event saga-machine refuses (no such saga) and bytes that are no
	// envelope, on deals' event topic; a malformed command for deals.
	prod, err := kafka.NewProducer(kafka.Config{Brokers: sys.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	unknown := engine.Message{V: 1, ID: "evt-unknown-saga", SagaID: "no-such-saga", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
		Kind: engine.KindEvent, Name: "DEAL_APPROVED", Participant: "deals", OccurredAt: time.Now().UTC(), Payload: json.RawMessage(`{}`)}
	raw, err := json.Marshal(unknown)
	if err != nil {
		t.Fatal(err)
	}
	dealsEvents := engine.EventTopic(sys.Topics.Events, system.Deals)
	if err := prod.Publish(ctx, []kafka.Record{
		{Topic: dealsEvents, Key: unknown.SagaID, Value: raw},
		{Topic: dealsEvents, Key: "x", Value: []byte("not an envelope")},
		{Topic: sys.Topics.Deals, Key: "x", Value: []byte("{")},
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	waitFor(ctx, t, "saga-machine and deals park what they cannot read", func() (bool, error) {
		dls, err := sys.SagaMachine.Store.DeadLetters(ctx, 10, true)
		if err != nil || len(dls) < 2 {
			return false, err
		}
		st, err := sys.Deals.Participant.Stats(ctx)
		return st.DeadLettersParked > 0, err
	})

	urls := map[string]string{"saga-machine": sys.URLs.SagaMachine, "deals": sys.URLs.Deals, "profile": sys.URLs.Profile, "notification": sys.URLs.Notification}
	scrapeAll := func() map[string]string {
		bodies := map[string]string{}
		for _, p := range []string{"saga-machine", "deals", "profile", "notification"} {
			bodies[p] = scrape(ctx, t, p, urls[p], got)
		}
		return bodies
	}
	// While profile and notification are down: a saga under way (its age),
	// their groups lagging, the parked command counted.
	first := scrapeAll()
	if !regexp.MustCompile(`(?m)^saga_machine_instances_oldest_age_seconds\{saga="MANUAL_CREATE_ORDER",state="FAILED",status="compensating",version="4"\} `).MatchString(first["saga-machine"]) {
		t.Errorf("saga-machine: no age of the compensating saga:\n%s", grepLines(first["saga-machine"], "oldest_age"))
	}
	if !regexp.MustCompile(`(?m)^saga_kafka_consumer_lag\{group="profile",partition="\d",topic="` + sys.Topics.Profile + `"\} [1-9]`).MatchString(first["profile"]) {
		t.Errorf("profile: its commands wait, but no lag above 0:\n%s", grepLines(first["profile"], "saga_kafka"))
	}
	if !strings.Contains(first["deals"], `saga_participant_dead_letters{participant="deals",state="parked"} 1`) {
		t.Errorf("deals: the parked command is not counted:\n%s", grepLines(first["deals"], "saga_participant"))
	}

	// profile comes back: it refuses the expired APPROVE_ORDER
	// (COMMAND_EXPIRED) or, its clock behind, applies it late (a late
	// reply, compensated); REVERT_ORDER is done; the saga has failed. A
	// second saga completes.
	if err := sys.Resume(system.Profile); err != nil {
		t.Fatal(err)
	}
	if inst, err := sys.WaitFinal(ctx, failing.SagaID); err != nil || inst.Status != engine.StatusFailed {
		t.Fatalf("the failing saga: %+v %v, want failed", inst.Status, err)
	}
	ok, _, err := c.CreateDeal(ctx, buy, "")
	if err != nil {
		t.Fatalf("POST /deals: %v", err)
	}
	if inst, err := sys.WaitFinal(ctx, ok.SagaID); err != nil || inst.Status != engine.StatusCompleted {
		t.Fatalf("the second saga: %+v %v, want completed", inst.Status, err)
	}
	counted := "saga_machine_commands_expired_total{"
	if behind != 0 {
		counted = "saga_machine_late_replies_total{"
	}
	waitFor(ctx, t, "saga-machine counts "+counted, func() (bool, error) {
		return strings.Contains(scrape(ctx, t, "saga-machine", sys.URLs.SagaMachine, exported{}), counted), nil
	})
	scrapeAll()
}

func grepLines(body, substr string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
