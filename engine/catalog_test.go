package engine

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// otherSaga is a minimal second saga: one participant, one step.
func otherSaga(tb testing.TB, version int) *definition.Definition {
	tb.Helper()
	n := func(v string) definition.Name { return definition.Name{Value: v} }
	return &definition.Definition{
		File:         "ping.yaml",
		Saga:         "PING",
		Version:      version,
		Participants: map[string]*definition.Participant{"pinger": {Name: "pinger", Topic: "PING_TOPIC"}},
		States:       map[string]*definition.State{"WAITING": {Name: "WAITING"}, "DONE": {Name: "DONE"}},
		Transitions: []*definition.Transition{
			{On: n("PING"), By: n("pinger"), To: n("WAITING"), Send: &definition.Send{To: n("pinger"), Command: n("PONG")}},
			{On: n("PONGED"), By: n("pinger"), From: []definition.Name{n("WAITING")}, To: n("DONE")},
		},
		Final: []definition.Name{n("DONE")},
	}
}

func TestCatalog(t *testing.T) {
	v2 := handDef(t)
	v2.Version = 2
	c, err := NewCatalog(otherSaga(t, 3), v2, handDef(t))
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	var got []string
	for _, m := range c.List() {
		got = append(got, m.String())
	}
	if want := "MANUAL_CREATE_ORDER v1,MANUAL_CREATE_ORDER v2,PING v3"; strings.Join(got, ",") != want {
		t.Errorf("List = %v, want %s", got, want)
	}

	tests := []struct {
		name     string
		saga     string
		version  int
		want     string // model String, or "" when an error is expected
		wantCode Code
		wantMsg  string
	}{
		{"newest", "MANUAL_CREATE_ORDER", 0, "MANUAL_CREATE_ORDER v2", "", ""},
		{"exact old", "MANUAL_CREATE_ORDER", 1, "MANUAL_CREATE_ORDER v1", "", ""},
		{"other saga", "PING", 0, "PING v3", "", ""},
		{"missing version", "MANUAL_CREATE_ORDER", 7, "", CodeUnknownSaga, "no version 7 (loaded versions: [1 2])"},
		{"missing saga", "NOPE", 0, "", CodeUnknownSaga, "no saga NOPE is loaded (loaded: MANUAL_CREATE_ORDER, PING)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Get(tt.saga, tt.version)
			if tt.want != "" {
				if err != nil || m.String() != tt.want {
					t.Fatalf("Get(%s, %d) = %v, %v; want %s", tt.saga, tt.version, m, err, tt.want)
				}
				return
			}
			if got := ErrorCode(err); got != tt.wantCode {
				t.Fatalf("Get(%s, %d) code = %q (%v), want %q", tt.saga, tt.version, got, err, tt.wantCode)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
	if got := c.Latest("MANUAL_CREATE_ORDER"); got == nil || got.Version() != 2 {
		t.Errorf("Latest = %v, want v2", got)
	}
	if got := c.Latest("NOPE"); got != nil {
		t.Errorf("Latest(NOPE) = %v, want nil", got)
	}
}

func TestNewCatalogErrors(t *testing.T) {
	broken := handDef(t)
	broken.Transitions = broken.Transitions[1:]
	tests := []struct {
		name     string
		defs     []*definition.Definition
		wantCode Code
		wantMsg  string
	}{
		{"duplicate version", []*definition.Definition{handDef(t), handDef(t)}, CodeConflict, "MANUAL_CREATE_ORDER v1 is defined twice"},
		{"does not compile", []*definition.Definition{broken}, CodeInvalid, "starts a saga"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCatalog(tt.defs...)
			if err == nil {
				t.Fatalf("NewCatalog = %v, nil error; want %q", c, tt.wantMsg)
			}
			if got := ErrorCode(err); got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestLoadCatalog(t *testing.T) {
	shipped, err := os.ReadFile(shippedSaga)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := os.ReadFile(shippedSagaV1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		fsys           fs.FS
		wantList       string
		wantProblemsIn []string
	}{
		// The shipped directory: version 3 for new sagas, versions 1 and 2
		// kept for the sagas started on them.
		{"shipped sagas", sagas.FS, "BASKET_ORDER v1,BASKET_ORDER v2,BASKET_ORDER v3,BASKET_ORDER v4,MANUAL_CREATE_ORDER v1,MANUAL_CREATE_ORDER v2,MANUAL_CREATE_ORDER v3,MANUAL_CREATE_ORDER v4", nil},
		{"two versions", fstest.MapFS{"a.yaml": {Data: v1}, "b.yml": {Data: shipped}}, "MANUAL_CREATE_ORDER v1,MANUAL_CREATE_ORDER v4", nil},
		{"one bad file keeps the good one", fstest.MapFS{
			"a.yaml": {Data: shipped},
			"b.yaml": {Data: []byte("saga: BROKEN\nversion: one\n")},
		}, "MANUAL_CREATE_ORDER v4", []string{"b.yaml"}},
		// A new version written without bumping `version:` is refused; the
		// first file keeps its version.
		{"one version twice", fstest.MapFS{"a.yaml": {Data: shipped}, "b.yaml": {Data: shipped}}, "MANUAL_CREATE_ORDER v4", []string{"b.yaml"}},
		{"empty dir", fstest.MapFS{}, "", []string{"."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, problems := LoadCatalog(tt.fsys)
			if c == nil {
				t.Fatal("LoadCatalog returned a nil catalog")
			}
			var got []string
			for _, m := range c.List() {
				got = append(got, m.String())
			}
			if strings.Join(got, ",") != tt.wantList {
				t.Errorf("List = %v, want %s", got, tt.wantList)
			}
			files := map[string]bool{}
			for _, p := range problems {
				files[p.File] = true
			}
			if len(tt.wantProblemsIn) == 0 && len(problems) > 0 {
				t.Errorf("problems = %v, want none", problems)
			}
			for _, f := range tt.wantProblemsIn {
				if !files[f] {
					t.Errorf("no problem reported for %s; problems: %v", f, problems)
				}
			}
		})
	}
}

// TestLoadCatalogRefusesHostileFiles: saga-machine's start-up reads sagas
// through the same limits as sagactl and the validate endpoint: a huge file
// and the alias bomb of issue 8 are refused with a bounded list of problems,
// and the valid definitions beside them still load.
func TestLoadCatalogRefusesHostileFiles(t *testing.T) {
	good, err := fs.ReadFile(sagas.FS, "manual_create_order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var bomb strings.Builder
	bomb.WriteString("saga: BOMB\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n")
	bomb.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n  - &T { on: GO, by: shop, from: [S0")
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&bomb, ", S%d", i)
	}
	bomb.WriteString("], to: DONE }\n" + strings.Repeat("  - *T\n", 1000) + "final: [DONE]\n")
	fsys := fstest.MapFS{
		"manual_create_order.yaml": {Data: good},
		"bomb.yaml":                {Data: []byte(bomb.String())},
		"huge.yaml":                {Data: []byte(strings.Repeat("# padding\n", 2*definition.MaxFileBytes/10))},
	}
	c, problems := LoadCatalog(fsys)
	if got := c.List(); len(got) != 1 || got[0].Name() != "MANUAL_CREATE_ORDER" {
		t.Errorf("catalog = %v, want only MANUAL_CREATE_ORDER", got)
	}
	rules := map[string]map[string]int{}
	for _, p := range problems {
		if rules[p.File] == nil {
			rules[p.File] = map[string]int{}
		}
		rules[p.File][p.Rule]++
	}
	if got := rules["huge.yaml"]; len(got) != 1 || got["file-too-large"] != 1 {
		t.Errorf("huge.yaml problems by rule = %v, want one file-too-large", got)
	}
	if got := rules["bomb.yaml"]; got["alias-too-big"] != definition.MaxProblems || got["too-many-problems"] != 1 {
		t.Errorf("bomb.yaml problems by rule = %v, want %d alias-too-big and one too-many-problems", got, definition.MaxProblems)
	}
	if len(rules) != 2 {
		t.Errorf("problems in files %v, want huge.yaml and bomb.yaml only", rules)
	}
}
