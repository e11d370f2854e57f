package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
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
	kafkaTLS      *tls.Config
	remote        bool
	urls          system.URLs
	jsonOut       bool
	listOnly      bool
	poll          time.Duration
	timeout       time.Duration
	cpuProfile    string
	memProfile    string
	blockProfile  string
	mutexProfile  string
	traceFile     string
	partitions    int
	concurrency   int
	keep          bool
	logLevel      slog.Level
	progressEvery time.Duration

	// Open loop (rate > 0): n sagas offered at rate per second, the first
	// warmup of them left out of the latency.
	rate        float64
	duration    time.Duration
	warmup      time.Duration
	maxInFlight int
	// CPU accounting.
	noCPU   bool
	cpuPIDs []tracked
}

func parseFlags(args []string, env func(string) string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var brokers, level string
	fs.IntVar(&o.n, "n", 5000, "number of sagas (deals) to run")
	fs.IntVar(&o.c, "c", 200, "concurrent clients: sagas in flight")
	fs.IntVar(&o.rejectEvery, "reject-every", 4, "every k-th order is one the cash does not cover (rejected); 0 for none")
	fs.IntVar(&o.users, "users", 0, "distinct users, each with a funded portfolio (default: c, so no two sagas in flight share a portfolio; open loop: the rate, one second of arrivals)")
	fs.StringVar(&o.postgres, "postgres", "", "PostgreSQL server URL: the started system gets fresh databases on it (dropped afterwards unless --keep)")
	fs.StringVar(&brokers, "brokers", "", "Kafka brokers, comma-separated, for the started system (fresh topics); default the embedded broker")
	fs.BoolVar(&o.remote, "remote", false, "drive a running system (make run) instead of starting one")
	fs.StringVar(&o.urls.SagaMachine, "saga-machine-url", "http://"+system.DefaultListen, "saga-machine URL (with --remote)")
	fs.StringVar(&o.urls.Deals, "deals-url", "http://"+system.DefaultDealsListen, "deals URL (with --remote)")
	fs.StringVar(&o.urls.Profile, "profile-url", "http://"+system.DefaultProfileListen, "profile URL (with --remote)")
	fs.StringVar(&o.urls.Notification, "notification-url", "", "notification service URL (with --remote; only to find its process for the CPU report)")
	fs.StringVar(&o.urls.Issuer, "issuer-url", "http://"+system.DefaultIssuerListen, "URL of the dev OIDC issuer that hands out tokens (with --remote)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON on stdout")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "how often the watcher lists finished sagas (--remote or --list)")
	fs.BoolVar(&o.listOnly, "list", false, "detect finality by listing sagas even when a notification tap is possible")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write the allocations profile (go tool pprof -sample_index=alloc_space) to this file after the run")
	fs.StringVar(&o.blockProfile, "blockprofile", "", "write the blocking profile (go tool pprof: where goroutines waited on channels, selects and locks, every wait of 10µs or more) to this file after the run")
	fs.StringVar(&o.mutexProfile, "mutexprofile", "", "write the mutex contention profile (go tool pprof; a fifth of the contended locks) to this file after the run")
	fs.StringVar(&o.traceFile, "trace", "", "write an execution trace of the whole run (go tool trace; e.g. go tool trace -pprof=sched FILE for the time goroutines waited to run) to this file")
	fs.IntVar(&o.partitions, "partitions", 0, "partitions of the started system's topics (default 3)")
	fs.IntVar(&o.concurrency, "participant-concurrency", 0, "partitions each participant handles at once (default: the SDK's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the started system's databases, and with --brokers its topics and consumer groups (deleted after the run otherwise)")
	fs.StringVar(&level, "log-level", "error", "log level of the started system (stderr)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: offer this many sagas per second whatever the system does (latency from each saga's scheduled start); 0: closed loop (-c clients)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "open loop: how long to offer sagas (n = rate × duration; or give -n)")
	fs.DurationVar(&o.warmup, "warmup", 0, "leave the sagas started in this first stretch out of the latency (open loop: scheduled; closed loop: posted); they still count in rates and CPU")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 20000, "open loop: at most this many sagas under way; beyond, the generator waits and falls behind (the wait counts in the latency)")
	fs.BoolVar(&o.noCPU, "no-cpu", false, "do not measure the CPU of the system's processes")
	fs.Func("cpu-pid", "also report the CPU of this process and its children, as NAME=PID (repeatable)", func(v string) error {
		name, pid, ok := strings.Cut(v, "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return fmt.Errorf("want NAME=PID, got %q", v)
		}
		o.cpuPIDs = append(o.cpuPIDs, tracked{Name: name, PID: n})
		return nil
	})
	kf := program.RegisterKafkaFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0) {
		return o, fmt.Errorf("--rate %g: want a positive number of sagas per second (or 0 for the closed loop)", o.rate)
	}
	if o.rate > 0 {
		switch {
		case set["c"]:
			return o, errors.New("-c is the closed loop's client count: the open loop (--rate) has no fixed clients")
		case set["n"] && set["duration"]:
			return o, errors.New("--rate takes -n or --duration, not both")
		case o.duration <= 0 || o.warmup < 0:
			return o, fmt.Errorf("--duration %s --warmup %s: want positive durations", o.duration, o.warmup)
		case o.maxInFlight <= 0:
			return o, fmt.Errorf("--max-in-flight %d: want a positive number", o.maxInFlight)
		case o.rate > 100000:
			return o, fmt.Errorf("--rate %g: more than 100000 sagas/s is beyond what one generator can schedule", o.rate)
		}
		if !set["n"] {
			o.n = int(math.Round(o.rate * o.duration.Seconds()))
			if o.n <= 0 {
				return o, fmt.Errorf("--rate %g × --duration %s offers no saga", o.rate, o.duration)
			}
		}
		if o.warmupSagas() >= o.n {
			return o, fmt.Errorf("--warmup %s at %g sagas/s leaves none of the %d sagas to measure", o.warmup, o.rate, o.n)
		}
		o.c = 0
	} else if set["duration"] || set["max-in-flight"] {
		return o, errors.New("--duration and --max-in-flight are for the open loop: give --rate")
	} else if o.warmup < 0 {
		return o, fmt.Errorf("--warmup %s: want a positive duration", o.warmup)
	}
	var err error
	if o.kafkaSASL, err = kf.SASL(); err != nil {
		return o, err
	}
	if o.kafkaTLS, err = kf.TLS(); err != nil {
		return o, err
	}
	if strings.TrimSpace(brokers) == "" && !o.remote && !set["kafka-user"] {
		// The embedded broker authenticates nobody: credentials from the
		// environment (SAGA_KAFKA_USER, meant for --brokers) do not apply.
		o.kafkaSASL = kafka.SASL{}
	}
	if strings.TrimSpace(brokers) == "" && !o.remote && !set["kafka-tls"] && !set["kafka-tls-ca-file"] {
		o.kafkaTLS = nil // nor does TLS from the environment: the embedded broker has none
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.n <= 0:
		return o, fmt.Errorf("-n %d: want a positive number", o.n)
	case o.c <= 0 && o.rate == 0:
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
		if o.rate > 0 {
			// One second of arrivals: a portfolio gets a new deal about once a second.
			o.users = min(o.n, max(1, int(math.Ceil(o.rate))))
		}
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

// warmupSagas is how many sagas the open loop's warm-up holds.
func (o options) warmupSagas() int { return int(math.Round(o.rate * o.warmup.Seconds())) }

// Result is what bench reports (--json prints it).
type Result struct {
	Mode string `json:"mode"`
	// PGDriver is the database/sql driver of the system's PostgreSQL
	// databases when bench started the system on PostgreSQL: "pgx" or
	// "postgres" (lib/pq), as $SAGA_PG_DRIVER selects (internal/sqldb).
	PGDriver string `json:"pg_driver,omitempty"`
	// KafkaTransport is how the started system's Kafka clients (and the
	// notification tap) reached the brokers, by Kafka's security.protocol
	// names: PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL (--kafka-tls,
	// --kafka-tls-ca-file, --kafka-user). Empty with --remote, whose
	// system bench does not configure.
	KafkaTransport string `json:"kafka_transport,omitempty"`
	// Loop is "closed" (-c clients, each posting its next deal when its
	// last saga is final) or "open" (--rate: sagas started on a fixed
	// schedule whatever the system does).
	Loop        string `json:"loop"`
	N           int    `json:"n"`
	Concurrency int    `json:"concurrency,omitempty"`
	Completed   int    `json:"completed"`
	Approved    int    `json:"approved"`
	Rejected    int    `json:"rejected"`
	Failed      int    `json:"failed"`
	Errors      int    `json:"errors"`
	// Seconds runs from the first saga's start (closed loop: its POST;
	// open loop: its scheduled time) to the last final commit.
	Seconds     float64 `json:"seconds"`
	SagasPerSec float64 `json:"sagas_per_sec"`
	// LatencyMs: from a saga's start (closed loop: its POST /deals; open
	// loop: its scheduled start, so that a generator held up by a slow
	// system does not hide the queue) to the commit of its final state.
	LatencyMs Percentiles `json:"latency_ms"`
	// WarmupSagas (closed loop, --warmup) were posted in the warm-up and
	// left out of LatencyMs.
	WarmupSagas int `json:"warmup_sagas,omitempty"`
	// Open loop only.
	Open *OpenLoop `json:"open_loop,omitempty"`
	// CPU is the CPU per saga of each process of the system (nil with
	// --no-cpu or where /proc cannot be read).
	CPU  *CPUReport `json:"cpu,omitempty"`
	CPUs int        `json:"cpus"`
	// Stages are the batches of each stage over the same window as CPU
	// (nil with --remote): records per batch, time per batch and the share
	// of the window each stage was busy.
	Stages []StageReport `json:"stages,omitempty"`
}

// OpenLoop is what an open-loop run adds to its Result.
type OpenLoop struct {
	// OfferedPerSec is --rate; SentPerSec the rate at which the generator
	// really started sagas (lower when it fell behind).
	OfferedPerSec float64 `json:"offered_per_sec"`
	SentPerSec    float64 `json:"sent_per_sec"`
	// WarmupSagas were left out of LatencyMs; Measured are the rest.
	WarmupSagas int `json:"warmup_sagas"`
	Measured    int `json:"measured"`
	// BehindScheduleMs is how late the generator started the sagas
	// (the time they waited for a free slot, --max-in-flight, and timer
	// jitter); Late counts those started more than 10ms late.
	BehindScheduleMs Percentiles `json:"behind_schedule_ms"`
	Late             int         `json:"late"`
	MaxInFlight      int         `json:"max_in_flight"`
}

// target is what the bench drives.
type target struct {
	mode string
	// dbPrefix starts the names of the started system's PostgreSQL databases.
	dbPrefix string
	urls     system.URLs
	token    func(sub string) (string, error)
	list     lister
	// get reads one saga's exact final state after the run (nil: the
	// watcher's listing already has it).
	get func(ctx context.Context, id string) (engine.Instance, error)
	// brokers and notifyTopic, when set, let a notification tap detect
	// finality instead of polling the listing.
	brokers     []string
	kafkaSASL   kafka.SASL
	kafkaTLS    *tls.Config
	notifyTopic string
	stop        func() error
	// fund deposits amount (USD) into a portfolio as a funding operator.
	fund func(ctx context.Context, portfolioID, amount string) error
	// cpu are the processes whose CPU is measured, and notes on what was
	// not found or what they hold.
	cpu      []tracked
	cpuNotes []string
	// stages samples the stages' batches (nil with --remote).
	stages stageSampler
}

func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "kafka-roundtrip":
			return runKafkaRoundTrip(ctx, args[1:], env, stdout, stderr)
		case "compare":
			return runCompare(ctx, args[1:], env, stdout, stderr)
		}
	}
	o, err := parseFlags(args, env, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	stopProfiling, err := startProfiling(o, stderr)
	if err != nil {
		return err
	}
	defer stopProfiling()
	tg, err := open(ctx, o, stderr)
	if err != nil {
		return err
	}
	if !o.noCPU {
		tg.cpu, tg.cpuNotes = cpuTargets(ctx, procFS{root: "/proc"}, o, tg, env)
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
	printResult(stdout, res)
	return nil
}

// printResult writes res for a person.
func printResult(w io.Writer, res Result) {
	load := fmt.Sprintf("closed loop, %d clients", res.Concurrency)
	from := "POST /deals"
	if res.Open != nil {
		load = fmt.Sprintf("open loop, %.0f sagas/s offered", res.Open.OfferedPerSec)
		from = "scheduled start"
	}
	mode := res.Mode
	var about []string
	if res.PGDriver != "" {
		about = append(about, "driver "+res.PGDriver)
	}
	if res.KafkaTransport != "" {
		about = append(about, "Kafka "+describeTransport(res.KafkaTransport))
	}
	if len(about) > 0 {
		mode += " (" + strings.Join(about, ", ") + ")"
	}
	fmt.Fprintf(w, "%s: %d sagas (%d approved, %d rejected, %d failed, %d errors), %s, %d CPUs\n",
		mode, res.Completed, res.Approved, res.Rejected, res.Failed, res.Errors, load, res.CPUs)
	fmt.Fprintf(w, "  %.0f sagas/s completed (%.2fs)\n", res.SagasPerSec, res.Seconds)
	l := res.LatencyMs
	fmt.Fprintf(w, "  latency %s -> final state: p50 %.1fms  p90 %.1fms  p99 %.1fms  p99.9 %.1fms  max %.1fms\n",
		from, l.P50, l.P90, l.P99, l.P999, l.Max)
	if o := res.Open; o != nil {
		b := o.BehindScheduleMs
		fmt.Fprintf(w, "  generator: %.0f sagas/s sent; behind schedule p50 %.1fms  p99 %.1fms  max %.1fms; %d started >10ms late; %d warm-up sagas not in the latency\n",
			o.SentPerSec, b.P50, b.P99, b.Max, o.Late, o.WarmupSagas)
	}
	if c := res.CPU; c != nil {
		fmt.Fprintf(w, "  CPU per saga over %.1fs (machine %.0f%% busy, %.2f ms/saga all processes):\n",
			c.Seconds, c.Machine.BusyFraction*100, c.Machine.MsPerSaga)
		for _, p := range c.Processes {
			fmt.Fprintf(w, "    %-50s %7.2f ms  %5.2f cores  (pid %d)\n", p.Name, p.MsPerSaga, p.Cores, p.PID)
		}
		for _, n := range c.Notes {
			fmt.Fprintf(w, "    note: %s\n", n)
		}
	}
	if len(res.Stages) > 0 {
		fmt.Fprintf(w, "  stages (batches over the same window; busy near 100%% limits throughput):\n")
		for _, st := range res.Stages {
			empty := ""
			if st.EmptyBatches > 0 {
				empty = fmt.Sprintf("  (%d empty)", st.EmptyBatches)
			}
			fmt.Fprintf(w, "    %-26s %7d batches  %7.1f records/batch  %7.2f ms/batch  busy %5.1f%%%s\n",
				st.Name, st.Batches, st.RecordsPerBatch, st.MsPerBatch, st.Busy*100, empty)
		}
	}
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
		DataDir: dir, Brokers: o.brokers, KafkaSASL: o.kafkaSASL, KafkaTLS: o.kafkaTLS, EphemeralPorts: true, Partitions: o.partitions,
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
		mode:     mode,
		dbPrefix: cfg.DatabasePrefix,
		urls:     sys.URLs,
		token:    func(sub string) (string, error) { return sys.Token(sub) },
		list:     sys.SagaMachine.Store.ListInstances,
		get:      sys.SagaMachine.Store.GetInstance,
		stages:   systemStages(sys),
		brokers:  sys.Brokers, kafkaSASL: o.kafkaSASL, kafkaTLS: o.kafkaTLS, notifyTopic: sys.Topics.Notification,
		stop: func() error {
			err := sys.Close()
			os.RemoveAll(dir)
			if o.postgres != "" && !o.keep {
				err = errors.Join(err, dropDatabases(o.postgres, cfg.DatabasePrefix))
			}
			if len(o.brokers) > 0 && !o.keep {
				err = errors.Join(err, deleteKafkaRun(o, ".bench"+runID, cfg.GroupPrefix))
			}
			return err
		},
		fund: func(ctx context.Context, id, amount string) error {
			_, _, err := sys.Fund(ctx, id, amount, "USD", "bench funding", "bench-"+id)
			return err
		},
	}, nil
}

