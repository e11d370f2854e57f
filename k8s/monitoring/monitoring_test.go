package monitoring_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite prometheus-rules.yaml and grafana-dashboard.yaml from alerts.rules.yaml and dashboard.json")

const (
	rulesFile          = "alerts.rules.yaml"
	ruleTestsFile      = "testdata/alerts_test.yaml"
	dashboardFile      = "dashboard.json"
	rulesConfigMap     = "prometheus-rules.yaml"
	dashboardConfigMap = "grafana-dashboard.yaml"
	promtoolScript     = "../../scripts/promtool.sh"
	selectorsSource    = "../../scripts/promql"
	operationsDoc      = "../../docs/operations.md"
)

// --- the tools ----------------------------------------------------------

// tools are promtool and promql-selectors as scripts/promtool.sh builds them.
type tools struct{ promtool, selectors string }

var (
	toolsOnce    sync.Once
	toolsFound   tools
	toolsMissing string
	toolsErr     error
)

// needTools returns the tools, skipping the test with a hint when they are
// missing (failing it under CI=true).
func needTools(tb testing.TB) tools {
	tb.Helper()
	toolsOnce.Do(func() { toolsFound, toolsMissing, toolsErr = findTools() })
	if toolsErr != nil {
		tb.Fatal(toolsErr)
	}
	if toolsMissing != "" {
		if testenv.InCI() {
			tb.Fatal(toolsMissing + " [CI=true: a missing promtool fails the test]")
		}
		tb.Skip(toolsMissing)
	}
	return toolsFound
}

// findTools looks for the binaries of the version scripts/promtool.sh pins
// (or $SAGA_PROMTOOL and $SAGA_PROMQL_SELECTORS); promql-selectors must be
// built from the current scripts/promql sources.
func findTools() (tools, string, error) {
	script, err := os.ReadFile(promtoolScript)
	if err != nil {
		return tools{}, "", fmt.Errorf("read %s: %w", promtoolScript, err)
	}
	m := regexp.MustCompile(`(?m)^PROMTOOL_VERSION=(v\d+\.\d+\.\d+)$`).FindSubmatch(script)
	if m == nil {
		return tools{}, "", fmt.Errorf("%s pins no PROMTOOL_VERSION=vX.Y.Z", promtoolScript)
	}
	version := string(m[1])
	gomod, err := os.ReadFile(filepath.Join(selectorsSource, "go.mod"))
	if err != nil {
		return tools{}, "", err
	}
	if !bytes.Contains(gomod, []byte("require github.com/prometheus/prometheus "+version+"\n")) {
		return tools{}, "", fmt.Errorf("scripts/promql/go.mod does not require github.com/prometheus/prometheus %s (PROMTOOL_VERSION)", version)
	}
	bin := filepath.Join(runDir(), "promtool", version, "bin")
	t := tools{promtool: filepath.Join(bin, "promtool"), selectors: filepath.Join(bin, "promql-selectors")}
	hint := "; scripts/promtool.sh builds it (make test runs it)"
	if p := os.Getenv("SAGA_PROMTOOL"); p != "" {
		t.promtool = p
	} else if out, err := exec.Command("go", "version", "-m", t.promtool).Output(); err != nil ||
		!regexp.MustCompile(`(?m)^\s+mod\s+github.com/prometheus/prometheus\s+`+regexp.QuoteMeta(version)+`\s`).Match(out) {
		return t, fmt.Sprintf("promtool %s not found at %s (go version -m: %v)%s", version, t.promtool, err, hint), nil
	}
	if p := os.Getenv("SAGA_PROMQL_SELECTORS"); p != "" {
		t.selectors = p
	} else {
		stamp, err := os.ReadFile(t.selectors + ".sources")
		want, serr := sourcesStamp()
		if serr != nil {
			return t, "", serr
		}
		if err != nil || strings.TrimSpace(string(stamp)) != want {
			return t, fmt.Sprintf("promql-selectors of the current scripts/promql sources not found at %s%s", t.selectors, hint), nil
		}
	}
	return t, "", nil
}

