package definition_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.want from the current output")

// badFiles lists the corpus of invalid definitions.
func badFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil {
		tb.Fatalf("listing bad files: %v", err)
	}
	if len(files) == 0 {
		tb.Fatal("no files in testdata/bad")
	}
	return files
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("reading %s: %v", path, err)
	}
	return data
}

// parseFile parses a test definition the way LoadDir does: schema files
// are read from the file's directory.
func parseFile(tb testing.TB, file string) (*definition.Definition, definition.Problems) {
	tb.Helper()
	return definition.ParseWith(file, readFile(tb, file), definition.Options{Files: os.DirFS(filepath.Dir(file))})
}

// golden formats problems as the .want files hold them.
func golden(ps definition.Problems) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%d:%d: %s: %s\n", p.Line, p.Col, p.Rule, p.Message)
	}
	return b.String()
}

func TestBadFiles(t *testing.T) {
	for _, file := range badFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			def, problems := parseFile(t, file)
			if def != nil {
				t.Errorf("Parse returned a definition for a bad file")
			}
			if len(problems) == 0 {
				t.Fatalf("Parse found no problem in a bad file")
			}
			for _, p := range problems {
				if p.File != file {
					t.Errorf("problem %q: got file %q, want %q", p, p.File, file)
				}
			}
			got := golden(problems)
			wantFile := strings.TrimSuffix(file, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(wantFile, []byte(got), 0o644); err != nil {
					t.Fatalf("updating %s: %v", wantFile, err)
				}
				return
			}
			want := string(readFile(t, wantFile))
			if got != want {
				t.Errorf("problems of %s differ from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", file, wantFile, got, want)
			}
		})
	}
}

// TestEveryRuleHasABadFile keeps the corpus honest: each rule that one file
// can break has at least one bad file that breaks it.
func TestEveryRuleHasABadFile(t *testing.T) {
	seen := map[string]bool{}
	for _, file := range badFiles(t) {
		_, problems := parseFile(t, file)
		for _, p := range problems {
			seen[p.Rule] = true
		}
	}
	for _, rule := range []string{
		"empty-file", "yaml-syntax", "multiple-documents", "unsupported-yaml", "wrong-type",
		"unknown-key", "duplicate-key", "missing-key", "duplicate-entry", "bad-name",
		"bad-version", "bad-topic", "duplicate-topic", "bad-key-path", "bad-duration",
		"timeout-range", "retry-range", "reserved-participant", "undeclared-participant",
		"unused-participant", "send-to-engine", "no-start", "engine-start", "nondeterministic",
		"unreachable-state", "dead-end", "cannot-finish", "final-has-exit", "final-and-failed",
		"no-final", "unused-state", "terminal-timeout", "unhandled-event", "never-raised",
		"retry-to-terminal", "send-to-api", "api-not-start", "api-without-roles", "roles-without-api",
		"alias-cycle", "alias-too-big", "too-many-keys", "too-many-problems",
		"compensate-exhausted", "compensate-to-reserved", "compensate-by-reserved", "compensate-same-command",
		"compensate-never-runs", "compensate-without-failed", "done-is-event", "done-reused", "reserved-event",
		"bad-expression", "decision-without-default", "decision-by-differs", "duplicate-condition",
		"join-without-branches", "branches-without-join", "branch-only", "branch-exhausted", "join-policy",
		"branch-reply-ambiguous", "branch-reply-is-event", "join-state-shared", "parallel-to-terminal",
		"bad-schema", "schema-file", "contract-unknown-event", "contract-engine-event", "writes-shared",
		"abort-not-failed", "effects",
	} {
		if !seen[rule] {
			t.Errorf("rule %s: no file in testdata/bad breaks it", rule)
		}
	}
}

func TestShippedSagasAreValid(t *testing.T) {
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		t.Fatalf("shipped sagas have problems:\n%v", problems)
	}
	if len(defs) == 0 {
		t.Fatal("got no definitions from sagas.FS")
	}
}

