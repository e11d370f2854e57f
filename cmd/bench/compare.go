package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/program"
)

// compare runs, on one machine in one go, the saga bench on PostgreSQL +
// Kafka and the two floors it stands on at the same client count: pgbench's
// write-only transaction on the same PostgreSQL and a plain produce→consume
// round trip on the same broker; it prints sagas/s beside each floor and
// their ratio, which holds better from one (noisy) machine to the next
// than the absolute numbers.

// compareConfig is a compare run.
type compareConfig struct {
	postgres string
	brokers  []string
	sasl     kafka.SASL
	// tls is the Kafka TLS setting (nil: none) of the round trips, and
	// tlsCAFile the CA file it came from ("": the system's CAs), which
	// the saga run is given so that it connects the same way.
	tls       *tls.Config
	tlsCAFile string
	clients   int
	n         int
	rounds    int
	hops      int
	pgbench   pgbenchConfig
	rt        rtConfig
	jsonOut   bool
	env       func(string) string
	// sagaArgs are extra cmd/bench flags for the saga runs.
	sagaArgs []string
}

// Comparison is what compare reports.
type Comparison struct {
	Date    string  `json:"date"`
	Machine Machine `json:"machine"`
	Clients int     `json:"clients"`
	Hops    int     `json:"hops_per_saga"`
	// KafkaTransport is the transport of both the saga runs and the round
	// trips (PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL): compare refuses
	// to put runs over different ones side by side.
	KafkaTransport string         `json:"kafka_transport"`
	Rounds         []CompareRound `json:"rounds"`
}

