package main

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// fakeClock is virtual time: SleepUntil moves it forward at once, so the
// generator's schedule and a fake system's delays are exact and the test
// takes no wall-clock time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	return ctx.Err()
}

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// final is an outcome whose saga committed its final state at t.
func final(t time.Time) outcome {
	return outcome{run: &sagaRun{}, inst: engine.Instance{Status: engine.StatusCompleted, UpdatedAt: t}}
}

// serialServer is a fake system that handles one saga at a time, each for
// service, in arrival order (saga i waits for saga i-1): a FIFO queue in
// front of one worker. Its answers do not depend on how the goroutines are
// scheduled.
type serialServer struct {
	service time.Duration
	mu      sync.Mutex
	cond    *sync.Cond
	next    int       // the saga whose turn it is
	free    time.Time // when the worker is free
}

func newSerialServer(service time.Duration) *serialServer {
	s := &serialServer{service: service}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *serialServer) fire(_ context.Context, i int, sent time.Time) (outcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next != i {
		s.cond.Wait()
	}
	begin := s.free
	if sent.After(begin) {
		begin = sent
	}
	s.free = begin.Add(s.service)
	s.next++
	s.cond.Broadcast()
	return final(s.free), nil
}

// near reports whether got is within the histogram's 3-significant-digit
// resolution (and a microsecond of rounding) of want, in milliseconds.
func near(got, want float64) bool { return math.Abs(got-want) <= want*0.001+0.002 }

// A system slower than the offered rate builds a queue; the open loop keeps
// sending on schedule and the latency, measured from the scheduled start,
// grows with the queue: saga i is due at 5i ms, served from 10i ms, final at
// 10(i+1) ms, so its latency is 5i+10 ms.
func TestOpenLoopLatencyIncludesTheSystemsQueue(t *testing.T) {
	clk := &fakeClock{now: epoch}
	srv := newSerialServer(10 * time.Millisecond)
	start, shots, err := openLoop(context.Background(), clk, schedule{rate: 200, n: 200, maxInFlight: 1000}, srv.fire)
	if err != nil {
		t.Fatalf("openLoop: %v", err)
	}
	if !start.Equal(epoch) || len(shots) != 200 {
		t.Fatalf("start %v, %d shots; want %v and 200", start, len(shots), epoch)
	}
	for i, sh := range shots {
		wantDue := epoch.Add(time.Duration(i) * 5 * time.Millisecond)
		if !sh.scheduled.Equal(wantDue) || !sh.sent.Equal(wantDue) {
			t.Fatalf("saga %d: scheduled %v sent %v, want both %v (never behind with free slots)", i, sh.scheduled, sh.sent, wantDue)
		}
		if got, want := sh.out.inst.UpdatedAt.Sub(sh.scheduled), time.Duration(5*i+10)*time.Millisecond; got != want {
			t.Fatalf("saga %d: latency %v, want %v", i, got, want)
		}
	}
	sum := summarize(start, shots, 0)
	p := percentiles(sum.latency)
	// 200 latencies 10, 15, ..., 1005 ms: the median is saga 99's (505 ms).
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", p.P50, 505}, {"p99", p.P99, 995}, {"max", p.Max, 1005}, {"mean", p.Mean, 507.5}} {
		if !near(c.got, c.want) {
			t.Errorf("latency %s = %.3f ms, want %.3f", c.name, c.got, c.want)
		}
	}
	if b := percentiles(sum.behind); b.Max > 0.001 || sum.late != 0 {
		t.Errorf("behind schedule max %.3f ms, %d late; want 0 and 0", b.Max, sum.late)
	}
	if !near(sum.sentRate, 200) {
		t.Errorf("sent rate %.2f/s, want 200", sum.sentRate)
	}
	// 200 sagas final over 2.0 s (the last at 2000 ms): 100/s.
	if !near(sum.doneRate, 100) || sum.completed != 200 || sum.measured != 200 || sum.errors != 0 {
		t.Errorf("done rate %.2f/s, completed %d, measured %d, errors %d; want 100, 200, 200, 0", sum.doneRate, sum.completed, sum.measured, sum.errors)
	}
}

// Coordinated omission: when the generator itself is held up (one slot, a
// system taking 10 ms per saga at 200 offered per second), each saga starts
// late and its own service time stays 10 ms. A closed-loop measurement from
// the send would report 10 ms for all; from the scheduled start the waits
// are counted: saga i is due at 5i ms, sent at 10i ms, final at 10i+10 ms.
func TestOpenLoopCountsTheGeneratorsWaitInTheLatency(t *testing.T) {
	clk := &fakeClock{now: epoch}
	const service = 10 * time.Millisecond
	slow := func(ctx context.Context, _ int, sent time.Time) (outcome, error) {
		done := sent.Add(service)
		if err := clk.SleepUntil(ctx, done); err != nil {
			return outcome{}, err
		}
		return final(done), nil
	}
	start, shots, err := openLoop(context.Background(), clk, schedule{rate: 200, n: 200, maxInFlight: 1}, slow)
	if err != nil {
		t.Fatalf("openLoop: %v", err)
	}
	fromSend := newHistogram()
	for i, sh := range shots {
		if want := epoch.Add(time.Duration(i) * service); !sh.sent.Equal(want) {
			t.Fatalf("saga %d sent at %v, want %v (after the previous one's 10 ms)", i, sh.sent.Sub(epoch), want.Sub(epoch))
		}
		record(fromSend, sh.out.inst.UpdatedAt.Sub(sh.sent))
	}
	if p := percentiles(fromSend); !near(p.Max, 10) {
		t.Fatalf("latency from the send: max %.3f ms, want 10 (the premise of this test)", p.Max)
	}
	sum := summarize(start, shots, 0)
	p := percentiles(sum.latency)
	if !near(p.Max, 1005) || !near(p.P50, 505) {
		t.Errorf("latency from the scheduled start: p50 %.3f max %.3f ms, want 505 and 1005 (the queue the generator was held in)", p.P50, p.Max)
	}
	// Saga i starts 5i ms late: more than 10 ms for i >= 3, 197 sagas.
	if b := percentiles(sum.behind); !near(b.Max, 995) || sum.late != 197 {
		t.Errorf("behind schedule max %.3f ms, %d late; want 995 ms and 197", b.Max, sum.late)
	}
	if !near(sum.sentRate, 100) {
		t.Errorf("sent rate %.2f/s, want 100 (half the offered 200)", sum.sentRate)
	}
}

