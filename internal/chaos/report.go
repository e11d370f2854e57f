package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// BucketWidth is the width of the throughput timeline's buckets.
const BucketWidth = 5 * time.Second

// Bucket is one BucketWidth of the run, from the start of the traffic.
type Bucket struct {
	// From is the bucket's start, from the start of the traffic.
	From time.Duration
	// Offered deals (scheduled in the bucket), Accepted by deals' API
	// (201 received in it), sagas Started (created) and Finished (their
	// final state committed) in it.
	Offered, Accepted, Started, Finished int
	// Lag is the highest total consumer lag the monitor saw in it (-1:
	// no sample, e.g. the broker was down).
	Lag int64
	// Faults injected in it.
	Faults []string
}

// Report is what a run did and found.
type Report struct {
	// Config is the run's configuration, defaults filled in (Seed too).
	Config Config
	// Began is when Run started; TrafficStart and TrafficEnd bound the
	// offered load (the first and the last deal offered); FaultsEnd is
	// when both the traffic and the faults were over; Quiet is when the
	// system was at rest afterwards.
	Began, TrafficStart, TrafficEnd, FaultsEnd, Quiet time.Time
	// Machine describes where the run ran (commit, CPUs, load).
	Machine Machine
	// Elapsed is Run's whole wall time (build, servers, checks included).
	Elapsed time.Duration

	// Offered deals and baskets; Accepted by deals (201, possibly after
	// retries with the same Idempotency-Key), Baskets of them baskets;
	// Replayed is how many of those were answered from an earlier
	// attempt; Refused got a 4xx; GaveUp were still failing after
	// Config.RetryFor.
	Offered, Accepted, Baskets, Replayed, Refused, GaveUp int
	// Attempts is every POST /deals sent (retries included).
	Attempts int
	// Behind is the most the open loop fell behind its schedule.
	Behind time.Duration
	// Deposits offered, accepted, given up.
	Deposits, DepositsAccepted, DepositsGaveUp int
	// Aborts and Cancels are the operators' aborts and the clients'
	// cancels of accepted deals by outcome (Config.Aborts,
	// Config.Cancels); BasketAborts and BasketCancels those of accepted
	// baskets.
	Aborts, Cancels, BasketAborts, BasketCancels Acts
	// RacedActs counts the accepted deals and baskets whose abort was
	// raced by their client's cancel (both counted above), RacedBothDone
	// those where both were accepted (the cancel reached a saga the abort
	// had stopped), and LateStops the CANCEL_REQUESTED that saga-machine's
	// timelines record as late (from its database).
	RacedActs, RacedBothDone, LateStops int

	// Check is what procstack.Stack.Check found in the four databases.
	Check procstack.Report
	// Lost counts effects that should exist and do not: accepted deals
	// absent from deals' database, accepted deposits absent from profile's,
	// deals not final, sagas not terminal, deals without a notification,
	// portfolios holding more cash than deposits − executed buys + sells.
	Lost int
	// Doubled counts effects that happened more than once: deals or
	// deposits stored twice for one Idempotency-Key, deals notified more
	// than once, portfolios holding less cash than deposits − executed
	// buys + sells.
	Doubled int
	// Problems lists what makes the run fail besides Check's violations:
	// lost and doubled effects, refused or abandoned requests, faults that
	// could not be injected or after which processing never resumed,
	// processes that exited on their own, lag left at the end.
	Problems []string

	// Faults in the order injected.
	Faults []*Fault
	// Unasked are the processes' exits nobody asked for (each restarted by
	// the run's supervisor, as Kubernetes would: Restarts says how).
	Unasked, Restarts []string
	// Activity is the last look of WaitQuiescent (lag per group, outboxes,
	// sagas still moving); QuiesceErr is set when the system did not come
	// to rest within Config.Quiesce.
	Activity   procstack.Activity
	QuiesceErr string

	// Timeline is the throughput per BucketWidth.
	Timeline []Bucket
	// LatencyP50, LatencyP99 and LatencyMax are the sagas' durations, from
	// the saga's creation to its final state (saga-machine's database).
	LatencyP50, LatencyP99, LatencyMax time.Duration
	// MonitorSamples and MonitorErrors count the broker reads of the
	// offset monitor (errors: while the broker was down or slow).
	MonitorSamples, MonitorErrors int
}

