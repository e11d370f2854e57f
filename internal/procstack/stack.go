package procstack

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
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
	// Replicas is the number of processes per service name (default 1):
	// replicas of a service share its database, topics, consumer group
	// and Kafka principal, each with its own HTTP address and static group
	// member id.
	Replicas map[string]int
}

// Env is what Start runs a Stack on, for a program that is not a test
// (New fills it from internal/testenv).
type Env struct {
	// PostgresURL is the URL of a PostgreSQL server's maintenance database
	// (e.g. postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable),
	// as a user that may create databases: Start creates one per service
	// there and Close drops them.
	PostgresURL string
	// Kafka is the client configuration of a Kafka super user (brokers and
	// SASL): Start creates the stack's topics, principals and ACLs with it
	// and Close removes them.
	Kafka kafka.Config
	// Binaries are the services' executables (BuildTo).
	Binaries Binaries
	// Dir is an existing directory for the stack's files (rewritten
	// definitions, password files, the processes' working directories).
	Dir string
	// Logf, when set, receives what the stack has to say (start, cleanup
	// problems).
	Logf func(format string, args ...any)
	// ProcessLogs, when true, writes every process's output to
	// Dir/<service>[-<replica>].log besides keeping its tail (Proc.Logs).
	ProcessLogs bool
}

func (e Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

// Replica is one process of a Service.
type Replica struct {
	*Proc
	// Service is the service the process belongs to.
	Service *Service
	// Index numbers the service's replicas from 0.
	Index int
	// URL is the process's HTTP base URL (the same after every restart).
	URL string
	// InstanceID is its static consumer group member id, the same after
	// every restart.
	InstanceID string
}

// Name is the replica's label: the service name, with "#<index>" when the
// service has more than one replica.
func (r *Replica) Name() string {
	if len(r.Service.Replicas) > 1 {
		return r.Service.Name + "#" + strconv.Itoa(r.Index)
	}
	return r.Service.Name
}

// Service is one service of a Stack and what it was given. Its embedded
// Proc, URL and InstanceID are those of its first replica.
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
	// Replicas are the service's processes (Config.Replicas), the first
	// being the embedded Proc.
	Replicas []*Replica

	kafka kafka.Config // its principal's client configuration, see Kafka
}

// Kafka returns the client configuration of the service's own Kafka
// principal (the stack's brokers, SCRAM user User and its password), so a
// test can act on the bus as that service: publish what it may publish,
// and try what its ACLs refuse.
func (sv *Service) Kafka() kafka.Config { return sv.kafka }

// Stack is saga-machine, deals, profile and notification running as
// separate processes on one PostgreSQL server and Kafka cluster, isolated
// from other stacks there (see the package documentation).
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
	// The four services.
	SagaMachine, Deals, Profile, Notification *Service

	env       Env
	dbs       map[string]*sqlx.DB // by service name
	closeOnce sync.Once
	cleanups  []func() // run by Close, newest first
	closeErrs []error
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

// Replicas returns every process of the stack, service by service
// (saga-machine first).
func (s *Stack) Replicas() []*Replica {
	var out []*Replica
	for _, sv := range s.Services() {
		out = append(out, sv.Replicas...)
	}
	return out
}

// Exited lists, per process, the runs that ended without Kill or Stop:
// empty when every process ran as the test asked.
func (s *Stack) Exited() []string {
	var out []string
	for _, r := range s.Replicas() {
		for _, e := range r.Exited() {
			out = append(out, r.Name()+" "+e)
		}
	}
	return out
}

