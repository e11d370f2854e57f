package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// user is one client of the run: a profile with one funded portfolio.
type user struct {
	name, portfolio string
}

// offer is one deal (or basket) the generator offered: posted with its own
// Idempotency-Key and retried with that key until deals accepted it.
type offer struct {
	n         int
	key, user string
	deal      procstack.Deal
	scheduled time.Time // when the open loop offered it
	// lines, when set, make the offer a basket of them in deal's
	// portfolio (POST /baskets) instead of the deal.
	lines []procstack.Line

	// act is what is done to the deal once accepted ("", actAbort or
	// actCancel), actIn after its acceptance. raced, with actAbort, has
	// its client cancel it at the same moment too: the two race to the
	// saga, and the one that loses finds it stopped already.
	act   string
	actIn time.Duration
	raced bool

	// Outcome, set by post.
	accepted time.Time // 201 received
	id       string    // the deal's id
	sagaID   string    // its saga's id
	attempts int
	replayed bool   // a retry was answered from the first request
	refused  string // a 4xx that no retry can change
	gaveUp   string // the last error when the retries ran out

	// Outcome of act and, when raced, of the racing cancel; set once
	// accepted.
	actOut, raceOut actOutcome
}

// actOutcome is what became of an abort or a cancel.
type actOutcome struct {
	status   int    // 200 or 202 (done), 409 (too late)
	attempts int    // requests sent
	refused  string // another answer, which no retry can change
	gaveUp   string // the last error when the retries ran out
}

// What the generator does to some accepted deals (offer.act).
const (
	actAbort  = "abort"  // an operator aborts its saga
	actCancel = "cancel" // its client cancels it
)

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
// some buys far above any funding (rejected); Config.Aborts and
// Config.Cancels per cent of them are aborted or cancelled once accepted,
// and Config.Baskets per cent are baskets of two or three buys instead (one
// in ten with a line above any funding: rejected by the check; Aborts and
// Cancels per cent of them aborted or cancelled).
//
// Those go to the first buyOnlyUsers users, who only buy. A reversal that
// would take a portfolio's cash or a position below zero (a sell's
// proceeds spent since, a buy's instruments sold since) is refused by
// design and waits for an operator (docs/services.md): it is not a fault
// of the system, and a run that made it would stop at a saga no one
// settles. A buy-only portfolio's reversals always fit: its positions
// only grow, and a buy's reversal gives cash back.
func (l *load) makeOffer(n int) *offer {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(n)))
	k := l.buyOnlyUsers()
	aborts, cancels, baskets := max(l.cfg.Aborts, 0), max(l.cfg.Cancels, 0), max(l.cfg.Baskets, 0)
	var act string
	basket := false
	if k > 0 {
		switch p := rng.IntN(100); {
		case p < aborts:
			act = actAbort
		case p < aborts+cancels:
			act = actCancel
		case p < aborts+cancels+baskets:
			basket = true
		}
	}
	u := l.users[k+rng.IntN(len(l.users)-k)]
	if act != "" || basket {
		u = l.users[rng.IntN(k)]
	}
	d := procstack.Deal{PortfolioID: u.portfolio, Side: "buy", Currency: "USD",
		Instrument: instruments[rng.IntN(len(instruments))],
		Quantity:   fmt.Sprint(1 + rng.IntN(3)), Price: fmt.Sprintf("%d.%02d", 1+rng.IntN(20), rng.IntN(100))}
	switch p := rng.IntN(100); {
	case p < 10:
		d.Quantity, d.Price = "1000", "100.00" // 100,000 USD: more than any user has
	case p < 25 && act == "" && !basket:
		d.Side, d.Quantity = "sell", fmt.Sprint(1+rng.IntN(2))
	}
	o := &offer{n: n, key: fmt.Sprintf("chaos-%d-%s", n, l.cfg.runID), user: u.name, deal: d, act: act}
	if basket {
		// As many baskets are aborted and cancelled as deals
		// (BASKET_ORDER version 3 records profile's late check instead of
		// parking it; version 4 takes the client's cancellation).
		switch p := rng.IntN(100); {
		case p < aborts:
			o.act = actAbort
		case p < aborts+cancels:
			o.act = actCancel
		}
		// The deal drawn above is the first line (unaffordable one time in
		// ten); one or two more buys of other instruments follow.
		o.lines = []procstack.Line{{Side: d.Side, Instrument: d.Instrument, Quantity: d.Quantity, Price: d.Price, Currency: d.Currency}}
		first := slices.Index(instruments, d.Instrument)
		for i := range 1 + rng.IntN(2) {
			o.lines = append(o.lines, procstack.Line{Side: "buy", Instrument: instruments[(first+1+i)%len(instruments)], Currency: "USD",
				Quantity: fmt.Sprint(1 + rng.IntN(3)), Price: fmt.Sprintf("%d.%02d", 1+rng.IntN(20), rng.IntN(100))})
		}
	}
	// One abort in four is raced by its client's cancel (when cancels are
	// on): the one that reaches the saga second finds it stopped.
	if o.act == actAbort && cancels > 0 && rng.IntN(4) == 0 {
		o.raced = true
	}
	if o.act != "" && rng.IntN(2) == 1 {
		// Half at once (the saga has barely started), half at a random
		// moment (it may be waiting anywhere, or done).
		o.actIn = time.Duration(1 + rng.Int64N(int64(l.cfg.ActWithin)))
	}
	return o
}

