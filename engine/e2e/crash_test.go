package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// daemonBinary builds cmd/saga-machine once per test binary.
func daemonBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "saga-machine-e2e")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "saga-machine")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/saga-machine").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// daemon is a saga-machine subprocess.
type daemon struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	logs *bytes.Buffer
	mu   sync.Mutex
	n    int
}

func (e *env) daemon(t *testing.T, group string) *daemon {
	t.Helper()
	d := &daemon{t: t, logs: &bytes.Buffer{}, args: []string{
		"--sagas", e.sagasDir, "--db", e.dbURL, "--brokers", strings.Join(e.kcfg.Brokers, ","),
		"--topic", e.eventTopic, "--group", group, "--listen", "127.0.0.1:0",
		"--timer-poll", "100ms", "--log-level", "warn", "--kafka-session-timeout", "6s",
	}}
	if s := e.kcfg.SASL; s.Enabled() {
		d.args = append(d.args, "--kafka-user", s.User, "--kafka-password", s.Password)
	}
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		if t.Failed() {
			d.mu.Lock()
			t.Logf("saga-machine logs:\n%s", d.logs.String())
			d.mu.Unlock()
		}
	})
	return d
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (d *daemon) start() {
	d.t.Helper()
	d.n++
	cmd := exec.Command(daemonBinary(d.t), d.args...)
	cmd.Dir = d.t.TempDir()
	w := lockedWriter{&d.mu, d.logs}
	fmt.Fprintf(w, "--- start %d\n", d.n)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start saga-machine: %v", err)
	}
	d.cmd = cmd
}

// publishOwn sends each event to the event topic of the participant it
// names, where the daemon (which binds senders to topics) reads it.
func (e *env) publishOwn(t *testing.T, msgs ...engine.Message) {
	t.Helper()
	recs := make([]kafka.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = scripted.Record(engine.EventTopic(e.eventTopic, m.Participant), m)
	}
	e.publishRaw(t, recs...)
}

// stop sends sig and waits for the process to exit.
func (d *daemon) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	_ = d.cmd.Wait()
	d.cmd = nil
}

// saga-machine is killed with SIGKILL at random moments while the scripted
// participant runs sagas, and restarted, several times: every saga ends in
// its final state, every transition is applied exactly once and every
// command reaches the participant at least once.
//
// It runs against real Kafka only: kfake keeps a classic consumer group in
// its rebalance for the dead member's full rebalance timeout (60s in kgo,
// not configurable through engine/kafka), so every kill would stall the
// embedded broker's group for a minute.
func TestKill9WhileSagasRun(t *testing.T) {
	kafkaBackends := []backend{
		backends[0],
		{"sqlite+kafka", sqliteURL, func(t *testing.T) []string { return testenv.KafkaBrokers(t) }},
	}
	for _, be := range kafkaBackends {
		t.Run(be.name, func(t *testing.T) { testKill9(t, be) })
	}
}

func testKill9(t *testing.T, be backend) {
	e := newEnv(t, be)
	st := e.openStore(t) // migrates before the daemon starts
	p := e.participant(t, func(c *scripted.Config) { c.EventTopicBase = e.eventTopic })
	d := e.daemon(t, testenv.Name(t, "sm"))
	d.start()

	const waves, perWave = 4, 25
	var ids []string
	rejected := map[string]bool{}
	for w := 0; w < waves; w++ {
		var msgs []engine.Message
		for i := 0; i < perWave; i++ {
			id := uuid.NewString()
			ids = append(ids, id)
			rejected[id] = i%5 == 0
			msgs = append(msgs, register(id, rejected[id]))
		}
		e.publishOwn(t, msgs...)
		if w == waves-1 {
			break
		}
		time.Sleep(time.Duration(200+rand.IntN(1200)) * time.Millisecond)
		d.stop(syscall.SIGKILL)
		d.start()
	}
	waitFor(t, "all sagas finished", func() (bool, string) { return allFinished(st, ids) })
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return distinct(ms, "NOTIFY") >= len(ids) }); err != nil {
		t.Fatalf("every NOTIFY published: %v (got %d of %d)", err, distinct(p.Received(), "NOTIFY"), len(ids))
	}
	sent := map[string]map[string]bool{}
	for _, m := range p.Received() {
		if sent[m.SagaID] == nil {
			sent[m.SagaID] = map[string]bool{}
		}
		sent[m.SagaID][m.Name] = true
	}
	for _, id := range ids {
		in, err := st.GetInstance(ctx, id)
		if err != nil || in.State != "NOTIFICATION" || in.Status != engine.StatusCompleted {
			t.Errorf("saga %s: %s %s %v, want NOTIFICATION completed", id, in.State, in.Status, err)
		}
		decision, second := "ORDER_APPROVED", "APPROVE_DEAL"
		if rejected[id] {
			decision, second = "ORDER_REJECTED", "REJECT_DEAL"
		}
		got := accepted(t, st, id)
		if got["REGISTER"] != 1 || got[decision] != 1 || got["DEAL_UPDATED"] != 1 || len(got) != 3 {
			t.Errorf("saga %s accepted %v, want REGISTER, %s, DEAL_UPDATED once each", id, got, decision)
		}
		for _, c := range []string{"APPROVE_ORDER", second, "NOTIFY"} {
			if !sent[id][c] {
				t.Errorf("saga %s: command %s never reached the participant", id, c)
			}
		}
	}
	if dls, _ := st.DeadLetters(ctx, 10, true); len(dls) != 0 {
		t.Errorf("dead letters: %s, want none", codes(dls))
	}
}

