package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// clock is the time source of the open-loop generator: the real clock in
// the bench, a virtual one in its tests.
type clock interface {
	Now() time.Time
	// SleepUntil returns at t (at once if t has passed) or when ctx ends.
	SleepUntil(ctx context.Context, t time.Time) error
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// schedule is an open-loop run: n sagas offered at rate per second, saga i
// due at start + i/rate whatever happened to the ones before it. At most
// maxInFlight are under way at once: when that many are, the generator waits
// and falls behind its schedule, and the wait counts in the latency of every
// saga it delays (it is measured from the scheduled start).
type schedule struct {
	rate        float64
	n           int
	maxInFlight int
}

// due is when saga i is scheduled to start.
func (s schedule) due(start time.Time, i int) time.Time {
	return start.Add(time.Duration(float64(i) / s.rate * float64(time.Second)))
}

// shot is one saga of an open-loop run.
type shot struct {
	scheduled time.Time // when it was due
	sent      time.Time // when the generator started it (scheduled or later)
	out       outcome   // its final state (out.inst.UpdatedAt: the commit of its final transition)
	err       error     // it never reached a final state
}

// fire runs one saga started at sent and returns once it is final.
type fire func(ctx context.Context, i int, sent time.Time) (outcome, error)

// openLoop starts the n sagas of s on their schedule from clk's now, each
// in its own goroutine, and returns when every started saga has returned
// (or ctx has ended: the sagas never started are left out). shots[i]
// belongs to saga i.
func openLoop(ctx context.Context, clk clock, s schedule, do fire) (start time.Time, shots []shot, err error) {
	if s.rate <= 0 || s.n <= 0 || s.maxInFlight <= 0 {
		return time.Time{}, nil, fmt.Errorf("open loop: rate %g, n %d, max in flight %d: want positive numbers", s.rate, s.n, s.maxInFlight)
	}
	shots = make([]shot, s.n)
	slots := make(chan struct{}, s.maxInFlight)
	var wg sync.WaitGroup
	start = clk.Now()
	started := 0
	for i := range s.n {
		due := s.due(start, i)
		if err = clk.SleepUntil(ctx, due); err != nil {
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if err = ctx.Err(); err != nil {
			break
		}
		sent := clk.Now()
		shots[i].scheduled, shots[i].sent = due, sent
		started++
		wg.Go(func() {
			defer func() { <-slots }()
			shots[i].out, shots[i].err = do(ctx, i, sent)
		})
	}
	wg.Wait()
	return start, shots[:started], err
}

// Latency histograms hold microseconds from 1µs to one hour, to 3
// significant digits.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// record adds d to h (clamped into the histogram's range).
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := min(max(d.Microseconds(), histMin), histMax)
	_ = h.RecordValue(us) // in range: cannot fail
}

// Percentiles are milliseconds read from a histogram.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P95: ms(h.ValueAtQuantile(95)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
		Mean: h.Mean() / 1000,
	}
}

// openSummary is what an open-loop run measured.
type openSummary struct {
	latency   *hdrhistogram.Histogram // scheduled start -> final commit, sagas after the warm-up
	behind    *hdrhistogram.Histogram // sent - scheduled, every saga started
	late      int                     // sagas started more than lateAfter behind their schedule
	sentRate  float64                 // sagas started per second (offered: schedule.rate)
	doneRate  float64                 // sagas final per second: completed over first due -> last final commit
	completed int                     // sagas final (warm-up included)
	measured  int                     // of which after the warm-up, in latency
	errors    int
	lastFinal time.Time
}

// lateAfter is how far behind schedule a saga must start to count as late:
// more than timer and scheduling jitter.
const lateAfter = 10 * time.Millisecond

// summarize measures an open-loop run from its start; the first warmup
// sagas are left out of the latency histogram (not of the rates).
func summarize(start time.Time, shots []shot, warmup int) openSummary {
	s := openSummary{latency: newHistogram(), behind: newHistogram()}
	var lastSent time.Time
	for i, sh := range shots {
		lag := sh.sent.Sub(sh.scheduled)
		record(s.behind, lag)
		if lag > lateAfter {
			s.late++
		}
		if sh.sent.After(lastSent) {
			lastSent = sh.sent
		}
		if sh.err != nil {
			s.errors++
			continue
		}
		s.completed++
		final := sh.out.inst.UpdatedAt
		if final.After(s.lastFinal) {
			s.lastFinal = final
		}
		if i >= warmup {
			s.measured++
			record(s.latency, final.Sub(sh.scheduled))
		}
	}
	if len(shots) > 1 && lastSent.After(shots[0].sent) {
		// n sagas started over the n-1 intervals between the first and the last.
		s.sentRate = float64(len(shots)-1) / lastSent.Sub(shots[0].sent).Seconds()
	}
	if s.completed > 0 && s.lastFinal.After(start) {
		s.doneRate = float64(s.completed) / s.lastFinal.Sub(start).Seconds()
	}
	return s
}