// cpuTargets are the processes whose CPU a run reports: the bench's own
// (with the system in it when bench started it), PostgreSQL's server and
// Kafka's brokers when they run on this machine, the remote system's
// processes found by the ports of their URLs, and --cpu-pid's.
func cpuTargets(ctx context.Context, fs procFS, o options, tg *target, env func(string) string) ([]tracked, []string) {
	var procs []tracked
	var notes []string
	seen := map[int]int{} // pid -> index in procs
	add := func(t tracked) {
		if i, ok := seen[t.PID]; ok {
			procs[i].Name += "+" + t.Name
			return
		}
		seen[t.PID] = len(procs)
		procs = append(procs, t)
	}
	self := tracked{Name: "bench", PID: os.Getpid(), Note: "the load generator (HTTP clients, finality watcher)"}
	if !o.remote {
		self.Name = "bench+system"
		self.Note = "one process: the load generator and the whole system it started (internal/system: saga-machine, deals, profile, notification, the dev issuer"
		if o.postgres == "" {
			self.Note += ", SQLite"
		}
		if len(o.brokers) == 0 {
			self.Note += ", the embedded Kafka broker"
		}
		self.Note += ")"
		notes = append(notes, "saga-machine and the participant services run inside the bench process (internal/system): their CPU is reported together as bench+system, which includes the load generator's")
	}
	add(self)
	dir := runDir(env)
	if o.postgres != "" {
		addr, err := postgresAddr(o.postgres)
		var pid int
		if err == nil {
			pid, err = findServer(ctx, fs, addr, func(port int) (int, bool) { return postmasterPID(dir, port) })
		}
		if err != nil {
			notes = append(notes, "postgresql not measured: "+err.Error())
		} else {
			add(tracked{Name: "postgresql", PID: pid, Backends: tg.dbPrefix,
				Note: "the postmaster and all its children (every backend: other clients' too)"})
		}
	}
	for _, b := range o.brokers {
		pid, err := findServer(ctx, fs, b, func(port int) (int, bool) { return kafkaPID(dir, port) })
		if err != nil {
			notes = append(notes, "kafka "+b+" not measured: "+err.Error())
			continue
		}
		add(tracked{Name: "kafka", PID: pid, Note: "the broker's JVM (every client's traffic)"})
	}
	if o.remote {
		notes = append(notes, "with --remote bench does not know the system's PostgreSQL and Kafka: add them with --cpu-pid NAME=PID")
		for _, u := range []struct{ name, url string }{
			{"saga-machine", o.urls.SagaMachine}, {"deals", o.urls.Deals}, {"profile", o.urls.Profile},
			{"notification", o.urls.Notification}, {"issuer", o.urls.Issuer},
		} {
			pu, err := url.Parse(u.url)
			if err != nil || pu.Host == "" {
				continue
			}
			host, port := pu.Hostname(), pu.Port()
			if port == "" {
				port = map[string]string{"https": "443"}[pu.Scheme]
				if port == "" {
					port = "80"
				}
			}
			pid, err := findServer(ctx, fs, net.JoinHostPort(host, port), nil)
			if err != nil {
				notes = append(notes, u.name+" not measured: "+err.Error())
				continue
			}
			add(tracked{Name: u.name, PID: pid})
		}
	}
	for _, t := range o.cpuPIDs {
		add(t)
	}
	return procs, notes
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
	db, err := sqldb.OpenPostgres(server)
	if err != nil {
		return err
	}
	defer db.Close()
	var errs []error
	for _, s := range []string{system.Saga, system.Deals, system.Profile, system.Notification} {
		if _, err := db.Exec(`DROP DATABASE IF EXISTS ` + sqldb.QuoteIdentifier(prefix+s) + ` WITH (FORCE)`); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", prefix+s, err))
		}
	}
	return errors.Join(errs...)
}

