// Command failover measures how fast a consumer group member of package
// engine/kafka gets back to work after a crash or a broker restart, the way
// saga-machine and the participants consume (Fetch, then Commit):
//
//   - kill: a consumer process is killed with SIGKILL while records flow,
//     and a replacement process (same --kafka-instance-id when -static) is
//     started at once. Reported: the time from the kill to the first
//     record the replacement processed, and to the moment it processed a
//     record produced after the kill on every partition (all partitions
//     back).
//   - broker: the broker whose pid is in -broker-pid-file is stopped
//     (SIGTERM, as a restart does) and started again with -start-cmd while
//     a consumer process keeps running. Reported: the time from the broker
//     answering again to the first record processed, and the whole pause.
//
// Only ever point it at a broker of your own (the broker mode restarts it):
//
//	SAGA_KAFKA_PASSWORD=saga-test-admin go run ./scripts/failover -brokers 127.0.0.1:59192 -user admin -mode kill -static
//	SAGA_KAFKA_PASSWORD=saga-test-admin go run ./scripts/failover -brokers 127.0.0.1:59192 -user admin -mode broker -static \
//	  -broker-pid-file /var/tmp/saga-machine-b/kafka/kafka.pid \
//	  -start-cmd 'SAGA_UP_SERVICES=kafka SAGA_RUN_DIR=/var/tmp/saga-machine-b SAGA_KAFKA_PORT=59192 SAGA_KAFKA_CONTROLLER_PORT=59193 SAGA_KAFKA_TLS_PORT=59194 scripts/up.sh'
//
// Every run uses a fresh topic (3 partitions) and group, and deletes the
// topic at the end. Each measurement is repeated -runs times.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

const partitions = 3

type options struct {
	brokers, user       string
	mode                string
	static              bool
	session             time.Duration
	runs                int
	pidFile, startCmd   string
	child               bool
	group, topic, inst  string
	timeout, produceGap time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.brokers, "brokers", "127.0.0.1:59192", "seed brokers (your own broker)")
	flag.StringVar(&o.user, "user", "", "SASL/SCRAM-SHA-512 user, password from $SAGA_KAFKA_PASSWORD")
	flag.StringVar(&o.mode, "mode", "kill", "kill (kill -9 a consumer and start its replacement) or broker (restart the broker)")
	flag.BoolVar(&o.static, "static", false, "static group membership (kafka.Config.InstanceID); default dynamic")
	flag.DurationVar(&o.session, "session-timeout", 0, "consumer session timeout (default kafka.DefaultSessionTimeout)")
	flag.IntVar(&o.runs, "runs", 3, "repetitions")
	flag.StringVar(&o.pidFile, "broker-pid-file", "", "pid file of the broker to restart (-mode broker)")
	flag.StringVar(&o.startCmd, "start-cmd", "", "shell command that starts the broker again (-mode broker)")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up on one measurement after this long")
	flag.DurationVar(&o.produceGap, "every", 50*time.Millisecond, "time between produced records")
	flag.BoolVar(&o.child, "child", false, "internal: run as the consumer process")
	flag.StringVar(&o.group, "group", "", "internal: consumer group")
	flag.StringVar(&o.topic, "topic", "", "internal: topic")
	flag.StringVar(&o.inst, "instance-id", "", "internal: instance id")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

func (o options) config(clientID string) kafka.Config {
	cfg := kafka.Config{Brokers: strings.Split(o.brokers, ","), ClientID: clientID, SessionTimeout: o.session,
		DeliveryTimeout: 2 * time.Minute}
	if o.user != "" {
		cfg.SASL = kafka.SASL{User: o.user, Password: os.Getenv("SAGA_KAFKA_PASSWORD")}
	}
	return cfg
}

func run(o options) error {
	if o.child {
		return consume(o)
	}
	for i := range o.runs {
		var res string
		var err error
		switch o.mode {
		case "kill":
			res, err = measureKill(o)
		case "broker":
			res, err = measureBroker(o)
		default:
			return fmt.Errorf("-mode %q: want kill or broker", o.mode)
		}
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		fmt.Printf("run %d: %s\n", i+1, res)
	}
	return nil
}

