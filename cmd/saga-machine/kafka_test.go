package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// TestRefusesPlaceholderSecrets: a secret left at the manifests' CHANGE_ME
// stops the daemon and its subcommands before they connect to anything.
func TestRefusesPlaceholderSecrets(t *testing.T) {
	dir := t.TempDir()
	dbFile := filepath.Join(dir, "saga.db")
	pwDir := filepath.Join(dir, "users")
	if err := os.MkdirAll(pwDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pwDir, "deals"), []byte("CHANGE_ME\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"database URL", []string{"--db", "postgres://saga:CHANGE_ME@db:5432/saga"}, nil, "--db (SAGA_DB_URL)"},
		{"database URL from env", nil, map[string]string{"SAGA_DB_URL": "postgres://saga:CHANGE_ME@db/saga"}, "--db (SAGA_DB_URL)"},
		{"Kafka password from env", []string{"--brokers", "k:9092", "--db", "sqlite:" + dbFile},
			map[string]string{"SAGA_KAFKA_USER": "saga-machine", "SAGA_KAFKA_PASSWORD": "CHANGE_ME"}, "SAGA_KAFKA_PASSWORD"},
		{"Kafka password flag", []string{"--brokers", "k:9092", "--db", "sqlite:" + dbFile, "--kafka-user", "saga-machine", "--kafka-password", "CHANGE_ME"}, nil, "--kafka-password"},
		{"migrate", []string{"migrate", "--db", "postgres://saga:CHANGE_ME@db/saga"}, nil, "--db (SAGA_DB_URL)"},
		{"kafka-setup users", []string{"kafka-setup", "--brokers", "k:9092", "--users-dir", pwDir, "--kafka-user", "admin", "--kafka-password", "x"}, nil, filepath.Join(pwDir, "deals")},
		{"kafka-setup admin", []string{"kafka-setup", "--brokers", "k:9092", "--kafka-user", "admin", "--kafka-password", "CHANGE_ME"}, nil, "--kafka-password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, envMap(tc.env), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "CHANGE_ME") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want a refusal naming %s and CHANGE_ME", tc.args, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(dbFile); !os.IsNotExist(err) {
		t.Errorf("a refused start created %s (stat: %v)", dbFile, err)
	}
}

func TestKafkaFlagsOfTheDaemon(t *testing.T) {
	cfg, err := parseFlags("saga-machine", []string{"--brokers", "k:9092", "--kafka-user", "saga-machine", "--kafka-instance-id", "saga-machine-0"},
		envMap(map[string]string{"SAGA_KAFKA_PASSWORD": "pw"}), io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	if cfg.kafkaSASL.User != "saga-machine" || cfg.kafkaSASL.Password != "pw" || cfg.instanceID != "saga-machine-0" {
		t.Errorf("got SASL %v instance %q, want saga-machine/pw and saga-machine-0", cfg.kafkaSASL, cfg.instanceID)
	}
	if _, err := parseFlags("saga-machine", []string{"--kafka-user", "u", "--kafka-password", "p"}, envMap(nil), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "embedded broker") {
		t.Errorf("credentials without --brokers = %v, want a refusal (the embedded broker has no authentication)", err)
	}
}

// TestKafkaSetupDryRun prints exactly the policy of the shipped definitions.
func TestKafkaSetupDryRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"kafka-setup", "--dry-run"}, envMap(nil), &out, io.Discard); err != nil {
		t.Fatalf("kafka-setup --dry-run: %v", err)
	}
	cat, err := system.LoadCatalog(sagas.FS, nil)
	if err != nil {
		t.Fatal(err)
	}
	acls, err := kafkaPolicy(cat, defaultTopic, kafka.DefaultOrchestratorUser, defaultGroup).ACLs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acls {
		if !strings.Contains(out.String(), "allow "+a.String()+"\n") {
			t.Errorf("dry run lacks %s:\n%s", a, out.String())
		}
	}
	if got := strings.Count(out.String(), "allow "); got != len(acls) {
		t.Errorf("dry run prints %d ACLs, want %d", got, len(acls))
	}
	for _, want := range []string{"User:deals WRITE TOPIC:SAGA_SERVER_TOPIC_DEALS", "User:saga-machine WRITE TOPIC:PROFILE_TOPIC", "User:profile READ TOPIC:PROFILE_TOPIC"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run lacks %s", want)
		}
	}
}

