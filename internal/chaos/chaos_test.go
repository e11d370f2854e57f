package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// fakeStack is a Stack that runs nothing: its services and replicas only,
// as plan reads them (profile with two replicas, as Run starts it).
func fakeStack(tb testing.TB) *procstack.Stack {
	tb.Helper()
	s := &procstack.Stack{}
	mk := func(name string, n int) *procstack.Service {
		sv := &procstack.Service{Name: name}
		for i := range n {
			sv.Replicas = append(sv.Replicas, &procstack.Replica{Service: sv, Index: i, InstanceID: fmt.Sprintf("%s-%d", name, i)})
		}
		return sv
	}
	s.SagaMachine, s.Deals, s.Profile, s.Notification = mk(procstack.SagaMachine, 1), mk(procstack.Deals, 1), mk(procstack.Profile, 2), mk(procstack.Notification, 1)
	return s
}

// kindsOf counts the faults by kind, kills by service.
func kindsOf(faults []*Fault) map[string]int {
	got := map[string]int{}
	for _, f := range faults {
		k := f.Kind
		if f.Kind == KindKill {
			k += " " + f.replica.Service.Name
		}
		got[k]++
	}
	return got
}

// TestPlanEachKindOnce: the short run's plan kills every service once,
// restarts the broker and PostgreSQL once, pauses one profile replica, all
// between the warm-up and the tail, in order, the same for the same seed.
func TestPlanEachKindOnce(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 42, 1 << 40} {
		cfg := Short()
		cfg.Seed = seed
		cfg = cfg.withDefaults()
		s := fakeStack(t)
		traffic := time.Duration(float64(cfg.Sagas) / cfg.Rate * float64(time.Second))
		faults := plan(cfg, s, traffic)
		want := map[string]int{
			KindKill + " " + procstack.SagaMachine: 1, KindKill + " " + procstack.Deals: 1,
			KindKill + " " + procstack.Profile: 1, KindKill + " " + procstack.Notification: 1,
			KindKafka: 1, KindPostgres: 1, KindPause: 1,
		}
		got := kindsOf(faults)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("seed %d: faults by kind = %v, want %v", seed, got, want)
		}
		for i, f := range faults {
			if f.Planned < cfg.Warmup || f.Planned > traffic-cfg.Tail {
				t.Errorf("seed %d: %s planned at %s, want within [%s, %s]", seed, f.Name(), f.Planned, cfg.Warmup, traffic-cfg.Tail)
			}
			if i > 0 && f.Planned < faults[i-1].Planned {
				t.Errorf("seed %d: %s at %s planned before the previous fault (%s)", seed, f.Name(), f.Planned, faults[i-1].Planned)
			}
			if f.Kind == KindPause {
				if f.replica == nil || f.replica.Service.Name != cfg.PauseService || f.down != cfg.Pause {
					t.Errorf("seed %d: pause %+v, want a %s replica paused %s", seed, f, cfg.PauseService, cfg.Pause)
				}
			}
			if f.Kind == KindKill && (f.down < cfg.DownMin || f.down > cfg.DownMax) {
				t.Errorf("seed %d: %s down %s, want within [%s, %s]", seed, f.Name(), f.down, cfg.DownMin, cfg.DownMax)
			}
		}
		again := plan(cfg, s, traffic)
		for i := range faults {
			if faults[i].Name() != again[i].Name() || faults[i].Planned != again[i].Planned {
				t.Fatalf("seed %d: fault %d is %s at %s, then %s at %s: the plan is not reproducible",
					seed, i, faults[i].Name(), faults[i].Planned, again[i].Name(), again[i].Planned)
			}
		}
	}
}