// consume is the consumer process: it prints "P <partition> <value>
// <unix nanos>" for every record it processed (and committed).
func consume(o options) error {
	cfg := o.config("failover-consumer")
	cfg.InstanceID = o.inst
	c, err := kafka.NewConsumer(cfg, o.group, o.topic)
	if err != nil {
		return err
	}
	defer c.Close()
	out := bufio.NewWriter(os.Stdout)
	for {
		recs, err := c.Fetch(context.Background(), 100)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fetch:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.Commit(ctx, recs)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "commit:", err)
			continue
		}
		now := time.Now().UnixNano()
		for _, r := range recs {
			fmt.Fprintf(out, "P %d %s %d\n", r.Partition, r.Value, now)
		}
		out.Flush()
	}
}

// processed is one record a consumer process reported.
type processed struct {
	partition int32
	seq       int64 // produced sequence number
	at        time.Time
}

// consumerProc is a running consumer process and what it processed.
type consumerProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen []processed
	wake chan struct{}
}

func startConsumer(o options, group, topic, inst string) (*consumerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-child", "-brokers", o.brokers, "-user", o.user, "-group", group, "-topic", topic, "-instance-id", inst,
		"-session-timeout", o.session.String()}
	cmd := exec.Command(self, args...)
	cmd.Stderr = io.Discard
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &consumerProc{cmd: cmd, wake: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "P" {
				continue
			}
			part, _ := strconv.Atoi(f[1])
			seq, _ := strconv.ParseInt(f[2], 10, 64)
			ns, _ := strconv.ParseInt(f[3], 10, 64)
			p.mu.Lock()
			p.seen = append(p.seen, processed{int32(part), seq, time.Unix(0, ns)})
			p.mu.Unlock()
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}()
	return p, nil
}