// Machine says where a comparison ran.
type Machine struct {
	Host      string `json:"host"`
	CPUModel  string `json:"cpu_model"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go"`
	Commit    string `json:"commit"`
	// LoadBefore and LoadAfter are the 1-minute load averages around the run.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

// CompareRound is one pass over the three measurements.
type CompareRound struct {
	Saga    Result     `json:"saga"`
	Pgbench Pgbench    `json:"pgbench"`
	Kafka   RoundTrips `json:"kafka"`
	// SagasPerPgbenchTx is sagas/s ÷ pgbench tps.
	SagasPerPgbenchTx float64 `json:"sagas_per_pgbench_tx"`
	// SagasPerKafkaRoundTrip is sagas/s ÷ round trips/s; HopsPerKafkaRoundTrip
	// the same with each saga counted as its hops.
	SagasPerKafkaRoundTrip float64 `json:"sagas_per_kafka_round_trip"`
	HopsPerKafkaRoundTrip  float64 `json:"hops_per_kafka_round_trip"`
}

func parseCompareFlags(args []string, env func(string) string, stderr io.Writer) (compareConfig, error) {
	fs := flag.NewFlagSet("bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := compareConfig{env: env}
	var brokers, sagaArgs string
	defPG := env("SAGA_TEST_POSTGRES_URL")
	if defPG == "" {
		defPG = "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable"
	}
	defBrokers := env("SAGA_TEST_KAFKA_BROKERS")
	if defBrokers == "" {
		defBrokers = "127.0.0.1:59092"
	}
	fs.StringVar(&c.postgres, "postgres", defPG, "PostgreSQL server URL (env SAGA_TEST_POSTGRES_URL): the saga bench's fresh databases and pgbench's live there")
	defTLSBrokers := env("SAGA_TEST_KAFKA_TLS_BROKERS")
	if defTLSBrokers == "" {
		defTLSBrokers = "127.0.0.1:59094"
	}
	fs.StringVar(&brokers, "brokers", defBrokers, "Kafka brokers (env SAGA_TEST_KAFKA_BROKERS; with --kafka-tls or --kafka-tls-ca-file: SAGA_TEST_KAFKA_TLS_BROKERS, else "+defTLSBrokers+")")
	fs.IntVar(&c.clients, "c", 32, "clients: the saga bench's, pgbench's and the Kafka round trip's")
	fs.IntVar(&c.n, "n", 5000, "sagas per saga run")
	fs.IntVar(&c.rounds, "rounds", 1, "passes over the three measurements (report ranges)")
	fs.IntVar(&c.hops, "hops", 8, "Kafka hops of one saga (MANUAL_CREATE_ORDER: 8), for the hops-per-round-trip ratio")
	fs.DurationVar(&c.pgbench.duration, "pgbench-duration", 15*time.Second, "pgbench -T")
	fs.IntVar(&c.pgbench.scale, "pgbench-scale", 10, "pgbench -i -s (10: one million accounts)")
	fs.IntVar(&c.pgbench.threads, "pgbench-threads", runtime.NumCPU(), "pgbench -j")
	fs.DurationVar(&c.rt.duration, "kafka-duration", 10*time.Second, "how long to measure Kafka round trips")
	fs.IntVar(&c.rt.partitions, "kafka-partitions", 3, "partitions of the round trip's topic (the saga system's default)")
	fs.StringVar(&sagaArgs, "saga-args", "", "more cmd/bench flags for the saga runs, space-separated (e.g. \"--participant-concurrency 4\")")
	fs.BoolVar(&c.jsonOut, "json", false, "print the comparison as JSON on stdout")
	kf := program.RegisterKafkaFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.sasl, err = kf.SASL(); err != nil {
		return c, err
	}
	if c.tls, err = kf.TLS(); err != nil {
		return c, err
	}
	c.tlsCAFile = kf.TLSCAFile()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.tls != nil && !set["brokers"] {
		brokers = defTLSBrokers // the plaintext listener's default would not answer TLS
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.brokers = append(c.brokers, b)
		}
	}
	c.sagaArgs = strings.Fields(sagaArgs)
	for _, a := range c.sagaArgs {
		switch strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-") {
		case "n", "c", "postgres", "brokers", "json", "rate", "remote", "kafka-user", "kafka-password", "kafka-password-file",
			"kafka-sasl-mechanism", "kafka-tls", "kafka-tls-ca-file":
			return c, fmt.Errorf("--saga-args %q: compare sets %s itself", sagaArgs, a)
		}
	}
	switch {
	case c.clients <= 0 || c.clients > 10000:
		return c, fmt.Errorf("-c %d: want 1 to 10000", c.clients)
	case c.n <= 0:
		return c, fmt.Errorf("-n %d: want a positive number", c.n)
	case c.rounds <= 0 || c.rounds > 20:
		return c, fmt.Errorf("--rounds %d: want 1 to 20", c.rounds)
	case c.hops <= 0:
		return c, fmt.Errorf("--hops %d: want a positive number", c.hops)
	case len(c.brokers) == 0:
		return c, errors.New("--brokers is required")
	case c.pgbench.duration < time.Second || c.pgbench.scale <= 0 || c.pgbench.threads <= 0:
		return c, fmt.Errorf("--pgbench-duration %s --pgbench-scale %d --pgbench-threads %d: want at least 1s and positive numbers",
			c.pgbench.duration, c.pgbench.scale, c.pgbench.threads)
	case c.rt.duration <= 0 || c.rt.partitions <= 0:
		return c, fmt.Errorf("--kafka-duration %s --kafka-partitions %d: want positive values", c.rt.duration, c.rt.partitions)
	}
	if _, err := postgresAddr(c.postgres); err != nil {
		return c, fmt.Errorf("--postgres %s: %w", redactURL(c.postgres), err)
	}
	c.pgbench.server, c.pgbench.clients, c.pgbench.cpu, c.pgbench.env = c.postgres, c.clients, true, env
	c.rt.kafka = kafka.Config{Brokers: c.brokers, SASL: c.sasl, TLS: c.tls}
	c.rt.clients, c.rt.warmup, c.rt.cpu, c.rt.env = c.clients, 2*time.Second, true, env
	return c, nil
}

