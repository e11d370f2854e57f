package outage

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

func TestMain(m *testing.M) { procstack.Main(m) }

// scenario sizes one run.
type scenario struct {
	users        int
	interval     time.Duration // between two deals of one user
	warmup       time.Duration // traffic before the first fault
	gap          time.Duration // traffic between two faults
	restartAfter time.Duration // kill -9 → restart of saga-machine and deals
	profileDowns int           // how many times profile goes down past the budget
	approveOrder procstack.Retry
	settleDeal   procstack.Retry // APPROVE_DEAL and REJECT_DEAL
	compensation procstack.Retry // REVERT_ORDER and FAIL_DEAL
	quiesce      time.Duration   // bound of the final wait
}

func (sc scenario) retries() map[string]procstack.Retry {
	return map[string]procstack.Retry{
		"APPROVE_ORDER": sc.approveOrder,
		"APPROVE_DEAL":  sc.settleDeal, "REJECT_DEAL": sc.settleDeal,
		"REVERT_ORDER": sc.compensation, "FAIL_DEAL": sc.compensation,
	}
}

// short is the default, sized for CI (about a minute of wall time).
var short = scenario{
	users: 6, interval: 500 * time.Millisecond, warmup: 3 * time.Second, gap: 4 * time.Second,
	restartAfter: time.Second, profileDowns: 1,
	approveOrder: procstack.Retry{Attempts: 3, Backoff: 500 * time.Millisecond, MaxBackoff: 2 * time.Second},
	settleDeal:   procstack.Retry{Attempts: 3, Backoff: 500 * time.Millisecond, MaxBackoff: 2 * time.Second},
	compensation: procstack.Retry{Attempts: 20, Backoff: 500 * time.Millisecond, MaxBackoff: 2 * time.Second},
	quiesce:      90 * time.Second,
}

// long is SAGA_OUTAGE_LONG=1: more users, longer budgets and outages, two
// profile outages (a few minutes).
var long = scenario{
	users: 20, interval: 400 * time.Millisecond, warmup: 5 * time.Second, gap: 10 * time.Second,
	restartAfter: 2 * time.Second, profileDowns: 2,
	approveOrder: procstack.Retry{Attempts: 4, Backoff: time.Second, MaxBackoff: 4 * time.Second},
	settleDeal:   procstack.Retry{Attempts: 4, Backoff: time.Second, MaxBackoff: 4 * time.Second},
	compensation: procstack.Retry{Attempts: 30, Backoff: time.Second, MaxBackoff: 4 * time.Second},
	quiesce:      3 * time.Minute,
}

// fault is one kill or pause and what the test measured around it.
type fault struct {
	what       string
	svc        *procstack.Service
	at         time.Time // kill -9 (or SIGSTOP)
	restarted  time.Time // process started again (or SIGCONT)
	healthy    time.Time // health URL answered again
	firstAfter time.Time // first record the service handled after restarted
}