// waitFor waits until cond holds on what p processed.
func (p *consumerProc) waitFor(ctx context.Context, cond func([]processed) bool) error {
	for {
		p.mu.Lock()
		ok := cond(p.seen)
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.wake:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *consumerProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func (p *consumerProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// producer publishes sequence numbers round-robin over the partitions
// (key "k<seq%partitions*7>") until stopped, recording when it produced
// each.
type producer struct {
	mu       sync.Mutex
	next     int64
	produced map[int64]time.Time
	stop     chan struct{}
	done     chan struct{}
}

func startProducer(o options, topic string) (*producer, error) {
	p, err := kafka.NewProducer(o.config("failover-producer"))
	if err != nil {
		return nil, err
	}
	pr := &producer{produced: map[int64]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		defer p.Close()
		for {
			select {
			case <-pr.stop:
				return
			case <-time.After(o.produceGap):
			}
			pr.mu.Lock()
			seq := pr.next
			pr.next++
			pr.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := p.Publish(ctx, []kafka.Record{{Topic: topic, Key: "k" + strconv.FormatInt(seq%21, 10), Value: []byte(strconv.FormatInt(seq, 10))}})
			cancel()
			if err == nil {
				pr.mu.Lock()
				pr.produced[seq] = time.Now()
				pr.mu.Unlock()
			}
		}
	}()
	return pr, nil
}

func (pr *producer) close() { close(pr.stop); <-pr.done }

// seqNow is the next sequence number: records from it on are produced
// after this moment.
func (pr *producer) seqNow() int64 { pr.mu.Lock(); defer pr.mu.Unlock(); return pr.next }

func setup(o options) (topic, group string, cleanup func(), err error) {
	suffix := strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	topic, group = "failover."+suffix, "failover."+suffix
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, o.config("failover-setup"), partitions, topic); err != nil {
		return "", "", nil, err
	}
	return topic, group, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		opts, err := o.config("failover-setup").ClientOpts()
		if err != nil {
			return
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return
		}
		defer cl.Close()
		_, _ = kadm.NewClient(cl).DeleteTopic(ctx, topic)
	}, nil
}

// allPartitionsAfter reports whether seen holds, on every partition, a
// record with a sequence number >= from.
func allPartitionsAfter(seen []processed, from int64) (time.Time, bool) {
	last := map[int32]time.Time{}
	for _, s := range seen {
		if s.seq >= from {
			if _, ok := last[s.partition]; !ok {
				last[s.partition] = s.at
			}
		}
	}
	if len(last) < partitions {
		return time.Time{}, false
	}
	var latest time.Time
	for _, at := range last {
		if at.After(latest) {
			latest = at
		}
	}
	return latest, true
}

func measureKill(o options) (string, error) {
	topic, group, cleanup, err := setup(o)
	if err != nil {
		return "", err
	}
	defer cleanup()
	pr, err := startProducer(o, topic)
	if err != nil {
		return "", err
	}
	defer pr.close()
	inst := ""
	if o.static {
		inst = "failover-0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	first, err := startConsumer(o, group, topic, inst)
	if err != nil {
		return "", err
	}
	// Steady state: the first process works on every partition.
	if err := first.waitFor(ctx, func(s []processed) bool { _, ok := allPartitionsAfter(s, 0); return ok && len(s) > 20 }); err != nil {
		first.kill()
		return "", fmt.Errorf("first consumer never processed every partition: %w", err)
	}
	from := pr.seqNow()
	killed := time.Now()
	first.kill()
	second, err := startConsumer(o, group, topic, inst)
	if err != nil {
		return "", err
	}
	defer second.stop()
	if err := second.waitFor(ctx, func(s []processed) bool { return len(s) > 0 }); err != nil {
		return "", fmt.Errorf("replacement processed nothing: %w", err)
	}
	second.mu.Lock()
	firstAt := second.seen[0].at
	second.mu.Unlock()
	var allAt time.Time
	if err := second.waitFor(ctx, func(s []processed) bool {
		var ok bool
		allAt, ok = allPartitionsAfter(s, from)
		return ok
	}); err != nil {
		return "", fmt.Errorf("replacement never got every partition back: %w", err)
	}
	return fmt.Sprintf("kill -9 -> first record processed by the replacement %s, -> every partition processing new records %s",
		firstAt.Sub(killed).Round(10*time.Millisecond), allAt.Sub(killed).Round(10*time.Millisecond)), nil
}

func measureBroker(o options) (string, error) {
	if o.pidFile == "" || o.startCmd == "" {
		return "", errors.New("-mode broker needs -broker-pid-file and -start-cmd (and restarts that broker: your own only)")
	}
	topic, group, cleanup, err := setup(o)
	if err != nil {
		return "", err
	}
	defer cleanup()
	pr, err := startProducer(o, topic)
	if err != nil {
		return "", err
	}
	defer pr.close()
	inst := ""
	if o.static {
		inst = "failover-0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c, err := startConsumer(o, group, topic, inst)
	if err != nil {
		return "", err
	}
	defer c.stop()
	if err := c.waitFor(ctx, func(s []processed) bool { _, ok := allPartitionsAfter(s, 0); return ok && len(s) > 20 }); err != nil {
		return "", fmt.Errorf("consumer never processed every partition: %w", err)
	}
	raw, err := os.ReadFile(o.pidFile)
	if err != nil {
		return "", err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return "", fmt.Errorf("pid file %s: %w", o.pidFile, err)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return "", err
	}
	stopAt := time.Now()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		return "", fmt.Errorf("stop broker pid %d: %w", pid, err)
	}
	for syscall.Kill(pid, 0) == nil {
		if ctx.Err() != nil {
			return "", errors.New("broker did not stop")
		}
		time.Sleep(50 * time.Millisecond)
	}
	down := time.Now()
	cmd := exec.Command("bash", "-c", o.startCmd)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	addr := strings.Split(o.brokers, ",")[0]
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if ctx.Err() != nil {
			return "", errors.New("broker did not come back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	up := time.Now()
	from := pr.seqNow()
	var firstAt time.Time
	if err := c.waitFor(ctx, func(s []processed) bool {
		for _, p := range s {
			if p.at.After(up) {
				firstAt = p.at
				return true
			}
		}
		return false
	}); err != nil {
		return "", fmt.Errorf("nothing processed after the broker came back: %w", err)
	}
	var allAt time.Time
	if err := c.waitFor(ctx, func(s []processed) bool {
		var ok bool
		allAt, ok = allPartitionsAfter(s, from)
		return ok
	}); err != nil {
		return "", fmt.Errorf("not every partition came back: %w", err)
	}
	_ = cmd.Wait()
	c.mu.Lock()
	var lastBefore time.Time
	for _, p := range c.seen {
		if p.at.Before(stopAt) && p.at.After(lastBefore) {
			lastBefore = p.at
		}
	}
	c.mu.Unlock()
	return fmt.Sprintf("broker stop took %s, down for %s; after it listens again: first record processed %s, every partition processing new records %s; processing paused %s in all",
		down.Sub(stopAt).Round(10*time.Millisecond), up.Sub(down).Round(10*time.Millisecond),
		firstAt.Sub(up).Round(10*time.Millisecond), allAt.Sub(up).Round(10*time.Millisecond),
		firstAt.Sub(lastBefore).Round(10*time.Millisecond)), nil
}
