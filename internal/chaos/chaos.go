package chaos

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// Config sizes a run. The zero value of a field takes its default (see
// each field); Short and Long are the two runs of the repository.
type Config struct {
	// Sagas is how many deals (MANUAL_CREATE_ORDER sagas) are offered.
	// Default 1,000.
	Sagas int
	// Rate is how many are offered a second (an open loop: the traffic
	// lasts Sagas/Rate whatever the system does). Default 8.
	Rate float64
	// Users is how many clients, each with a funded portfolio, post them.
	// Default 50.
	Users int
	// Seed makes the deals, the faults' order, targets and moments the
	// same from run to run (the system's timing is not). Default: from the
	// clock, printed in the report.
	Seed uint64
	// KillEvery is the mean gap between two kill -9 (each uniform in ½..1½
	// of it): every service once first, then any process. Zero: each kind
	// of fault exactly once (each service killed once, the broker and
	// PostgreSQL restarted once, one pause), spread over the traffic.
	KillEvery time.Duration
	// DownMin and DownMax bound how long a killed process stays down
	// (uniform). Default 500 ms and 3 s.
	DownMin, DownMax time.Duration
	// ServerDown is how long the broker and PostgreSQL stay down before
	// they are started again. Default 2 s.
	ServerDown time.Duration
	// PauseService is the service one replica of which is paused
	// (SIGSTOP): it runs two replicas, so that the other takes the paused
	// one's partitions. Default profile.
	PauseService string
	// Pause is how long it stays paused: past the consumer group session
	// timeout, so that its partitions move. Default the session timeout
	// (kafka.DefaultSessionTimeout) + 5 s.
	Pause time.Duration
	// Warmup is the traffic before the first fault, Tail the traffic
	// after the last planned one. Default 5 s each.
	Warmup, Tail time.Duration
	// MinGap is the least time between a fault's end and the next one:
	// the next fault waits until processing has resumed after the previous
	// one (its recovery, so that two faults' recoveries do not overlap), at
	// most RecoverWait, and then MinGap more. Default 3 s.
	MinGap time.Duration
	// RecoverWait bounds the wait for a fault's recovery before the next
	// fault. Default 60 s.
	RecoverWait time.Duration
	// DepositEvery adds a top-up deposit (through profile, with an
	// Idempotency-Key, retried) after every that many deals. Default 25;
	// negative: none.
	DepositEvery int
	// Aborts is the per cent of the accepted deals whose saga an operator
	// aborts (POST /api/v1/sagas/{id}/abort on saga-machine), and Cancels
	// the per cent their client cancels (POST /deals/{id}/cancel): half of
	// them as soon as deals accepted the deal, half at a random moment up
	// to ActWithin after, each retried while unanswered. Too late (409:
	// the saga or the deal was settled first) is an outcome like any
	// other; after a 200 the deal must end failed, after a 202 cancelled,
	// with its cash given back. With Cancels on, one abort in four is
	// raced by the client's cancel of the same deal at the same moment.
	// Baskets are aborted and cancelled in the same proportions (POST
	// /baskets/{id}/cancel). Default 3 each; negative: none.
	Aborts, Cancels int
	// ActWithin bounds the moment of an abort or a cancel. Default 1 s.
	ActWithin time.Duration
	// Baskets is the per cent of the offers that are baskets
	// (BASKET_ORDER, POST /baskets with an Idempotency-Key) of two or three
	// buys, one in ten of them unaffordable. Default 5; negative: none.
	Baskets int
	// MaxInFlight bounds the posts under way (a post is retried until
	// accepted); past it the open loop waits and falls behind. Default 500.
	MaxInFlight int
	// RetryFor is how long a deal or deposit is retried before the
	// generator gives up on it. Default 3 minutes.
	RetryFor time.Duration
	// Quiesce bounds the wait, after the traffic and the faults, for the
	// system to come to rest. Default 3 minutes.
	Quiesce time.Duration
	// Repo is the repository's root (scripts/up.sh, the go build of the
	// services). Default: the nearest directory above the working
	// directory holding go.mod.
	Repo string
	// Dir is where the run keeps its files (the private PostgreSQL and
	// Kafka, the services' logs). Default: a new directory under /var/tmp,
	// removed at the end unless Keep.
	Dir string
	// Keep keeps Dir (logs, data) after the run.
	Keep bool
	// Binaries are the services' executables; default: built into Dir.
	Binaries *procstack.Binaries
	// Log receives progress lines as the run goes (nil: none).
	Log io.Writer

	runID string
}

