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