// deleteKafkaRun deletes, from the brokers a run used, the topics whose
// names hold infix (the run's fresh topics) and the consumer groups whose
// names start with groupPrefix, as dropDatabases drops its databases: each
// run creates a dozen partitions, and without this a day of runs left
// 4,210 partition directories (2.1 GB) on the test broker.
func deleteKafkaRun(o options, infix, groupPrefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm, err := kafka.Config{Brokers: o.brokers, SASL: o.kafkaSASL, TLS: o.kafkaTLS, ClientID: "bench-cleanup"}.NewAdmin()
	if err != nil {
		return fmt.Errorf("delete the run's topics: %w", err)
	}
	defer adm.Close()
	var errs []error
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("list consumer groups: %w", err))
	}
	if mine := slices.DeleteFunc(groups.Groups(), func(g string) bool { return !strings.HasPrefix(g, groupPrefix) }); len(mine) > 0 {
		res, err := adm.DeleteGroups(ctx, mine...)
		errs = append(errs, deleteErr("consumer groups", mine, err, res))
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list topics: %w", err))...)
	}
	if mine := slices.DeleteFunc(topics.Names(), func(t string) bool { return !strings.Contains(t, infix) }); len(mine) > 0 {
		res, err := adm.DeleteTopics(ctx, mine...)
		errs = append(errs, deleteErr("topics", mine, err, res))
	}
	return errors.Join(errs...)
}

