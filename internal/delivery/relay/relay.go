package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Loop is the loop that publishes an outbox: after a wake-up (a send on
// Wake, made when a transaction that wrote rows commits) or every Poll when
// idle (rows written by other processes, leases that ran out), it calls
// Once until a batch comes back less than full, backing off while Once
// fails. The engine and the SDK each run one.
type Loop struct {
	// Once publishes one batch of at most Batch rows and returns how many
	// it published (delivery.Tables.Publish with Within).
	Once  func(ctx context.Context) (int, error)
	Batch int
	// Poll is how long an idle relay waits for a wake-up before it looks
	// anyway.
	Poll time.Duration
	// Wake wakes the relay; nil: only Poll does.
	Wake <-chan struct{}
	// Log receives the failures; nil: discard.
	Log *slog.Logger
}

// Signal is a wake-up channel for Loop.Wake; Notify never blocks and
// wake-ups sent while the relay is busy collapse into one. Notify after
// the commit that wrote the rows, not before: a relay woken before it
// looks before the rows are visible and finds nothing.
type Signal chan struct{}

// NewSignal returns a Signal.
func NewSignal() Signal { return make(Signal, 1) }

// Notify wakes the relay.
func (s Signal) Notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// Relay backoff after failures.
const (
	relayBackoff    = 50 * time.Millisecond
	relayMaxBackoff = 5 * time.Second
)

// Run publishes until stop closes (or ctx ends). A batch under way when
// stop closes is finished with ctx, so that what it published is also
// deleted (cancel ctx to cut it short); call Drain afterwards for the rest.
func (r Loop) Run(ctx context.Context, stop <-chan struct{}) {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failures := 0
	for ctx.Err() == nil {
		select {
		case <-stop:
			return
		default:
		}
		r.forget()
		n, err := r.Once(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			log.Warn("outbox relay failed; retrying", "err", err, "failures", failures)
			t := time.NewTimer(Backoff(failures, relayBackoff, relayMaxBackoff))
			select {
			case <-ctx.Done():
			case <-stop:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		failures = 0
		if n >= max(r.Batch, 1) {
			continue // more is waiting
		}
		r.idle(ctx, stop)
	}
}

// forget drops a wake-up sent before a round starts: it was sent after its
// commit, so the round sees that commit's rows, and kept it would only
// start another round that finds them gone. (One sent during the last
// round before the relay idles is kept: its commit may have come after
// that round looked.)
func (r Loop) forget() {
	select {
	case <-r.Wake:
	default:
	}
}

// idle waits for a Wake, Poll, stop or the end of ctx.
func (r Loop) idle(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTimer(r.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-stop:
	case <-r.Wake:
	case <-t.C:
	}
}

// Drain publishes until a batch comes back less than full, Once fails or
// ctx ends, and returns how many it published: the last flush at shutdown,
// after Run returned.
func (r Loop) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.Once(ctx)
		total += n
		if err != nil {
			return total, err
		}
		if n < max(r.Batch, 1) {
			return total, nil
		}
	}
}

// Publish retry within a lease.
const (
	publishBackoff    = 50 * time.Millisecond
	publishMaxBackoff = 2 * time.Second
)

// Within calls publish until it succeeds, ctx ends or four fifths
// of lease have passed (the outbox holds the rows for this relay for
// lease), backing off between attempts; it returns the last error.
func Within(ctx context.Context, lease time.Duration, log *slog.Logger, what string, publish func(ctx context.Context) error) error {
	pubCtx, cancel := context.WithTimeout(ctx, lease*4/5)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := publish(pubCtx)
		if err == nil {
			return nil
		}
		if pubCtx.Err() != nil {
			return fmt.Errorf("publish %s (they are published again later): %w", what, err)
		}
		if log != nil {
			log.Warn("publish failed; retrying", "what", what, "attempt", attempt, "err", err)
		}
		Sleep(pubCtx, Backoff(attempt, publishBackoff, publishMaxBackoff))
	}
}

// Every runs job at once and then every interval until ctx ends.
func Every(ctx context.Context, interval time.Duration, job func(ctx context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		job(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Backoff is base·2^(attempt-1), capped at max.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// Sleep waits for d or until ctx ends; it reports whether it waited fully.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Owner names this process in outbox leases: host name, process id
// and a random suffix, unique per call.
func Owner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
