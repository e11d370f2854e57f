package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// options are the parsed flags.
type options struct {
	n, c          int
	rejectEvery   int
	users         int
	postgres      string
	brokers       []string
	kafkaSASL     kafka.SASL
	remote        bool
	urls          system.URLs
	jsonOut       bool
	listOnly      bool
	poll          time.Duration
	timeout       time.Duration
	cpuProfile    string
	partitions    int
	concurrency   int
	keep          bool
	logLevel      slog.Level
	progressEvery time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var brokers, level string
	fs.IntVar(&o.n, "n", 5000, "number of sagas (deals) to run")
	fs.IntVar(&o.c, "c", 200, "concurrent clients: sagas in flight")
	fs.IntVar(&o.rejectEvery, "reject-every", 4, "every k-th order is one the cash does not cover (rejected); 0 for none")
	fs.IntVar(&o.users, "users", 0, "distinct users, each with a funded portfolio (default: c, so no two sagas in flight share a portfolio)")
	fs.StringVar(&o.postgres, "postgres", "", "PostgreSQL server URL: the started system gets fresh databases on it (dropped afterwards unless --keep)")
	fs.StringVar(&brokers, "brokers", "", "Kafka brokers, comma-separated, for the started system (fresh topics); default the embedded broker")
	fs.BoolVar(&o.remote, "remote", false, "drive a running system (make run) instead of starting one")
	fs.StringVar(&o.urls.SagaMachine, "saga-machine-url", "http://"+system.DefaultListen, "saga-machine URL (with --remote)")
	fs.StringVar(&o.urls.Deals, "deals-url", "http://"+system.DefaultDealsListen, "deals URL (with --remote)")
	fs.StringVar(&o.urls.Profile, "profile-url", "http://"+system.DefaultProfileListen, "profile URL (with --remote)")
	fs.StringVar(&o.urls.Issuer, "issuer-url", "http://"+system.DefaultIssuerListen, "URL of the dev OIDC issuer that hands out tokens (with --remote)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON on stdout")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "how often the watcher lists finished sagas (--remote or --list)")
	fs.BoolVar(&o.listOnly, "list", false, "detect finality by listing sagas even when a notification tap is possible")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	fs.IntVar(&o.partitions, "partitions", 0, "partitions of the started system's topics (default 3)")
	fs.IntVar(&o.concurrency, "participant-concurrency", 0, "partitions each participant handles at once (default: the SDK's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the started system's databases")
	fs.StringVar(&level, "log-level", "error", "log level of the started system (stderr)")
	kf := program.RegisterKafkaFlags(fs, func(string) string { return "" })
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.kafkaSASL, err = kf.SASL(); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.n <= 0:
		return o, fmt.Errorf("-n %d: want a positive number", o.n)
	case o.c <= 0:
		return o, fmt.Errorf("-c %d: want a positive number", o.c)
	case o.rejectEvery < 0:
		return o, fmt.Errorf("--reject-every %d: want 0 or more", o.rejectEvery)
	case o.users < 0:
		return o, fmt.Errorf("--users %d: want 0 or more", o.users)
	case o.poll <= 0:
		return o, fmt.Errorf("--poll %s: want a positive duration", o.poll)
	case o.remote && (o.postgres != "" || brokers != ""):
		return o, errors.New("--remote drives a running system: --postgres and --brokers are for a system bench starts")
	}
	if o.users == 0 {
		o.users = o.c
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.brokers = append(o.brokers, b)
		}
	}
	if err := o.logLevel.UnmarshalText([]byte(level)); err != nil {
		return o, fmt.Errorf("--log-level %q: %w", level, err)
	}
	o.progressEvery = 250 * time.Millisecond
	return o, nil
}

// Result is what bench reports (--json prints it).
type Result struct {
	Mode        string  `json:"mode"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	Completed   int     `json:"completed"`
	Approved    int     `json:"approved"`
	Rejected    int     `json:"rejected"`
	Failed      int     `json:"failed"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	SagasPerSec float64 `json:"sagas_per_sec"`
	LatencyMs   struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
	CPUs int `json:"cpus"`
}

