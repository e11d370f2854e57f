package embedded_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
)

// TestConformance runs the transport's conformance suite against one
// embedded broker shared by all subtests (each uses its own topics).
func TestConformance(t *testing.T) {
	b, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(b.Close)
	kafkatest.Run(t, func(*testing.T) kafka.Config { return kafka.Config{Brokers: b.Addrs()} })
}

func startBench(b *testing.B) kafka.Config {
	b.Helper()
	br, err := embedded.Start(embedded.Options{})
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(br.Close)
	return kafka.Config{Brokers: br.Addrs()}
}

// BenchmarkPublish measures Publish against the embedded broker.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchPublish(b, startBench(b), batch) })
	}
}

// BenchmarkRoundTrip measures publish + fetch + commit against the embedded broker.
func BenchmarkRoundTrip(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { kafkatest.BenchRoundTrip(b, startBench(b), batch) })
	}
}

func start(t *testing.T, opts embedded.Options) *embedded.Broker {
	t.Helper()
	b, err := embedded.Start(opts)
	if err != nil {
		t.Fatalf("Start(%+v): %v", opts, err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts embedded.Options
	}{
		{"address without port", embedded.Options{Addr: "127.0.0.1"}},
		{"negative partitions", embedded.Options{Partitions: -1}},
		{"empty topic", embedded.Options{Topics: []string{"A", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := embedded.Start(tc.opts); err == nil {
				b.Close()
				t.Errorf("Start(%+v) = nil error, want one", tc.opts)
			}
		})
	}
}

func TestStartListensOnAddr(t *testing.T) {
	b := start(t, embedded.Options{Addr: "127.0.0.1:0"})
	addrs := b.Addrs()
	if len(addrs) != 1 {
		t.Fatalf("Addrs() = %v, want one address", addrs)
	}
	host, port, err := net.SplitHostPort(addrs[0])
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addrs()[0] = %q, want 127.0.0.1:<chosen port>", addrs[0])
	}
	// The exact address is taken now: a second broker there must fail.
	if other, err := embedded.Start(embedded.Options{Addr: addrs[0]}); err == nil {
		other.Close()
		t.Errorf("second Start on %s = nil error, want address in use", addrs[0])
	}
}

func TestTopicPartitions(t *testing.T) {
	b := start(t, embedded.Options{Partitions: 5, Topics: []string{"SEEDED"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A client that asks for auto-creation gets the broker's default count.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "AUTO", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce to AUTO: %v", err)
	}
	details, err := kadm.NewClient(cl).ListTopics(ctx, "SEEDED", "AUTO")
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	for _, topic := range []string{"SEEDED", "AUTO"} {
		if got := len(details[topic].Partitions); got != 5 {
			t.Errorf("topic %s: got %d partitions, want 5", topic, got)
		}
	}
}

// TestDataDirSurvivesRestart: with a DataDir, records and committed offsets
// survive a restart, so the one-command run loses nothing when restarted.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic, group = "DEALS_TOPIC", "deals"

	b1, err := embedded.Start(embedded.Options{DataDir: dir, Topics: []string{topic}})
	if err != nil {
		t.Fatalf("first Start: %v", err)
	}
	cfg := kafka.Config{Brokers: b1.Addrs()}
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	var recs []kafka.Record
	for i := range 6 {
		recs = append(recs, kafka.Record{Topic: topic, Key: "saga-1", Value: []byte(strconv.Itoa(i))})
	}
	if err := p.Publish(ctx, recs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	p.Close()
	c, err := kafka.NewConsumer(cfg, group, topic)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	first, err := c.Fetch(ctx, 2)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if err := c.Commit(ctx, first); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	c.Close()
	b1.Close()

	b2 := start(t, embedded.Options{DataDir: dir})
	c2, err := kafka.NewConsumer(kafka.Config{Brokers: b2.Addrs()}, group, topic)
	if err != nil {
		t.Fatalf("NewConsumer after restart: %v", err)
	}
	defer c2.Close()
	var rest []kafka.Record
	for len(rest) < len(recs)-len(first) {
		got, err := c2.Fetch(ctx, len(recs))
		if err != nil {
			t.Fatalf("Fetch after restart (have %d): %v", len(rest), err)
		}
		rest = append(rest, got...)
	}
	for i, r := range rest {
		if want := strconv.Itoa(len(first) + i); string(r.Value) != want {
			t.Errorf("after restart record %d: got %q, want %q", i, r.Value, want)
		}
	}
}

// TestRefusesOversizedFrames is the memory attack on the embedded broker: a
// client announces a 2 GiB request (kfake would allocate it before reading
// it). The connection is closed without an answer, and the broker keeps
// serving other clients.
func TestRefusesOversizedFrames(t *testing.T) {
	b := start(t, embedded.Options{MaxRequestBytes: 1 << 20})
	for _, size := range []uint32{1<<31 - 1, 1<<20 + 1, 0xFFFFFFFF} {
		conn, err := net.DialTimeout("tcp", b.Addrs()[0], 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		hdr := []byte{byte(size >> 24), byte(size >> 16), byte(size >> 8), byte(size)}
		if _, err := conn.Write(append(hdr, make([]byte, 64)...)); err != nil {
			t.Fatalf("write the frame header: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(make([]byte, 16))
		conn.Close()
		if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("announced %d bytes: read %d bytes, %v; want the connection closed", size, n, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.Ping(ctx, kafka.Config{Brokers: b.Addrs()}); err != nil {
		t.Errorf("Ping after the refused frames: %v", err)
	}
	if _, err := embedded.Start(embedded.Options{MaxRequestBytes: -1}); err == nil {
		t.Errorf("Start with a negative MaxRequestBytes = nil error, want one")
	}
}