// Short is the run of make test (internal/chaos's test): 1,000 sagas at
// 8 a second (about two minutes of traffic: the faults, one after the
// other, fit in it on a loaded two-core machine), each kind of fault once.
func Short() Config { return Config{Sagas: 1000, Rate: 8, Users: 50} }

// Long is make chaos's run: 10,000 sagas at 40 a second from 200 users, a
// kill -9 about every 10 s, the broker and PostgreSQL restarted once, one
// pause.
func Long() Config {
	return Config{Sagas: 10000, Rate: 40, Users: 200, KillEvery: 10 * time.Second}
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Sagas <= 0 {
		c.Sagas = 1000
	}
	if c.Rate <= 0 {
		c.Rate = 8
	}
	if c.Users <= 0 {
		c.Users = 50
	}
	if c.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.Seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	def(&c.DownMin, 500*time.Millisecond)
	def(&c.DownMax, 3*time.Second)
	if c.DownMax < c.DownMin {
		c.DownMax = c.DownMin
	}
	def(&c.ServerDown, 2*time.Second)
	if c.PauseService == "" {
		c.PauseService = procstack.Profile
	}
	def(&c.Pause, kafka.DefaultSessionTimeout+5*time.Second)
	def(&c.Warmup, 5*time.Second)
	def(&c.Tail, 5*time.Second)
	def(&c.MinGap, 3*time.Second)
	def(&c.RecoverWait, time.Minute)
	if c.DepositEvery == 0 {
		c.DepositEvery = 25
	}
	if c.Aborts == 0 {
		c.Aborts = 3
	}
	if c.Cancels == 0 {
		c.Cancels = 3
	}
	if c.Baskets == 0 {
		c.Baskets = 5
	}
	def(&c.ActWithin, time.Second)
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 500
	}
	def(&c.RetryFor, 3*time.Minute)
	def(&c.Quiesce, 3*time.Minute)
	if c.runID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.runID = hex.EncodeToString(b[:])
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Pause <= time.Second:
		return fmt.Errorf("chaos: Pause %s: want more than 1s (past the session timeout to move partitions)", c.Pause)
	case c.PauseService != procstack.SagaMachine && c.PauseService != procstack.Deals &&
		c.PauseService != procstack.Profile && c.PauseService != procstack.Notification:
		return fmt.Errorf("chaos: PauseService %q: want saga-machine, deals, profile or notification", c.PauseService)
	case max(c.Aborts, 0)+max(c.Cancels, 0)+max(c.Baskets, 0) > 100:
		return fmt.Errorf("chaos: Aborts %d + Cancels %d + Baskets %d: more than 100 per cent", c.Aborts, c.Cancels, c.Baskets)
	case float64(c.Sagas)/c.Rate < (c.Warmup + c.Tail + time.Second).Seconds():
		return fmt.Errorf("chaos: %d sagas at %g/s last %.1fs: shorter than Warmup + Tail", c.Sagas, c.Rate, float64(c.Sagas)/c.Rate)
	}
	return nil
}

// ErrServers wraps Run's error when the private PostgreSQL and Kafka could
// not be started (scripts/up.sh failed: no PostgreSQL, no Java, no Kafka
// jars and no network to fetch them): the test treats it as a missing
// service (testenv.Missing).
var ErrServers = errors.New("chaos: the private PostgreSQL and Kafka did not start")