func distinct(ms []engine.Message, name string) int {
	seen := map[string]bool{}
	for _, m := range ms {
		if m.Name == name {
			seen[m.SagaID] = true
		}
	}
	return len(seen)
}

const restartSaga = `
saga: RESTART_TIMERS
version: 1
participants:
  p: { topic: P_TOPIC }
states:
  WAITING_SLOW:
    timeout: { after: 3s, event: TIMED_OUT }
transitions:
  - on: GO_RETRY
    by: p
    from: []
    to: WAIT_RETRY
    send: { to: p, command: PING, retry: { attempts: 4, backoff: 2s, max_backoff: 4s, exhausted: GAVE_UP } }
  - { on: PONG, by: p, from: [WAIT_RETRY], to: DONE }
  - { on: GAVE_UP, by: engine, from: [WAIT_RETRY], to: BROKEN }
  - { on: GO_SLOW, by: p, from: [], to: WAITING_SLOW, send: { to: p, command: SLOW } }
  - { on: TIMED_OUT, by: engine, from: [WAITING_SLOW], to: LATE }
final: [DONE]
failed: [BROKEN, LATE]
`

// Timers are rows: a retry and a state timeout that fall due while
// saga-machine is down fire after it restarts.
func TestRetryAndTimeoutFireAfterRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be, restartSaga)
		st := e.openStore(t)
		p := e.participant(t, func(c *scripted.Config) {
			c.Topics = []string{e.topics["P_TOPIC"]}
			c.Rules = map[string]scripted.Rule{"PING": func(engine.Message) []scripted.Reply { return []scripted.Reply{{Event: "PONG"}} }}
			c.DropFirst = map[string]int{"PING": 1}
			c.Silent = map[string]bool{"SLOW": true}
			c.EventTopicBase = e.eventTopic
		})
		d := e.daemon(t, testenv.Name(t, "sm"))
		d.start()
		retried, slow := uuid.NewString(), uuid.NewString()
		e.publishOwn(t,
			scripted.NewEvent("RESTART_TIMERS", retried, "GO_RETRY", "p", nil),
			scripted.NewEvent("RESTART_TIMERS", slow, "GO_SLOW", "p", nil))
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool { return count(ms, "PING") >= 1 && count(ms, "SLOW") >= 1 }); err != nil {
			t.Fatal(err)
		}
		d.stop(syscall.SIGKILL)
		a, errA := st.GetInstance(ctx, retried)
		b, errB := st.GetInstance(ctx, slow)
		if errA != nil || errB != nil || a.Attempts != 1 || a.State != "WAIT_RETRY" || b.State != "WAITING_SLOW" {
			t.Fatalf("at the kill: %+v %v / %+v %v; want WAIT_RETRY after one send and WAITING_SLOW", a, errA, b, errB)
		}
		// Stay down until both timers are due.
		for _, at := range []*time.Time{a.TimerAt, b.TimerAt} {
			if at == nil {
				t.Fatal("a timer is not armed")
			}
			time.Sleep(time.Until(*at))
		}
		d.start()
		waitFor(t, "both sagas finished", func() (bool, string) { return allFinished(st, []string{retried, slow}) })
		a, _ = st.GetInstance(ctx, retried)
		b, _ = st.GetInstance(ctx, slow)
		if a.State != "DONE" || b.State != "LATE" {
			t.Errorf("after restart: %s and %s, want DONE and LATE", a.State, b.State)
		}
		hist, _ := st.History(ctx, retried)
		retries := 0
		for _, h := range hist {
			if h.Kind == engine.EntryRetry {
				retries++
			}
		}
		if retries < 1 {
			t.Errorf("retried saga history has no retry entry: %+v", hist)
		}
		if got := accepted(t, st, slow); got["TIMED_OUT"] != 1 {
			t.Errorf("slow saga accepted %v, want TIMED_OUT once", got)
		}
	})
}
