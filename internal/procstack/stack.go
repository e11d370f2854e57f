package procstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// Participants are the participant services a Stack runs, in start order.
var Participants = []string{Notification, Profile, Deals}

// Config configures New. The zero value runs the built-in definitions with
// their own retry policies.
type Config struct {
	// Definitions holds the saga definitions (*.yaml at its root) that
	// saga-machine loads, rewritten by RewriteDefinitions. Default: the
	// built-in ones (sagas.FS). Every participant they name must be one of
	// Participants.
	Definitions fs.FS
	// Retries shortens (or lengthens) the retry policy of commands, by
	// command name, everywhere they are sent or compensate (see
	// RewriteDefinitions).
	Retries map[string]Retry
	// Partitions of every topic of the stack. Default 3.
	Partitions int32
	// LogLevel of every process. Default "info".
	LogLevel string
	// Args are extra flags per service name (e.g. "saga-machine").
	Args map[string][]string
}

// Service is one process of a Stack and what it was given.
type Service struct {
	*Proc
	// Name is the service: SagaMachine, Deals, Profile or Notification.
	Name string
	// DB is the URL of its own PostgreSQL database.
	DB string
	// URL is its HTTP base URL, e.g. http://127.0.0.1:40123 (the same after
	// every restart).
	URL string
	// User is its Kafka principal (SCRAM user).
	User string
	// InstanceID is its static consumer group member id, the same after
	// every restart.
	InstanceID string
	// Group is its consumer group.
	Group string
	// CommandTopic and EventTopic are a participant's topics (empty for
	// saga-machine).
	CommandTopic, EventTopic string

	kafka kafka.Config // its principal's client configuration, see Kafka
}

// Kafka returns the client configuration of the service's own Kafka
// principal (the stack's brokers, SCRAM user User and its password), so a
// test can act on the bus as that service: publish what it may publish,
// and try what its ACLs refuse.
func (sv *Service) Kafka() kafka.Config { return sv.kafka }

// Stack is saga-machine, deals, profile and notification running as
// separate processes on the test's PostgreSQL and Kafka, isolated from
// other tests (see the package documentation).
type Stack struct {
	// ID is the stack's unique suffix (in topic, group and user names).
	ID string
	// Admin is the Kafka super user's client configuration.
	Admin kafka.Config
	// EventTopicBase is saga-machine's --topic: participant p writes its
	// events to engine.EventTopic(EventTopicBase, p).
	EventTopicBase string
	// SagasDir holds the rewritten definitions saga-machine loads.
	SagasDir string
	// The four processes.
	SagaMachine, Deals, Profile, Notification *Service

	dbs map[string]*sqlx.DB // by service name
}

// Services returns the four services, saga-machine first.
func (s *Stack) Services() []*Service {
	return []*Service{s.SagaMachine, s.Deals, s.Profile, s.Notification}
}

// Service returns a service by name, nil for an unknown name.
func (s *Stack) Service(name string) *Service {
	for _, sv := range s.Services() {
		if sv.Name == name {
			return sv
		}
	}
	return nil
}

// Exited lists, per service, the runs that ended without Kill or Stop:
// empty when every process ran as the test asked.
func (s *Stack) Exited() []string {
	var out []string
	for _, sv := range s.Services() {
		for _, e := range sv.Exited() {
			out = append(out, sv.Name+" "+e)
		}
	}
	return out
}