// TestManualCreateOrder reads the shipped MANUAL_CREATE_ORDER files kept
// for the sagas started on them: version 2 (manual_create_order.v2.yaml)
// with its compensations and NOTIFY on failure, and version 1
// (manual_create_order.v1.yaml) without. Version 3 (manual_create_order.yaml,
// version 2 with the client's cancellation) is checked in engine and sagas.
func TestManualCreateOrder(t *testing.T) {
	type comp struct{ command, done string }
	tests := []struct {
		file    string
		version int
		// compensations, by the command or event they undo ("" = none)
		undo map[string]comp
		// command of the transitions into FAILED ("" = none)
		onFailure string
	}{
		{"manual_create_order.v1.yaml", 1, map[string]comp{}, ""},
		{"manual_create_order.v2.yaml", 2, map[string]comp{
			"REGISTER":      {"FAIL_DEAL", "DEAL_FAILED"},
			"APPROVE_ORDER": {"REVERT_ORDER", "ORDER_REVERTED"},
			"APPROVE_DEAL":  {"FAIL_DEAL", "DEAL_FAILED"},
			"REJECT_DEAL":   {"FAIL_DEAL", "DEAL_FAILED"},
		}, "NOTIFY"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data := readFile(t, filepath.Join("..", "..", "sagas", tt.file))
			def, problems := definition.Parse(tt.file, data)
			if len(problems) > 0 {
				t.Fatalf("Parse: %v", problems)
			}
			checkManualCreateOrder(t, def, data, tt.version)
			got := map[string]comp{}
			failures := 0
			for _, tr := range def.Transitions {
				if c := tr.Compensate; c != nil {
					got[tr.On.Value] = comp{c.Command.Value, c.Done.Value}
					checkCompensation(t, tr.On.Value, c, tr.By.Value)
				}
				if tr.Send != nil && tr.Send.Compensate != nil {
					c := tr.Send.Compensate
					got[tr.Send.Command.Value] = comp{c.Command.Value, c.Done.Value}
					checkCompensation(t, tr.Send.Command.Value, c, tr.Send.To.Value)
				}
				if tr.To.Value != "FAILED" {
					continue
				}
				failures++
				switch {
				case tt.onFailure == "" && tr.Send != nil:
					t.Errorf("%s into FAILED sends %s, want nothing", tr.On.Value, tr.Send.Command.Value)
				case tt.onFailure != "" && (tr.Send == nil || tr.Send.Command.Value != tt.onFailure || tr.Send.To.Value != "notification" || tr.Send.Retry != nil):
					t.Errorf("%s into FAILED sends %+v, want %s to notification, sent once", tr.On.Value, tr.Send, tt.onFailure)
				}
			}
			if failures != 3 {
				t.Errorf("transitions into FAILED: got %d, want 3", failures)
			}
			if len(got) != len(tt.undo) {
				t.Errorf("compensations: got %v, want %v", got, tt.undo)
			}
			for of, want := range tt.undo {
				if got[of] != want {
					t.Errorf("compensation of %s: got %+v, want %+v", of, got[of], want)
				}
			}
		})
	}
}

// checkCompensation checks what every compensation of MANUAL_CREATE_ORDER v2
// shares: sent to the participant that had the effect, 20 sends waiting 1s
// doubling to 1m, and no exhausted event (a compensation never gives up).
func checkCompensation(tb testing.TB, of string, c *definition.Compensation, to string) {
	tb.Helper()
	if c.To.Value != to {
		tb.Errorf("compensation of %s goes to %q, want %s", of, c.To.Value, to)
	}
	if r := c.Retry; r == nil || r.Attempts != 20 || r.Backoff != time.Second || r.MaxBackoff != time.Minute || r.Exhausted.Value != "" {
		tb.Errorf("compensation of %s retry: got %+v, want 20 sends, 1s..1m, no exhausted", of, r)
	}
}

