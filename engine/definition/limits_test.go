package definition_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// header is the top of a generated definition, up to `transitions:`.
const header = `saga: BIG
version: 1
participants:
  shop: { topic: SHOP_TOPIC }
transitions:
`

// chain is a valid definition of n transitions in a row:
// (start) -E0-> S0 -E1-> S1 ... -> S(n-1), the last state final.
func chain(n int) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - { on: E%d, by: shop, from: [S%d], to: S%d }\n", i, i-1, i)
	}
	fmt.Fprintf(&b, "final: [S%d]\n", n-1)
	return b.Bytes()
}

// aliasBomb is the attack of issue 8: states states, one transition
// anchored as &T that accepts its event in all of them, and copies of
// `- *T`.
func aliasBomb(states, copies int) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n  - &T { on: GO, by: shop, from: [")
	for i := range states {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "S%d", i)
	}
	b.WriteString("], to: DONE }\n")
	for range copies {
		b.WriteString("  - *T\n")
	}
	b.WriteString("final: [DONE]\n")
	return b.Bytes()
}

// TestLimits feeds Parse the definitions each limit is there for, most of
// them generated because they are large, and checks the refusal: the
// rule, where it points, and that the answer stays small.
func TestLimits(t *testing.T) {
	participants := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString("saga: BIG\nversion: 1\nparticipants:\n")
		for i := range n {
			fmt.Fprintf(&b, "  p%d: { topic: T%d }\n", i, i)
		}
		b.WriteString("transitions:\n  - { on: E0, by: p0, from: [], to: S0 }\nfinal: [S0]\n")
		return b.Bytes()
	}
	states := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString("saga: BIG\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\nstates:\n")
		for i := range n {
			fmt.Fprintf(&b, "  S%d: { description: state %d }\n", i, i)
		}
		b.WriteString("transitions:\n  - { on: E0, by: shop, from: [], to: S0 }\nfinal: [S0]\n")
		return b.Bytes()
	}
	// A chain with one extra state per transition through `final`: more
	// states than transitions, all of them mentioned only in lists.
	mentioned := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString(header)
		b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\nfinal: [S0")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, ", F%d", i)
		}
		b.WriteString("]\n")
		return b.Bytes()
	}
	big := chain(definition.MaxTransitions)
	tests := []struct {
		name     string
		data     []byte
		wantRule string
		wantLine int // 0: do not check
		wantCol  int
	}{
		{"file larger than 1 MiB", append(bytes.Repeat([]byte("# padding\n"), definition.MaxFileBytes/10), big[:20]...), "file-too-large", 1, 1},
		{"one transition too many", chain(definition.MaxTransitions + 1), "too-many-transitions", 6 + definition.MaxTransitions, 5},
		{"one state too many under states", states(definition.MaxStates + 1), "too-many-states", 6 + definition.MaxStates, 3},
		{"one state too many mentioned", mentioned(definition.MaxStates + 1), "too-many-states", 7, 0},
		{"one participant too many", participants(definition.MaxParticipants + 1), "too-many-participants", 4 + definition.MaxParticipants, 3},
		// issue 8: 1,000 states, 1,000 copies of `- *T` (about 20 KB).
		{"alias bomb of issue 8", aliasBomb(1000, 1000), "alias-too-big", 8, 5},
		{"alias bomb within the alias limit", aliasBomb(90, 4100), "too-many-nodes", 0, 0},
		{"from lists too long", aliasBomb(90, 600), "too-many-edges", 7, 5},
		{"alias cycle", []byte("saga: &s [*s]\n"), "alias-cycle", 1, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, problems := definition.Parse("big.yaml", tt.data)
			if def != nil {
				t.Fatalf("Parse returned a definition; want the %s refusal", tt.wantRule)
			}
			checkProblems(t, "big.yaml", problems)
			if len(problems) == 0 || len(problems) > definition.MaxProblems+1 {
				t.Fatalf("got %d problems, want 1 to %d", len(problems), definition.MaxProblems+1)
			}
			found := false
			for _, p := range problems {
				if p.Rule != tt.wantRule {
					continue
				}
				found = true
				if tt.wantLine != 0 && p.Line != tt.wantLine {
					t.Errorf("%s at line %d, want line %d: %v", tt.wantRule, p.Line, tt.wantLine, p)
				}
				if tt.wantCol != 0 && p.Col != tt.wantCol {
					t.Errorf("%s at column %d, want column %d: %v", tt.wantRule, p.Col, tt.wantCol, p)
				}
				break
			}
			if !found {
				t.Errorf("no %s problem; got:\n%v", tt.wantRule, problems)
			}
			// The whole answer stays small, whatever the input.
			if got, limit := len(problems.Error()), (definition.MaxProblems+1)*(definition.MaxMessageBytes+32); got > limit {
				t.Errorf("problems take %d bytes, want at most %d", got, limit)
			}
		})
	}
}