// Err is nil when the run found nothing wrong: no broken invariant, nothing
// lost or doubled, every fault injected and recovered from, no unasked
// exit, every request accepted, the system at rest with no lag.
func (r *Report) Err() error {
	var all []string
	all = append(all, r.Check.Violations...)
	all = append(all, r.Problems...)
	if len(all) == 0 {
		return nil
	}
	return errors.New("chaos: " + strings.Join(all, "\n"))
}

// Acts counts the aborts or the cancels of a run: Sent (to accepted
// deals and baskets), Done (200, 202: each such deal, or every deal of
// such a basket, must end failed or cancelled),
// TooLate (409: the saga or the deal was settled first), Refused (another
// answer) and GaveUp (unanswered after Config.RetryFor); Attempts is every
// request sent.
type Acts struct {
	Sent, Done, TooLate, Refused, GaveUp, Attempts int
}

func (a Acts) String() string {
	return fmt.Sprintf("%d sent (%d requests): %d done, %d too late (409), %d refused, %d given up",
		a.Sent, a.Attempts, a.Done, a.TooLate, a.Refused, a.GaveUp)
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// collect reads the databases and the generator's and injector's records
// into r.
func (r *Report) collect(ctx context.Context, s *procstack.Stack, l *load, inj *injector, mon *monitor) error {
	var err error
	if r.Check, err = s.Check(ctx); err != nil {
		return err
	}
	r.Behind = l.behind
	accepted := map[string]*offer{}
	for _, o := range l.offers {
		r.Offered++
		r.Attempts += o.attempts
		switch {
		case o.id != "":
			r.Accepted++
			accepted[o.key] = o
			if o.lines != nil {
				r.Baskets++
			}
			if o.replayed {
				r.Replayed++
			}
		case o.refused != "":
			r.Refused++
			if r.Refused <= 5 {
				r.problem("deal %s refused: %s", o.key, o.refused)
			}
		default:
			r.GaveUp++
			if r.GaveUp <= 5 {
				r.problem("deal %s not accepted after %d attempts over %s: %s", o.key, o.attempts, r.Config.RetryFor, o.gaveUp)
			}
		}
	}
	depAccepted := map[string]bool{}
	for _, d := range l.deposits {
		r.Deposits++
		if d.accepted {
			r.DepositsAccepted++
			depAccepted[d.key] = true
		} else {
			r.DepositsGaveUp++
			r.problem("deposit %s not accepted after %d attempts: %s", d.key, d.attempts, d.gaveUp)
		}
	}
	if r.Refused > 5 || r.GaveUp > 5 {
		r.problem("%d deals refused, %d not accepted in all", r.Refused, r.GaveUp)
	}
	if err := r.collectActs(ctx, s, l); err != nil {
		return err
	}

	// One deal per Idempotency-Key, the one deals answered with.
	var rows []struct {
		Key string `db:"key"`
		N   int    `db:"n"`
		IDs string `db:"ids"`
	}
	if err := s.DB(procstack.Deals).SelectContext(ctx, &rows, `SELECT idempotency_key AS key, count(*) AS n, string_agg(id, ',') AS ids
		FROM deals WHERE idempotency_key LIKE 'chaos-%' GROUP BY idempotency_key
		UNION ALL SELECT idempotency_key, count(*), string_agg(id, ',')
		FROM baskets WHERE idempotency_key LIKE 'chaos-%' GROUP BY idempotency_key`); err != nil {
		return fmt.Errorf("chaos: read deals and baskets by key: %w", err)
	}
	stored := map[string]int{}
	for _, row := range rows {
		stored[row.Key] = row.N
		if row.N > 1 {
			r.Doubled += row.N - 1
			r.problem("%d deals stored for Idempotency-Key %s: %s", row.N, row.Key, row.IDs)
		} else if o := accepted[row.Key]; o != nil && o.id != row.IDs {
			r.problem("deal of Idempotency-Key %s: deals answered %s, stored %s", row.Key, o.id, row.IDs)
		}
	}
	missing := 0
	for key, o := range accepted {
		if stored[key] == 0 {
			missing++
			r.Lost++
			if missing <= 5 {
				r.problem("deal or basket %s (key %s) was accepted but is not in deals' database", o.id, key)
			}
		}
	}
	var deps []struct {
		Key string `db:"key"`
		N   int    `db:"n"`
	}
	if err := s.DB(procstack.Profile).SelectContext(ctx, &deps, `SELECT idempotency_key AS key, count(*) AS n
		FROM deposits WHERE idempotency_key LIKE 'chaos-%' GROUP BY idempotency_key`); err != nil {
		return fmt.Errorf("chaos: read deposits by key: %w", err)
	}
	depStored := map[string]int{}
	for _, d := range deps {
		depStored[d.Key] = d.N
		if d.N > 1 {
			r.Doubled += d.N - 1
			r.problem("%d deposits stored for Idempotency-Key %s", d.N, d.Key)
		}
	}
	for key := range depAccepted {
		if depStored[key] == 0 {
			r.Lost++
			r.problem("deposit %s was accepted but is not in profile's database", key)
		}
	}
	b := r.Check.Broken
	r.Lost += b[procstack.BrokenNotFinal] + b[procstack.BrokenNotTerminal] + b[procstack.BrokenNotifyMissing] + b[procstack.BrokenCashOver]
	r.Doubled += b[procstack.BrokenNotifyExtra] + b[procstack.BrokenCashShort]
	if r.Lost > 0 {
		r.problem("lost: %d (see above and the violations)", r.Lost)
	}
	if r.Doubled > 0 {
		r.problem("doubled: %d (see above and the violations)", r.Doubled)
	}

	// Faults, exits, rest.
	for _, f := range r.Faults {
		switch {
		case f.Skipped:
		case f.At.IsZero():
			r.problem("fault %s was never injected (the run ended first)", f.Name())
		case f.Err != "":
			r.problem("fault %s: %s", f.Name(), f.Err)
		case f.Resumed.IsZero():
			r.problem("fault %s at +%s: processing was not seen to resume on what it hit", f.Name(), f.At.Sub(r.TrafficStart).Round(100*time.Millisecond))
		}
	}
	r.Unasked = s.Exited()
	inj.mu.Lock()
	r.Restarts = append([]string(nil), inj.unasked...)
	inj.mu.Unlock()
	if len(r.Unasked) > 0 {
		r.problem("%d process exits nobody asked for: %s", len(r.Unasked), strings.Join(r.Unasked, "; "))
	}
	if r.QuiesceErr != "" {
		r.problem("%s", r.QuiesceErr)
	}
	for g, n := range r.Activity.Lag {
		if n != 0 {
			r.problem("consumer group of %s has lag %d at the end", g, n)
		}
	}

	// Latency and the timeline.
	var lat struct {
		P50 float64 `db:"p50"`
		P99 float64 `db:"p99"`
		Max float64 `db:"max"`
	}
	if err := s.DB(procstack.SagaMachine).GetContext(ctx, &lat, `SELECT
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)), 0) AS p50,
		coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)), 0) AS p99,
		coalesce(max(extract(epoch FROM updated_at - created_at)), 0) AS max
		FROM saga_instances WHERE status IN ('completed', 'failed')`); err != nil {
		return fmt.Errorf("chaos: saga latency: %w", err)
	}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	r.LatencyP50, r.LatencyP99, r.LatencyMax = sec(lat.P50), sec(lat.P99), sec(lat.Max)

	end := r.Quiet
	if r.FaultsEnd.After(end) {
		end = r.FaultsEnd
	}
	n := int(end.Sub(r.TrafficStart)/BucketWidth) + 1
	r.Timeline = make([]Bucket, n)
	for i := range r.Timeline {
		r.Timeline[i] = Bucket{From: time.Duration(i) * BucketWidth, Lag: -1}
	}
	at := func(t time.Time) int {
		i := int(t.Sub(r.TrafficStart) / BucketWidth)
		return min(max(i, 0), n-1)
	}
	for _, o := range l.offers {
		r.Timeline[at(o.scheduled)].Offered++
		if !o.accepted.IsZero() {
			r.Timeline[at(o.accepted)].Accepted++
		}
	}
	var times []struct {
		Created time.Time `db:"created_at"`
		Updated time.Time `db:"updated_at"`
		Final   bool      `db:"final"`
	}
	if err := s.DB(procstack.SagaMachine).SelectContext(ctx, &times, `SELECT created_at, updated_at,
		status IN ('completed', 'failed') AS final FROM saga_instances`); err != nil {
		return fmt.Errorf("chaos: saga times: %w", err)
	}
	for _, t := range times {
		r.Timeline[at(t.Created)].Started++
		if t.Final {
			r.Timeline[at(t.Updated)].Finished++
		}
	}
	samples := mon.all()
	r.MonitorSamples = len(samples)
	mon.smu.Lock()
	r.MonitorErrors = mon.errors
	mon.smu.Unlock()
	for _, sm := range samples {
		bk := &r.Timeline[at(sm.at)]
		bk.Lag = max(bk.Lag, sm.lag(mon.groups))
	}
	for _, f := range r.Faults {
		if !f.At.IsZero() {
			bk := &r.Timeline[at(f.At)]
			bk.Faults = append(bk.Faults, f.Name())
		}
	}
	return nil
}

// percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of sorted
// durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// recoveryGroup is the recovery times of one kind of fault.
type recoveryGroup struct {
	name   string
	times  []time.Duration
	missed int
}

// recoveries groups the faults' recovery times by kind (kills by service),
// each sorted.
func (r *Report) recoveries() []recoveryGroup {
	by := map[string]*recoveryGroup{}
	var order []string
	for _, f := range r.Faults {
		if f.At.IsZero() {
			continue
		}
		name := f.Kind
		if f.Kind == KindKill {
			name = KindKill + " " + f.replica.Service.Name
		}
		g := by[name]
		if g == nil {
			g = &recoveryGroup{name: name}
			by[name] = g
			order = append(order, name)
		}
		if d, ok := f.Recovery(); ok {
			g.times = append(g.times, d)
		} else {
			g.missed++
		}
	}
	sort.Strings(order)
	var out []recoveryGroup
	var all recoveryGroup
	all.name = "all faults"
	for _, name := range order {
		g := by[name]
		slices.Sort(g.times)
		out = append(out, *g)
		all.times = append(all.times, g.times...)
		all.missed += g.missed
	}
	slices.Sort(all.times)
	return append(out, all)
}

// collectActs counts the aborts and cancels and checks, from deals'
// database, that each deal (or every deal of a basket) whose abort was
// answered 200 ended failed and each deal (or every deal of a basket)
// whose cancel was answered 202 ended cancelled.
func (r *Report) collectActs(ctx context.Context, s *procstack.Stack, l *load) error {
	var rows []struct {
		ID       string `db:"id"`
		Status   string `db:"status"`
		BasketID string `db:"basket_id"`
	}
	if err := s.DB(procstack.Deals).SelectContext(ctx, &rows, `SELECT id, status, coalesce(basket_id, '') AS basket_id FROM deals`); err != nil {
		return fmt.Errorf("chaos: read the deals' statuses: %w", err)
	}
	// By deal id, and by basket id: failed when all its deals are, else
	// the status of one that is not.
	status := make(map[string]string, len(rows))
	for _, row := range rows {
		status[row.ID] = row.Status
		if b := row.BasketID; b != "" && (status[b] == "" || status[b] == "failed") {
			status[b] = row.Status
		}
	}
	r.judgeActs(l.offers, status)
	// The cancels that reached a saga an abort (or a failure) had stopped
	// first: late entries of its timeline, not dead letters.
	if err := s.DB(procstack.SagaMachine).GetContext(ctx, &r.LateStops,
		`SELECT count(*) FROM saga_history WHERE kind = 'late' AND event = 'CANCEL_REQUESTED'`); err != nil {
		return fmt.Errorf("chaos: count the late cancellations: %w", err)
	}
	if r.LateStops < r.RacedBothDone {
		r.problem("%d raced aborts and cancels were both accepted, but only %d cancellations are late entries of the timelines", r.RacedBothDone, r.LateStops)
	}
	return nil
}

// judgeActs counts the aborts and cancels of offers into r (those of
// baskets apart), and lists as problems those refused or never answered,
// and those done whose deal's or basket's status (by id) is not failed
// (abort) or cancelled (cancel). Of an abort raced by a cancel, the one
// done decides: failed when the abort was done (200; the cancel, done or
// not, found the saga stopped), else cancelled when the cancel was (202).
func (r *Report) judgeActs(offers []*offer, status map[string]string) {
	listed := 0
	for _, o := range offers {
		if o.act == "" || o.id == "" {
			continue
		}
		type judged struct {
			act string
			out actOutcome
		}
		acts := []judged{{o.act, o.actOut}}
		if o.raced {
			acts = append(acts, judged{actCancel, o.raceOut})
			r.RacedActs++
			if o.actOut.status == http.StatusOK && o.raceOut.status == http.StatusAccepted {
				r.RacedBothDone++
			}
		}
		for _, j := range acts {
			a, want, done := &r.Aborts, "failed", http.StatusOK
			if j.act == actCancel {
				a, want, done = &r.Cancels, "cancelled", http.StatusAccepted
			}
			what := "deal"
			if o.lines != nil {
				what = "basket"
				a = &r.BasketAborts
				if j.act == actCancel {
					a = &r.BasketCancels
				}
			}
			if o.raced && o.actOut.status == http.StatusOK {
				want = "failed" // the abort won the race
			}
			a.Sent++
			a.Attempts += j.out.attempts
			switch {
			case j.out.status == done:
				a.Done++
				if got := status[o.id]; got != want {
					if listed++; listed <= 5 {
						r.problem("%s %s: its %s was answered %d, but the %s is %q, want %s", what, o.id, j.act, done, what, got, want)
					}
				}
			case j.out.status == http.StatusConflict:
				a.TooLate++
			case j.out.refused != "":
				a.Refused++
				if listed++; listed <= 5 {
					r.problem("%s of %s %s refused: %s", j.act, what, o.id, j.out.refused)
				}
			default:
				a.GaveUp++
				if listed++; listed <= 5 {
					r.problem("%s of %s %s not answered after %d attempts over %s: %s", j.act, what, o.id, j.out.attempts, r.Config.RetryFor, j.out.gaveUp)
				}
			}
		}
	}
	if listed > 5 {
		r.problem("%d aborts or cancels went wrong in all", listed)
	}
}

// Format writes the report as text.
func (r *Report) Format(w io.Writer) {
	c := r.Config
	ms := func(d time.Duration) string {
		if d >= 10*time.Second {
			return d.Round(100 * time.Millisecond).String()
		}
		return d.Round(time.Millisecond).String()
	}
	fmt.Fprintf(w, "chaos run: seed %d; %d sagas offered at %g/s from %d users over %s (open loop, fell behind by at most %s)\n",
		c.Seed, r.Offered, c.Rate, c.Users, ms(r.TrafficEnd.Sub(r.TrafficStart)), ms(r.Behind))
	fmt.Fprintf(w, "  %s\n", r.Machine)
	fmt.Fprintf(w, "  wall time %s (build and servers included); faults over %s after the traffic ended, at rest %s after that\n",
		ms(r.Elapsed), ms(max(r.FaultsEnd.Sub(r.TrafficEnd), 0)), ms(r.Quiet.Sub(r.FaultsEnd)))
	fmt.Fprintf(w, "deals: %d accepted, %d of them baskets (%d POST /deals or /baskets sent; %d answered from an earlier attempt by Idempotency-Key), %d refused, %d given up\n",
		r.Accepted, r.Baskets, r.Attempts, r.Replayed, r.Refused, r.GaveUp)
	fmt.Fprintf(w, "deposits: %d offered, %d accepted, %d given up\n", r.Deposits, r.DepositsAccepted, r.DepositsGaveUp)
	fmt.Fprintf(w, "operator aborts of deals: %s; client cancels of deals: %s\n", r.Aborts, r.Cancels)
	fmt.Fprintf(w, "operator aborts of baskets: %s; client cancels of baskets: %s\n", r.BasketAborts, r.BasketCancels)
	fmt.Fprintf(w, "aborts raced by a cancel: %d, both accepted in %d; late cancellations in the timelines: %d\n", r.RacedActs, r.RacedBothDone, r.LateStops)
	fmt.Fprintf(w, "sagas: %s; deals %s; profile decisions %s, reversals %s (failed after approval %d)\n",
		counts(r.Check.Sagas), counts(r.Check.Deals), counts(r.Check.Decisions), counts(r.Check.Reversals), r.Check.FailedAfterApproval)
	fmt.Fprintf(w, "  saga duration (created → final): p50 %s, p99 %s, max %s\n", ms(r.LatencyP50), ms(r.LatencyP99), ms(r.LatencyMax))
	fmt.Fprintf(w, "checked from the databases: %d notifications, %d portfolios; lost %d, doubled %d, other violations %d, dead letters %d\n",
		r.Check.Notifications, r.Check.Portfolios, r.Lost, r.Doubled, r.otherViolations(), len(r.Check.DeadLetters))
	fmt.Fprintf(w, "consumer lag at the end: %s; outboxes %s\n", lags(r.Activity.Lag), counts(r.Activity.Outbox))

	kinds := map[string]int{}
	injected, skipped := 0, 0
	for _, f := range r.Faults {
		if f.Skipped {
			skipped++
		}
		if !f.At.IsZero() {
			injected++
			k := f.Kind
			if f.Kind == KindKill {
				k = KindKill + " " + f.replica.Service.Name
			}
			kinds[k]++
		}
	}
	fmt.Fprintf(w, "faults injected: %d (%s); extra kills skipped as due after the traffic: %d; processes exited unasked: %d\n",
		injected, counts(kinds), skipped, len(r.Unasked))
	fmt.Fprintf(w, "recovery = from the fault to the first offset commit, past where it stood while stopped, of every consumer group it hit on the partitions it hit\n")
	fmt.Fprintf(w, "  (a kill or pause: its service's group on the process's partitions; the broker or PostgreSQL: all four groups):\n")
	for _, g := range r.recoveries() {
		missed := ""
		if g.missed > 0 {
			missed = fmt.Sprintf(", %d not seen to resume", g.missed)
		}
		fmt.Fprintf(w, "  %-24s n=%-3d p50 %-8s p99 %-8s max %s%s\n", g.name, len(g.times),
			ms(percentile(g.times, 50)), ms(percentile(g.times, 99)), ms(percentile(g.times, 100)), missed)
	}
	fmt.Fprintf(w, "faults:\n")
	for _, f := range r.Faults {
		if f.Skipped {
			fmt.Fprintf(w, "  %-36s skipped (due after the traffic)\n", f.Name())
			continue
		}
		if f.At.IsZero() {
			fmt.Fprintf(w, "  %-36s not injected\n", f.Name())
			continue
		}
		rec := "not seen to resume"
		if d, ok := f.Recovery(); ok {
			rec = "recovered " + ms(d)
		}
		if f.Err != "" {
			rec = "ERROR " + f.Err
		}
		note := ""
		if !f.DuringTraffic {
			note = " (after the traffic)"
		}
		fmt.Fprintf(w, "  +%-7s %-26s down %-8s ready %-8s after; %s%s\n", ms(f.At.Sub(r.TrafficStart)), f.Name(),
			ms(f.Back.Sub(f.At)), ms(f.Ready.Sub(f.Back)), rec, note)
		if f.Kind == KindPause {
			if f.Moved.IsZero() {
				fmt.Fprintf(w, "           its partitions were not seen to move to another member while it was paused\n")
			} else {
				fmt.Fprintf(w, "           its partitions moved to another member %s after SIGSTOP\n", ms(f.Moved.Sub(f.At)))
			}
			if len(f.LockWaits) == 0 {
				fmt.Fprintf(w, "           lock waits in PostgreSQL before SIGCONT: none\n")
			}
			for _, lw := range f.LockWaits {
				fmt.Fprintf(w, "           lock waits in PostgreSQL before SIGCONT: %s\n", lw)
			}
		}
	}
	fmt.Fprintf(w, "throughput per %s (offered / accepted by deals / sagas started / sagas final; max consumer lag):\n", BucketWidth)
	for _, b := range r.Timeline {
		lag := "-"
		if b.Lag >= 0 {
			lag = fmt.Sprint(b.Lag)
		}
		faults := ""
		if len(b.Faults) > 0 {
			faults = "  ← " + strings.Join(b.Faults, ", ")
		}
		fmt.Fprintf(w, "  %4.0fs %5d %5d %5d %5d  lag %5s%s\n", b.From.Seconds(), b.Offered, b.Accepted, b.Started, b.Finished, lag, faults)
	}
	if len(r.Unasked) > 0 {
		fmt.Fprintf(w, "exits nobody asked for:\n  %s\n", strings.Join(r.Unasked, "\n  "))
		fmt.Fprintf(w, "supervisor:\n  %s\n", strings.Join(r.Restarts, "\n  "))
	}
	if len(r.Check.DeadLetters) > 0 {
		fmt.Fprintf(w, "dead letters (the scenario expects none):\n  %s\n", strings.Join(r.Check.DeadLetters, "\n  "))
	}
	if err := r.Err(); err != nil {
		fmt.Fprintf(w, "RESULT: FAILED\n%v\n", err)
	} else {
		fmt.Fprintf(w, "RESULT: OK (every saga final, every invariant kept, lost 0, doubled 0, lag 0)\n")
	}
}

// otherViolations is how many of Check's violations are neither lost nor
// doubled effects.
func (r *Report) otherViolations() int {
	n := 0
	for k, v := range r.Check.Broken {
		switch k {
		case procstack.BrokenNotFinal, procstack.BrokenNotTerminal, procstack.BrokenNotifyMissing, procstack.BrokenCashOver,
			procstack.BrokenNotifyExtra, procstack.BrokenCashShort:
		default:
			n += v
		}
	}
	return n
}

func counts(m map[string]int) string { return joinSorted(m, "none") }

func lags(m map[string]int64) string { return joinSorted(m, "unknown") }

// joinSorted lists m as "key value" pairs in key order, or says empty when
// m has none.
func joinSorted[V int | int64](m map[string]V, empty string) string {
	if len(m) == 0 {
		return empty
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// Machine is where and when a run ran, for the record.
type Machine struct {
	// Date is when the run began (UTC).
	Date time.Time
	// Commit is the repository's HEAD, with "+dirty" when the working
	// tree differs from it (as git describes it); empty when unknown.
	Commit string
	// CPUs is runtime.NumCPU; GoVersion the toolchain of the run.
	CPUs      int
	GoVersion string
	// LoadStart and LoadEnd are the 1-minute load averages
	// (/proc/loadavg) at the start and the end of the run (-1: unknown).
	LoadStart, LoadEnd float64
}

// String is the machine as the report's second line shows it.
func (m Machine) String() string {
	commit := m.Commit
	if commit == "" {
		commit = "unknown"
	}
	load := func(v float64) string {
		if v < 0 {
			return "?"
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return fmt.Sprintf("%s, commit %s, %s, %d CPUs, load average %s at the start, %s at the end",
		m.Date.UTC().Format("2006-01-02 15:04 UTC"), commit, m.GoVersion, m.CPUs, load(m.LoadStart), load(m.LoadEnd))
}

// machine describes this machine for a run that began at began, with
// the load average loadStart then.
func machine(ctx context.Context, repo string, began time.Time, loadStart float64) Machine {
	m := Machine{Date: began.UTC(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadStart, LoadEnd: loadAvg()}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "git", "describe", "--always", "--dirty=+dirty", "--abbrev=12", "--exclude=*")
	cmd.Dir = repo
	if out, err := cmd.Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

// loadAvg is the 1-minute load average, -1 when /proc/loadavg is not
// there.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}