// checkManualCreateOrder checks what both versions of MANUAL_CREATE_ORDER
// share: the seed's transitions, topics, keys, DRAFT's time limit, the
// first retry and the terminal states.
func checkManualCreateOrder(t *testing.T, def *definition.Definition, data []byte, version int) {
	t.Helper()
	if got, want := def.Saga, "MANUAL_CREATE_ORDER"; got != want {
		t.Errorf("Saga: got %q, want %q", got, want)
	}
	if got, want := def.Version, version; got != want {
		t.Errorf("Version: got %d, want %d", got, want)
	}
	if got, want := len(def.Transitions), 7; got != want {
		t.Fatalf("transitions: got %d, want %d", got, want)
	}
	if got, want := def.Participants["profile"].Topic, "PROFILE_TOPIC"; got != want {
		t.Errorf("profile topic: got %q, want %q", got, want)
	}
	if got, want := def.Keys["deal_id"].Path, "deal_context.deal_id"; got != want {
		t.Errorf("deal_id path: got %q, want %q", got, want)
	}
	draft := def.States["DRAFT"]
	if draft == nil || draft.Timeout == nil {
		t.Fatalf("DRAFT: got %+v, want a state with a timeout", draft)
	}
	if got, want := draft.Timeout.After, 10*time.Minute; got != want {
		t.Errorf("DRAFT timeout: got %v, want %v", got, want)
	}
	if got, want := draft.Timeout.Event.Value, "APPROVAL_TIMED_OUT"; got != want {
		t.Errorf("DRAFT timeout event: got %q, want %q", got, want)
	}
	start := def.Transitions[0]
	if !start.Starts() {
		t.Errorf("first transition: got from %v, want a starting transition", start.From)
	}
	if start.Send == nil || start.Send.Retry == nil {
		t.Fatalf("first transition: got send %+v, want a send with retry", start.Send)
	}
	r := start.Send.Retry
	if r.Attempts != 5 || r.Backoff != 2*time.Second || r.MaxBackoff != time.Minute || r.Exhausted.Value != "PROFILE_UNAVAILABLE" {
		t.Errorf("first retry: got %+v, want 5 attempts, 2s backoff, 1m max, PROFILE_UNAVAILABLE", r)
	}
	// The position of REGISTER is where "- on: REGISTER" stands in the file.
	wantLine := 1 + strings.Count(string(data[:strings.Index(string(data), "- on: REGISTER")]), "\n")
	if got, want := start.On.Pos, (definition.Pos{Line: wantLine, Col: 9}); got != want {
		t.Errorf("REGISTER position: got %v, want %v", got, want)
	}
	var finals, faileds []string
	for _, n := range def.Final {
		finals = append(finals, n.Value)
	}
	for _, n := range def.Failed {
		faileds = append(faileds, n.Value)
	}
	if got, want := strings.Join(finals, ","), "NOTIFICATION"; got != want {
		t.Errorf("final: got %s, want %s", got, want)
	}
	if got, want := strings.Join(faileds, ","), "FAILED"; got != want {
		t.Errorf("failed: got %s, want %s", got, want)
	}
}

const small = `saga: PAY_ORDER
version: 2
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - on: ORDER_PLACED
    by: shop
    from: []
    to: PAYING
    send: { to: bank, command: CHARGE, retry: { attempts: 3, backoff: 2s, exhausted: BANK_DOWN } }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
  - { on: BANK_DOWN, by: engine, from: [PAYING], to: CANCELLED }
final: [PAID]
failed: [CANCELLED]
`

// apiStart is small with a second start that callers of the HTTP API with
// role shop-clerk or shop-admin may fire.
const apiStart = `saga: PAY_ORDER
version: 2
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
transitions:
  - { on: ORDER_PLACED, by: shop, from: [], to: PAYING, send: { to: bank, command: CHARGE } }
  - on: PHONE_ORDER_TAKEN
    by: api
    roles: [shop-clerk, shop-admin]
    from: []
    to: PAYING
    send: { to: bank, command: CHARGE }
  - { on: CHARGED, by: bank, from: [PAYING], to: PAID }
final: [PAID]
`

func TestParseAPIStart(t *testing.T) {
	def, problems := definition.Parse("api.yaml", []byte(apiStart))
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems)
	}
	tr := def.Transitions[1]
	if got, want := tr.By.Value, definition.API; got != want {
		t.Errorf("by: got %q, want %q", got, want)
	}
	var roles []string
	for _, r := range tr.Roles {
		roles = append(roles, r.Value)
	}
	if got, want := strings.Join(roles, ","), "shop-clerk,shop-admin"; got != want {
		t.Errorf("roles: got %s, want %s", got, want)
	}
	if got, want := tr.Roles[0].Pos, (definition.Pos{Line: 10, Col: 13}); got != want {
		t.Errorf("first role position: got %v, want %v", got, want)
	}
	if def.Transitions[0].Roles != nil {
		t.Errorf("roles of a participant's start: got %v, want nil", def.Transitions[0].Roles)
	}
	if _, ok := def.Participants[definition.API]; ok {
		t.Errorf("api is listed among the participants")
	}
}

