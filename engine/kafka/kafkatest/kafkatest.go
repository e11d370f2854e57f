package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// guard bounds each subtest so a broken broker fails the test instead of
// hanging it; it is a liveness guard, not a performance assertion.
const guard = 90 * time.Second

// Run runs the conformance suite against the cluster that cluster
// returns (brokers and credentials), called once per subtest (it may skip
// the test when the broker is missing).
func Run(t *testing.T, cluster func(t *testing.T) kafka.Config) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, cfg kafka.Config)
	}{
		{"RoundTripWithHeaders", testRoundTrip},
		{"PerKeyOrder", testPerKeyOrder},
		{"CommitThenResume", testCommitThenResume},
		{"UncommittedRedelivered", testUncommittedRedelivered},
		{"TwoMembersShare", testTwoMembersShare},
		{"MarksCommittedBeforeHandover", testMarksCommittedBeforeHandover},
		{"FlushCommitsMarks", testFlushCommitsMarks},
		{"FetchHonoursContext", testFetchHonoursContext},
		{"RejectsBadInput", testRejectsBadInput},
		{"EnsureTopicsIdempotent", testEnsureTopicsIdempotent},
		{"Ping", testPing},
		{"PublishUnreachable", testPublishUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := cluster(t)
			cfg.ClientID = "kafkatest"
			tc.fn(t, cfg)
		})
	}
}

// setup creates n uniquely named topics with the given partitions.
func setup(t *testing.T, cfg kafka.Config, partitions int32, base string) (context.Context, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	topic := testenv.Name(t, base)
	if err := kafka.EnsureTopics(ctx, cfg, partitions, topic); err != nil {
		t.Fatalf("EnsureTopics(%s): %v", topic, err)
	}
	return ctx, topic
}

func newProducer(t *testing.T, cfg kafka.Config) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func newConsumer(t *testing.T, cfg kafka.Config, group string, topics ...string) *kafka.Consumer {
	t.Helper()
	c, err := kafka.NewConsumer(cfg, group, topics...)
	if err != nil {
		t.Fatalf("NewConsumer(%s): %v", group, err)
	}
	t.Cleanup(c.Close) // Close is idempotent: tests may close earlier
	return c
}

