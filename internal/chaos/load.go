package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// user is one client of the run: a profile with one funded portfolio.
type user struct {
	name, portfolio string
}

// offer is one deal the generator offered: posted with its own
// Idempotency-Key and retried with that key until deals accepted it.
type offer struct {
	n         int
	key, user string
	deal      procstack.Deal
	scheduled time.Time // when the open loop offered it

	// Outcome, set by post.
	accepted time.Time // 201 received
	id       string    // the deal's id
	attempts int
	replayed bool   // a retry was answered from the first request
	refused  string // a 4xx that no retry can change
	gaveUp   string // the last error when the retries ran out
}

// deposit is one funding operation: a deposit with its own
// Idempotency-Key, retried with that key until profile accepted it.
type deposit struct {
	key, portfolio, amount string
	accepted               bool
	attempts               int
	gaveUp                 string
}

// load drives the run's traffic: an open loop offering Config.Rate deals a
// second, each posted (and retried) by its own goroutine, and a deposit now
// and then.
type load struct {
	cfg   Config
	s     *procstack.Stack
	users []user
	start time.Time
	end   time.Time // when the last deal was offered (set by run)

	mu       sync.Mutex
	offers   []*offer
	deposits []*deposit
	behind   time.Duration // the most the loop fell behind its schedule
	inFlight sync.WaitGroup
}

// instruments the users trade.
var instruments = []string{"AAPL", "MSFT", "GOOG", "AMZN"}

// setupUsers creates cfg.Users users, each with a portfolio funded by a
// deposit, before the faults start.
func (l *load) setupUsers(ctx context.Context, runID string) error {
	l.users = make([]user, l.cfg.Users)
	funding := l.cfg.funding()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	errs := make([]error, len(l.users))
	for i := range l.users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("client%04d.%s", i, runID)
			pf, err := l.s.CreatePortfolio(ctx, name, "USD")
			if err != nil {
				errs[i] = err
				return
			}
			l.users[i] = user{name: name, portfolio: pf}
			d := &deposit{key: "chaos-fund-" + pf, portfolio: pf, amount: funding}
			l.mu.Lock()
			l.deposits = append(l.deposits, d)
			l.mu.Unlock()
			l.deposit(ctx, d, rand.New(rand.NewPCG(l.cfg.Seed, uint64(i)+1<<40)))
			if !d.accepted {
				errs[i] = fmt.Errorf("chaos: fund user %s: %s", name, d.gaveUp)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// makeOffer is offer n of the run, the same for the same seed: mostly
// small buys, some sells (rejected when the user holds too little) and
// some buys far above any funding (rejected).
func (l *load) makeOffer(n int) *offer {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(n)))
	u := l.users[rng.IntN(len(l.users))]
	d := procstack.Deal{PortfolioID: u.portfolio, Side: "buy", Currency: "USD",
		Instrument: instruments[rng.IntN(len(instruments))],
		Quantity:   fmt.Sprint(1 + rng.IntN(3)), Price: fmt.Sprintf("%d.%02d", 1+rng.IntN(20), rng.IntN(100))}
	switch p := rng.IntN(100); {
	case p < 10:
		d.Quantity, d.Price = "1000", "100.00" // 100,000 USD: more than any user has
	case p < 25:
		d.Side, d.Quantity = "sell", fmt.Sprint(1+rng.IntN(2))
	}
	return &offer{n: n, key: fmt.Sprintf("chaos-%d-%s", n, l.cfg.runID), user: u.name, deal: d}
}