// Run runs the system as separate processes on a private PostgreSQL and
// Kafka, drives the traffic while injecting the faults, waits until the
// system is at rest, checks it from the databases and returns the report.
// The error is for a run that could not be carried out (no services, a
// build failure, ctx ended); what the run found is in the report
// (Report.Err). Everything it started is stopped before it returns.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	var logMu sync.Mutex
	began := time.Now()
	loadAtStart := loadAvg()
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(logw, "[chaos +%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	if cfg.Repo == "" {
		if cfg.Repo, err = findRepo(); err != nil {
			return nil, err
		}
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("/var/tmp", "saga-chaos-"); err != nil {
			return nil, fmt.Errorf("chaos: work directory: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: work directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: work directory: %w", err)
	}
	defer func() {
		if !cfg.Keep && cfg.Dir == "" {
			os.RemoveAll(dir)
		}
	}()
	logf("seed %d, %d sagas at %g/s from %d users, work directory %s", cfg.Seed, cfg.Sagas, cfg.Rate, cfg.Users, dir)

	// The services' build and the servers' start overlap.
	var bins procstack.Binaries
	var buildErr error
	var built sync.WaitGroup
	if cfg.Binaries != nil {
		bins = *cfg.Binaries
	} else {
		built.Go(func() {
			bins, buildErr = procstack.BuildTo(ctx, filepath.Join(dir, "bin"))
			logf("services built")
		})
	}
	infra, err := StartInfra(ctx, cfg.Repo, filepath.Join(dir, "infra"), logf)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrServers, err)
	}
	built.Wait()
	defer func() {
		if cerr := infra.Close(cfg.Keep); cerr != nil {
			logf("stop the private services: %v", cerr)
		}
	}()
	if err = errors.Join(err, buildErr); err != nil {
		return nil, err
	}
	logf("private PostgreSQL and Kafka up")

	stackDir := filepath.Join(dir, "stack")
	if err := os.MkdirAll(stackDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	s, err := procstack.Start(ctx, procstack.Env{PostgresURL: infra.PostgresURL(), Kafka: infra.Kafka(), Binaries: bins,
		Dir: stackDir, Logf: logf, ProcessLogs: true},
		procstack.Config{LogLevel: "warn", Replicas: map[string]int{cfg.PauseService: 2}})
	if s != nil {
		defer func() {
			if cerr := s.Close(); cerr != nil {
				logf("%v", cerr)
			}
		}()
	}
	if err != nil {
		return nil, err
	}
	mon, err := newMonitor(infra.Kafka(), s)
	if err != nil {
		return nil, err
	}
	defer mon.close()
	monCtx, stopMon := context.WithCancel(ctx)
	var monDone sync.WaitGroup
	monDone.Go(func() { mon.run(monCtx, 250*time.Millisecond) })
	defer func() { stopMon(); monDone.Wait() }()

	l := &load{cfg: cfg, s: s}
	if err := l.setupUsers(ctx, cfg.runID); err != nil {
		return nil, err
	}
	logf("%d users funded with %s USD each", cfg.Users, cfg.funding())

	traffic := time.Duration(float64(cfg.Sagas) / cfg.Rate * float64(time.Second))
	faults := plan(cfg, s, traffic)
	inj := &injector{cfg: cfg, s: s, infra: infra, mon: mon, logf: logf, held: map[*procstack.Replica]bool{}}
	supCtx, stopSup := context.WithCancel(ctx)
	var supDone sync.WaitGroup
	supDone.Go(func() { inj.supervise(supCtx) })
	defer func() { stopSup(); supDone.Wait() }()

	l.start = time.Now().Add(100 * time.Millisecond)
	trafficDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { l.run(ctx); close(trafficDone) })
	wg.Go(func() { inj.run(ctx, l.start, faults, trafficDone) })
	logf("traffic for %s, %d faults planned", traffic.Round(time.Second), len(faults))
	wg.Wait()
	faultsEnd := time.Now()
	l.wait()
	logf("traffic and faults done; every post has an outcome")
	if ctx.Err() != nil {
		return nil, fmt.Errorf("chaos: the run was stopped: %w", ctx.Err())
	}

	qctx, qcancel := context.WithTimeout(ctx, cfg.Quiesce)
	act, qerr := s.WaitQuiescent(qctx)
	qcancel()
	quiet := time.Now()
	stopSup()
	supDone.Wait()
	stopMon()
	monDone.Wait()
	logf("quiescent: %v (%s)", qerr == nil, act)

	rep = &Report{Config: cfg, Began: began, TrafficStart: l.start, TrafficEnd: l.end, FaultsEnd: faultsEnd, Quiet: quiet,
		Faults: faults, Activity: act, Machine: machine(ctx, cfg.Repo, began, loadAtStart)}
	if qerr != nil {
		rep.QuiesceErr = qerr.Error()
	}
	resolve(faults, mon.all())
	moved(faults, mon.all())
	if err := rep.collect(ctx, s, l, inj, mon); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(began)
	return rep, nil
}

// findRepo returns the nearest directory at or above the working directory
// that holds go.mod and scripts/up.sh.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("chaos: working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "scripts", "up.sh")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("chaos: no repository (go.mod and scripts/up.sh) at or above the working directory; pass Config.Repo")
		}
		dir = parent
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
