package procstack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

const compensated = `saga: T
version: 2
participants:
  deals: { topic: DEALS_TOPIC }
  profile: { topic: PROFILE_TOPIC }
states:
  DRAFT: {}
  DONE: {}
  FAILED: {}
transitions:
  - on: REGISTER
    by: deals
    from: []
    to: DRAFT
    compensate: { command: FAIL_DEAL, done: DEAL_FAILED }
    send: &approve
      to: profile
      command: APPROVE_ORDER
      retry: { attempts: 5, backoff: 2s, max_backoff: 1m, exhausted: PROFILE_UNAVAILABLE }
      compensate: { command: REVERT_ORDER, done: ORDER_REVERTED }
  - on: AGAIN
    by: deals
    from: []
    to: DRAFT
    send: *approve
  - { on: ORDER_APPROVED, by: profile, from: [DRAFT], to: DONE, send: { to: deals, command: NOTE } }
  - { on: PROFILE_UNAVAILABLE, by: engine, from: [DRAFT], to: FAILED }
final: [DONE]
failed: [FAILED]
`

// TestRewriteDefinitions: topics are renamed, retries of sends and
// compensations (with and without a retry of their own, through an alias)
// replaced, the exhausted event kept, and the result is a valid definition;
// mistakes in the inputs are refused.
func TestRewriteDefinitions(t *testing.T) {
	topics := map[string]string{"deals": "D.t1", "profile": "P.t1", "notification": "N.t1"}
	src := fstest.MapFS{"t.yaml": {Data: []byte(compensated)}}
	dir := t.TempDir()
	err := RewriteDefinitions(src, dir, topics, map[string]Retry{
		"APPROVE_ORDER": {Attempts: 3, Backoff: 500 * time.Millisecond},
		"REVERT_ORDER":  {Attempts: 20, Backoff: 200 * time.Millisecond, MaxBackoff: time.Second},
		"FAIL_DEAL":     {Attempts: 7, Backoff: 300 * time.Millisecond, MaxBackoff: 2 * time.Second},
	})
	if err != nil {
		t.Fatalf("RewriteDefinitions: %v", err)
	}
	defs, probs := definition.LoadDir(os.DirFS(dir))
	if len(probs) > 0 {
		b, _ := os.ReadFile(filepath.Join(dir, "t.yaml"))
		t.Fatalf("the rewritten definition does not load: %v\n%s", probs, b)
	}
	if len(defs) != 1 {
		t.Fatalf("got %d definitions, want 1", len(defs))
	}
	b, err := os.ReadFile(filepath.Join(dir, "t.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"topic: D.t1", "topic: P.t1", "exhausted: PROFILE_UNAVAILABLE", "attempts: 3", "backoff: 500ms",
		"attempts: 20", "backoff: 200ms", "max_backoff: 1s", "attempts: 7", "max_backoff: 2s"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten definition lacks %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"DEALS_TOPIC", "PROFILE_TOPIC", "attempts: 5", "max_backoff: 1m", ", backoff: 2s"} {
		if strings.Contains(got, gone) {
			t.Errorf("rewritten definition still has %q:\n%s", gone, got)
		}
	}

	for _, tc := range []struct {
		name    string
		topics  map[string]string
		retries map[string]Retry
		want    string
	}{
		{"participant without a topic", map[string]string{"deals": "D"}, nil, "participant profile has no topic"},
		{"unknown command", topics, map[string]Retry{"APPROVE_ORDERS": {Attempts: 1, Backoff: time.Second}}, "APPROVE_ORDERS"},
		{"send without retry", topics, map[string]Retry{"NOTE": {Attempts: 1, Backoff: time.Second}}, "no exhausted event"},
		{"zero attempts", topics, map[string]Retry{"APPROVE_ORDER": {Backoff: time.Second}}, "Attempts >= 1"},
		{"cap below backoff", topics, map[string]Retry{"APPROVE_ORDER": {Attempts: 2, Backoff: time.Second, MaxBackoff: time.Millisecond}}, "MaxBackoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := RewriteDefinitions(src, t.TempDir(), tc.topics, tc.retries)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RewriteDefinitions = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestRewriteShippedDefinitions: the shipped definitions rewrite to valid
// ones with every topic renamed.
func TestRewriteShippedDefinitions(t *testing.T) {
	dir := t.TempDir()
	topics := map[string]string{"deals": "D.t2", "profile": "P.t2", "notification": "N.t2"}
	if err := RewriteDefinitions(sagas.FS, dir, topics, map[string]Retry{"APPROVE_ORDER": {Attempts: 3, Backoff: 500 * time.Millisecond}}); err != nil {
		t.Fatalf("RewriteDefinitions: %v", err)
	}
	defs, probs := definition.LoadDir(os.DirFS(dir))
	if len(probs) > 0 {
		t.Fatalf("rewritten shipped definitions do not load: %v", probs)
	}
	for _, d := range defs {
		for name, p := range d.Participants {
			if p.Topic != topics[name] {
				t.Errorf("%s v%d: participant %s topic %q, want %q", d.Saga, d.Version, name, p.Topic, topics[name])
			}
		}
	}
}

func TestRetryBudget(t *testing.T) {
	for _, tc := range []struct {
		r    Retry
		want time.Duration
	}{
		{Retry{Attempts: 5, Backoff: 2 * time.Second, MaxBackoff: time.Minute}, 62 * time.Second},
		{Retry{Attempts: 3, Backoff: 500 * time.Millisecond, MaxBackoff: 2 * time.Second}, 3500 * time.Millisecond},
		{Retry{Attempts: 4, Backoff: time.Second, MaxBackoff: 2 * time.Second}, 7 * time.Second},
		{Retry{Attempts: 3, Backoff: time.Second}, 3 * time.Second},
	} {
		if got := tc.r.Budget(); got != tc.want {
			t.Errorf("%+v.Budget() = %s, want %s", tc.r, got, tc.want)
		}
	}
}