// sourcesStamp is scripts/promtool.sh's ps_stamp: the SHA-256 of go.mod,
// go.sum and the *.go files (in glob order) of scripts/promql.
func sourcesStamp() (string, error) {
	goFiles, err := filepath.Glob(filepath.Join(selectorsSource, "*.go"))
	if err != nil {
		return "", err
	}
	sort.Strings(goFiles)
	h := sha256.New()
	for _, f := range append([]string{filepath.Join(selectorsSource, "go.mod"), filepath.Join(selectorsSource, "go.sum")}, goFiles...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runDir is scripts/lib.sh's $SAGA_RUN_DIR.
func runDir() string {
	if d := os.Getenv("SAGA_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 || os.Getenv("HOME") == "" {
		return "/var/tmp/saga-machine"
	}
	return filepath.Join(os.Getenv("HOME"), ".cache", "saga-machine")
}

func promtool(t *testing.T, tl tools, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(tl.promtool, args...).CombinedOutput()
	return string(out), err
}

// --- the rules ------------------------------------------------------------

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T, path string) []rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no rules", path)
	}
	return out
}

// TestPromtoolCheckRules: promtool accepts the rule file (syntax, PromQL,
// templates, duplicate names).
func TestPromtoolCheckRules(t *testing.T) {
	tl := needTools(t)
	if out, err := promtool(t, tl, "check", "rules", rulesFile); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
}

// TestPromtoolRuleTests: promtool's unit tests of the rules pass.
func TestPromtoolRuleTests(t *testing.T) {
	tl := needTools(t)
	if out, err := promtool(t, tl, "test", "rules", ruleTestsFile); err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", ruleTestsFile, err, out)
	}
}

// TestPromtoolCatchesBrokenRules: the checks above can fail. A threshold
// moved makes the rule tests fail; a PromQL syntax error makes check fail.
func TestPromtoolCatchesBrokenRules(t *testing.T) {
	tl := needTools(t)
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to, cmd string
	}{
		{"stuck threshold moved", "{status=\"running\"}) > 900", "{status=\"running\"}) > 2000", "test"},
		{"a lag aggregation dropped", "sum by (group) (max by (group, topic, partition) (saga_kafka_consumer_lag)) > 1000", "max by (group) (saga_kafka_consumer_lag) > 1000", "test"},
		{"syntax error", "max(saga_machine_outbox_backlog) > 1000", "max(saga_machine_outbox_backlog > 1000", "check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(rules, []byte(tc.from)) {
				t.Fatalf("%s has no %q to break", rulesFile, tc.from)
			}
			dir := t.TempDir()
			broken := filepath.Join(dir, "alerts.rules.yaml")
			if err := os.WriteFile(broken, bytes.Replace(rules, []byte(tc.from), []byte(tc.to), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			testFile := filepath.Join(dir, "testdata", "alerts_test.yaml")
			if err := os.MkdirAll(filepath.Dir(testFile), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(testFile, tests, 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"test", "rules", testFile}
			if tc.cmd == "check" {
				args = []string{"check", "rules", broken}
			}
			if out, err := promtool(t, tl, args...); err == nil {
				t.Errorf("promtool %s on broken rules (%s): passed, want a failure\n%s", tc.cmd, tc.name, out)
			}
		})
	}
}