// TestPlanKillEvery: the long run's plan kills every service in its first
// round, then any process, about every KillEvery, plus one broker restart,
// one PostgreSQL restart and one pause.
func TestPlanKillEvery(t *testing.T) {
	cfg := Long()
	cfg.Seed = 7
	cfg = cfg.withDefaults()
	s := fakeStack(t)
	traffic := time.Duration(float64(cfg.Sagas) / cfg.Rate * float64(time.Second))
	faults := plan(cfg, s, traffic)
	var kills []*Fault
	for _, f := range faults {
		if f.Kind == KindKill {
			kills = append(kills, f)
		}
	}
	first := map[string]bool{}
	for _, f := range kills[:4] {
		first[f.replica.Service.Name] = true
	}
	if len(first) != 4 {
		t.Errorf("the first four kills hit %v, want every service", first)
	}
	for i, f := range kills {
		if f.extra != (i >= 4) {
			t.Errorf("kill %d (%s): extra = %v, want %v (only kills after each service's first may be skipped)", i, f.Name(), f.extra, i >= 4)
		}
	}
	span := traffic - cfg.Warmup - cfg.Tail
	if lo, hi := int(span/(cfg.KillEvery*3/2)), int(span/(cfg.KillEvery/2))+1; len(kills) < lo || len(kills) > hi {
		t.Errorf("%d kills over %s, want between %d and %d (one every %s on average)", len(kills), span, lo, hi, cfg.KillEvery)
	}
	for i := 1; i < len(kills); i++ {
		if gap := kills[i].Planned - kills[i-1].Planned; gap < cfg.KillEvery/2 || gap > cfg.KillEvery*3/2 {
			t.Errorf("kills %d and %d %s apart, want within [%s, %s]", i-1, i, gap, cfg.KillEvery/2, cfg.KillEvery*3/2)
		}
	}
	got := kindsOf(faults)
	for _, k := range []string{KindKafka, KindPostgres, KindPause} {
		if got[k] != 1 {
			t.Errorf("%d faults of kind %s, want 1", got[k], k)
		}
	}
}

// sampleOf is a sample at offset at of base where group svc committed off
// on partition 0 of topic "t".
func sampleOf(base time.Time, at time.Duration, committed map[string]int64) sample {
	s := sample{at: base.Add(at), committed: map[string]map[tp]int64{}}
	for svc, off := range committed {
		s.committed[svc] = map[tp]int64{{"t", 0}: off}
	}
	return s
}