func TestParseFillsDefaultsAndStates(t *testing.T) {
	def, problems := definition.Parse("small.yaml", []byte(small))
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems)
	}
	r := def.Transitions[0].Send.Retry
	if got, want := r.MaxBackoff, r.Backoff; got != want {
		t.Errorf("default max_backoff: got %v, want the backoff %v", got, want)
	}
	tests := []struct {
		state string
		pos   definition.Pos
	}{
		{"PAYING", definition.Pos{Line: 10, Col: 9}},
		{"PAID", definition.Pos{Line: 12, Col: 50}},
		{"CANCELLED", definition.Pos{Line: 13, Col: 54}},
	}
	var names []string
	for n := range def.States {
		names = append(names, n)
	}
	sort.Strings(names)
	if got, want := strings.Join(names, ","), "CANCELLED,PAID,PAYING"; got != want {
		t.Fatalf("states: got %s, want %s", got, want)
	}
	for _, tt := range tests {
		st := def.States[tt.state]
		if st.Declared {
			t.Errorf("%s: got Declared true, want false (no states: section)", tt.state)
		}
		if st.Pos != tt.pos {
			t.Errorf("%s: got position %v, want its first mention %v", tt.state, st.Pos, tt.pos)
		}
	}
}

func TestParseAcceptsAnchorsAndNullStates(t *testing.T) {
	src := `saga: PAY_ORDER
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
  bank: { topic: BANK_TOPIC }
states:
  PAYING:
  PAID: {}
transitions:
  - on: ORDER_PLACED
    by: shop
    from: []
    to: PAYING
    send: { to: bank, command: CHARGE, retry: &retry { attempts: 3, backoff: 2s, exhausted: BANK_DOWN } }
  - { on: CHARGED, by: bank, from: [PAYING], to: CHARGED, send: { to: bank, command: CAPTURE, retry: *retry } }
  - { on: CAPTURED, by: bank, from: [CHARGED], to: PAID }
  - { on: BANK_DOWN, by: engine, from: [PAYING, CHARGED], to: CANCELLED }
final: [PAID]
failed: [CANCELLED]
`
	def, problems := definition.Parse("anchors.yaml", []byte(src))
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems)
	}
	if got := def.Transitions[1].Send.Retry; got == nil || got.Attempts != 3 {
		t.Errorf("aliased retry: got %+v, want the anchored policy", got)
	}
	if !def.States["PAYING"].Declared || !def.States["PAID"].Declared {
		t.Errorf("PAYING, PAID: got Declared false, want true")
	}
}

func TestLoadDir(t *testing.T) {
	valid := []byte(small)
	tests := []struct {
		name     string
		fsys     fstest.MapFS
		wantDefs int
		want     string // problems, one "FILE:LINE:COL: rule" a line
	}{
		{
			name: "one valid file, other files ignored",
			fsys: fstest.MapFS{
				"pay.yaml":        {Data: valid},
				"README.md":       {Data: []byte("# not a saga")},
				"old/broken.yaml": {Data: []byte("not: [valid")},
			},
			wantDefs: 1,
		},
		{
			name: "same saga and version twice",
			fsys: fstest.MapFS{
				"a.yaml": {Data: valid},
				"b.yml":  {Data: valid},
			},
			wantDefs: 1,
			want:     "b.yml:1:1: duplicate-definition\n",
		},
		{
			name: "problems of every file",
			fsys: fstest.MapFS{
				"a.yaml": {Data: []byte("saga: [\n")},
				"b.yaml": {Data: []byte("")},
				"c.yaml": {Data: valid},
			},
			wantDefs: 1,
			want:     "a.yaml:2:1: yaml-syntax\nb.yaml:1:1: empty-file\n",
		},
		{
			name:     "no definitions",
			fsys:     fstest.MapFS{"README.md": {Data: []byte("hello")}},
			wantDefs: 0,
			want:     ".:0:0: no-definitions\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defs, problems := definition.LoadDir(tt.fsys)
			if got := len(defs); got != tt.wantDefs {
				t.Errorf("definitions: got %d, want %d", got, tt.wantDefs)
			}
			var b strings.Builder
			for _, p := range problems {
				fmt.Fprintf(&b, "%s:%d:%d: %s\n", p.File, p.Line, p.Col, p.Rule)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("problems:\ngot:\n%s\nwant:\n%s\nmessages:\n%v", got, tt.want, problems)
			}
		})
	}
}