// TestLimitsAcceptTheLargestDefinitions: a definition at every count limit
// and close to the size limit is valid.
func TestLimitsAcceptTheLargestDefinitions(t *testing.T) {
	data := chain(definition.MaxTransitions)
	// Pad with descriptions up to just under 1 MiB.
	pad := definition.MaxFileBytes - len(data) - len("description: \n")
	data = append([]byte("description: "+strings.Repeat("x", pad)+"\n"), data...)
	if len(data) != definition.MaxFileBytes {
		t.Fatalf("generated %d bytes, want %d", len(data), definition.MaxFileBytes)
	}
	def, problems := definition.Parse("big.yaml", data)
	if len(problems) > 0 {
		t.Fatalf("Parse of a valid 1 MiB definition: %v", problems[:min(len(problems), 5)])
	}
	if got, want := len(def.Transitions), definition.MaxTransitions; got != want {
		t.Errorf("transitions: got %d, want %d", got, want)
	}
	if got, want := len(def.States), definition.MaxStates; got != want {
		t.Errorf("states: got %d, want %d", got, want)
	}
}

// TestTooManyProblems: a file with hundreds of mistakes gets the first
// MaxProblems of them, in order, and one line saying how many more there are.
func TestTooManyProblems(t *testing.T) {
	const dups = 350
	src := "saga: PAY_ORDER\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n" +
		"  - { on: ORDER_PLACED, by: shop, from: [], to: PAID }\nfinal: [PAID" + strings.Repeat(", PAID", dups) + "]\n"
	_, problems := definition.Parse("dups.yaml", []byte(src))
	checkProblems(t, "dups.yaml", problems)
	if got, want := len(problems), definition.MaxProblems+1; got != want {
		t.Fatalf("got %d problems, want %d", got, want)
	}
	for i, p := range problems[:definition.MaxProblems] {
		// The i-th duplicate "PAID" starts at column 9 + 6*(i+1) of line 7.
		if p.Rule != "duplicate-entry" || p.Line != 7 || p.Col != 15+6*i {
			t.Fatalf("problem %d: got %v (%s), want duplicate-entry at 7:%d", i, p, p.Rule, 15+6*i)
		}
	}
	last := problems[definition.MaxProblems]
	if last.Rule != "too-many-problems" || last.Line != 7 || last.Col != 15+6*definition.MaxProblems {
		t.Errorf("last problem: got %v (%s), want too-many-problems at the first one left out", last, last.Rule)
	}
	if want := fmt.Sprintf("… and %d more problems", dups-definition.MaxProblems); !strings.Contains(last.Message, want) {
		t.Errorf("last message %q does not contain %q", last.Message, want)
	}
}

// TestLongValuesAreClipped: a value of the file quoted in a message is
// shortened, so that a few large values cannot make a large answer.
func TestLongValuesAreClipped(t *testing.T) {
	long := strings.Repeat("é", 300_000) // 600 KB in one explicit key
	src := "saga: PAY_ORDER\nversion: 1\n? " + long + "\n: 1\n"
	_, problems := definition.Parse("long.yaml", []byte(src))
	checkProblems(t, "long.yaml", problems)
	var unknown *definition.Problem
	for i, p := range problems {
		if len(p.Message) > definition.MaxMessageBytes {
			t.Errorf("problem %d: message of %d bytes, want at most %d", i, len(p.Message), definition.MaxMessageBytes)
		}
		if p.Rule == "unknown-key" {
			unknown = &problems[i]
		}
	}
	if unknown == nil {
		t.Fatalf("no unknown-key problem: %v", problems)
	}
	if !strings.Contains(unknown.Message, "éé…`") {
		t.Errorf("unknown-key message %q does not quote the key clipped with …", unknown.Message)
	}
}