// target is what the bench drives.
type target struct {
	mode  string
	urls  system.URLs
	token func(sub string) (string, error)
	list  lister
	// get reads one saga's exact final state after the run (nil: the
	// watcher's listing already has it).
	get func(ctx context.Context, id string) (engine.Instance, error)
	// brokers and notifyTopic, when set, let a notification tap detect
	// finality instead of polling the listing.
	brokers     []string
	kafkaSASL   kafka.SASL
	notifyTopic string
	stop        func() error
	// fund deposits amount (USD) into a portfolio as a funding operator.
	fund func(ctx context.Context, portfolioID, amount string) error
}

func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	tg, err := open(ctx, o, stderr)
	if err != nil {
		return err
	}
	res, runErr := drive(ctx, o, tg, stderr)
	if err := tg.stop(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return runErr
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "%s: %d sagas (%d approved, %d rejected, %d failed, %d errors), concurrency %d, %d CPUs\n",
		res.Mode, res.Completed, res.Approved, res.Rejected, res.Failed, res.Errors, res.Concurrency, res.CPUs)
	fmt.Fprintf(stdout, "  %.0f sagas/s completed (%.2fs)\n", res.SagasPerSec, res.Seconds)
	fmt.Fprintf(stdout, "  latency POST /deals -> final state: p50 %.1fms  p95 %.1fms  p99 %.1fms  max %.1fms\n",
		res.LatencyMs.P50, res.LatencyMs.P95, res.LatencyMs.P99, res.LatencyMs.Max)
	return nil
}

// open starts a system (or connects to a running one).
func open(ctx context.Context, o options, stderr io.Writer) (*target, error) {
	if o.remote {
		return openRemote(o), nil
	}
	runID := strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	dir, err := os.MkdirTemp("", "saga-bench-*")
	if err != nil {
		return nil, err
	}
	cfg := system.Config{
		DataDir: dir, Brokers: o.brokers, KafkaSASL: o.kafkaSASL, EphemeralPorts: true, Partitions: o.partitions,
		ParticipantConcurrency: o.concurrency,
		Logger:                 slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel})),
	}
	mode := "sqlite"
	if o.postgres != "" {
		cfg.Postgres, cfg.DatabasePrefix = o.postgres, "bench_"+runID+"_"
		mode = "postgres"
	}
	if len(o.brokers) > 0 {
		t := system.DefaultTopics
		cfg.Topics = system.Topics{Events: t.Events + ".bench" + runID, Deals: t.Deals + ".bench" + runID,
			Profile: t.Profile + ".bench" + runID, Notification: t.Notification + ".bench" + runID}
		cfg.GroupPrefix = "bench" + runID + "."
		mode += "+kafka"
	} else {
		mode += "+embedded"
	}
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &target{
		mode:    mode,
		urls:    sys.URLs,
		token:   func(sub string) (string, error) { return sys.Token(sub) },
		list:    sys.SagaMachine.Store.ListInstances,
		get:     sys.SagaMachine.Store.GetInstance,
		brokers: sys.Brokers, kafkaSASL: o.kafkaSASL, notifyTopic: sys.Topics.Notification,
		stop: func() error {
			err := sys.Close()
			os.RemoveAll(dir)
			if o.postgres != "" && !o.keep {
				err = errors.Join(err, dropDatabases(o.postgres, cfg.DatabasePrefix))
			}
			return err
		},
		fund: func(ctx context.Context, id, amount string) error {
			_, _, err := sys.Fund(ctx, id, amount, "USD", "bench funding", "bench-"+id)
			return err
		},
	}, nil
}

// openRemote drives a running system; tokens come from its dev issuer.
func openRemote(o options) *target {
	hc := &http.Client{Timeout: 30 * time.Second}
	var opTok string
	var mu sync.Mutex
	tg := &target{mode: "remote " + o.urls.Deals, urls: o.urls, stop: func() error { return nil }}
	tg.token = func(sub string) (string, error) { return issuerToken(hc, o.urls.Issuer, sub, "") }
	tg.fund = func(ctx context.Context, id, amount string) error {
		tok, err := issuerToken(hc, o.urls.Issuer, "bench-treasury", auth.RoleFundingOperator) // deposits need funding-operator
		if err == nil {
			_, _, err = system.NewClient(o.urls, tok, hc).Deposit(ctx, id, amount, "USD", "bench funding", "bench-"+id)
		}
		return err
	}
	tg.list = func(ctx context.Context, f engine.SagaFilter) (engine.SagaPage, error) {
		mu.Lock()
		if opTok == "" {
			t, err := issuerToken(hc, o.urls.Issuer, "bench-watcher", auth.RoleViewer) // listing sagas needs saga-viewer
			if err != nil {
				mu.Unlock()
				return engine.SagaPage{}, err
			}
			opTok = t
		}
		tok := opTok
		mu.Unlock()
		return system.NewClient(o.urls, tok, hc).Sagas(ctx, f)
	}
	return tg
}