// TestRulesAreDocumentedAndTested: every alert has a severity, a summary,
// a description and a runbook that is a section of docs/operations.md, and
// a promtool test that expects it to fire.
func TestRulesAreDocumentedAndTested(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{2,6} (.+)$`).FindAllSubmatch(doc, -1) {
		headings[githubAnchor(string(m[1]))] = true
	}
	b, err := os.ReadFile(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Alerts []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{"../" + rulesFile}) {
		t.Errorf("%s tests %v, want [../%s]", ruleTestsFile, tests.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.Alerts {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				quiet[a.AlertName] = true
			}
		}
	}
	names := map[string]bool{}
	for _, r := range readRules(t, rulesFile) {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		names[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, k)
			}
		}
		want := "docs/operations.md#" + strings.ToLower(r.Alert)
		if r.Annotations["runbook"] != want {
			t.Errorf("%s: runbook %q, want %q", r.Alert, r.Annotations["runbook"], want)
		}
		if !headings[strings.ToLower(r.Alert)] {
			t.Errorf("%s: docs/operations.md has no section %q (its runbook)", r.Alert, r.Alert)
		}
	}
	for n := range names {
		if !fires[n] {
			t.Errorf("%s: no promtool test expects it to fire (%s)", n, ruleTestsFile)
		}
		if !quiet[n] && n != "ParticipantAbsent" && n != "SagaMachineAbsent" {
			// absent() alerts are checked quiet in the databases-down test.
			t.Logf("%s: no promtool test expects it to stay quiet", n)
		}
	}
	for n := range fires {
		if !names[n] {
			t.Errorf("%s tests an alert %q that %s does not define", ruleTestsFile, n, rulesFile)
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// --- the dashboard ----------------------------------------------------------

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("parse %s: %v", dashboardFile, err)
	}
	return d
}

// TestDashboardLayout: the dashboard has a uid, every panel a unique id
// and a place inside the 24-column grid that no other panel takes, and
// every graph queries the dashboard's Prometheus data source.
func TestDashboardLayout(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: want both", d.UID, d.Title)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	graphs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("%q overlaps %q at (%d,%d)", p.Title, other, x, y)
				}
				taken[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("%q: data source %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%q %s: empty query", p.Title, tg.RefID)
			}
		}
	}
	if graphs < 10 {
		t.Errorf("%d graphs, want the dashboard's panels", graphs)
	}
}

// --- the ConfigMaps ----------------------------------------------------------

// configMap renders the ConfigMap that carries file under key.
func configMap(name, comment, key string, labels map[string]string, data []byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# GENERATED by `go test ./k8s/monitoring -update` from %s: do not edit.\n", comment)
	lab := map[string]string{"app.kubernetes.io/part-of": "saga-machine"}
	for k, v := range labels {
		lab[k] = v
	}
	node := &yaml.Node{Kind: yaml.MappingNode}
	add := func(m *yaml.Node, k string, v *yaml.Node) {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, v)
	}
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }
	add(node, "apiVersion", str("v1"))
	add(node, "kind", str("ConfigMap"))
	meta := &yaml.Node{Kind: yaml.MappingNode}
	add(meta, "name", str(name))
	add(meta, "namespace", str("default"))
	labs := &yaml.Node{Kind: yaml.MappingNode}
	keys := make([]string, 0, len(lab))
	for k := range lab {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(labs, k, &yaml.Node{Kind: yaml.ScalarNode, Value: lab[k], Style: yaml.DoubleQuotedStyle})
	}
	add(meta, "labels", labs)
	add(node, "metadata", meta)
	d := &yaml.Node{Kind: yaml.MappingNode}
	add(d, key, &yaml.Node{Kind: yaml.ScalarNode, Value: string(data), Style: yaml.LiteralStyle})
	add(node, "data", d)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(node); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// TestConfigMaps: the ConfigMaps carry alerts.rules.yaml and
// dashboard.json byte for byte (-update rewrites them).
func TestConfigMaps(t *testing.T) {
	for _, tc := range []struct {
		file, src, name, key string
		labels               map[string]string
	}{
		{rulesConfigMap, rulesFile, "saga-machine-alerts", "saga-machine.rules.yaml", nil},
		{dashboardConfigMap, dashboardFile, "saga-machine-dashboard", "saga-machine.json", map[string]string{"grafana_dashboard": "1"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			src, err := os.ReadFile(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			want, err := configMap(tc.name, tc.src, tc.key, tc.labels, src)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(tc.file, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s does not carry %s as it is: run go test ./k8s/monitoring -update", tc.file, tc.src)
			}
			// And reading it back gives the file's bytes.
			var cm struct {
				Data map[string]string `yaml:"data"`
			}
			if err := yaml.Unmarshal(got, &cm); err != nil {
				t.Fatal(err)
			}
			if cm.Data[tc.key] != string(src) {
				t.Errorf("%s: data[%s] read back differs from %s", tc.file, tc.key, tc.src)
			}
		})
	}
}
