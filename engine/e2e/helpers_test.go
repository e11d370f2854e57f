package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// guard bounds every wait so that a broken run fails instead of hanging; it
// is a liveness bound, never a performance assertion.
const guard = 45 * time.Second

// backend is one pair of real database and real broker.
type backend struct {
	name    string
	db      func(t *testing.T) string
	brokers func(t *testing.T) []string
}

var backends = []backend{
	{"postgres+kafka", func(t *testing.T) string { return testenv.Postgres(t) }, func(t *testing.T) []string { return testenv.KafkaBrokers(t) }},
	{"sqlite+kfake", sqliteURL, kfakeBroker},
}

func sqliteURL(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "saga.db") }

func kfakeBroker(t *testing.T) []string {
	t.Helper()
	b, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(b.Close)
	return b.Addrs()
}

// forEachBackend runs fn as a subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, be backend)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { fn(t, be) })
	}
}

// env is one test's world: unique topics, a definitions directory, the
// catalog, database URL and brokers.
type env struct {
	dbURL      string
	kcfg       kafka.Config
	eventTopic string
	topics     map[string]string // participant topic in the shipped YAML → unique name
	sagasDir   string
	cat        *engine.Catalog
}

// newEnv writes the shipped MANUAL_CREATE_ORDER definition (plus extra
// YAML documents) with unique topic names into a directory and creates the
// topics.
func newEnv(t *testing.T, be backend, extra ...string) *env {
	t.Helper()
	e := &env{
		dbURL:      be.db(t),
		kcfg:       kafka.Config{Brokers: be.brokers(t), ClientID: "e2e"},
		eventTopic: testenv.Name(t, "SAGA_SERVER_TOPIC"),
		topics:     map[string]string{},
		sagasDir:   t.TempDir(),
	}
	e.kcfg.SASL = testenv.KafkaSASLFor(e.kcfg.Brokers) // the test cluster's super user; none for the embedded broker
	for _, base := range []string{"DEALS_TOPIC", "PROFILE_TOPIC", "NOTIFICATION_TOPIC", "P_TOPIC"} {
		e.topics[base] = testenv.Name(t, base)
	}
	orig, err := os.ReadFile("../../sagas/manual_create_order.yaml")
	if err != nil {
		t.Fatalf("read shipped definition: %v", err)
	}
	docs := append([]string{string(orig)}, extra...)
	for i, doc := range docs {
		for base, name := range e.topics {
			doc = strings.ReplaceAll(doc, "topic: "+base, "topic: "+name)
		}
		if err := os.WriteFile(filepath.Join(e.sagasDir, fmt.Sprintf("saga%d.yaml", i)), []byte(doc), 0o644); err != nil {
			t.Fatalf("write definition: %v", err)
		}
	}
	defs, probs := definition.LoadDir(os.DirFS(e.sagasDir))
	if len(probs) > 0 {
		t.Fatalf("definitions: %v", probs)
	}
	if e.cat, err = engine.NewCatalog(defs...); err != nil {
		t.Fatalf("catalog: %v", err)
	}
	topics := append([]string{e.eventTopic}, engine.EventTopics(e.eventTopic, e.cat)...) // the daemon reads the participants' own topics
	for _, n := range e.topics {
		topics = append(topics, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, e.kcfg, 3, topics...); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	return e
}

// commandTopics are the participant topics of MANUAL_CREATE_ORDER.
func (e *env) commandTopics() []string {
	return []string{e.topics["DEALS_TOPIC"], e.topics["PROFILE_TOPIC"], e.topics["NOTIFICATION_TOPIC"]}
}

// openStore opens (and migrates) the test database.
func (e *env) openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	st, err := sqlstore.Open(ctx, e.dbURL)
	if err != nil {
		t.Fatalf("open store %s: %v", e.dbURL, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// participant starts the scripted participant on the command topics.
func (e *env) participant(t *testing.T, mod func(*scripted.Config)) *scripted.Participant {
	t.Helper()
	cfg := scripted.Config{Kafka: e.kcfg, Group: testenv.Name(t, "participant"), Topics: e.commandTopics(), EventTopic: e.eventTopic}
	if mod != nil {
		mod(&cfg)
	}
	p, err := scripted.Start(cfg)
	if err != nil {
		t.Fatalf("start scripted participant: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// publish sends events to the event topic.
func (e *env) publish(t *testing.T, msgs ...engine.Message) {
	t.Helper()
	recs := make([]kafka.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = scripted.Record(e.eventTopic, m)
	}
	e.publishRaw(t, recs...)
}

func (e *env) publishRaw(t *testing.T, recs ...kafka.Record) {
	t.Helper()
	p, err := kafka.NewProducer(e.kcfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := p.Publish(ctx, recs); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// runOrchestrator runs an in-process orchestrator (one replica) until the
// test ends.
func (e *env) runOrchestrator(t *testing.T, group string, cfg engine.Config) (*engine.Orchestrator, *sqlstore.Store) {
	t.Helper()
	st := e.openStore(t)
	prod, err := kafka.NewProducer(e.kcfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	cons, err := kafka.NewConsumer(e.kcfg, group, e.eventTopic)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.TimerPoll == 0 {
		cfg.TimerPoll = 50 * time.Millisecond
	}
	if cfg.RelayPoll == 0 {
		cfg.RelayPoll = 50 * time.Millisecond
	}
	o, err := engine.New(cfg, e.cat, st, &publisher{prod})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, &consumer{c: cons}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		cons.Close()
		prod.Close()
	})
	return o, st
}

// testLogger writes warnings and errors to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(&tlog{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tlog struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = (*tlog)(nil)

// publisher and consumer adapt engine/kafka to the engine's interfaces (the
// daemon has its own copy in cmd/saga-machine).
type publisher struct{ p *kafka.Producer }

func (a *publisher) Publish(ctx context.Context, recs []engine.Record) error {
	out := make([]kafka.Record, len(recs))
	for i, r := range recs {
		out[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return a.p.Publish(ctx, out)
}

type consumer struct {
	c    *kafka.Consumer
	last []kafka.Record
}

func (a *consumer) Fetch(ctx context.Context, max int) ([]engine.Record, error) {
	recs, err := a.c.Fetch(ctx, max)
	if err != nil {
		return nil, err
	}
	a.last = recs
	out := make([]engine.Record, len(recs))
	for i, r := range recs {
		out[i] = engine.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Partition: r.Partition, Offset: r.Offset}
	}
	return out, nil
}

// Commit commits the records of the last Fetch (the orchestrator always
// commits exactly what it fetched), which carry the leader epoch.
func (a *consumer) Commit(ctx context.Context, recs []engine.Record) error {
	if len(recs) != len(a.last) {
		return fmt.Errorf("commit %d records, but the last fetch returned %d", len(recs), len(a.last))
	}
	return a.c.Commit(ctx, a.last)
}

// waitFor polls cond until it holds or guard runs out.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(guard)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %v; last: %s", what, guard, last)
}

// register builds a REGISTER event for a new saga.
func register(sagaID string, reject bool) engine.Message {
	p := fmt.Sprintf(`{"deal_context":{"deal_id":"deal-%s","user_id":"u1","reject":%t}}`, sagaID[:8], reject)
	return scripted.NewEvent("MANUAL_CREATE_ORDER", sagaID, "REGISTER", "deals", json.RawMessage(p))
}

// accepted counts a saga's accepted entries per event name.
func accepted(t *testing.T, st engine.Queries, sagaID string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	hist, err := st.History(ctx, sagaID)
	if err != nil {
		t.Fatalf("History(%s): %v", sagaID, err)
	}
	out := map[string]int{}
	for _, h := range hist {
		if h.Kind == engine.EntryEvent || h.Kind == engine.EntryTimer {
			out[h.Event]++
		}
	}
	return out
}

// allFinished reports whether every saga is in a terminal state.
func allFinished(st engine.Queries, ids []string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	running := 0
	first := ""
	for _, id := range ids {
		in, err := st.GetInstance(ctx, id)
		if err != nil || in.Status == engine.StatusRunning {
			running++
			if first == "" {
				first = fmt.Sprintf("%s: state %s err %v", id, in.State, err)
			}
		}
	}
	return running == 0, fmt.Sprintf("%d of %d not finished (e.g. %s)", running, len(ids), first)
}
