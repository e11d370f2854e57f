package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/program"
)

// The Kafka floor: c clients, each producing one record (acks=all, no
// linger) and waiting until a consumer reading the topic receives it, then
// producing the next. One round trip is one hop of a saga (a command or an
// event from its producer to its consumer); a MANUAL_CREATE_ORDER saga
// makes 8 of them in a row, with a database transaction at each end.

// rtConfig is one round-trip measurement.
type rtConfig struct {
	kafka      kafka.Config
	clients    int
	partitions int
	duration   time.Duration
	warmup     time.Duration
	cpu        bool
	env        func(string) string
}

// RoundTrips is what kafka-roundtrip reports.
type RoundTrips struct {
	Brokers string `json:"brokers"`
	// Transport is how the clients reached the brokers: PLAINTEXT,
	// SASL_PLAINTEXT, SSL or SASL_SSL (Kafka's security.protocol names;
	// --kafka-tls, --kafka-tls-ca-file, --kafka-user).
	Transport string `json:"kafka_transport"`
	// Topic is the temporary topic (deleted afterwards).
	Topic      string  `json:"topic"`
	Clients    int     `json:"clients"`
	Partitions int     `json:"partitions"`
	Count      int64   `json:"round_trips"`
	Seconds    float64 `json:"seconds"`
	PerSec     float64 `json:"round_trips_per_sec"`
	// LatencyMs: produce call to the record's arrival at the consumer.
	LatencyMs Percentiles `json:"latency_ms"`
	CPU       *CPUReport  `json:"cpu,omitempty"`
	CPUs      int         `json:"cpus"`
}

func parseRoundTripFlags(args []string, env func(string) string, stderr io.Writer) (rtConfig, bool, error) {
	fs := flag.NewFlagSet("bench kafka-roundtrip", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c rtConfig
	var brokers string
	var jsonOut, noCPU bool
	fs.StringVar(&brokers, "brokers", "", "Kafka brokers, comma-separated (required; a SASL_SSL listener such as make up's 127.0.0.1:59094 with --kafka-tls-ca-file)")
	fs.IntVar(&c.clients, "c", 32, "concurrent clients, each with one record in flight")
	fs.IntVar(&c.partitions, "partitions", 3, "partitions of the temporary topic (the started system's default)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to measure")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "round trips before the measurement, not counted")
	fs.BoolVar(&jsonOut, "json", false, "print the result as JSON on stdout")
	fs.BoolVar(&noCPU, "no-cpu", false, "do not measure the broker's CPU")
	kf := program.RegisterKafkaFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return c, false, err
	}
	if fs.NArg() > 0 {
		return c, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.kafka.Brokers = append(c.kafka.Brokers, b)
		}
	}
	var err error
	if c.kafka.SASL, err = kf.SASL(); err != nil {
		return c, false, err
	}
	if c.kafka.TLS, err = kf.TLS(); err != nil {
		return c, false, err
	}
	switch {
	case len(c.kafka.Brokers) == 0:
		return c, false, errors.New("--brokers is required")
	case c.clients <= 0 || c.clients > 10000:
		return c, false, fmt.Errorf("-c %d: want 1 to 10000 clients", c.clients)
	case c.partitions <= 0 || c.partitions > 1000:
		return c, false, fmt.Errorf("--partitions %d: want 1 to 1000", c.partitions)
	case c.duration <= 0 || c.warmup < 0:
		return c, false, fmt.Errorf("--duration %s --warmup %s: want a positive duration", c.duration, c.warmup)
	}
	c.cpu, c.env = !noCPU, env
	return c, jsonOut, nil
}

// runKafkaRoundTrip is the kafka-roundtrip subcommand.
func runKafkaRoundTrip(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	c, jsonOut, err := parseRoundTripFlags(args, env, stderr)
	if err != nil {
		return err
	}
	res, err := kafkaRoundTrips(ctx, c, stderr)
	if err != nil {
		return err
	}
	if jsonOut {
		return json.NewEncoder(stdout).Encode(res)
	}
	printRoundTrips(stdout, res)
	return nil
}

func printRoundTrips(w io.Writer, r RoundTrips) {
	fmt.Fprintf(w, "kafka %s (%s): %d clients, %d partitions: %.0f produce→consume round trips/s (%d in %.1fs)\n",
		r.Brokers, describeTransport(r.Transport), r.Clients, r.Partitions, r.PerSec, r.Count, r.Seconds)
	fmt.Fprintf(w, "  latency produce -> consumed: p50 %.2fms  p90 %.2fms  p99 %.2fms  max %.2fms\n",
		r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99, r.LatencyMs.Max)
	if r.CPU != nil {
		for _, p := range r.CPU.Processes {
			fmt.Fprintf(w, "  CPU %-10s %.3f ms per round trip, %.2f cores\n", p.Name, p.MsPerSaga, p.Cores)
		}
	}
}