func TestProblemsAreSortedAndComplete(t *testing.T) {
	for _, file := range badFiles(t) {
		_, problems := definition.Parse(file, readFile(t, file))
		checkProblems(t, file, problems)
	}
}

// checkProblems asserts the invariants every list of problems keeps.
func checkProblems(tb testing.TB, file string, problems definition.Problems) {
	tb.Helper()
	for i, p := range problems {
		if p.Rule == "" || p.Message == "" || p.Line < 1 || p.Col < 1 {
			tb.Errorf("%s: problem %d has an empty rule, message or position: %+v", file, i, p)
		}
		if i == 0 {
			continue
		}
		q := problems[i-1]
		if p.Line < q.Line || (p.Line == q.Line && (p.Col < q.Col || (p.Col == q.Col && p.Message < q.Message))) {
			tb.Errorf("%s: problems out of order: %v before %v", file, q, p)
		}
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    definition.Problem
		want string
	}{
		{definition.Problem{File: "a.yaml", Line: 3, Col: 7, Rule: "bad-name", Message: "m"}, "a.yaml:3:7: m"},
		{definition.Problem{File: "a.yaml", Rule: "read-error", Message: "m"}, "a.yaml: m"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String(): got %q, want %q", got, tt.want)
		}
	}
	ps := definition.Problems{tests[0].p, tests[1].p}
	if got, want := ps.Error(), "a.yaml:3:7: m\na.yaml: m"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}

// FuzzParse feeds Parse arbitrary bytes: it must never panic, must return a
// definition exactly when there is no problem, and must keep its problems
// sorted and positioned. `go test` runs the seeds; `go test -fuzz=FuzzParse`
// explores further (crashers land in testdata/fuzz/FuzzParse and stay seeds).
func FuzzParse(f *testing.F) {
	f.Add(readFile(f, filepath.Join("..", "..", "sagas", "manual_create_order.yaml")))
	f.Add([]byte(small))
	for _, file := range badFiles(f) {
		f.Add(readFile(f, file))
	}
	for _, s := range []string{
		"", " ", "\x00", "---", "--- \n...\n---\n", "~", "[]", "{}", "- - -", "saga", "saga:",
		"*a", "&a [*a]", "a: &a {b: *a}", "<<: {saga: X}", "!!binary AAAA", "? [a]\n: b",
		"saga: !custom X", "version: 99999999999999999999", "version: 0x10",
		"transitions: [{from: [&s A], to: *s}]", "\xff\xfe", "\t\tsaga: X", "{{{{{{{{{{",
		"final: [A, A, A]\nfailed: [A]", "states: {A: {timeout: {after: 1e9h, event: X}}}",
		"saga: &s [*s]", "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]", "transitions: [&t {from: [A]}, *t, *t]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		def, problems := definition.Parse("fuzz.yaml", data)
		if (def == nil) == (len(problems) == 0) {
			t.Fatalf("got definition %v with %d problems; want exactly one of them", def != nil, len(problems))
		}
		checkProblems(t, "fuzz.yaml", problems)
		if def != nil && !bytes.Contains(data, []byte(def.Saga)) {
			t.Fatalf("saga name %q is not in the input", def.Saga)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	data := readFile(b, filepath.Join("..", "..", "sagas", "manual_create_order.yaml"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, problems := definition.Parse("manual_create_order.yaml", data); len(problems) > 0 {
			b.Fatal(problems)
		}
	}
}