// TestParticipantOutageLongerThanRetryBudget is the regression test of
// issue 9 (see the package documentation).
func TestParticipantOutageLongerThanRetryBudget(t *testing.T) {
	sc := short
	if os.Getenv("SAGA_OUTAGE_LONG") != "" {
		sc = long
	}
	began := time.Now()
	s := procstack.New(t, procstack.Config{Retries: sc.retries()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Logf("APPROVE_ORDER budget %s, APPROVE_DEAL/REJECT_DEAL budget %s, compensations %d sends over %s",
		sc.approveOrder.Budget(), sc.settleDeal.Budget(), sc.compensation.Attempts, sc.compensation.Budget())

	// Funded users.
	type user struct{ name, portfolio string }
	users := make([]user, sc.users)
	for i := range users {
		name := fmt.Sprintf("client%02d.%s", i, s.ID)
		pf, err := s.OpenPortfolio(ctx, name, "USD", "5000.00")
		if err != nil {
			t.Fatal(err)
		}
		users[i] = user{name, pf}
	}

	// A steady stream of buys from every user: most small (affordable for
	// the whole run), some far above the funding (rejected).
	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		postedMu  sync.Mutex
		posted    []string
		postErrs  atomic.Int64
		firstErrs []string
	)
	for i, u := range users {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(began.UnixNano())))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(sc.interval/2 + rand.N(sc.interval)):
				}
				d := procstack.Deal{PortfolioID: u.portfolio, Side: "buy", Currency: "USD",
					Instrument: []string{"AAPL", "MSFT", "GOOG"}[rng.IntN(3)],
					Quantity:   fmt.Sprint(1 + rng.IntN(3)), Price: fmt.Sprintf("%d.%02d", 1+rng.IntN(20), rng.IntN(100))}
				if rng.IntN(100) < 15 {
					d.Quantity, d.Price = "100", "100.00" // 10,000 USD: more than the funding
				}
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				id, err := s.PostDeal(pctx, u.name, d)
				pcancel()
				postedMu.Lock()
				if err != nil {
					postErrs.Add(1)
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, err.Error())
					}
				} else {
					posted = append(posted, id)
				}
				postedMu.Unlock()
			}
		})
	}
	stopTraffic := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopTraffic()

	var faults []*fault
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
			t.Fatalf("test deadline: %v", ctx.Err())
		case <-time.After(d):
		}
	}
	restart := func(f *fault) {
		t.Helper()
		f.restarted = time.Now()
		if err := f.svc.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		f.healthy = time.Now()
		t.Logf("%s: down %s, healthy %s after the restart", f.what, f.restarted.Sub(f.at).Round(time.Millisecond), f.healthy.Sub(f.restarted).Round(time.Millisecond))
	}
	kill := func(svc *procstack.Service, down time.Duration) {
		t.Helper()
		f := &fault{what: "kill -9 " + svc.Name, svc: svc}
		faults = append(faults, f)
		f.at = time.Now()
		if err := svc.Kill(); err != nil {
			t.Fatal(err)
		}
		sleep(down)
		restart(f)
	}

	sleep(sc.warmup)
	kill(s.SagaMachine, sc.restartAfter)
	profileDown := 2*sc.approveOrder.Budget() + time.Second
	for range sc.profileDowns {
		sleep(sc.gap)
		kill(s.Profile, profileDown) // longer than APPROVE_ORDER's budget, deals keep arriving
	}
	sleep(sc.gap)
	kill(s.Deals, sc.restartAfter+sc.restartAfter/2)
	sleep(sc.gap)
	pauseDealsWithApprovalInFlight(ctx, t, s, sc.settleDeal.Budget()+2500*time.Millisecond, &faults)
	sleep(sc.gap)
	stopTraffic()
	trafficEnd := time.Now()
	postedMu.Lock()
	nPosted := len(posted)
	postedMu.Unlock()
	t.Logf("traffic: %d deals accepted by deals' API, %d requests failed (the service was down or paused)%s",
		nPosted, postErrs.Load(), strings.Join(append([]string{""}, firstErrs...), "\n  "))

	// Quiet, then the invariants from the databases.
	qctx, qcancel := context.WithTimeout(ctx, sc.quiesce)
	act, err := s.WaitQuiescent(qctx)
	qcancel()
	if err != nil {
		t.Errorf("%v", err)
	} else {
		t.Logf("quiet %s after the traffic stopped: %s", time.Since(trafficEnd).Round(100*time.Millisecond), act)
	}
	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", rep.Summary())
	if err := rep.Err(); err != nil {
		t.Errorf("invariants broken:\n%v", err)
	}
	if ex := s.Exited(); len(ex) > 0 {
		t.Errorf("processes exited on their own: %v", ex)
	}

	// Every deal the API accepted is in deals' database.
	var known int
	if err := s.DB(procstack.Deals).GetContext(ctx, &known, `SELECT count(*) FROM deals WHERE id = ANY($1)`, pq.Array(posted)); err != nil {
		t.Fatal(err)
	}
	if known != nPosted {
		t.Errorf("deals' API accepted %d deals, its database has %d of them", nPosted, known)
	}

	// The run must have exercised what it is about, or it proves nothing.
	var profileUnavailable int
	if err := s.DB(procstack.SagaMachine).GetContext(ctx, &profileUnavailable,
		`SELECT count(DISTINCT saga_id) FROM saga_history WHERE event = 'PROFILE_UNAVAILABLE'`); err != nil {
		t.Fatal(err)
	}
	t.Logf("sagas failed by PROFILE_UNAVAILABLE (profile down past the budget): %d", profileUnavailable)
	for _, c := range []struct {
		what string
		got  int
	}{
		{"deals executed", rep.Deals["executed"]},
		{"deals rejected (unaffordable)", rep.Deals["rejected"]},
		{"deals failed", rep.Deals["failed"]},
		{"sagas failed", rep.Sagas["failed"]},
		{"sagas failed by PROFILE_UNAVAILABLE", profileUnavailable},
		{"approved orders reverted by REVERT_ORDER", rep.Reversals["reverted"]},
		{"deals failed after profile approved them", rep.FailedAfterApproval},
	} {
		if c.got == 0 {
			t.Errorf("%s: 0, want some: the run did not exercise the outage (%s)", c.what, rep.Summary())
		}
	}

	logRecovery(ctx, t, s, faults)
	logExpired(ctx, t, s)
	t.Logf("wall time of the test: %s (stack %s)", time.Since(began).Round(100*time.Millisecond), s.ID)
}