// run offers cfg.Sagas deals at cfg.Rate a second from start, and a top-up
// deposit after every cfg.DepositEvery of them; it returns when the last
// one is offered (the posts may still be retrying: wait for them with
// wait).
func (l *load) run(ctx context.Context) {
	sem := make(chan struct{}, l.cfg.MaxInFlight)
	every := time.Duration(float64(time.Second) / l.cfg.Rate)
	for n := 0; n < l.cfg.Sagas; n++ {
		at := l.start.Add(time.Duration(n) * every)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if late := time.Since(at); late > 0 {
			l.mu.Lock()
			l.behind = max(l.behind, late)
			l.mu.Unlock()
		}
		o := l.makeOffer(n)
		o.scheduled = at
		l.mu.Lock()
		l.offers = append(l.offers, o)
		l.mu.Unlock()
		l.inFlight.Go(func() {
			defer func() { <-sem }()
			l.post(ctx, o)
		})
		if l.cfg.DepositEvery > 0 && n%l.cfg.DepositEvery == l.cfg.DepositEvery-1 {
			rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(n)+1<<41))
			d := &deposit{key: fmt.Sprintf("chaos-topup-%d-%s", n, l.cfg.runID),
				portfolio: l.users[rng.IntN(len(l.users))].portfolio, amount: "50.00"}
			l.mu.Lock()
			l.deposits = append(l.deposits, d)
			l.mu.Unlock()
			l.inFlight.Go(func() { l.deposit(ctx, d, rng) })
		}
	}
	l.end = time.Now()
}

// wait waits until every post and deposit has an outcome.
func (l *load) wait() { l.inFlight.Wait() }

// retryable reports whether a failed request may succeed if sent again: no
// answer (the process is down or paused), 5xx, 408 or 429.
func retryable(err error) (bool, string) {
	var se *procstack.StatusError
	if errors.As(err, &se) {
		switch {
		case se.Status >= 500, se.Status == http.StatusRequestTimeout, se.Status == http.StatusTooManyRequests:
			return true, err.Error()
		default:
			return false, err.Error()
		}
	}
	return true, err.Error()
}

// backoff is the wait before attempt n+1 (from 200 ms, doubling, up to 2 s,
// with jitter).
func backoff(n int, rng *rand.Rand) time.Duration {
	d := 200 * time.Millisecond << min(n, 4)
	d = min(d, 2*time.Second)
	return d/2 + time.Duration(rng.Int64N(int64(d/2)+1))
}

// post sends o until deals accepts it, refuses it for good, or
// cfg.RetryFor has passed.
func (l *load) post(ctx context.Context, o *offer) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed^0x9e3779b97f4a7c15, uint64(o.n)))
	deadline := time.Now().Add(l.cfg.RetryFor)
	replicas := l.s.Deals.Replicas
	for {
		o.attempts++
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		id, replayed, err := l.s.PostDealKey(pctx, replicas[rng.IntN(len(replicas))], o.user, o.key, o.deal)
		cancel()
		if err == nil {
			l.mu.Lock()
			o.id, o.replayed, o.accepted = id, replayed, time.Now()
			l.mu.Unlock()
			return
		}
		again, why := retryable(err)
		if !again {
			l.mu.Lock()
			o.refused = why
			l.mu.Unlock()
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			l.mu.Lock()
			o.gaveUp = why
			l.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff(o.attempts, rng)):
		}
	}
}

// deposit sends d through a random profile replica until profile accepts
// it, refuses it, or cfg.RetryFor has passed.
func (l *load) deposit(ctx context.Context, d *deposit, rng *rand.Rand) {
	deadline := time.Now().Add(l.cfg.RetryFor)
	replicas := l.s.Profile.Replicas
	for {
		d.attempts++
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := l.s.Deposit(pctx, replicas[rng.IntN(len(replicas))], d.portfolio, "USD", d.amount, d.key)
		cancel()
		if err == nil {
			l.mu.Lock()
			d.accepted = true
			l.mu.Unlock()
			return
		}
		again, why := retryable(err)
		if !again || time.Now().After(deadline) || ctx.Err() != nil {
			l.mu.Lock()
			d.gaveUp = why
			l.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff(d.attempts, rng)):
		}
	}
}

// funding is what each user is first given: enough for most of their
// small buys (about 22 USD each on average), not all of them, so that late
// buys are rejected as they run out besides the unaffordable ones.
func (c Config) funding() string {
	perUser := float64(c.Sagas) / float64(c.Users)
	return decimal.NewFromFloat(max(100, perUser*16)).StringFixed(2)
}