// New starts a Stack on internal/testenv's PostgreSQL and Kafka and waits
// until every process is healthy; it fails the test if it cannot (and,
// under CI=true, if PostgreSQL or an authenticating Kafka is missing).
// Cleanups kill the processes (writing the newest lines of their output to
// the test log if the test failed), then remove the stack's Kafka users,
// ACLs and topics and drop its databases.
func New(tb testing.TB, cfg Config) *Stack {
	tb.Helper()
	admin := testenv.KafkaSecured(tb) // first: a missing service skips (fails under CI) before the build
	pg := testenv.PostgresAdminURL()
	if err := pingPostgres(pg); err != nil {
		testenv.Missing(tb, "PostgreSQL at "+pg, err)
	}
	env := Env{PostgresURL: pg, Kafka: admin, Binaries: Build(tb), Dir: tb.TempDir(), Logf: tb.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+HealthTimeout)
	defer cancel()
	s, err := Start(ctx, env, cfg)
	if s != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				for _, r := range s.Replicas() {
					if r.Proc != nil {
						tb.Logf("%s", r.FailureLog())
					}
				}
			}
			if err := s.Close(); err != nil {
				tb.Logf("%v", err)
			}
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func pingPostgres(u string) error {
	db, err := sql.Open("postgres", u)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// Start starts a Stack on env and waits until every process is healthy
// (or ctx ends). On an error it returns the partial Stack too (nil if
// nothing was made yet): Close it, after reading its processes' logs if
// useful. Close kills the processes, removes the stack's Kafka users, ACLs,
// topics and groups and drops its databases.
func Start(ctx context.Context, env Env, cfg Config) (*Stack, error) {
	if cfg.Definitions == nil {
		cfg.Definitions = sagas.FS
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	for name, n := range cfg.Replicas {
		if env.Binaries.For(name) == "" || n < 1 || n > 16 {
			return nil, fmt.Errorf("procstack: Replicas[%q] = %d: want a service name and 1 to 16", name, n)
		}
	}
	if env.Dir == "" {
		return nil, errors.New("procstack: Env.Dir is empty")
	}
	s := &Stack{ID: randomHex(5), Admin: env.Kafka, env: env, dbs: map[string]*sqlx.DB{}}
	if err := s.start(ctx, cfg); err != nil {
		return s, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, cfg Config) error {
	env := s.env
	suffix := ".t" + s.ID
	s.EventTopicBase = engine.DefaultEventTopicBase + suffix
	s.SagasDir = filepath.Join(env.Dir, "sagas")
	if err := os.Mkdir(s.SagasDir, 0o755); err != nil {
		return fmt.Errorf("procstack: %w", err)
	}

	mk := func(name string) (*Service, error) {
		db, err := s.createDatabase(ctx, name)
		if err != nil {
			return nil, err
		}
		sv := &Service{Name: name, DB: db, User: "t" + s.ID + "-" + name, Group: name + suffix}
		if name != SagaMachine {
			sv.CommandTopic = strings.ToUpper(name) + "_TOPIC" + suffix
			sv.EventTopic = engine.EventTopic(s.EventTopicBase, name)
		}
		n := max(cfg.Replicas[name], 1)
		for i := range n {
			r := &Replica{Service: sv, Index: i, InstanceID: name + "-" + strconv.Itoa(i) + suffix}
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			r.URL = "http://" + addr
			sv.Replicas = append(sv.Replicas, r)
		}
		sv.URL, sv.InstanceID = sv.Replicas[0].URL, sv.Replicas[0].InstanceID
		return sv, nil
	}
	var err error
	if s.SagaMachine, err = mk(SagaMachine); err != nil {
		return err
	}
	if s.Deals, err = mk(Deals); err != nil {
		return err
	}
	if s.Profile, err = mk(Profile); err != nil {
		return err
	}
	if s.Notification, err = mk(Notification); err != nil {
		return err
	}

	topics := map[string]string{}
	pol := kafka.Policy{Orchestrator: s.SagaMachine.User, OrchestratorGroup: s.SagaMachine.Group}
	for _, name := range Participants {
		sv := s.Service(name)
		topics[name] = sv.CommandTopic
		pol.Participants = append(pol.Participants, kafka.ParticipantAccess{Name: name, User: sv.User,
			CommandTopic: sv.CommandTopic, EventTopic: sv.EventTopic, Group: sv.Group})
	}
	if err := RewriteDefinitions(cfg.Definitions, s.SagasDir, topics, cfg.Retries); err != nil {
		return err
	}

	passwords := map[string]string{}
	for _, sv := range s.Services() {
		passwords[sv.User] = randomHex(16)
	}
	members := map[string][]string{} // group → static member ids
	for _, r := range s.Replicas() {
		members[r.Service.Group] = append(members[r.Service.Group], r.InstanceID)
	}
	s.onClose(func() error { return removeKafka(env.Kafka, pol, passwords, members) })
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = kafka.ApplySetup(sctx, env.Kafka, kafka.Setup{Policy: pol, Partitions: cfg.Partitions, Passwords: passwords})
	cancel()
	if err != nil {
		return fmt.Errorf("procstack: Kafka setup of the stack: %w", err)
	}

	for _, sv := range s.Services() {
		sv.kafka = kafka.Config{Brokers: env.Kafka.Brokers, ClientID: "procstack-as-" + sv.Name,
			SASL: kafka.SASL{User: sv.User, Password: passwords[sv.User]}} // the mechanism the processes use (default)
		pwFile := filepath.Join(env.Dir, sv.Name+".kafka-password")
		if err := os.WriteFile(pwFile, []byte(passwords[sv.User]), 0o600); err != nil {
			return fmt.Errorf("procstack: %w", err)
		}
		for _, r := range sv.Replicas {
			addr := strings.TrimPrefix(r.URL, "http://")
			args := []string{"--db", sv.DB, "--brokers", strings.Join(env.Kafka.Brokers, ","), "--listen", addr,
				"--kafka-user", sv.User, "--kafka-password-file", pwFile, "--kafka-instance-id", r.InstanceID,
				"--log-level", cfg.LogLevel}
			if sv.Name == SagaMachine {
				args = append(args, "--sagas", s.SagasDir, "--topic", s.EventTopicBase, "--group", sv.Group,
					"--partitions", strconv.Itoa(int(cfg.Partitions)), "--timer-poll", "100ms")
			} else {
				args = append(args, "--dev-header", "--command-topic", sv.CommandTopic, "--event-topic", sv.EventTopic, "--group", sv.Group)
			}
			args = append(args, cfg.Args[sv.Name]...)
			base := sv.Name
			if len(sv.Replicas) > 1 {
				base += "-" + strconv.Itoa(r.Index)
			}
			dir := filepath.Join(env.Dir, base)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return fmt.Errorf("procstack: %w", err)
			}
			spec := Spec{Name: r.Name(), Binary: env.Binaries.For(sv.Name), Args: args, Health: r.URL + "/healthz", Dir: dir}
			if env.ProcessLogs {
				f, err := os.OpenFile(filepath.Join(env.Dir, base+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
				if err != nil {
					return fmt.Errorf("procstack: %w", err)
				}
				s.onClose(f.Close)
				spec.Log = f
			}
			r.Proc = NewProcess(spec)
			s.onClose(r.Kill)
		}
		sv.Proc = sv.Replicas[0].Proc
	}

	// Every replica at once: the first replica of a service migrates its
	// database, its siblings wait for the same migrations (a lock).
	var wg sync.WaitGroup
	reps := s.Replicas()
	errs := make([]error, len(reps))
	for i, r := range reps {
		wg.Go(func() {
			hctx, hcancel := context.WithTimeout(ctx, HealthTimeout)
			defer hcancel()
			errs[i] = r.Restart(hctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, sv := range s.Services() {
		db, err := sqlx.Open("postgres", sv.DB)
		if err != nil {
			return fmt.Errorf("procstack: open %s's database: %w", sv.Name, err)
		}
		db.SetMaxOpenConns(4)
		s.onClose(db.Close)
		s.dbs[sv.Name] = db
	}
	env.logf("procstack: stack %s up: topics %s_*, %s; databases %s", s.ID, s.EventTopicBase,
		strings.Join([]string{s.Deals.CommandTopic, s.Profile.CommandTopic, s.Notification.CommandTopic}, ", "), s.dbNames())
	return nil
}

// onClose registers a cleanup for Close (run newest first).
func (s *Stack) onClose(f func() error) {
	s.cleanups = append(s.cleanups, func() {
		if err := f(); err != nil {
			s.closeErrs = append(s.closeErrs, err)
		}
	})
}

// Close kills the stack's processes, removes its Kafka users, ACLs, topics
// and groups and drops its databases. Calling it again does nothing. The
// error joins what could not be cleaned up.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		for i := len(s.cleanups) - 1; i >= 0; i-- {
			s.cleanups[i]()
		}
	})
	if len(s.closeErrs) == 0 {
		return nil
	}
	return fmt.Errorf("procstack: close stack %s: %w", s.ID, errors.Join(s.closeErrs...))
}

// createDatabase creates the database of service name on the server of
// Env.PostgresURL, registers its removal with Close and returns its URL.
func (s *Stack) createDatabase(ctx context.Context, name string) (string, error) {
	admin := s.env.PostgresURL
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("procstack: PostgreSQL URL: %w", err)
	}
	db, err := sql.Open("postgres", admin)
	if err != nil {
		return "", fmt.Errorf("procstack: connect to PostgreSQL: %w", err)
	}
	dbName := "ps_" + s.ID + "_" + strings.ReplaceAll(name, "-", "_")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(cctx, "CREATE DATABASE "+dbName); err != nil {
		db.Close()
		return "", fmt.Errorf("procstack: create database %s: %w", dbName, err)
	}
	s.onClose(func() error {
		defer db.Close()
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if _, err := db.ExecContext(dctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", dbName, err)
		}
		return nil
	})
	u.Path = "/" + dbName
	return u.String(), nil
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
func removeKafka(admin kafka.Config, pol kafka.Policy, passwords map[string]string, members map[string][]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm, err := admin.NewAdmin()
	if err != nil {
		return fmt.Errorf("cleanup Kafka: %w", err)
	}
	defer adm.Close()
	var errs []error
	var del []kadm.DeleteSCRAM
	var principals []string
	for u := range passwords {
		del = append(del, kadm.DeleteSCRAM{User: u, Mechanism: kadm.ScramSha512})
		principals = append(principals, "User:"+u)
	}
	if _, err := adm.AlterUserSCRAMs(ctx, del, nil); err != nil {
		errs = append(errs, fmt.Errorf("cleanup Kafka users: %w", err))
	}
	if _, err := adm.DeleteACLs(ctx, kadm.NewACLs().AnyResource().Allow(principals...).AllowHosts().
		Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny)); err != nil {
		errs = append(errs, fmt.Errorf("cleanup Kafka ACLs: %w", err))
	}
	topics, _ := pol.Topics()
	if _, err := adm.DeleteTopics(ctx, topics...); err != nil {
		errs = append(errs, fmt.Errorf("cleanup Kafka topics: %w", err))
	}
	var groups []string
	for group, ids := range members {
		groups = append(groups, group)
		if _, err := adm.LeaveGroup(ctx, kadm.LeaveGroup(group).InstanceIDs(ids...).Reason("procstack cleanup")); err != nil {
			errs = append(errs, fmt.Errorf("cleanup Kafka group %s: remove members %v: %w", group, ids, err))
		}
	}
	deleted, err := adm.DeleteGroups(ctx, groups...)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("cleanup Kafka groups: %w", err))
	}
	return errors.Join(errs...)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago; the service keeps it across restarts.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("procstack: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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