// deleteErr is the error of a request that deleted names (err), or else
// the first error of its response (res), or nil.
func deleteErr(what string, names []string, err error, res interface{ Error() error }) error {
	if err == nil {
		err = res.Error()
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("delete %s %v: %w", what, names, err)
}

// sagaRun is one saga in flight.
type sagaRun struct {
	sent     time.Time
	rejected bool
	done     chan engine.Instance
}

// drive sets up users and portfolios, then runs the sagas.
func drive(ctx context.Context, o options, tg *target, stderr io.Writer) (Result, error) {
	res := Result{Mode: tg.mode, Loop: "closed", N: o.n, Concurrency: o.c, CPUs: runtime.NumCPU()}
	if strings.HasPrefix(tg.mode, "postgres") {
		res.PGDriver, _ = sqldb.PostgresDriver() // the system started with it (an error stopped it before)
	}
	if len(tg.brokers) > 0 {
		res.KafkaTransport = kafkaTransport(tg.kafkaSASL, tg.kafkaTLS)
	}
	if o.rate > 0 {
		res.Loop = "open"
	}
	conns := o.c
	if o.rate > 0 {
		conns = min(o.maxInFlight, 1024)
	}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns + 16, MaxIdleConnsPerHost: conns + 16, IdleConnTimeout: time.Minute,
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
		t, err := newTap(ctx, kafka.Config{Brokers: tg.brokers, SASL: tg.kafkaSASL, TLS: tg.kafkaTLS}, tg.notifyTopic)
		if err != nil {
			return res, err
		}
		go func() { watchErr <- w.runTap(wctx, t) }()
	} else {
		go func() { watchErr <- w.runList(wctx, o.poll, engine.StatusCompleted, engine.StatusFailed) }()
	}

	var done, inflight atomic.Int64
	// one posts saga i's deal at sent and waits until its saga is final.
	one := func(ctx context.Context, i int, sent time.Time) (outcome, error) {
		acc := accounts[i%len(accounts)]
		rejected := o.rejectEvery > 0 && i%o.rejectEvery == o.rejectEvery-1
		req := system.DealRequest{PortfolioID: acc.portfolioID, Side: "buy", Instrument: "ACME", Quantity: "1", Price: "1.00", Currency: "USD"}
		if rejected {
			req.Quantity = "10000000000000" // 1e13 × 1.00 > 1e12 cash
		}
		r := &sagaRun{sent: sent, rejected: rejected, done: make(chan engine.Instance, 1)}
		inflight.Add(1)
		defer inflight.Add(-1)
		d, _, err := acc.c.CreateDeal(ctx, req, "")
		if err != nil {
			return outcome{}, err
		}
		w.add(d.SagaID, r)
		select {
		case inst := <-r.done:
			done.Add(1)
			return outcome{run: r, inst: inst}, nil
		case <-ctx.Done():
			return outcome{}, ctx.Err()
		}
	}

	var meter *cpuMeter
	if len(tg.cpu) > 0 {
		meter = &cpuMeter{fs: procFS{root: "/proc"}, procs: tg.cpu, notes: tg.cpuNotes}
		if err := meter.start(); err != nil {
			fmt.Fprintf(stderr, "CPU not measured: %v\n", err)
			meter = nil
		}
	}
	var stagesBefore map[string]stageTotals
	if tg.stages != nil {
		var err error
		if stagesBefore, err = tg.stages(ctx); err != nil {
			fmt.Fprintf(stderr, "stages not measured: %v\n", err)
		}
	}
	stagesFrom := time.Now()
	start := time.Now()
	stopProgress := progress(stderr, o, start, &done, &inflight)
	var (
		outcomes []outcome
		errs     []error
		shots    []shot
	)
	if o.rate > 0 {
		var err error
		start, shots, err = openLoop(ctx, realClock{}, schedule{rate: o.rate, n: o.n, maxInFlight: o.maxInFlight}, one)
		if err != nil && ctx.Err() == nil {
			stopProgress()
			return res, err
		}
		for _, sh := range shots {
			if sh.err != nil {
				errs = append(errs, sh.err)
			}
		}
	} else {
		var next atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < o.c; g++ {
			wg.Go(func() {
				for ctx.Err() == nil {
					i := int(next.Add(1)) - 1
					if i >= o.n {
						return
					}
					oc, err := one(ctx, i, time.Now())
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						outcomes = append(outcomes, oc)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	var cpuErr error
	if meter != nil {
		res.CPU, cpuErr = meter.stop(res.CPUs, int(done.Load()))
	}
	if stagesBefore != nil {
		after, err := tg.stages(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "stages not measured: %v\n", err)
		} else {
			res.Stages = stageReport(stagesBefore, after, time.Since(stagesFrom))
		}
	}
	stopProgress()
	stopWatch()
	if err := <-watchErr; err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%d of %d sagas finished: %w", done.Load(), o.n, err)
	}
	if cpuErr != nil {
		fmt.Fprintf(stderr, "CPU not measured: %v\n", cpuErr)
	}
	res.Errors = len(errs)
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "%d POST /deals failed; first: %v\n", len(errs), errs[0])
	}
	if o.rate > 0 {
		// The shots that finished, in order, to be refined like the closed loop's.
		idx := make([]int, 0, len(shots))
		for i, sh := range shots {
			if sh.err == nil {
				idx = append(idx, i)
				outcomes = append(outcomes, sh.out)
			}
		}
		if len(outcomes) > 0 && tg.get != nil {
			if err := refine(ctx, tg.get, outcomes); err != nil {
				return res, err
			}
		}
		for k, i := range idx {
			shots[i].out = outcomes[k]
		}
	} else if len(outcomes) > 0 && tg.get != nil {
		if err := refine(ctx, tg.get, outcomes); err != nil {
			return res, err
		}
	}
	if len(outcomes) == 0 {
		return res, errors.New("no saga finished")
	}
	for _, oc := range outcomes {
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
	if o.rate > 0 {
		sum := summarize(start, shots, o.warmupSagas())
		res.LatencyMs = percentiles(sum.latency)
		res.Seconds = sum.lastFinal.Sub(start).Seconds()
		res.SagasPerSec = sum.doneRate
		res.Open = &OpenLoop{
			OfferedPerSec: o.rate, SentPerSec: sum.sentRate, WarmupSagas: min(o.warmupSagas(), len(shots)), Measured: sum.measured,
			BehindScheduleMs: percentiles(sum.behind), Late: sum.late, MaxInFlight: o.maxInFlight,
		}
		return res, nil
	}
	lat, warm, lastFinal := closedLatency(start, o.warmup, outcomes)
	res.WarmupSagas = warm
	if warm == len(outcomes) {
		return res, fmt.Errorf("--warmup %s left out all %d sagas: none to measure", o.warmup, len(outcomes))
	}
	elapsed := lastFinal.Sub(start)
	res.Seconds = elapsed.Seconds()
	res.SagasPerSec = float64(res.Completed) / elapsed.Seconds()
	res.LatencyMs = percentiles(lat)
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

// startProfiling starts what the profile flags ask for: the CPU profile
// and the execution trace stream to their files from now on; block and
// mutex sampling start now. stop ends them and writes the allocations,
// block and mutex profiles (errors go to stderr: the run's result stands).
func startProfiling(o options, stderr io.Writer) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	// stream starts a profile that is written while it runs.
	stream := func(path, what string, start func(io.Writer) error, end func()) error {
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := start(f); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", what, err)
		}
		stops = append(stops, func() { end(); f.Close() })
		return nil
	}
	// after writes the runtime profile name to path when profiling stops.
	after := func(path, name string, restore func()) {
		if path == "" {
			return
		}
		stops = append(stops, func() {
			restore()
			if err := writeProfile(name, path); err != nil {
				fmt.Fprintln(stderr, "bench:", err)
			}
		})
	}
	if err := stream(o.cpuProfile, "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile); err != nil {
		return nil, err
	}
	if err := stream(o.traceFile, "trace", trace.Start, trace.Stop); err != nil {
		stop()
		return nil, err
	}
	after(o.memProfile, "allocs", func() {})
	if o.blockProfile != "" {
		runtime.SetBlockProfileRate(int(blockProfileRate))
	}
	after(o.blockProfile, "block", func() { runtime.SetBlockProfileRate(0) })
	if o.mutexProfile != "" {
		prev := runtime.SetMutexProfileFraction(mutexProfileFraction)
		after(o.mutexProfile, "mutex", func() { runtime.SetMutexProfileFraction(prev) })
	}
	return stop, nil
}

// writeProfile writes the runtime profile name ("allocs": everything the
// started system and the load generator allocated since the process
// started; "block", "mutex": what was sampled while they were on) to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("%s profile: %w", name, err)
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("%s profile: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s profile: %w", name, err)
	}
	return nil
}

// Sampling of --blockprofile and --mutexprofile: every blocking event of
// at least 10 µs (shorter ones with a probability in proportion), and one
// contended lock in five.
const (
	blockProfileRate     = 10 * time.Microsecond
	mutexProfileFraction = 5
)

// closedLatency is the closed loop's latency histogram (POST to final
// commit) of the sagas posted at least warmup after start, how many were
// posted before (left out), and the last final commit of all.
func closedLatency(start time.Time, warmup time.Duration, outcomes []outcome) (lat *hdrhistogram.Histogram, warm int, lastFinal time.Time) {
	lat = newHistogram()
	measureFrom := start.Add(warmup)
	for _, oc := range outcomes {
		if oc.run.sent.Before(measureFrom) {
			warm++
		} else {
			record(lat, oc.inst.UpdatedAt.Sub(oc.run.sent))
		}
		if oc.inst.UpdatedAt.After(lastFinal) {
			lastFinal = oc.inst.UpdatedAt
		}
	}
	return lat, warm, lastFinal
}