// buyOnlyUsers is how many users (the first ones) get the deals that are
// aborted or cancelled and the baskets, and only those: a fifth of them,
// at least one; none when there are none of those or fewer than two
// users.
func (l *load) buyOnlyUsers() int {
	if max(l.cfg.Aborts, 0)+max(l.cfg.Cancels, 0)+max(l.cfg.Baskets, 0) == 0 || len(l.users) < 2 {
		return 0
	}
	return max(1, len(l.users)/5)
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

// post sends o (a deal, or a basket) until deals accepts it, refuses it
// for good, or cfg.RetryFor has passed.
func (l *load) post(ctx context.Context, o *offer) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed^0x9e3779b97f4a7c15, uint64(o.n)))
	deadline := time.Now().Add(l.cfg.RetryFor)
	replicas := l.s.Deals.Replicas
	for {
		o.attempts++
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var id, sagaID string
		var replayed bool
		var err error
		if o.lines != nil {
			id, sagaID, replayed, err = l.s.PostBasketKey(pctx, replicas[rng.IntN(len(replicas))], o.user, o.key, o.deal.PortfolioID, o.lines)
		} else {
			id, sagaID, replayed, err = l.s.PostDealKey(pctx, replicas[rng.IntN(len(replicas))], o.user, o.key, o.deal)
		}
		cancel()
		if err == nil {
			l.mu.Lock()
			o.id, o.sagaID, o.replayed, o.accepted = id, sagaID, replayed, time.Now()
			l.mu.Unlock()
			switch {
			case o.raced:
				// The cancel on its own goroutine with its own random
				// source (rng is not safe for concurrent use).
				var wg sync.WaitGroup
				crng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(o.n)<<32|1))
				wg.Go(func() { l.actOn(ctx, o, actCancel, &o.raceOut, crng) })
				l.actOn(ctx, o, o.act, &o.actOut, rng)
				wg.Wait()
			case o.act != "":
				l.actOn(ctx, o, o.act, &o.actOut, rng)
			}
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

// actOn aborts o's saga or cancels o's deal or basket (act), o.actIn
// after its acceptance, through a random replica, until it is answered
// 200, 202 or 409, refused otherwise, or cfg.RetryFor has passed, and
// records that in out. An abort of a saga saga-machine does not know yet
// (404) is tried again every 20 ms for its first 50 attempts, then with
// the usual backoff.
func (l *load) actOn(ctx context.Context, o *offer, act string, out *actOutcome, rng *rand.Rand) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(o.actIn):
	}
	deadline := time.Now().Add(l.cfg.RetryFor)
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var status int
		var err error
		if act == actAbort {
			replicas := l.s.SagaMachine.Replicas
			status, err = l.s.AbortSaga(pctx, replicas[rng.IntN(len(replicas))], o.sagaID, "chaos: the client called the desk")
		} else if o.lines != nil {
			replicas := l.s.Deals.Replicas
			status, err = l.s.CancelBasket(pctx, replicas[rng.IntN(len(replicas))], o.user, o.id)
		} else {
			replicas := l.s.Deals.Replicas
			status, err = l.s.CancelDeal(pctx, replicas[rng.IntN(len(replicas))], o.user, o.id)
		}
		cancel()
		again, why := true, ""
		if err != nil {
			again, why = retryable(err)
		}
		// deals answers the deal before saga-machine has read its saga's
		// start from Kafka: until then the saga is not found. An operator
		// aborts a saga she sees, so the abort waits for it (and gives up,
		// a problem, if it never appears).
		var se *procstack.StatusError
		notYet := act == actAbort && errors.As(err, &se) && se.Status == http.StatusNotFound
		if notYet {
			again = true
		}
		l.mu.Lock()
		out.attempts = attempt
		switch {
		case err == nil:
			out.status = status
		case !again:
			out.refused = why
		case time.Now().After(deadline) || ctx.Err() != nil:
			out.gaveUp = why
		}
		done := err == nil || out.refused != "" || out.gaveUp != ""
		l.mu.Unlock()
		if done {
			return
		}
		wait := backoff(attempt, rng)
		if notYet && attempt <= 50 {
			wait = 20 * time.Millisecond // the first second; then as any retry
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
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