// Client is a franz-go client of the cluster cfg names (for admin requests
// in tests), closed when the test ends.
func Client(t *testing.T, cfg kafka.Config) *kgo.Client {
	t.Helper()
	opts, err := cfg.ClientOpts()
	if err != nil {
		t.Fatalf("client options: %v", err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// adminClient is an admin client of the cluster, closed when the test ends.
func adminClient(t *testing.T, cfg kafka.Config) *kadm.Client {
	t.Helper()
	return kadm.NewClient(Client(t, cfg))
}

// records makes n records on topic, key "k<i%keys>", value "<i>".
func records(topic string, n, keys int) []kafka.Record {
	recs := make([]kafka.Record, n)
	for i := range recs {
		recs[i] = kafka.Record{Topic: topic, Key: "k" + strconv.Itoa(i%keys), Value: []byte(strconv.Itoa(i))}
	}
	return recs
}

// consume fetches and commits until it has n records.
func consume(t *testing.T, ctx context.Context, c *kafka.Consumer, n int) []kafka.Record {
	t.Helper()
	var got []kafka.Record
	for len(got) < n {
		recs, err := c.Fetch(ctx, n-len(got))
		if err != nil {
			t.Fatalf("Fetch after %d of %d records: %v", len(got), n, err)
		}
		if len(recs) > n-len(got) {
			t.Fatalf("Fetch(max=%d) returned %d records", n-len(got), len(recs))
		}
		if err := c.Commit(ctx, recs); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		got = append(got, recs...)
	}
	return got
}

func values(recs []kafka.Record) map[string]int {
	m := map[string]int{}
	for _, r := range recs {
		m[string(r.Value)]++
	}
	return m
}

func testRoundTrip(t *testing.T, cfg kafka.Config) {
	ctx, topic := setup(t, cfg, 3, "kt.roundtrip")
	want := []kafka.Record{
		{Topic: topic, Key: "saga-1", Value: []byte(`{"n":1}`), Headers: map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "kind": "command", "name": "APPROVE_ORDER"}},
		{Topic: topic, Key: "saga-2", Value: []byte(`{"n":2}`)},
		{Topic: topic, Key: "saga-1", Value: []byte(`{"n":3}`), Headers: map[string]string{"empty": ""}},
	}
	if err := newProducer(t, cfg).Publish(ctx, want); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := consume(t, ctx, newConsumer(t, cfg, testenv.Name(t, "g"), topic), len(want))
	byValue := map[string]kafka.Record{}
	for _, r := range got {
		byValue[string(r.Value)] = r
	}
	for _, w := range want {
		g, ok := byValue[string(w.Value)]
		if !ok {
			t.Errorf("record %s not consumed", w.Value)
			continue
		}
		if g.Topic != w.Topic || g.Key != w.Key {
			t.Errorf("record %s: got topic %q key %q, want %q %q", w.Value, g.Topic, g.Key, w.Topic, w.Key)
		}
		if !maps.Equal(g.Headers, w.Headers) {
			t.Errorf("record %s: got headers %v, want %v", w.Value, g.Headers, w.Headers)
		}
		if g.Partition < 0 || g.Partition >= 3 || g.Offset < 0 {
			t.Errorf("record %s: got partition %d offset %d, want partition in [0,3) and offset >= 0", w.Value, g.Partition, g.Offset)
		}
	}
	if byValue[`{"n":1}`].Partition != byValue[`{"n":3}`].Partition {
		t.Errorf("same key on partitions %d and %d, want one", byValue[`{"n":1}`].Partition, byValue[`{"n":3}`].Partition)
	}
}

func testPerKeyOrder(t *testing.T, cfg kafka.Config) {
	const (
		partitions = 4
		publishers = 4
		keysEach   = 8
		perKey     = 25
	)
	ctx, topic := setup(t, cfg, partitions, "kt.order")
	p := newProducer(t, cfg)
	// Each publisher owns its keys and publishes them interleaved, in
	// several batches, concurrently with the other publishers.
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch []kafka.Record
			for seq := range perKey {
				for k := range keysEach {
					key := fmt.Sprintf("w%d-k%d", w, k)
					batch = append(batch, kafka.Record{Topic: topic, Key: key, Value: []byte(key + ":" + strconv.Itoa(seq))})
				}
				if len(batch) >= 40 || seq == perKey-1 {
					if err := p.Publish(ctx, batch); err != nil {
						errs <- err
						return
					}
					batch = nil
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	got := consume(t, ctx, newConsumer(t, cfg, testenv.Name(t, "g"), topic), publishers*keysEach*perKey)
	next := map[string]int{}
	partOf := map[string]int32{}
	parts := map[int32]bool{}
	for _, r := range got {
		key, seqStr, ok := strings.Cut(string(r.Value), ":")
		if !ok || key != r.Key {
			t.Fatalf("record at %d/%d: value %q does not match key %q", r.Partition, r.Offset, r.Value, r.Key)
		}
		seq, _ := strconv.Atoi(seqStr)
		if seq != next[key] {
			t.Fatalf("key %s: got seq %d, want %d (out of order or duplicated)", key, seq, next[key])
		}
		next[key]++
		if p, ok := partOf[key]; ok && p != r.Partition {
			t.Fatalf("key %s on partitions %d and %d, want one", key, p, r.Partition)
		}
		partOf[key] = r.Partition
		parts[r.Partition] = true
	}
	for key, n := range next {
		if n != perKey {
			t.Errorf("key %s: got %d records, want %d", key, n, perKey)
		}
	}
	if len(parts) < 2 {
		t.Errorf("records used %d partitions, want keys spread over several of %d", len(parts), partitions)
	}
}

func testCommitThenResume(t *testing.T, cfg kafka.Config) {
	const n = 40
	ctx, topic := setup(t, cfg, 2, "kt.resume")
	if err := newProducer(t, cfg).Publish(ctx, records(topic, n, 7)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	group := testenv.Name(t, "g")
	a := newConsumer(t, cfg, group, topic)
	first := consume(t, ctx, a, n/4) // commits everything it returns
	a.Close()

	b := newConsumer(t, cfg, group, topic)
	rest := consume(t, ctx, b, n-len(first))
	seen := values(first)
	for v, c := range values(rest) {
		if seen[v] > 0 {
			t.Errorf("record %s committed by the first member was read again", v)
		}
		seen[v] += c
	}
	for i := range n {
		if got := seen[strconv.Itoa(i)]; got != 1 {
			t.Errorf("record %d seen %d times, want 1", i, got)
		}
	}
}

func testUncommittedRedelivered(t *testing.T, cfg kafka.Config) {
	const n = 10
	ctx, topic := setup(t, cfg, 1, "kt.redeliver")
	if err := newProducer(t, cfg).Publish(ctx, records(topic, n, 3)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	group := testenv.Name(t, "g")
	a := newConsumer(t, cfg, group, topic)
	fetched, err := a.Fetch(ctx, 4)
	if err != nil {
		t.Fatalf("first member Fetch: %v", err)
	}
	if len(fetched) == 0 || len(fetched) > 4 {
		t.Fatalf("Fetch(max=4) returned %d records", len(fetched))
	}
	a.Close() // without Commit: the records were never processed durably

	b := newConsumer(t, cfg, group, topic)
	got := consume(t, ctx, b, n)
	for i, r := range got {
		if want := strconv.Itoa(i); string(r.Value) != want {
			t.Fatalf("second member record %d: got value %q, want %q (redelivery from the start)", i, r.Value, want)
		}
	}
}

// runMember fetches and commits with c until ctx ends, handing each batch
// to got before its commit; a Fetch or Commit error while ctx lives goes to
// errs.
func runMember(ctx context.Context, member string, c *kafka.Consumer, errs chan<- error, got func([]kafka.Record)) {
	for {
		recs, err := c.Fetch(ctx, 50)
		if err != nil {
			if ctx.Err() == nil {
				errs <- fmt.Errorf("member %s Fetch: %w", member, err)
			}
			return
		}
		got(recs)
		if err := c.Commit(ctx, recs); err != nil {
			if ctx.Err() == nil {
				errs <- fmt.Errorf("member %s Commit: %w", member, err)
			}
			return
		}
	}
}

func testTwoMembersShare(t *testing.T, cfg kafka.Config) {
	ctx, topic := setup(t, cfg, 4, "kt.share")
	group := testenv.Name(t, "g")
	var (
		mu      sync.Mutex
		seen    = map[string][]string{} // value -> members that processed it
		perMem  = map[string]int{}
		changed = make(chan struct{}, 1)
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, member := range []string{"a", "b"} {
		c := newConsumer(t, cfg, group, topic)
		wg.Go(func() {
			runMember(runCtx, member, c, errs, func(recs []kafka.Record) {
				mu.Lock()
				for _, r := range recs {
					seen[string(r.Value)] = append(seen[string(r.Value)], member)
					perMem[member]++
				}
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
			})
		})
	}
	// Publish in rounds, waiting for each round to be consumed, until both
	// members have processed records (the second join takes a rebalance).
	p := newProducer(t, cfg)
	published := 0
	for {
		mu.Lock()
		done := perMem["a"] > 0 && perMem["b"] > 0 && len(seen) == published
		caught := len(seen) == published
		mu.Unlock()
		if done {
			break
		}
		if caught {
			recs := make([]kafka.Record, 20)
			for i := range recs {
				v := strconv.Itoa(published + i)
				recs[i] = kafka.Record{Topic: topic, Key: "saga-" + v, Value: []byte(v)}
			}
			if err := p.Publish(ctx, recs); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			published += len(recs)
		}
		select {
		case <-changed:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(50 * time.Millisecond): // re-check; also lets a join progress
		case <-ctx.Done():
			t.Fatalf("after %d records: members a=%d b=%d records: %v", published, perMem["a"], perMem["b"], ctx.Err())
		}
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range published {
		if got := seen[strconv.Itoa(i)]; len(got) != 1 {
			t.Errorf("record %d processed by %v, want exactly one member", i, got)
		}
	}
	t.Logf("%d records: member a %d, member b %d", published, perMem["a"], perMem["b"])
}

// testMarksCommittedBeforeHandover: Commit only marks, and with an hour's
// CommitInterval nothing is sent periodically. A second member joining takes
// partitions from the first, which is alive and has marked every record of
// the first round: its marks must reach the coordinator before the handover,
// so the second member reads only the second round, each record once.
func testMarksCommittedBeforeHandover(t *testing.T, cfg kafka.Config) {
	const n = 40
	cfg.CommitInterval = time.Hour
	ctx, topic := setup(t, cfg, 4, "kt.handover")
	p := newProducer(t, cfg)
	if err := p.Publish(ctx, records(topic, n, 11)); err != nil {
		t.Fatalf("Publish the first round: %v", err)
	}
	group := testenv.Name(t, "g")
	a := newConsumer(t, cfg, group, topic)
	consume(t, ctx, a, n) // marks all n, commits none

	var (
		mu   sync.Mutex
		seen = map[string][]string{} // value -> members that read it
		errs = make(chan error, 2)
		wg   sync.WaitGroup
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	for member, c := range map[string]*kafka.Consumer{"a": a, "b": newConsumer(t, cfg, group, topic)} {
		wg.Go(func() {
			runMember(runCtx, member, c, errs, func(recs []kafka.Record) {
				mu.Lock()
				for _, r := range recs {
					seen[string(r.Value)] = append(seen[string(r.Value)], member)
				}
				mu.Unlock()
			})
		})
	}

	// Publish the second round in small batches until member b has read
	// some of it (it has joined and got partitions) and every record of
	// the round has been read.
	published := 0
	for {
		mu.Lock()
		gotB, round := 0, 0
		for v, members := range seen {
			if strings.HasPrefix(v, "r2-") {
				round++
			}
			for _, m := range members {
				if m == "b" {
					gotB++
				}
			}
		}
		mu.Unlock()
		if gotB > 0 && round == published {
			break
		}
		if round == published {
			recs := make([]kafka.Record, 8)
			for i := range recs {
				v := "r2-" + strconv.Itoa(published+i)
				recs[i] = kafka.Record{Topic: topic, Key: "k" + strconv.Itoa((published+i)%11), Value: []byte(v)}
			}
			if err := p.Publish(ctx, recs); err != nil {
				t.Fatalf("Publish the second round: %v", err)
			}
			published += len(recs)
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(50 * time.Millisecond): // re-check; lets the join progress
		case <-ctx.Done():
			t.Fatalf("second round of %d records not read by both members: %v", published, ctx.Err())
		}
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if got := seen[strconv.Itoa(i)]; len(got) != 0 {
			t.Errorf("record %d of the first round, marked by member a before the handover, was read again by %v", i, got)
		}
	}
	for i := range published {
		if got := seen["r2-"+strconv.Itoa(i)]; len(got) != 1 {
			t.Errorf("record r2-%d read by %v, want exactly one member", i, got)
		}
	}
}

// testFlushCommitsMarks: with an hour's CommitInterval, a Commit leaves the
// group's committed offset where it was (read with the admin client), and
// Flush commits the mark at once.
func testFlushCommitsMarks(t *testing.T, cfg kafka.Config) {
	cfg.CommitInterval = time.Hour
	ctx, topic := setup(t, cfg, 1, "kt.flush")
	if err := newProducer(t, cfg).Publish(ctx, records(topic, 3, 1)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	group := testenv.Name(t, "g")
	c := newConsumer(t, cfg, group, topic)
	got := consume(t, ctx, c, 3)

	adm := adminClient(t, cfg)
	committed := func() int64 {
		t.Helper()
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("FetchOffsets(%s): %v", group, err)
		}
		o, ok := offs.Lookup(topic, 0)
		if !ok {
			return -1
		}
		if o.Err != nil {
			t.Fatalf("FetchOffsets(%s) partition 0: %v", group, o.Err)
		}
		return o.At
	}
	if at := committed(); at != -1 {
		t.Errorf("after Commit, before Flush: committed offset %d, want none (Commit only marks)", at)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if at, want := committed(), got[len(got)-1].Offset+1; at != want {
		t.Errorf("after Flush: committed offset %d, want %d", at, want)
	}
}

func testFetchHonoursContext(t *testing.T, cfg kafka.Config) {
	_, topic := setup(t, cfg, 1, "kt.ctx")
	c := newConsumer(t, cfg, testenv.Name(t, "g"), topic)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"already canceled", canceled, context.Canceled},
		{"deadline on an empty topic", short, context.DeadlineExceeded},
	} {
		recs, err := c.Fetch(tc.ctx, 10)
		if !errors.Is(err, tc.want) || len(recs) != 0 {
			t.Errorf("%s: Fetch = %d records, %v; want 0 records, %v", tc.name, len(recs), err, tc.want)
		}
	}
}

func testRejectsBadInput(t *testing.T, cfg kafka.Config) {
	ctx, topic := setup(t, cfg, 1, "kt.bad")
	c := newConsumer(t, cfg, testenv.Name(t, "g"), topic)
	p := newProducer(t, cfg)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Fetch max=0", func() error { _, err := c.Fetch(ctx, 0); return err }},
		{"Fetch max=-1", func() error { _, err := c.Fetch(ctx, -1); return err }},
		{"Commit a record that was not consumed", func() error {
			return c.Commit(ctx, []kafka.Record{{Key: "k", Value: []byte("v")}})
		}},
		{"Publish a record without topic", func() error {
			return p.Publish(ctx, []kafka.Record{{Topic: topic, Key: "a"}, {Key: "b"}})
		}},
	} {
		if err := tc.call(); err == nil {
			t.Errorf("%s: got nil error, want one", tc.name)
		}
	}
	// Nothing half-published: the valid record before the bad one was not sent.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if recs, err := c.Fetch(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("after a rejected Publish: Fetch = %d records, %v; want none, %v", len(recs), err, context.DeadlineExceeded)
	}
}

func testEnsureTopicsIdempotent(t *testing.T, cfg kafka.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	a, b := testenv.Name(t, "kt.ensure"), testenv.Name(t, "kt.ensure")
	for i, step := range []struct {
		partitions int32
		topics     []string
	}{
		{3, []string{a}},
		{3, []string{a}},    // again: no error
		{5, []string{a, b}}, // a exists (keeps 3), b is new (5)
	} {
		if err := kafka.EnsureTopics(ctx, cfg, step.partitions, step.topics...); err != nil {
			t.Fatalf("step %d: EnsureTopics(%d, %v): %v", i, step.partitions, step.topics, err)
		}
	}
	// The broker's metadata may show a topic just created without its
	// partitions for a moment (seen once in CI): read it until both have
	// some, or the guard ends.
	adm := adminClient(t, cfg)
	var details kadm.TopicDetails
	for {
		var err error
		if details, err = adm.ListTopics(ctx, a, b); err != nil {
			t.Fatalf("ListTopics: %v", err)
		}
		if len(details[a].Partitions) > 0 && len(details[b].Partitions) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topics %s and %s still without partitions in the metadata: %v", a, b, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for topic, want := range map[string]int{a: 3, b: 5} {
		if got := len(details[topic].Partitions); got != want {
			t.Errorf("topic %s: got %d partitions, want %d", topic, got, want)
		}
	}
	for _, bad := range []struct {
		name       string
		partitions int32
		topics     []string
	}{
		{"zero partitions", 0, []string{a}},
		{"empty topic name", 1, []string{""}},
	} {
		if err := kafka.EnsureTopics(ctx, cfg, bad.partitions, bad.topics...); err == nil {
			t.Errorf("%s: EnsureTopics = nil, want an error", bad.name)
		}
	}
}

func testPing(t *testing.T, cfg kafka.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := kafka.Ping(ctx, cfg); err != nil {
		t.Errorf("Ping(%v): %v", cfg.Brokers, err)
	}
	down, cancelDown := context.WithTimeout(ctx, 2*time.Second)
	defer cancelDown()
	if err := kafka.Ping(down, kafka.Config{Brokers: []string{unreachable}}); err == nil {
		t.Errorf("Ping(%s) = nil, want an error", unreachable)
	}
}

// unreachable is a loopback address where nothing listens (port 1 needs root
// to bind and no test service uses it).
const unreachable = "127.0.0.1:1"

func testPublishUnreachable(t *testing.T, _ kafka.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p := newProducer(t, kafka.Config{Brokers: []string{unreachable}})
	err := p.Publish(ctx, records("DEALS_TOPIC", 3, 1))
	if err == nil {
		t.Fatal("Publish to an unreachable broker = nil, want an error")
	}
	if !strings.Contains(err.Error(), "DEALS_TOPIC") {
		t.Errorf("error %q does not name the topic", err)
	}
}