// TestReadAllStopsAfterTheLimit: ReadAll never holds more than
// MaxFileBytes+1 bytes, and Parse refuses what it read.
func TestReadAllStopsAfterTheLimit(t *testing.T) {
	huge := strings.NewReader(strings.Repeat("#", 3*definition.MaxFileBytes))
	data, err := definition.ReadAll(huge)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if got, want := len(data), definition.MaxFileBytes+1; got != want {
		t.Errorf("ReadAll read %d bytes, want %d", got, want)
	}
	if _, problems := definition.Parse("huge.yaml", data); len(problems) != 1 || problems[0].Rule != "file-too-large" {
		t.Errorf("Parse: got %v, want one file-too-large problem", problems)
	}
	// LoadDir reads files the same way.
	fsys := fstest.MapFS{"huge.yaml": {Data: []byte(strings.Repeat("#", 2*definition.MaxFileBytes))}}
	if _, problems := definition.LoadDir(fsys); len(problems) != 1 || problems[0].Rule != "file-too-large" {
		t.Errorf("LoadDir: got %v, want one file-too-large problem", problems)
	}
}

// deadEnds is n transitions A_i → B_i where every A_i is never entered and
// every B_i is a dead end: each of the 2n problems looks for a "did you
// mean" among n names, quadratic without the suggestion budget.
func deadEnds(n int) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("  - { on: E, by: shop, from: [], to: DONE }\n")
	for i := range n {
		fmt.Fprintf(&b, "  - { on: E%d, by: shop, from: [A%d], to: B%d }\n", i, i, i)
	}
	b.WriteString("final: [DONE]\n")
	return b.Bytes()
}

// TestManyMisspeltNames: thousands of problems that each want a
// suggestion are reported (capped) with suggestions for the first ones.
func TestManyMisspeltNames(t *testing.T) {
	_, problems := definition.Parse("dead.yaml", deadEnds(definition.MaxStates/2-1))
	checkProblems(t, "dead.yaml", problems)
	if got, want := len(problems), definition.MaxProblems+1; got != want {
		t.Fatalf("got %d problems, want %d", got, want)
	}
	if !strings.Contains(problems[0].Message, "(did you mean") {
		t.Errorf("first problem %q has no suggestion, want one (A0 ~ B0)", problems[0].Message)
	}
	if last := problems[len(problems)-1]; last.Rule != "too-many-problems" {
		t.Errorf("last problem: got %v, want too-many-problems", last)
	}
}

// BenchmarkParseSize shows how Parse scales with the size of a valid
// definition (a chain of N transitions, N states and N events).
func BenchmarkParseSize(b *testing.B) {
	for _, n := range []int{100, 1_000, 10_000} {
		data := chain(n)
		b.Run(fmt.Sprintf("transitions=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, problems := definition.Parse("big.yaml", data); len(problems) > 0 {
					b.Fatal(problems[0])
				}
			}
		})
	}
	for _, n := range []int{1_000, 4_999} {
		data := deadEnds(n)
		b.Run(fmt.Sprintf("dead-ends=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if def, _ := definition.Parse("dead.yaml", data); def != nil {
					b.Fatal("dead ends accepted")
				}
			}
		})
	}
	bomb := aliasBomb(1000, 1000)
	b.Run("alias-bomb-of-issue-8", func(b *testing.B) {
		b.SetBytes(int64(len(bomb)))
		b.ReportAllocs()
		for b.Loop() {
			if def, _ := definition.Parse("bomb.yaml", bomb); def != nil {
				b.Fatal("alias bomb accepted")
			}
		}
	})
}