// issuerToken asks the dev issuer (internal/auth/issuer) for a token.
func issuerToken(hc *http.Client, issuerURL, sub, roles string) (string, error) {
	form := url.Values{"sub": {sub}, "ttl": {"2h"}}
	if roles != "" {
		form.Set("roles", roles)
	}
	resp, err := hc.PostForm(issuerURL+"/token", form)
	if err != nil {
		return "", fmt.Errorf("get a token from %s: %w", issuerURL, err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get a token from %s: %d %s %v", issuerURL, resp.StatusCode, out.Error, err)
	}
	return out.AccessToken, nil
}

// dropDatabases drops the databases a bench run created.
func dropDatabases(server, prefix string) error {
	db, err := sql.Open("postgres", server)
	if err != nil {
		return err
	}
	defer db.Close()
	var errs []error
	for _, s := range []string{system.Saga, system.Deals, system.Profile, system.Notification} {
		if _, err := db.Exec(`DROP DATABASE IF EXISTS ` + pq.QuoteIdentifier(prefix+s) + ` WITH (FORCE)`); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", prefix+s, err))
		}
	}
	return errors.Join(errs...)
}

// sagaRun is one saga in flight.
type sagaRun struct {
	sent     time.Time
	rejected bool
	done     chan engine.Instance
}