// The warm-up sagas count in the rates, not in the latency; failed sagas
// count as errors, not in the latency.
func TestSummarizeWarmupAndErrors(t *testing.T) {
	ms := func(n int) time.Time { return epoch.Add(time.Duration(n) * time.Millisecond) }
	shots := []shot{
		{scheduled: ms(0), sent: ms(0), out: final(ms(900))}, // warm-up: 900 ms
		{scheduled: ms(10), sent: ms(10), out: final(ms(40))},
		{scheduled: ms(20), sent: ms(35), err: errors.New("POST /deals: 503")},
		{scheduled: ms(30), sent: ms(30), out: final(ms(80))},
	}
	sum := summarize(epoch, shots, 1)
	p := percentiles(sum.latency)
	if sum.measured != 2 || sum.completed != 3 || sum.errors != 1 {
		t.Fatalf("measured %d completed %d errors %d, want 2, 3, 1", sum.measured, sum.completed, sum.errors)
	}
	if !near(p.Max, 50) || !near(p.P50, 30) {
		t.Errorf("latency p50 %.3f max %.3f ms, want 30 and 50 (the warm-up's 900 left out)", p.P50, p.Max)
	}
	if sum.late != 1 || !near(percentiles(sum.behind).Max, 15) {
		t.Errorf("%d late, behind max %.3f ms; want 1 and 15", sum.late, percentiles(sum.behind).Max)
	}
	if !near(sum.doneRate, 3/0.9) {
		t.Errorf("done rate %.3f/s, want %.3f (3 over 900 ms)", sum.doneRate, 3/0.9)
	}
}

// A cancelled run stops scheduling and returns the sagas it started.
func TestOpenLoopStopsWhenCancelled(t *testing.T) {
	clk := &fakeClock{now: epoch}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAt := 10
	do := func(_ context.Context, i int, sent time.Time) (outcome, error) {
		if i == stopAt {
			cancel()
		}
		return final(sent.Add(time.Millisecond)), nil
	}
	_, shots, err := openLoop(ctx, clk, schedule{rate: 100, n: 1000, maxInFlight: 1}, do)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("openLoop error %v, want context.Canceled", err)
	}
	if len(shots) != stopAt+1 {
		t.Errorf("%d sagas started, want %d (up to the one that cancelled)", len(shots), stopAt+1)
	}
}

func TestOpenLoopRefusesABadSchedule(t *testing.T) {
	for _, s := range []schedule{{rate: 0, n: 1, maxInFlight: 1}, {rate: 1, n: 0, maxInFlight: 1}, {rate: 1, n: 1, maxInFlight: 0}, {rate: -5, n: 1, maxInFlight: 1}} {
		if _, _, err := openLoop(context.Background(), &fakeClock{}, s, nil); err == nil {
			t.Errorf("openLoop(%+v) = nil error, want a refusal", s)
		}
	}
}

// The closed loop's warm-up: sagas posted before start+warmup are counted
// and left out of the latency; the run still ends at the last final commit
// of all of them.
func TestClosedLatencyWarmup(t *testing.T) {
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	saga := func(sentAfter, took time.Duration) outcome {
		sent := start.Add(sentAfter)
		return outcome{run: &sagaRun{sent: sent}, inst: engine.Instance{UpdatedAt: sent.Add(took)}}
	}
	outs := []outcome{
		saga(0, 900*time.Millisecond),                             // a start-up straggler, finishes last
		saga(10*time.Millisecond, 800*time.Millisecond),           // also posted in the warm-up
		saga(time.Second, 20*time.Millisecond),                    // measured
		saga(time.Second+5*time.Millisecond, 40*time.Millisecond), // measured
	}
	for _, tc := range []struct {
		warmup   time.Duration
		warm     int
		measured int64
		maxMs    float64
	}{
		{0, 0, 4, 900},
		{500 * time.Millisecond, 2, 2, 40},
	} {
		lat, warm, last := closedLatency(start, tc.warmup, outs)
		if warm != tc.warm || lat.TotalCount() != tc.measured {
			t.Errorf("warmup %s: %d left out and %d measured, want %d and %d", tc.warmup, warm, lat.TotalCount(), tc.warm, tc.measured)
		}
		if got := float64(lat.Max()) / 1e3; math.Abs(got-tc.maxMs) > tc.maxMs/100 {
			t.Errorf("warmup %s: slowest measured %.1f ms, want %.0f", tc.warmup, got, tc.maxMs)
		}
		if want := start.Add(time.Second + 45*time.Millisecond); !last.Equal(want) {
			t.Errorf("warmup %s: last final %v, want %v (of all sagas)", tc.warmup, last, want)
		}
	}
}