// decisions is a valid definition of n decisions in a row, each one
// condition and its default: 2n transitions, n expressions.
func decisions(n int) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - { on: E%d, by: shop, from: [S%d], when: \"event.amount > %d\", to: S%d }\n", i, i-1, i, i)
		fmt.Fprintf(&b, "  - { on: E%d, by: shop, from: [S%d], to: S%d }\n", i, i-1, i)
	}
	fmt.Fprintf(&b, "final: [S%d]\n", n-1)
	return b.Bytes()
}

// TestLimitsOfLanguageV2: expressions are counted, a parallel step has a
// bounded number of branches, a hostile expression is refused when read,
// and schema files are read only from the definition's directory and only
// up to their limit.
func TestLimitsOfLanguageV2(t *testing.T) {
	var branches strings.Builder
	branches.WriteString(header + "  - on: E0\n    by: shop\n    from: []\n    to: S0\n    join: { policy: all, then: DONE_ALL, else: FAILED_ALL }\n    send:\n")
	for i := 0; i <= definition.MaxBranches; i++ {
		fmt.Fprintf(&branches, "      - { to: shop, command: C%d, ok: OK%d }\n", i, i)
	}
	branches.WriteString("  - { on: DONE_ALL, by: engine, from: [S0], to: END }\n  - { on: FAILED_ALL, by: engine, from: [S0], to: END }\nfinal: [END]\n")
	deep := header + "  - { on: E0, by: shop, from: [], when: \"" + strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40) + "\", to: S0 }\n  - { on: E0, by: shop, from: [], to: S0 }\nfinal: [S0]\n"
	long := header + "  - { on: E0, by: shop, from: [], when: \"" + strings.Repeat("event.a == 1 && ", 300) + "true\", to: S0 }\n  - { on: E0, by: shop, from: [], to: S0 }\nfinal: [S0]\n"
	schemaRef := func(path string) string {
		return header + "  - { on: E0, by: shop, from: [], to: S0 }\nfinal: [S0]\nevents:\n  E0: { schema: " + path + " }\n"
	}
	files := fstest.MapFS{
		"schemas/big.json":  {Data: []byte(`{"description": "` + strings.Repeat("x", definition.MaxSchemaBytes) + `"}`)},
		"schemas/ok.json":   {Data: []byte(`{"type": "object"}`)},
		"schemas/file.json": {Data: []byte(`{"$ref": "file:///etc/passwd"}`)},
	}
	tests := []struct {
		name     string
		data     []byte
		rule     string
		wantLine int
	}{
		{"too many expressions", decisions(definition.MaxExpressions + 2), "too-many-expressions", 7 + 2*definition.MaxExpressions},
		{"too many branches", []byte(branches.String()), "too-many-branches", 12 + definition.MaxBranches},
		{"deep expression", []byte(deep), "bad-expression", 6},
		{"long expression", []byte(long), "bad-expression", 6},
		{"big schema file", []byte(schemaRef("schemas/big.json")), "schema-file", 9},
		{"schema outside schemas/", []byte(schemaRef("/etc/passwd")), "schema-file", 9},
		{"schema refers to a file", []byte(schemaRef("schemas/file.json")), "bad-schema", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, problems := definition.ParseWith("big.yaml", tt.data, definition.Options{Files: files})
			if def != nil || len(problems) == 0 {
				t.Fatalf("accepted")
			}
			p := problems[0]
			if p.Rule != tt.rule || p.Line != tt.wantLine {
				t.Errorf("first problem %s:%d %s, want %s at line %d", p.Rule, p.Line, p.Message, tt.rule, tt.wantLine)
			}
			if len(problems) > definition.MaxProblems+1 {
				t.Errorf("%d problems", len(problems))
			}
		})
	}
	if _, problems := definition.ParseWith("ok.yaml", []byte(schemaRef("schemas/ok.json")), definition.Options{Files: files}); len(problems) > 0 {
		t.Errorf("a small schema file: %v", problems)
	}
	if def, problems := definition.Parse("big.yaml", decisions(definition.MaxExpressions)); def == nil {
		t.Errorf("%d expressions (the limit) refused: %v", definition.MaxExpressions-1, problems[0])
	}
}