// New starts a Stack and waits until every process is healthy; it fails
// the test if it cannot (and, under CI=true, if PostgreSQL or an
// authenticating Kafka is missing). Cleanups kill the processes, then
// remove the stack's Kafka users, ACLs and topics and drop its databases.
func New(tb testing.TB, cfg Config) *Stack {
	tb.Helper()
	if cfg.Definitions == nil {
		cfg.Definitions = sagas.FS
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	admin := testenv.KafkaSecured(tb) // first: a missing service skips (fails under CI) before the build
	s := &Stack{ID: randomHex(5), Admin: admin}
	suffix := ".t" + s.ID
	s.EventTopicBase = engine.DefaultEventTopicBase + suffix

	work := tb.TempDir()
	s.SagasDir = filepath.Join(work, "sagas")
	if err := os.Mkdir(s.SagasDir, 0o755); err != nil {
		tb.Fatalf("procstack: %v", err)
	}

	mk := func(name string) *Service {
		sv := &Service{Name: name, DB: testenv.Postgres(tb), User: "t" + s.ID + "-" + name,
			InstanceID: name + "-0" + suffix, Group: name + suffix}
		if name != SagaMachine {
			sv.CommandTopic = strings.ToUpper(name) + "_TOPIC" + suffix
			sv.EventTopic = engine.EventTopic(s.EventTopicBase, name)
		}
		return sv
	}
	s.SagaMachine, s.Deals, s.Profile, s.Notification = mk(SagaMachine), mk(Deals), mk(Profile), mk(Notification)
	bins := Build(tb)

	topics := map[string]string{}
	pol := kafka.Policy{Orchestrator: s.SagaMachine.User, OrchestratorGroup: s.SagaMachine.Group}
	for _, name := range Participants {
		sv := s.Service(name)
		topics[name] = sv.CommandTopic
		pol.Participants = append(pol.Participants, kafka.ParticipantAccess{Name: name, User: sv.User,
			CommandTopic: sv.CommandTopic, EventTopic: sv.EventTopic, Group: sv.Group})
	}
	if err := RewriteDefinitions(cfg.Definitions, s.SagasDir, topics, cfg.Retries); err != nil {
		tb.Fatal(err)
	}

	passwords := map[string]string{}
	for _, sv := range s.Services() {
		passwords[sv.User] = randomHex(16)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	members := map[string]string{} // group → static member id
	for _, sv := range s.Services() {
		members[sv.Group] = sv.InstanceID
	}
	tb.Cleanup(func() { removeKafka(tb, admin, pol, passwords, members) })
	if _, err := kafka.ApplySetup(ctx, admin, kafka.Setup{Policy: pol, Partitions: cfg.Partitions, Passwords: passwords}); err != nil {
		tb.Fatalf("procstack: Kafka setup of the stack: %v", err)
	}

	for _, sv := range s.Services() {
		sv.kafka = kafka.Config{Brokers: admin.Brokers, ClientID: "procstack-as-" + sv.Name,
			SASL: kafka.SASL{User: sv.User, Password: passwords[sv.User]}} // the mechanism the processes use (default)
		pwFile := filepath.Join(work, sv.Name+".kafka-password")
		if err := os.WriteFile(pwFile, []byte(passwords[sv.User]), 0o600); err != nil {
			tb.Fatalf("procstack: %v", err)
		}
		addr := freeAddr(tb)
		sv.URL = "http://" + addr
		args := []string{"--db", sv.DB, "--brokers", strings.Join(admin.Brokers, ","), "--listen", addr,
			"--kafka-user", sv.User, "--kafka-password-file", pwFile, "--kafka-instance-id", sv.InstanceID,
			"--log-level", cfg.LogLevel}
		if sv.Name == SagaMachine {
			args = append(args, "--sagas", s.SagasDir, "--topic", s.EventTopicBase, "--group", sv.Group,
				"--partitions", strconv.Itoa(int(cfg.Partitions)), "--timer-poll", "100ms")
		} else {
			args = append(args, "--dev-header", "--command-topic", sv.CommandTopic, "--event-topic", sv.EventTopic, "--group", sv.Group)
		}
		args = append(args, cfg.Args[sv.Name]...)
		dir := filepath.Join(work, sv.Name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			tb.Fatalf("procstack: %v", err)
		}
		sv.Proc = NewProc(tb, Spec{Name: sv.Name, Binary: bins.For(sv.Name), Args: args, Health: sv.URL + "/healthz", Dir: dir})
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, sv := range s.Services() {
		wg.Go(func() {
			sctx, scancel := context.WithTimeout(context.Background(), HealthTimeout)
			defer scancel()
			errs[i] = sv.Restart(sctx)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	s.dbs = map[string]*sqlx.DB{}
	for _, sv := range s.Services() {
		db, err := sqlx.Open("postgres", sv.DB)
		if err != nil {
			tb.Fatalf("procstack: open %s's database: %v", sv.Name, err)
		}
		db.SetMaxOpenConns(4)
		tb.Cleanup(func() { db.Close() })
		s.dbs[sv.Name] = db
	}
	tb.Logf("procstack: stack %s up: topics %s_*, %s; databases %s", s.ID, s.EventTopicBase,
		strings.Join([]string{s.Deals.CommandTopic, s.Profile.CommandTopic, s.Notification.CommandTopic}, ", "), s.dbNames())
	return s
}

func (s *Stack) dbNames() string {
	var names []string
	for _, sv := range s.Services() {
		db := sv.DB
		if i := strings.LastIndex(db, "/"); i >= 0 {
			db = db[i+1:]
		}
		if i := strings.Index(db, "?"); i >= 0 {
			db = db[:i]
		}
		names = append(names, sv.Name+"="+db)
	}
	return strings.Join(names, " ")
}

// removeKafka deletes the stack's users, their ACLs, its topics and its
// consumer groups (after removing the static members its killed processes
// left: a group with members cannot be deleted).
func removeKafka(tb testing.TB, admin kafka.Config, pol kafka.Policy, passwords, members map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts, err := admin.ClientOpts()
	if err != nil {
		tb.Logf("procstack: cleanup Kafka: %v", err)
		return
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		tb.Logf("procstack: cleanup Kafka: %v", err)
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
		tb.Logf("procstack: cleanup Kafka users: %v", err)
	}
	if _, err := adm.DeleteACLs(ctx, kadm.NewACLs().AnyResource().Allow(principals...).AllowHosts().
		Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny)); err != nil {
		tb.Logf("procstack: cleanup Kafka ACLs: %v", err)
	}
	topics, _ := pol.Topics()
	if _, err := adm.DeleteTopics(ctx, topics...); err != nil {
		tb.Logf("procstack: cleanup Kafka topics: %v", err)
	}
	var groups []string
	for group, id := range members {
		groups = append(groups, group)
		if _, err := adm.LeaveGroup(ctx, kadm.LeaveGroup(group).InstanceIDs(id).Reason("procstack cleanup")); err != nil {
			tb.Logf("procstack: cleanup Kafka group %s: remove member %s: %v", group, id, err)
		}
	}
	deleted, err := adm.DeleteGroups(ctx, groups...)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		tb.Logf("procstack: cleanup Kafka groups: %v", err)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago; the service keeps it across restarts.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("procstack: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// adminClient is a franz-go client of the super user.
func (s *Stack) adminClient() (*kgo.Client, error) {
	opts, err := s.Admin.ClientOpts()
	if err != nil {
		return nil, fmt.Errorf("procstack: Kafka admin client: %w", err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("procstack: Kafka admin client: %w", err)
	}
	return cl, nil
}
