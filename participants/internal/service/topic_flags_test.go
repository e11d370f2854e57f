package service

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunTopicAndGroupFlags: --command-topic, --event-topic and --group
// (or their variables) reach the configuration; a hostile value (not a
// Kafka name, oversized, a separator that could smuggle a second name, the
// command topic reused as the event topic) stops the service before it
// opens its database.
func TestRunTopicAndGroupFlags(t *testing.T) {
	app := App{Name: "deals", DefaultListen: "127.0.0.1:0"}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	cfg, err := parseRunFlags(app, []string{"--dev-header", "--command-topic", "DEALS_TOPIC_T1", "--event-topic", "EV_T1_DEALS", "--group", "deals-t1"}, env(nil), io.Discard)
	if err != nil {
		t.Fatalf("parseRunFlags: %v", err)
	}
	if got, want := [3]string{cfg.commandTopic, cfg.eventTopic, cfg.group}, [3]string{"DEALS_TOPIC_T1", "EV_T1_DEALS", "deals-t1"}; got != want {
		t.Errorf("flags: got %q, want %q", got, want)
	}
	cfg, err = parseRunFlags(app, []string{"--dev-header"}, env(map[string]string{
		"DEALS_COMMAND_TOPIC": "C.t2", "DEALS_EVENT_TOPIC": "E.t2", "DEALS_GROUP": "g.t2"}), io.Discard)
	if err != nil {
		t.Fatalf("parseRunFlags from env: %v", err)
	}
	if got, want := [3]string{cfg.commandTopic, cfg.eventTopic, cfg.group}, [3]string{"C.t2", "E.t2", "g.t2"}; got != want {
		t.Errorf("variables: got %q, want %q", got, want)
	}
	cfg, err = parseRunFlags(app, []string{"--dev-header"}, env(nil), io.Discard)
	if err != nil || cfg.commandTopic != "" || cfg.eventTopic != "" || cfg.group != "" {
		t.Errorf("defaults: got %q %q %q (err %v), want empty (the SDK's defaults)", cfg.commandTopic, cfg.eventTopic, cfg.group, err)
	}

	dbFile := filepath.Join(t.TempDir(), "deals.db")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"space in topic", []string{"--command-topic", "DEALS TOPIC"}, "--command-topic"},
		{"comma smuggles a second topic", []string{"--event-topic", "EV_DEALS,EV_PROFILE"}, "--event-topic"},
		{"newline in group", []string{"--group", "deals\nprofile"}, "--group"},
		{"oversized topic", []string{"--command-topic", strings.Repeat("A", 250)}, "--command-topic"},
		{"non-ASCII group", []string{"--group", "déals"}, "--group"},
		{"own events as commands", []string{"--command-topic", "SAME", "--event-topic", "SAME"}, "own events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--dev-header", "--db", "sqlite:" + dbFile}, tc.args...)
			err := Run(context.Background(), app, args, env(nil), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run(%q) = %v, want a refusal naming %s", tc.args, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(dbFile); !os.IsNotExist(err) {
		t.Errorf("a refused start created %s (stat: %v)", dbFile, err)
	}
}