// TestForgedEventThroughTheDaemon is the attack of a participant that
// claims to be another on the real, authenticated broker: saga-machine runs
// as its own principal with the ACLs kafka-setup's policy makes; principal
// deals registers a saga (legitimately, on its own event topic) and then
// sends ORDER_APPROVED claiming to be profile on that same topic (the only
// one its ACLs let it write). The forged event is dead-lettered with
// wrong-participant, and the saga's state and context in saga-machine's
// PostgreSQL database do not move; profile's genuine reply then does move it.
func TestForgedEventThroughTheDaemon(t *testing.T) {
	admin := testenv.KafkaSecured(t)
	dbURL := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The shipped definition with unique topics; its policy with unique users.
	sagasDir := t.TempDir()
	orig, err := os.ReadFile("../../sagas/manual_create_order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(orig)
	for _, tp := range []string{"DEALS_TOPIC", "PROFILE_TOPIC", "NOTIFICATION_TOPIC"} {
		doc = strings.ReplaceAll(doc, "topic: "+tp, "topic: "+testenv.Name(t, tp))
	}
	if err := os.WriteFile(filepath.Join(sagasDir, "manual_create_order.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cat, err := loadCatalog(sagasDir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	base, group := testenv.Name(t, "EV"), testenv.Name(t, "saga-machine")
	pol := kafkaPolicy(cat, base, testenv.Name(t, "saga-machine"), group)
	passwords := map[string]string{pol.Orchestrator: "pw-" + testenv.Name(t, "sm")}
	users := map[string]string{}
	for i := range pol.Participants {
		p := &pol.Participants[i]
		p.User = testenv.Name(t, p.Name)
		users[p.Name] = p.User
		passwords[p.User] = "pw-" + testenv.Name(t, p.Name)
	}
	if _, err := kafka.ApplySetup(ctx, admin, kafka.Setup{Policy: pol, Partitions: 2, Passwords: passwords}); err != nil {
		t.Fatalf("ApplySetup: %v", err)
	}
	t.Cleanup(func() { removePrincipals(t, admin, pol, passwords) })

	// saga-machine as its own principal (no CREATE: the topics exist).
	logs := &syncBuf{}
	dctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	args := []string{"--sagas", sagasDir, "--db", dbURL, "--brokers", strings.Join(admin.Brokers, ","), "--kafka-user", pol.Orchestrator,
		"--topic", base, "--group", group, "--listen", "127.0.0.1:0", "--timer-poll", "100ms"}
	go func() {
		done <- run(dctx, args, envMap(map[string]string{"SAGA_KAFKA_PASSWORD": passwords[pol.Orchestrator]}), io.Discard, logs)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
		if t.Failed() {
			t.Logf("saga-machine logs:\n%s", logs.String())
		}
	}()
	running := regexp.MustCompile(`"msg":"saga-machine running"`)
	waitUntil(t, ctx, "the daemon runs", func() bool {
		select {
		case err := <-done:
			done <- err // for the deferred stop
			t.Fatalf("the daemon stopped at start: %v", err)
		default:
		}
		return running.MatchString(logs.String())
	})
	st, err := sqlstore.Open(ctx, dbURL, sqlstore.WithoutMigrations())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	as := func(participant string) kafka.Config {
		u := users[participant]
		return kafka.Config{Brokers: admin.Brokers, ClientID: "attack-" + participant, SASL: kafka.SASL{User: u, Password: passwords[u]}}
	}
	send := func(cfg kafka.Config, topic string, m engine.Message) {
		t.Helper()
		p, err := kafka.NewProducer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Publish(ctx, []kafka.Record{scripted.Record(topic, m)}); err != nil {
			t.Fatalf("publish %s to %s: %v", m.Name, topic, err)
		}
	}
	sagaID := "0b6f8a52-7d7e-4a56-9d36-" + strings.TrimPrefix(testenv.Name(t, ""), ".t")
	dealsTopic, profileTopic := engine.EventTopic(base, "deals"), engine.EventTopic(base, "profile")
	send(as("deals"), dealsTopic, scripted.NewEvent("MANUAL_CREATE_ORDER", sagaID, "REGISTER", "deals",
		json.RawMessage(`{"deal_context":{"deal_id":"d-1","user_id":"u1"}}`)))
	var before engine.Instance
	waitUntil(t, ctx, "deals' REGISTER started the saga", func() bool {
		before, err = st.GetInstance(ctx, sagaID)
		return err == nil && before.State == "DRAFT"
	})

	forged := scripted.NewEvent("MANUAL_CREATE_ORDER", sagaID, "ORDER_APPROVED", "profile",
		json.RawMessage(`{"profile_decision":"approved","forged_by":"deals"}`))
	send(as("deals"), dealsTopic, forged)
	var dl engine.DeadLetter
	waitUntil(t, ctx, "the forged event is dead-lettered", func() bool {
		dls, err := st.DeadLetters(ctx, 100, true)
		if err != nil {
			t.Fatalf("DeadLetters: %v", err)
		}
		for _, d := range dls {
			if d.MessageID == forged.ID {
				dl = d
				return true
			}
		}
		return false
	})
	if dl.Code != engine.CodeWrongParticipant || dl.Topic != dealsTopic || !strings.Contains(dl.Reason, "profile") {
		t.Errorf("dead letter code %s topic %s reason %q, want %s on %s naming profile", dl.Code, dl.Topic, dl.Reason, engine.CodeWrongParticipant, dealsTopic)
	}
	after, err := st.GetInstance(ctx, sagaID)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != before.State || !bytes.Equal(after.Context, before.Context) || after.Rev != before.Rev {
		t.Errorf("the forged event moved the saga: %s rev %d %s -> %s rev %d %s", before.State, before.Rev, before.Context, after.State, after.Rev, after.Context)
	}

	// The genuine reply, from profile's own principal and topic, is applied.
	send(as("profile"), profileTopic, scripted.NewEvent("MANUAL_CREATE_ORDER", sagaID, "ORDER_APPROVED", "profile",
		json.RawMessage(`{"profile_decision":"approved"}`)))
	waitUntil(t, ctx, "profile's genuine ORDER_APPROVED is applied", func() bool {
		in, err := st.GetInstance(ctx, sagaID)
		return err == nil && in.State == "APPROVED" && !strings.Contains(string(in.Context), "forged_by")
	})
}

func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removePrincipals deletes the test's users, their ACLs and its topics.
func removePrincipals(t *testing.T, admin kafka.Config, pol kafka.Policy, passwords map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts, err := admin.ClientOpts()
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var del []kadm.DeleteSCRAM
	var principals []string
	for u := range passwords {
		del = append(del, kadm.DeleteSCRAM{User: u, Mechanism: kadm.ScramSha512})
		principals = append(principals, "User:"+u)
	}
	if _, err := adm.AlterUserSCRAMs(ctx, del, nil); err != nil {
		t.Logf("cleanup users: %v", err)
	}
	if _, err := adm.DeleteACLs(ctx, kadm.NewACLs().AnyResource().Allow(principals...).AllowHosts().
		Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny)); err != nil {
		t.Logf("cleanup ACLs: %v", err)
	}
	topics, _ := pol.Topics()
	if _, err := adm.DeleteTopics(ctx, topics...); err != nil {
		t.Logf("cleanup topics: %v", err)
	}
}