// drive sets up users and portfolios, then runs the sagas.
func drive(ctx context.Context, o options, tg *target, stderr io.Writer) (Result, error) {
	res := Result{Mode: tg.mode, N: o.n, Concurrency: o.c, CPUs: runtime.NumCPU()}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: o.c + 16, MaxIdleConnsPerHost: o.c + 16, IdleConnTimeout: time.Minute,
	}}
	runID := uuid.NewString()[:8]
	type account struct {
		c           *system.Client
		portfolioID string
	}
	accounts := make([]account, o.users)
	var setupNext atomic.Int64
	setupErrs := make([]error, min(16, o.users))
	var setup sync.WaitGroup
	for g := range setupErrs {
		setup.Go(func() {
			for {
				i := int(setupNext.Add(1)) - 1
				if i >= o.users || ctx.Err() != nil {
					return
				}
				tok, err := tg.token(fmt.Sprintf("bench-%s-%d", runID, i))
				if err != nil {
					setupErrs[g] = err
					return
				}
				c := system.NewClient(tg.urls, tok, hc)
				if _, err := c.Login(ctx); err != nil {
					setupErrs[g] = fmt.Errorf("set up user %d: %w", i, err)
					return
				}
				pf, err := c.CreatePortfolio(ctx, "bench", "USD")
				if err == nil {
					err = tg.fund(ctx, pf.ID, "1000000000000.00")
				}
				if err != nil {
					setupErrs[g] = fmt.Errorf("set up user %d: %w", i, err)
					return
				}
				accounts[i] = account{c, pf.ID}
			}
		})
	}
	setup.Wait()
	if err := errors.Join(setupErrs...); err != nil {
		return res, err
	}

	w := newWatcher(tg.list, o.poll)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchErr := make(chan error, 1)
	if tg.notifyTopic != "" && !o.listOnly {
		t, err := newTap(ctx, kafka.Config{Brokers: tg.brokers, SASL: tg.kafkaSASL}, tg.notifyTopic)
		if err != nil {
			return res, err
		}
		go func() { watchErr <- w.runTap(wctx, t) }()
	} else {
		go func() { watchErr <- w.runList(wctx, o.poll, engine.StatusCompleted, engine.StatusFailed) }()
	}

	var (
		next     atomic.Int64
		done     atomic.Int64
		inflight atomic.Int64
		mu       sync.Mutex
		outcomes []outcome
		errs     []error
	)
	start := time.Now()
	stopProgress := progress(stderr, o, start, &done, &inflight)
	var wg sync.WaitGroup
	for g := 0; g < o.c; g++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.n {
					return
				}
				acc := accounts[i%len(accounts)]
				rejected := o.rejectEvery > 0 && i%o.rejectEvery == o.rejectEvery-1
				req := system.DealRequest{PortfolioID: acc.portfolioID, Side: "buy", Instrument: "ACME", Quantity: "1", Price: "1.00", Currency: "USD"}
				if rejected {
					req.Quantity = "10000000000000" // 1e13 × 1.00 > 1e12 cash
				}
				r := &sagaRun{sent: time.Now(), rejected: rejected, done: make(chan engine.Instance, 1)}
				inflight.Add(1)
				d, _, err := acc.c.CreateDeal(ctx, req, "")
				if err != nil {
					inflight.Add(-1)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				w.add(d.SagaID, r)
				var inst engine.Instance
				select {
				case inst = <-r.done:
				case <-ctx.Done():
					inflight.Add(-1)
					return
				}
				inflight.Add(-1)
				done.Add(1)
				mu.Lock()
				outcomes = append(outcomes, outcome{run: r, inst: inst})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stopProgress()
	stopWatch()
	if err := <-watchErr; err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%d of %d sagas finished: %w", done.Load(), o.n, err)
	}
	res.Errors = len(errs)
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "%d POST /deals failed; first: %v\n", len(errs), errs[0])
	}
	if len(outcomes) == 0 {
		return res, errors.New("no saga finished")
	}
	if tg.get != nil {
		if err := refine(ctx, tg.get, outcomes); err != nil {
			return res, err
		}
	}
	var latencies []time.Duration
	var lastFinal time.Time
	for _, oc := range outcomes {
		latencies = append(latencies, oc.inst.UpdatedAt.Sub(oc.run.sent))
		if oc.inst.UpdatedAt.After(lastFinal) {
			lastFinal = oc.inst.UpdatedAt
		}
		switch {
		case oc.inst.Status != engine.StatusCompleted:
			res.Failed++
		case oc.run.rejected:
			res.Rejected++
		default:
			res.Approved++
		}
	}
	res.Completed = len(outcomes)
	elapsed := lastFinal.Sub(start)
	res.Seconds = elapsed.Seconds()
	res.SagasPerSec = float64(res.Completed) / elapsed.Seconds()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		i := int(p*float64(len(latencies))+0.5) - 1
		i = max(0, min(i, len(latencies)-1))
		return float64(latencies[i].Microseconds()) / 1000
	}
	res.LatencyMs.P50, res.LatencyMs.P95, res.LatencyMs.P99 = pct(0.50), pct(0.95), pct(0.99)
	res.LatencyMs.Max = float64(latencies[len(latencies)-1].Microseconds()) / 1000
	return res, nil
}

// outcome is one finished saga.
type outcome struct {
	run  *sagaRun
	inst engine.Instance
}

// refine replaces the watcher's view of each saga by the store's (its exact
// final state and the time it was committed), after the run.
func refine(ctx context.Context, get func(ctx context.Context, id string) (engine.Instance, error), outs []outcome) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for g := range errs {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(outs) {
					return
				}
				inst, err := get(ctx, outs[i].inst.ID)
				if err != nil {
					errs[g] = fmt.Errorf("read saga %s: %w", outs[i].inst.ID, err)
					return
				}
				outs[i].inst = inst
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// progress rewrites one line on stderr until stopped.
func progress(w io.Writer, o options, start time.Time, done, inflight *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	line := func() {
		d := done.Load()
		el := time.Since(start).Seconds()
		fmt.Fprintf(w, "\r%d/%d done  %.0f sagas/s  %d in flight  %.1fs   ", d, o.n, float64(d)/el, inflight.Load(), el)
	}
	wg.Go(func() {
		t := time.NewTicker(o.progressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				line()
				fmt.Fprintln(w)
				return
			case <-t.C:
				line()
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}