func TestResolve(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := []tp{{"t", 0}}
	samples := []sample{
		sampleOf(base, 1*time.Second, map[string]int64{"a": 10, "b": 5}),
		sampleOf(base, 2*time.Second, map[string]int64{"a": 11, "b": 5}),
		sampleOf(base, 3*time.Second, map[string]int64{"a": 12, "b": 6}),
	}
	// The partition ends at offset 6: b lags by one until 3s, when it has
	// caught up.
	samples[0].ends = map[tp]int64{{"t", 0}: 6, {"empty", 0}: 0}
	samples[1].ends = map[tp]int64{{"t", 0}: 6, {"empty", 0}: 0}
	samples[2].ends = map[tp]int64{{"t", 0}: 6, {"empty", 0}: 0}
	tests := []struct {
		name     string
		f        Fault
		resumed  time.Duration // 0: not resumed
		recovery time.Duration
	}{
		{"one group moves in the next sample",
			Fault{At: base, after: base.Add(500 * time.Millisecond), based: true,
				affected: map[string][]tp{"a": p}, baseline: sampleOf(base, 0, map[string]int64{"a": 10})},
			2 * time.Second, 2 * time.Second},
		{"every group it hit must move",
			Fault{At: base, after: base, based: true,
				affected: map[string][]tp{"a": p, "b": p}, baseline: sampleOf(base, 0, map[string]int64{"a": 10, "b": 5})},
			3 * time.Second, 3 * time.Second},
		{"samples before after do not count",
			Fault{At: base, after: base.Add(2500 * time.Millisecond), based: true,
				affected: map[string][]tp{"a": p}, baseline: sampleOf(base, 0, map[string]int64{"a": 10})},
			3 * time.Second, 3 * time.Second},
		{"never moved past the baseline",
			Fault{At: base, after: base, based: true,
				affected: map[string][]tp{"b": p}, baseline: sampleOf(base, 0, map[string]int64{"b": 6})},
			0, 0},
		{"caught up after ready: nothing left to resume",
			Fault{At: base, after: base, Ready: base.Add(1500 * time.Millisecond), based: true,
				affected: map[string][]tp{"b": p}, baseline: sampleOf(base, 0, map[string]int64{"b": 6})},
			3 * time.Second, 3 * time.Second},
		{"caught up before ready does not count",
			Fault{At: base, after: base, Ready: base.Add(3500 * time.Millisecond), based: true,
				affected: map[string][]tp{"b": p}, baseline: sampleOf(base, 0, map[string]int64{"b": 6})},
			0, 0},
		{"an empty partition the group never committed on is caught up",
			Fault{At: base, after: base, Ready: base.Add(1500 * time.Millisecond), based: true,
				affected: map[string][]tp{"b": p, "c": {{"empty", 0}}}, baseline: sampleOf(base, 0, map[string]int64{"b": 6})},
			3 * time.Second, 3 * time.Second},
		{"a partition with records the group never committed on is not",
			Fault{At: base, after: base, Ready: base.Add(1500 * time.Millisecond), based: true,
				affected: map[string][]tp{"b": p, "c": p}, baseline: sampleOf(base, 0, map[string]int64{"b": 6})},
			0, 0},
		{"no baseline: not resolved",
			Fault{At: base, after: base, affected: map[string][]tp{"a": p}},
			0, 0},
		{"a failed fault is not resolved",
			Fault{At: base, after: base, based: true, Err: "restart: boom",
				affected: map[string][]tp{"a": p}, baseline: sampleOf(base, 0, map[string]int64{"a": 0})},
			0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			resolve([]*Fault{&f}, samples)
			d, ok := f.Recovery()
			if ok != (tt.resumed != 0) || d != tt.recovery {
				t.Errorf("Recovery() = %s, %v; want %s, %v", d, ok, tt.recovery, tt.resumed != 0)
			}
			if tt.resumed != 0 && !f.Resumed.Equal(base.Add(tt.resumed)) {
				t.Errorf("Resumed = %s, want %s", f.Resumed.Sub(base), tt.resumed)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ds := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{ds(7), 50, 7 * time.Millisecond},
		{ds(7), 99, 7 * time.Millisecond},
		{ds(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ds(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ds(1, 2, 3), 100, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %g) = %s, want %s", tt.sorted, tt.p, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errors.New("dial tcp: connection refused"), true},
		{&procstack.StatusError{Status: 500}, true},
		{&procstack.StatusError{Status: 503}, true},
		{&procstack.StatusError{Status: 408}, true},
		{&procstack.StatusError{Status: 429}, true},
		{fmt.Errorf("post: %w", &procstack.StatusError{Status: 502}), true},
		{&procstack.StatusError{Status: 400}, false},
		{&procstack.StatusError{Status: 403}, false},
		{&procstack.StatusError{Status: 409}, false},
		{&procstack.StatusError{Status: 422}, false},
	}
	for _, tt := range tests {
		if got, _ := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 10 {
		d := backoff(n, rng)
		ceil := min(200*time.Millisecond<<min(n, 4), 2*time.Second)
		if d < ceil/2 || d > ceil {
			t.Errorf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" for valid
	}{
		{"short", func(*Config) {}, ""},
		{"pause too short", func(c *Config) { c.Pause = time.Second }, "Pause"},
		{"unknown pause service", func(c *Config) { c.PauseService = "kafka" }, "PauseService"},
		{"traffic shorter than warm-up and tail", func(c *Config) { c.Sagas, c.Rate = 10, 10 }, "shorter than Warmup + Tail"},
		{"aborts and cancels over 100 per cent", func(c *Config) { c.Aborts, c.Cancels = 60, 41 }, "more than 100 per cent"},
		{"aborts, cancels and baskets over 100 per cent", func(c *Config) { c.Aborts, c.Cancels, c.Baskets = 30, 30, 41 }, "more than 100 per cent"},
		{"all aborted", func(c *Config) { c.Aborts, c.Cancels, c.Baskets = 100, -1, -1 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Short()
			tt.mod(&cfg)
			err := cfg.withDefaults().validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("validate() = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Seed == 0 || c.runID == "" {
		t.Errorf("seed %d, run id %q: want both drawn", c.Seed, c.runID)
	}
	if c.Pause <= c.MinGap || c.PauseService != procstack.Profile || c.DownMax < c.DownMin {
		t.Errorf("defaults %+v: want a pause longer than the gap on profile, DownMin ≤ DownMax", c)
	}
	if c.Aborts != 3 || c.Cancels != 3 || c.ActWithin != time.Second || c.Baskets != 5 {
		t.Errorf("aborts %d%%, cancels %d%% within %s, baskets %d%%: want 3, 3, 1s, 5", c.Aborts, c.Cancels, c.ActWithin, c.Baskets)
	}
	kept := Config{Seed: 9, Sagas: 5, Rate: 1, DepositEvery: -1, Aborts: -1, Cancels: 7}.withDefaults()
	if kept.Seed != 9 || kept.Sagas != 5 || kept.Rate != 1 || kept.DepositEvery != -1 || kept.Aborts != -1 || kept.Cancels != 7 {
		t.Errorf("withDefaults changed set fields: %+v", kept)
	}
}

func TestFunding(t *testing.T) {
	tests := []struct {
		sagas, users int
		want         string
	}{
		{1000, 50, "320.00"},
		{10000, 200, "800.00"},
		{10, 50, "100.00"},
	}
	for _, tt := range tests {
		if got := (Config{Sagas: tt.sagas, Users: tt.users}).funding(); got != tt.want {
			t.Errorf("funding of %d sagas over %d users = %s, want %s", tt.sagas, tt.users, got, tt.want)
		}
	}
}

// TestMakeOffer: offers are reproducible from the seed, each with its own
// Idempotency-Key, and the mix has buys, sells and unaffordable buys.
func TestMakeOffer(t *testing.T) {
	cfg := Config{Seed: 11, Users: 5, runID: "r"}.withDefaults()
	l := &load{cfg: cfg}
	for i := range cfg.Users {
		l.users = append(l.users, user{name: fmt.Sprint("u", i), portfolio: fmt.Sprint("p", i)})
	}
	keys := map[string]bool{}
	kinds := map[string]int{}
	for n := range 500 {
		o := l.makeOffer(n)
		if again := l.makeOffer(n); again.deal != o.deal || again.user != o.user || again.key != o.key || again.act != o.act || again.actIn != o.actIn || again.raced != o.raced ||
			!slices.Equal(again.lines, o.lines) {
			t.Fatalf("offer %d: %+v then %+v", n, o, again)
		}
		if keys[o.key] {
			t.Fatalf("offer %d reuses Idempotency-Key %s", n, o.key)
		}
		keys[o.key] = true
		if o.actIn < 0 || o.actIn > cfg.ActWithin || (o.act == "" && o.actIn != 0) {
			t.Errorf("offer %d: %q after %s, want within %s, and no delay without an act", n, o.act, o.actIn, cfg.ActWithin)
		}
		buyOnly := o.user == "u0" // the first fifth of 5 users
		if o.lines != nil {
			kinds["basket"]++
			seen := map[string]bool{}
			for _, ln := range o.lines {
				if ln.Side != "buy" || seen[ln.Instrument] {
					t.Errorf("offer %d: basket lines %+v, want buys of distinct instruments", n, o.lines)
				}
				seen[ln.Instrument] = true
			}
			if len(o.lines) < 2 || len(o.lines) > 3 {
				t.Errorf("offer %d: a basket of %d lines, want 2 or 3", n, len(o.lines))
			}
			switch o.act {
			case actAbort:
				kinds["aborted basket"]++
			case actCancel:
				kinds["cancelled basket"]++
			}
		}
		if o.raced {
			kinds["raced"]++
			if o.act != actAbort {
				t.Errorf("offer %d: %s raced by a cancel, want only aborts raced", n, o.act)
			}
		}
		if o.act != "" {
			kinds[o.act]++
			if o.actIn == 0 {
				kinds[o.act+" at once"]++
			}
		}
		if buyOnly != (o.act != "" || o.lines != nil) || (buyOnly && o.deal.Side != "buy") {
			t.Errorf("offer %d: %s %s (basket %v) by %s: want every abort, cancel and basket a buy of u0, and u0's offers all of those", n, o.act, o.deal.Side, o.lines != nil, o.user)
		}
		switch {
		case o.deal.Quantity == "1000":
			kinds["unaffordable"]++
		default:
			kinds[o.deal.Side]++
		}
	}
	for _, k := range []string{"buy", "sell", "unaffordable", "basket", "aborted basket", "cancelled basket", "raced", actAbort, actCancel, actAbort + " at once", actCancel + " at once"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among 500 offers (%v)", k, kinds)
		}
	}
	// Config.Aborts, Cancels and Baskets negative: nothing is aborted or
	// cancelled, no basket offered.
	l.cfg.Aborts, l.cfg.Cancels, l.cfg.Baskets = -1, -1, -1
	users := map[string]bool{}
	for n := range 500 {
		o := l.makeOffer(n)
		if o.act != "" || o.lines != nil || o.raced {
			t.Fatalf("offer %d: %s (basket %v, raced %v) with Aborts, Cancels and Baskets -1", n, o.act, o.lines != nil, o.raced)
		}
		users[o.user] = true
	}
	if len(users) != cfg.Users {
		t.Errorf("without aborts and cancels, offers from %d users, want all %d", len(users), cfg.Users)
	}
}

// TestJudgeActs: an abort answered 200 must leave its deal failed and a
// cancel answered 202 cancelled; 409 is too late and judged by nothing
// else; a refusal or no answer is a problem; offers without an act or
// never accepted are not counted.
func TestJudgeActs(t *testing.T) {
	offers := []*offer{
		{id: "d1", act: actAbort, actOut: actOutcome{status: 200, attempts: 1}},
		{id: "d2", act: actAbort, actOut: actOutcome{status: 409, attempts: 2}},
		{id: "d3", act: actCancel, actOut: actOutcome{status: 202, attempts: 1}},
		{id: "d4", act: actCancel, actOut: actOutcome{status: 409, attempts: 1}},
		{id: "d5"},                      // no act
		{act: actAbort, refused: "400"}, // never accepted
		// Baskets: the id names all its deals, failed or cancelled;
		// counted apart from the deals.
		{id: "b1", lines: []procstack.Line{{}, {}}, act: actAbort, actOut: actOutcome{status: 200, attempts: 1}},
		{id: "b2", lines: []procstack.Line{{}, {}}, act: actCancel, actOut: actOutcome{status: 202, attempts: 3}},
		{id: "b3", lines: []procstack.Line{{}}, act: actCancel, actOut: actOutcome{status: 409, attempts: 1}},
	}
	status := map[string]string{"d1": "failed", "d2": "executed", "d3": "cancelled", "d4": "rejected", "d5": "executed", "b1": "failed",
		"b2": "cancelled", "b3": "executed"}
	r := &Report{}
	r.judgeActs(offers, status)
	for _, c := range []struct {
		name      string
		got, want Acts
	}{
		{"aborts", r.Aborts, Acts{Sent: 2, Done: 1, TooLate: 1, Attempts: 3}},
		{"cancels", r.Cancels, Acts{Sent: 2, Done: 1, TooLate: 1, Attempts: 2}},
		{"basket aborts", r.BasketAborts, Acts{Sent: 1, Done: 1, Attempts: 1}},
		{"basket cancels", r.BasketCancels, Acts{Sent: 2, Done: 1, TooLate: 1, Attempts: 4}},
	} {
		if c.got != c.want {
			t.Errorf("%s %+v, want %+v", c.name, c.got, c.want)
		}
	}
	if len(r.Problems) != 0 {
		t.Errorf("problems %q, want none", r.Problems)
	}

	// The same acts answered done, but the deals settled anyway: broken.
	status["d1"], status["d3"], status["b1"] = "executed", "failed", "executed"
	offers = append(offers,
		&offer{id: "d6", act: actCancel, actOut: actOutcome{refused: "404 not found", attempts: 1}},
		&offer{id: "d7", act: actAbort, actOut: actOutcome{gaveUp: "connection refused", attempts: 9}})
	r = &Report{}
	r.judgeActs(offers, status)
	for _, want := range []string{`deal d1: its abort was answered 200, but the deal is "executed", want failed`,
		`deal d3: its cancel was answered 202, but the deal is "failed", want cancelled`,
		`basket b1: its abort was answered 200, but the basket is "executed", want failed`,
		"cancel of deal d6 refused: 404 not found", "abort of deal d7 not answered after 9 attempts"} {
		if !strings.Contains(strings.Join(r.Problems, "\n"), want) {
			t.Errorf("problems %q lack %q", r.Problems, want)
		}
	}
	if r.Err() == nil || r.Aborts.GaveUp != 1 || r.Cancels.Refused != 1 {
		t.Errorf("Err() = %v, aborts %+v, cancels %+v: want an error, one abort given up, one cancel refused", r.Err(), r.Aborts, r.Cancels)
	}
}

// TestJudgeRacedActs: of an abort raced by its client's cancel, the abort
// done (200) wants the deal failed whatever the cancel got; the cancel done
// (202) with the abort too late (409) wants it cancelled; both counted.
func TestJudgeRacedActs(t *testing.T) {
	raced := func(id string, abort, cancel int) *offer {
		return &offer{id: id, act: actAbort, raced: true,
			actOut: actOutcome{status: abort, attempts: 1}, raceOut: actOutcome{status: cancel, attempts: 1}}
	}
	offers := []*offer{raced("r1", 200, 202), raced("r2", 409, 202), raced("r3", 200, 409), raced("r4", 409, 409)}
	status := map[string]string{"r1": "failed", "r2": "cancelled", "r3": "failed", "r4": "executed"}
	r := &Report{}
	r.judgeActs(offers, status)
	if len(r.Problems) != 0 || r.RacedActs != 4 || r.RacedBothDone != 1 {
		t.Errorf("problems %q, raced %d, both done %d; want none, 4 and 1", r.Problems, r.RacedActs, r.RacedBothDone)
	}
	if want := (Acts{Sent: 4, Done: 2, TooLate: 2, Attempts: 4}); r.Aborts != want {
		t.Errorf("aborts %+v, want %+v", r.Aborts, want)
	}
	if want := (Acts{Sent: 4, Done: 2, TooLate: 2, Attempts: 4}); r.Cancels != want {
		t.Errorf("cancels %+v, want %+v", r.Cancels, want)
	}
	// The other way round: the abort won but the deal is cancelled, the
	// cancel won but the deal failed.
	status["r1"], status["r2"] = "cancelled", "failed"
	r = &Report{}
	r.judgeActs(offers, status)
	for _, want := range []string{`deal r1: its abort was answered 200, but the deal is "cancelled", want failed`,
		`deal r1: its cancel was answered 202, but the deal is "cancelled", want failed`,
		`deal r2: its cancel was answered 202, but the deal is "failed", want cancelled`} {
		if !strings.Contains(strings.Join(r.Problems, "\n"), want) {
			t.Errorf("problems %q lack %q", r.Problems, want)
		}
	}
}

// TestReportErr: a report with nothing wrong passes; each kind of problem
// fails it, and Format says which.
func TestReportErr(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clean := func() *Report {
		s := fakeStack(t)
		return &Report{Config: Short().withDefaults(), Began: start, TrafficStart: start, TrafficEnd: start.Add(time.Minute),
			Quiet: start.Add(70 * time.Second), Offered: 3, Accepted: 3,
			Faults: []*Fault{{Kind: KindKill, Target: "deals", replica: s.Deals.Replicas[0], At: start.Add(10 * time.Second),
				Back: start.Add(11 * time.Second), Ready: start.Add(12 * time.Second), Resumed: start.Add(13 * time.Second)}},
			Timeline: []Bucket{{Offered: 3, Accepted: 3, Started: 3, Finished: 3, Lag: 0}}}
	}
	r := clean()
	if err := r.Err(); err != nil {
		t.Fatalf("clean report: Err() = %v", err)
	}
	var b strings.Builder
	r.Format(&b)
	for _, want := range []string{"RESULT: OK", "kill -9 deals", "recovered 3s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("clean report's text lacks %q:\n%s", want, b.String())
		}
	}
	broken := []struct {
		name string
		mod  func(*Report)
	}{
		{"violation", func(r *Report) { r.Check.Violations = []string{"deal d1 has 2 notifications"} }},
		{"problem", func(r *Report) { r.problem("lost: 1") }},
	}
	skipped := clean()
	skipped.Faults = append(skipped.Faults, &Fault{Kind: KindKill, Target: "deals", replica: skipped.Faults[0].replica, extra: true, Skipped: true})
	var sb strings.Builder
	skipped.Format(&sb)
	for _, want := range []string{"extra kills skipped as due after the traffic: 1", "skipped (due after the traffic)", "RESULT: OK"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("a report with a skipped extra kill lacks %q:\n%s", want, sb.String())
		}
	}
	for _, tt := range broken {
		r := clean()
		tt.mod(r)
		if r.Err() == nil {
			t.Errorf("%s: Err() = nil, want an error", tt.name)
		}
		var b strings.Builder
		r.Format(&b)
		if !strings.Contains(b.String(), "RESULT: FAILED") {
			t.Errorf("%s: the text does not say FAILED:\n%s", tt.name, b.String())
		}
	}
}

func TestMoved(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := fakeStack(t)
	paused := s.Profile.Replicas[1]
	p0, p1 := tp{"cmd", 0}, tp{"cmd", 1}
	owners := func(at time.Duration, o0, o1 string) sample {
		return sample{at: base.Add(at), owner: map[string]map[tp]string{procstack.Profile: {p0: o0, p1: o1}}}
	}
	samples := []sample{
		owners(1*time.Second, "profile-1", "profile-0"),
		owners(20*time.Second, "", ""),                   // rebalancing: nobody
		owners(21*time.Second, "profile-1", "profile-0"), // still listed as its holder
		owners(22*time.Second, "profile-0", "profile-0"),
		owners(30*time.Second, "profile-1", "profile-0"),
	}
	tests := []struct {
		name string
		back time.Duration
		want time.Duration // 0: not moved
	}{
		{"moved once every partition it held has another owner", 25 * time.Second, 22 * time.Second},
		{"resumed before the move: not moved", 21500 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Fault{Kind: KindPause, replica: paused, At: base, Back: base.Add(tt.back),
				affected: map[string][]tp{procstack.Profile: {p0}}}
			moved([]*Fault{f}, samples)
			if tt.want == 0 {
				if !f.Moved.IsZero() {
					t.Errorf("Moved = +%s, want not moved", f.Moved.Sub(base))
				}
				return
			}
			if got := f.Moved.Sub(base); got != tt.want {
				t.Errorf("Moved = +%s, want +%s", got, tt.want)
			}
		})
	}
}