// runCompare is the compare subcommand.
func runCompare(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	c, err := parseCompareFlags(args, env, stderr)
	if err != nil {
		return err
	}
	cmp := Comparison{Date: time.Now().UTC().Format(time.RFC3339), Machine: machineInfo(), Clients: c.clients, Hops: c.hops,
		KafkaTransport: kafkaTransport(c.sasl, c.tls)}
	cmp.Machine.LoadBefore = loadAvg()
	for r := range c.rounds {
		fmt.Fprintf(stderr, "== round %d/%d: pgbench -b simple-update -c %d\n", r+1, c.rounds, c.clients)
		var rd CompareRound
		if rd.Pgbench, err = runPgbench(ctx, c.pgbench, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "== round %d/%d: Kafka produce→consume, %d clients\n", r+1, c.rounds, c.clients)
		if rd.Kafka, err = kafkaRoundTrips(ctx, c.rt, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "== round %d/%d: saga bench -n %d -c %d on PostgreSQL + Kafka\n", r+1, c.rounds, c.n, c.clients)
		if rd.Saga, err = c.sagaRun(ctx, stderr); err != nil {
			return err
		}
		if rd.Saga.KafkaTransport != rd.Kafka.Transport || rd.Kafka.Transport != cmp.KafkaTransport {
			return fmt.Errorf("the saga bench ran over Kafka %s and the round trips over %s (want %s): their ratio would compare different transports",
				rd.Saga.KafkaTransport, rd.Kafka.Transport, cmp.KafkaTransport)
		}
		if rd.Pgbench.TPS > 0 {
			rd.SagasPerPgbenchTx = rd.Saga.SagasPerSec / rd.Pgbench.TPS
		}
		if rd.Kafka.PerSec > 0 {
			rd.SagasPerKafkaRoundTrip = rd.Saga.SagasPerSec / rd.Kafka.PerSec
			rd.HopsPerKafkaRoundTrip = rd.SagasPerKafkaRoundTrip * float64(c.hops)
		}
		cmp.Rounds = append(cmp.Rounds, rd)
	}
	cmp.Machine.LoadAfter = loadAvg()
	if c.jsonOut {
		return json.NewEncoder(stdout).Encode(cmp)
	}
	printComparison(stdout, cmp)
	return nil
}

// sagaRun runs the saga bench (closed loop) through its own flag parsing,
// with compare's PostgreSQL, brokers, credentials and TLS settings.
func (c compareConfig) sagaRun(ctx context.Context, stderr io.Writer) (Result, error) {
	var out bytes.Buffer
	if err := run(ctx, c.sagaArgv(), c.sagaEnv(), &out, stderr); err != nil {
		return Result{}, fmt.Errorf("saga bench: %w", err)
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("saga bench result %q: %w", out.String(), err)
	}
	return res, nil
}

// sagaArgv is the command line of the saga runs (after --saga-args'
// check: none of them sets what compare sets).
func (c compareConfig) sagaArgv() []string {
	return append([]string{"-n", strconv.Itoa(c.n), "-c", strconv.Itoa(c.clients), "--postgres", c.postgres,
		"--brokers", strings.Join(c.brokers, ","), "--json"}, c.sagaArgs...)
}

// sagaEnv is the environment of the saga runs: compare's resolved Kafka
// settings in the variables program.KafkaFlags reads (the credentials
// and TLS settings compare was given, as flags or variables, and nothing
// else), so that the saga run and the round trips connect the same way.
func (c compareConfig) sagaEnv() func(string) string {
	return func(k string) string {
		switch k {
		case program.EnvKafkaUser:
			return c.sasl.User
		case program.EnvKafkaPassword:
			return c.sasl.Password
		case program.EnvKafkaMechanism:
			return c.sasl.Mechanism
		case program.EnvKafkaTLS:
			return strconv.FormatBool(c.tls != nil)
		case program.EnvKafkaTLSCAFile:
			return c.tlsCAFile
		case program.EnvKafkaPasswordFile, program.EnvKafkaInstanceID:
			return ""
		}
		return c.env(k)
	}
}

