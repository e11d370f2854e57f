package service

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesPlaceholdersAndTakesKafkaFlags: a participant service
// started from the manifests with a secret left at CHANGE_ME stops before
// touching its database; its Kafka principal and instance id reach the
// configuration.
func TestRunRefusesPlaceholdersAndTakesKafkaFlags(t *testing.T) {
	app := App{Name: "deals", DefaultListen: "127.0.0.1:0"}
	dbFile := filepath.Join(t.TempDir(), "CHANGE_ME.db")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"database URL", []string{"--dev-header", "--db", "postgres://deals:CHANGE_ME@db/deals"}, nil, "--db (DEALS_DB_URL)"},
		{"database URL from env", []string{"--dev-header"}, map[string]string{"DEALS_DB_URL": "postgres://deals:CHANGE_ME@db/deals"}, "--db (DEALS_DB_URL)"},
		{"database file", []string{"--dev-header", "--db", "sqlite:" + dbFile}, nil, "--db (DEALS_DB_URL)"},
		{"Kafka password", []string{"--dev-header", "--kafka-user", "deals"}, map[string]string{"SAGA_KAFKA_PASSWORD": "CHANGE_ME"}, "SAGA_KAFKA_PASSWORD"},
		{"migrate", []string{"migrate", "--db", "postgres://deals:CHANGE_ME@db/deals"}, nil, "--db (DEALS_DB_URL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Run(context.Background(), app, tc.args, func(k string) string { return tc.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "CHANGE_ME") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run(%q) = %v, want a refusal naming %s and CHANGE_ME", tc.args, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(dbFile); !os.IsNotExist(err) {
		t.Errorf("a refused start created %s (stat: %v)", dbFile, err)
	}

	cfg, err := parseRunFlags(app, []string{"--dev-header", "--kafka-user", "deals", "--kafka-instance-id", "deals-1"},
		func(k string) string { return map[string]string{"SAGA_KAFKA_PASSWORD": "pw"}[k] }, io.Discard)
	if err != nil {
		t.Fatalf("parseRunFlags: %v", err)
	}
	if cfg.kafkaSASL.User != "deals" || cfg.kafkaSASL.Password != "pw" || cfg.instanceID != "deals-1" {
		t.Errorf("got SASL %v instance %q, want deals/pw and deals-1", cfg.kafkaSASL, cfg.instanceID)
	}
}