// pauseDealsWithApprovalInFlight stops deals (SIGSTOP) at a moment when
// profile has approved a deal that deals has not executed yet, so that
// the saga's APPROVE_DEAL runs out of its budget with the cash already
// taken: the saga must fail and REVERT_ORDER give the cash back. It keeps
// deals stopped for hold, then resumes it.
func pauseDealsWithApprovalInFlight(ctx context.Context, t *testing.T, s *procstack.Stack, hold time.Duration, faults *[]*fault) {
	t.Helper()
	for try := 1; ; try++ {
		at := time.Now()
		if err := s.Deals.Pause(); err != nil {
			t.Fatal(err)
		}
		var approved []string
		err := s.DB(procstack.Profile).SelectContext(ctx, &approved,
			`SELECT deal_id FROM order_decisions WHERE status = 'approved' AND decided_at > now() - interval '10 seconds'
			AND deal_id NOT IN (SELECT deal_id FROM order_reversals)`)
		var inFlight int
		if err == nil {
			err = s.DB(procstack.Deals).GetContext(ctx, &inFlight, `SELECT count(*) FROM deals WHERE status = 'draft' AND id = ANY($1)`, pq.Array(approved))
		}
		if err != nil {
			_ = s.Deals.Resume()
			t.Fatal(err)
		}
		if inFlight > 0 || try == 50 {
			if inFlight == 0 {
				t.Logf("SIGSTOP deals: no approved deal in flight after %d tries; pausing anyway", try)
			}
			f := &fault{what: fmt.Sprintf("SIGSTOP deals (%d approved deals in flight)", inFlight), svc: s.Deals, at: at}
			*faults = append(*faults, f)
			select {
			case <-ctx.Done():
			case <-time.After(hold):
			}
			f.restarted = time.Now()
			if err := s.Deals.Resume(); err != nil {
				t.Fatal(err)
			}
			if err := s.Deals.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
			f.healthy = time.Now()
			t.Logf("%s: paused %s", f.what, f.restarted.Sub(f.at).Round(time.Millisecond))
			return
		}
		if err := s.Deals.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logRecovery reads, for every fault, when the service next handled a
// record after it was back (its inbox), and logs the times.
func logRecovery(ctx context.Context, t *testing.T, s *procstack.Stack, faults []*fault) {
	t.Helper()
	var b strings.Builder
	for _, f := range faults {
		q := `SELECT min(processed_at) FROM sdk_inbox WHERE processed_at > $1`
		if f.svc.Name == procstack.SagaMachine {
			q = `SELECT min(processed_at) FROM inbox WHERE processed_at > $1`
		}
		var first sql.NullTime
		if err := s.DB(f.svc.Name).GetContext(ctx, &first, q, f.restarted); err != nil {
			t.Errorf("recovery time of %s: %v", f.what, err)
			continue
		}
		if !first.Valid {
			fmt.Fprintf(&b, "\n  %s: out %s; nothing handled since", f.what, f.restarted.Sub(f.at).Round(time.Millisecond))
			continue
		}
		f.firstAfter = first.Time
		fmt.Fprintf(&b, "\n  %s: out %s; back → first record handled %s (healthy after %s); fault → first record handled %s",
			f.what, f.restarted.Sub(f.at).Round(time.Millisecond), f.firstAfter.Sub(f.restarted).Round(time.Millisecond),
			f.healthy.Sub(f.restarted).Round(time.Millisecond), f.firstAfter.Sub(f.at).Round(time.Millisecond))
	}
	t.Logf("recovery (measured, not asserted):%s", b.String())
}

// logExpired logs how many commands profile and deals refused by their
// deadline (COMMAND_EXPIRED) and how many arrived after their compensation.
func logExpired(ctx context.Context, t *testing.T, s *procstack.Stack) {
	t.Helper()
	for _, name := range []string{procstack.Profile, procstack.Deals} {
		var rows []struct {
			Command string `db:"command"`
			Barrier bool   `db:"barrier"`
			N       int    `db:"n"`
		}
		err := s.DB(name).SelectContext(ctx, &rows, `SELECT command, position('compensated before it arrived' IN convert_from(reply, 'UTF8')) > 0 AS barrier, count(*) AS n
			FROM sdk_inbox WHERE reply IS NOT NULL AND position('COMMAND_EXPIRED' IN convert_from(reply, 'UTF8')) > 0 GROUP BY 1, 2 ORDER BY 1, 2`)
		if err != nil {
			t.Logf("%s: count refused commands: %v", name, err)
			continue
		}
		var parts []string
		for _, r := range rows {
			switch {
			case r.Command == "":
				// Written by a compensation for an id this service never
				// handled: mostly REGISTER's event id (FAIL_DEAL), harmless.
				parts = append(parts, fmt.Sprintf("%d barrier records of compensations", r.N))
			case r.Barrier:
				parts = append(parts, fmt.Sprintf("%d %s (compensated before it arrived)", r.N, r.Command))
			default:
				parts = append(parts, fmt.Sprintf("%d %s (deadline passed)", r.N, r.Command))
			}
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		t.Logf("%s refused with COMMAND_EXPIRED: %s", name, strings.Join(parts, ", "))
	}
}