// printComparison writes the comparison as a table, one row per
// measurement and round.
func printComparison(w io.Writer, c Comparison) {
	m := c.Machine
	fmt.Fprintf(w, "bench compare %s  %s (%s, %d CPUs)  commit %s  %s  load %.2f -> %.2f\n",
		c.Date, m.Host, m.CPUModel, m.CPUs, m.Commit, m.GoVersion, m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(w, "%d clients each; a saga is %d Kafka hops; Kafka transport %s (the saga runs' and the round trips')\n\n",
		c.Clients, c.Hops, describeTransport(c.KafkaTransport))
	fmt.Fprintf(w, "%-5s %-44s %10s %9s %9s  %s\n", "round", "measurement", "per sec", "p50 ms", "p99 ms", "CPU ms per unit")
	for i, r := range c.Rounds {
		fmt.Fprintf(w, "%-5d %-44s %10.0f %9.1f %9.1f  %s\n", i+1, "sagas ("+r.Saga.Mode+")", r.Saga.SagasPerSec,
			r.Saga.LatencyMs.P50, r.Saga.LatencyMs.P99, cpuLine(r.Saga.CPU))
		clients := strconv.Itoa(r.Pgbench.Clients)
		if r.Pgbench.Requested > 0 {
			clients += " of " + strconv.Itoa(r.Pgbench.Requested)
		}
		fmt.Fprintf(w, "%-5d %-44s %10.0f %9s %9s  %s\n", i+1, "pgbench -b simple-update tx ("+clients+" clients)", r.Pgbench.TPS,
			fmt.Sprintf("avg %.1f", r.Pgbench.LatencyAvgMs), "-", cpuLine(r.Pgbench.CPU))
		fmt.Fprintf(w, "%-5d %-44s %10.0f %9.2f %9.2f  %s\n", i+1, "kafka produce→consume round trips", r.Kafka.PerSec,
			r.Kafka.LatencyMs.P50, r.Kafka.LatencyMs.P99, cpuLine(r.Kafka.CPU))
		fmt.Fprintf(w, "      ratios: sagas/s ÷ pgbench tps = %.3f; sagas/s ÷ Kafka round trips/s = %.3f (hops: %.2f)\n",
			r.SagasPerPgbenchTx, r.SagasPerKafkaRoundTrip, r.HopsPerKafkaRoundTrip)
	}
	if len(c.Rounds) > 1 {
		rng := func(f func(CompareRound) float64) string {
			lo, hi := f(c.Rounds[0]), f(c.Rounds[0])
			for _, r := range c.Rounds[1:] {
				lo, hi = min(lo, f(r)), max(hi, f(r))
			}
			return fmt.Sprintf("%.3g–%.3g", lo, hi)
		}
		fmt.Fprintf(w, "\nranges over %d rounds: sagas/s %s, pgbench tps %s, round trips/s %s; sagas per pgbench tx %s, per round trip %s\n",
			len(c.Rounds), rng(func(r CompareRound) float64 { return r.Saga.SagasPerSec }), rng(func(r CompareRound) float64 { return r.Pgbench.TPS }),
			rng(func(r CompareRound) float64 { return r.Kafka.PerSec }), rng(func(r CompareRound) float64 { return r.SagasPerPgbenchTx }),
			rng(func(r CompareRound) float64 { return r.SagasPerKafkaRoundTrip }))
	}
}

// cpuLine summarizes a CPU report: ms per unit of each process.
func cpuLine(r *CPUReport) string {
	if r == nil {
		return "-"
	}
	var parts []string
	for _, p := range r.Processes {
		if strings.Contains(p.Name, "(") { // sub-entries (backends) are in --json
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", p.Name, p.MsPerSaga))
	}
	parts = append(parts, fmt.Sprintf("machine %.2f (%.0f%% busy)", r.Machine.MsPerSaga, r.Machine.BusyFraction*100))
	return strings.Join(parts, ", ")
}

// machineInfo describes this machine and build.
func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Commit: "unknown"}
	m.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			m.Commit = rev[:min(len(rev), 12)]
			if modified == "true" {
				m.Commit += "+modified"
			}
			return m
		}
	}
	// Built without VCS stamping (-buildvcs=false): ask git about the
	// working directory, if it is a checkout.
	if out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if exec.Command("git", "diff", "--quiet", "HEAD").Run() != nil {
			m.Commit += "+uncommitted"
		}
	}
	return m
}

// loadAvg is the 1-minute load average (0 if unreadable).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
