package relay_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
)

// A relay loop publishes after a wake-up, goes on at once while batches come
// back full, keeps going after failures, and Drain stops at the first batch
// that is not full.
func TestLoop(t *testing.T) {
	var mu sync.Mutex
	backlog, calls, fail := 0, 0, 0
	published := make(chan int, 100)
	once := func(ctx context.Context) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if fail > 0 {
			fail--
			return 0, errors.New("broker down")
		}
		n := min(backlog, 3)
		backlog -= n
		if n > 0 {
			published <- n
		}
		return n, nil
	}
	add := func(n, failures int) {
		mu.Lock()
		backlog += n
		fail += failures
		mu.Unlock()
	}
	wake := relay.NewSignal()
	r := relay.Loop{Once: once, Batch: 3, Poll: time.Hour, Wake: wake} // no poll: only wake-ups move it
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { r.Run(context.Background(), stop); close(done) }()

	add(7, 0)
	wake.Notify()
	if got := <-published + <-published + <-published; got != 7 {
		t.Errorf("after one wake-up published %d, want the 7 waiting (full batches go on at once)", got)
	}
	add(2, 2) // two failures, then success
	wake.Notify()
	if got := <-published; got != 2 {
		t.Errorf("after failures published %d, want 2", got)
	}
	close(stop)
	<-done

	add(5, 0)
	n, err := r.Drain(context.Background())
	if err != nil || n != 5 {
		t.Errorf("Drain = %d, %v; want 5", n, err)
	}
	mu.Lock()
	before := calls
	mu.Unlock()
	if n, err := r.Drain(context.Background()); err != nil || n != 0 {
		t.Errorf("Drain of nothing = %d, %v", n, err)
	}
	mu.Lock()
	if calls != before+1 {
		t.Errorf("Drain of nothing made %d calls, want 1", calls-before)
	}
	mu.Unlock()
	add(1, 1)
	if _, err := r.Drain(context.Background()); err == nil {
		t.Error("Drain through a failure: no error")
	}
}

// Within retries a failing publish and returns nil once it works;
// it gives up with the last error when the lease is nearly over.
func TestWithin(t *testing.T) {
	attempts := 0
	err := relay.Within(context.Background(), time.Minute, nil, "3 commands", func(context.Context) error {
		attempts++
		if attempts < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || attempts != 3 {
		t.Errorf("Within = %v after %d attempts, want nil after 3", err, attempts)
	}
	down := errors.New("broker down")
	err = relay.Within(context.Background(), 100*time.Millisecond, nil, "3 commands", func(ctx context.Context) error {
		<-ctx.Done() // a publish that hangs until the lease is nearly over
		return down
	})
	if !errors.Is(err, down) {
		t.Errorf("Within of a hanging publish = %v, want the last error", err)
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	relay.Every(ctx, time.Hour, func(context.Context) {
		runs++
		cancel() // the first run happens at once; then Every returns
	})
	if runs != 1 {
		t.Errorf("runs = %d, want 1", runs)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		want    time.Duration
	}{{1, 50 * time.Millisecond}, {2, 100 * time.Millisecond}, {4, 400 * time.Millisecond}, {30, 5 * time.Second}}
	for _, tc := range tests {
		if got := relay.Backoff(tc.attempt, 50*time.Millisecond, 5*time.Second); got != tc.want {
			t.Errorf("Backoff(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
	if a, b := relay.Owner(), relay.Owner(); a == b || a == "" {
		t.Errorf("DefaultOwner gave %q twice", a)
	}
}

// A batch under way when stop closes is finished with its context intact
// (so what it published is also deleted), and Run returns after it.
func TestLoopFinishesTheBatchUnderWay(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var ctxErr error
	once := func(ctx context.Context) (int, error) {
		close(entered)
		<-release
		ctxErr = ctx.Err()
		return 1, nil
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		relay.Loop{Once: once, Batch: 10, Poll: time.Hour}.Run(context.Background(), stop)
		close(done)
	}()
	<-entered
	close(stop)
	close(release)
	<-done
	if ctxErr != nil {
		t.Errorf("the batch under way saw its context end: %v", ctxErr)
	}
}

// countingOnce is a Loop.Once that reports each call on a channel and
// returns what next holds (0 unless set).
type countingOnce struct {
	calls chan int // the call's number, from 1
	mu    sync.Mutex
	n     int
	next  []int
}

func newCountingOnce(next ...int) *countingOnce {
	return &countingOnce{calls: make(chan int, 100), next: next}
}

func (c *countingOnce) once(context.Context) (int, error) {
	c.mu.Lock()
	c.n++
	n, ret := c.n, 0
	if len(c.next) > 0 {
		ret, c.next = c.next[0], c.next[1:]
	}
	c.mu.Unlock()
	c.calls <- n
	return ret, nil
}

// expectCall waits for call number want; expectNoCall checks that none
// comes within a while (the loops below have nothing that would make one).
func expectCall(t *testing.T, c *countingOnce, want int, why string) {
	t.Helper()
	select {
	case got := <-c.calls:
		if got != want {
			t.Fatalf("%s: call %d, want %d", why, got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no call %d", why, want)
	}
}

func expectNoCall(t *testing.T, c *countingOnce, why string) {
	t.Helper()
	select {
	case got := <-c.calls:
		t.Fatalf("%s: call %d", why, got)
	case <-time.After(100 * time.Millisecond):
	}
}

// A wake-up sent before a round starts is dropped: the round sees the rows
// of the commit that sent it, so kept it would only start a round that
// finds nothing. Here it comes during a round that returns a full batch,
// so the next round starts at once after it. One that comes during the
// last round before the relay idles is kept: its commit may have come
// after that round looked.
func TestLoopForgetsWakeUpsSentBeforeARound(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	c := newCountingOnce(3, 0, 0, 0) // a full batch: the loop goes on at once
	wake := relay.NewSignal()
	calls := 0
	once := func(ctx context.Context) (int, error) {
		calls++
		if calls == 1 || calls == 4 {
			started <- struct{}{}
			<-release
		}
		return c.once(ctx)
	}
	r := relay.Loop{Once: once, Batch: 3, Poll: time.Hour, Wake: wake}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { r.Run(context.Background(), stop); close(done) }()
	defer func() { close(stop); <-done }()

	<-started
	wake.Notify() // during round 1, before round 2 starts
	release <- struct{}{}
	expectCall(t, c, 1, "round 1")
	expectCall(t, c, 2, "round 2, at once after a full batch")
	expectNoCall(t, c, "a round for the wake-up that round 2 already covered")

	wake.Notify() // while idle
	expectCall(t, c, 3, "the round of a wake-up while idle")

	wake.Notify() // round 4 starts
	<-started
	wake.Notify() // during round 4, which returns less than a full batch
	release <- struct{}{}
	expectCall(t, c, 4, "round 4")
	expectCall(t, c, 5, "the round of the wake-up that came during round 4")
}