// kafkaRoundTrips measures c on a temporary topic, deleted afterwards.
func kafkaRoundTrips(ctx context.Context, c rtConfig, stderr io.Writer) (RoundTrips, error) {
	res := RoundTrips{Brokers: strings.Join(c.kafka.Brokers, ","), Transport: kafkaTransport(c.kafka.SASL, c.kafka.TLS), Clients: c.clients, Partitions: c.partitions, CPUs: runtime.NumCPU()}
	c.kafka.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	c.kafka.ClientID = "bench-roundtrip"
	opts, err := c.kafka.ClientOpts()
	if err != nil {
		return res, fmt.Errorf("kafka round trips: %w", err)
	}
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return res, fmt.Errorf("kafka round trips: admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	topic := "bench.roundtrip." + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	res.Topic = topic
	if r, err := adm.CreateTopic(ctx, int32(c.partitions), 1, nil, topic); err != nil || r.Err != nil {
		return res, fmt.Errorf("kafka round trips: create topic %s: %w", topic, errors.Join(err, r.Err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := adm.DeleteTopic(dctx, topic); err != nil {
			fmt.Fprintf(stderr, "kafka round trips: delete topic %s: %v\n", topic, err)
		}
	}()

	prod, err := kgo.NewClient(append(opts, kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return res, fmt.Errorf("kafka round trips: producer: %w", err)
	}
	defer prod.Close()
	// The topic is new and empty: reading from its start loses nothing
	// produced before the consumer has found its partitions.
	cons, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return res, fmt.Errorf("kafka round trips: consumer: %w", err)
	}
	defer cons.Close()

	arrived := make([]chan uint64, c.clients)
	for i := range arrived {
		arrived[i] = make(chan uint64, 1)
	}
	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	consErr := make(chan error, 1)
	go func() {
		for {
			fs := cons.PollFetches(cctx)
			if cctx.Err() != nil {
				consErr <- nil
				return
			}
			var ferr error
			fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("consume %s[%d]: %w", t, p, err) })
			if ferr != nil {
				consErr <- ferr
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if len(r.Key) != 4 || len(r.Value) != 8 {
					return
				}
				if g := binary.BigEndian.Uint32(r.Key); int(g) < len(arrived) {
					arrived[g] <- binary.BigEndian.Uint64(r.Value)
				}
			})
		}
	}()

	var meter *cpuMeter
	var measuring atomic.Bool
	var count atomic.Int64
	hist := newHistogram()
	var histMu sync.Mutex
	wctx, cancel := context.WithTimeout(ctx, c.warmup+c.duration+time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, c.clients)
	var errMu sync.Mutex // the produce callbacks run on the client's goroutine
	setErr := func(g int, err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if errs[g] == nil {
			errs[g] = err
		}
	}
	for g := range c.clients {
		wg.Go(func() {
			key := binary.BigEndian.AppendUint32(nil, uint32(g))
			for seq := uint64(0); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				rec := &kgo.Record{Topic: topic, Key: key, Value: binary.BigEndian.AppendUint64(nil, seq)}
				prod.Produce(wctx, rec, func(_ *kgo.Record, err error) {
					if err != nil {
						setErr(g, fmt.Errorf("client %d: produce: %w", g, err))
					}
				})
				select {
				case got := <-arrived[g]:
					if got != seq {
						setErr(g, fmt.Errorf("client %d: record %d arrived, want %d", g, got, seq))
						return
					}
				case <-wctx.Done():
					setErr(g, fmt.Errorf("client %d: record %d never arrived: %w", g, seq, wctx.Err()))
					return
				}
				if measuring.Load() {
					d := time.Since(t0)
					count.Add(1)
					histMu.Lock()
					record(hist, d)
					histMu.Unlock()
				}
			}
		})
	}
	fail := func() error {
		close(stop)
		cancel()
		wg.Wait()
		errMu.Lock()
		defer errMu.Unlock()
		return errors.Join(errs...)
	}
	select {
	case <-time.After(c.warmup):
	case <-ctx.Done():
		return res, errors.Join(ctx.Err(), fail())
	}
	if c.cpu {
		procs, notes := kafkaCPUTargets(ctx, procFS{root: "/proc"}, c.kafka.Brokers, c.env)
		meter = &cpuMeter{fs: procFS{root: "/proc"}, procs: procs, notes: notes}
		if err := meter.start(); err != nil {
			fmt.Fprintf(stderr, "CPU not measured: %v\n", err)
			meter = nil
		}
	}
	start := time.Now()
	measuring.Store(true)
	select {
	case <-time.After(c.duration):
	case <-ctx.Done():
		return res, errors.Join(ctx.Err(), fail())
	}
	measuring.Store(false)
	elapsed := time.Since(start)
	n := count.Load()
	if meter != nil {
		if res.CPU, err = meter.stop(res.CPUs, int(n)); err != nil {
			fmt.Fprintf(stderr, "CPU not measured: %v\n", err)
		}
	}
	close(stop)
	wg.Wait()
	stopConsumer()
	errMu.Lock()
	err = errors.Join(append(errs, <-consErr)...)
	errMu.Unlock()
	if err != nil {
		return res, fmt.Errorf("kafka round trips: %w", err)
	}
	res.Count, res.Seconds = n, elapsed.Seconds()
	res.PerSec = float64(n) / elapsed.Seconds()
	histMu.Lock()
	res.LatencyMs = percentiles(hist)
	histMu.Unlock()
	return res, nil
}

// kafkaCPUTargets are the round-trip tool's own process (its clients) and
// the brokers found on this machine.
func kafkaCPUTargets(ctx context.Context, fs procFS, brokers []string, env func(string) string) ([]tracked, []string) {
	procs := []tracked{{Name: "bench", PID: os.Getpid(), Note: "the producing and consuming clients"}}
	var notes []string
	seen := map[int]bool{}
	for _, b := range brokers {
		pid, err := findServer(ctx, fs, b, func(port int) (int, bool) { return kafkaPID(runDir(env), port) })
		if err != nil {
			notes = append(notes, "kafka "+b+" not measured: "+err.Error())
			continue
		}
		if !seen[pid] {
			seen[pid] = true
			procs = append(procs, tracked{Name: "kafka", PID: pid})
		}
	}
	return procs, notes
}
