package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// Kinds of fault.
const (
	KindKill     = "kill -9"            // SIGKILL a process, restart it after a moment
	KindPause    = "SIGSTOP"            // pause a replica past the session timeout, then SIGCONT
	KindKafka    = "Kafka restart"      // SIGKILL the broker, start it again
	KindPostgres = "PostgreSQL restart" // pg_ctl stop -m immediate, start again
)

// Fault is one fault the run injected and what it measured around it.
type Fault struct {
	// Kind is KindKill, KindPause, KindKafka or KindPostgres.
	Kind string
	// Target is the process (e.g. "profile#1"), "kafka" or "postgresql".
	Target string
	// Planned is when the plan put it, from the start of the traffic.
	Planned time.Duration
	// At is when it was injected (the signal sent, the server stopped).
	At time.Time
	// Back is when the process or server was started again (SIGCONT for a
	// pause).
	Back time.Time
	// Ready is when it answered again: a process's health URL, the
	// broker's answer to the monitor's reads (offsets and group members),
	// PostgreSQL's pg_isready (through scripts/up.sh).
	Ready time.Time
	// Resumed is when processing resumed on what the fault hit (see
	// Recovery); zero when it was not seen.
	Resumed time.Time
	// Err is a failure to inject or undo the fault.
	Err string
	// DuringTraffic is whether the generator was still offering deals.
	DuringTraffic bool
	// Skipped is set on an extra kill (Config.KillEvery, after every
	// service's first) planned while the traffic ran but due after it
	// ended: not injected, not a problem.
	Skipped bool
	// LockWaits is what PostgreSQL showed just before a pause ended:
	// sessions waiting for a lock, by database and by the session holding
	// it (its state, since when, its last statement). A paused process
	// that holds row locks in an open transaction stops the other
	// replicas' work on those rows whatever the consumer group does.
	LockWaits []string
	// Moved is, for a pause, when the broker's group description first
	// showed every partition the paused process held assigned to another
	// member (zero: never seen while it was paused, e.g. the pause was
	// shorter than the session timeout).
	Moved time.Time
	// extra marks the kills of Config.KillEvery after each service's
	// first (see Skipped).
	extra bool

	replica  *procstack.Replica
	down     time.Duration
	affected map[string][]tp // service → partitions the fault stopped
	baseline sample          // committed offsets while they were stopped
	based    bool
	after    time.Time // processing counts as resumed only in samples after this
}

// Name is the fault as the report shows it, e.g. "kill -9 profile#1".
func (f *Fault) Name() string {
	if f.Kind == KindKafka || f.Kind == KindPostgres {
		return f.Kind
	}
	return f.Kind + " " + f.Target
}

// Recovery is how long processing stopped: from the fault's injection (At)
// to the first moment the monitor saw every consumer group it hit commit
// past where it stood while stopped, on the partitions it hit (after the
// process or server was back; for a pause, whoever holds them by then).
// Zero with false when processing was not seen to resume.
func (f *Fault) Recovery() (time.Duration, bool) {
	if f.Resumed.IsZero() {
		return 0, false
	}
	return f.Resumed.Sub(f.At), true
}

// plan is the run's faults in order, each with its planned time.
func plan(cfg Config, s *procstack.Stack, traffic time.Duration) []*Fault {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xfa017))
	var kills []*procstack.Replica
	// Each service once first (a replicated service: one of its replicas),
	// in a random order.
	for _, sv := range rng.Perm(len(s.Services())) {
		reps := s.Services()[sv].Replicas
		kills = append(kills, reps[rng.IntN(len(reps))])
	}
	var faults []*Fault
	all := s.Replicas()
	pauseTarget := s.Service(cfg.PauseService).Replicas[rng.IntN(len(s.Service(cfg.PauseService).Replicas))]
	others := []*Fault{
		{Kind: KindKafka, Target: "kafka", down: cfg.ServerDown},
		{Kind: KindPostgres, Target: "postgresql", down: cfg.ServerDown},
		{Kind: KindPause, Target: pauseTarget.Name(), replica: pauseTarget, down: cfg.Pause},
	}
	kill := func(r *procstack.Replica) *Fault {
		down := cfg.DownMin + time.Duration(rng.Int64N(int64(cfg.DownMax-cfg.DownMin)+1))
		return &Fault{Kind: KindKill, Target: r.Name(), replica: r, down: down}
	}
	span := traffic - cfg.Warmup - cfg.Tail
	if cfg.KillEvery <= 0 {
		// Each kind once: every service killed once, the broker and
		// PostgreSQL restarted once, one pause, shuffled, spread evenly.
		for _, r := range kills {
			faults = append(faults, kill(r))
		}
		faults = append(faults, others...)
		rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
		slot := span / time.Duration(len(faults))
		for i, f := range faults {
			f.Planned = cfg.Warmup + time.Duration(i)*slot + time.Duration(rng.Int64N(int64(slot/4)+1))
		}
		return faults
	}
	// A kill about every KillEvery (uniform in ½..1½ of it), every
	// service in the first round, then any process; the broker, PostgreSQL
	// and the pause at random moments among them.
	for at, i := cfg.Warmup, 0; at < traffic-cfg.Tail; i++ {
		r := all[rng.IntN(len(all))]
		if i < len(kills) {
			r = kills[i]
		}
		f := kill(r)
		f.Planned = at
		f.extra = i >= len(kills)
		faults = append(faults, f)
		at += cfg.KillEvery/2 + time.Duration(rng.Int64N(int64(cfg.KillEvery)+1))
	}
	for _, f := range others {
		f.Planned = cfg.Warmup + time.Duration(rng.Int64N(int64(span)+1))
		faults = append(faults, f)
	}
	slices.SortStableFunc(faults, func(a, b *Fault) int { return int(a.Planned - b.Planned) })
	return faults
}

// injector carries out the plan, one fault at a time, and restarts
// processes that exit on their own (as Kubernetes would).
type injector struct {
	cfg   Config
	s     *procstack.Stack
	infra *Infra
	mon   *monitor
	logf  func(string, ...any)

	mu      sync.Mutex
	held    map[*procstack.Replica]bool // down on purpose: not the supervisor's to restart
	unasked []string                    // exits nobody asked for, with what the supervisor did
}

// hold marks r as down on purpose (or not).
func (in *injector) hold(r *procstack.Replica, on bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.held[r] = on
}

// supervise restarts, until ctx ends, every process that is not running
// without the injector having stopped it, and records the exit.
func (in *injector) supervise(ctx context.Context) {
	seen := map[*procstack.Replica]int{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		for _, r := range in.s.Replicas() {
			in.mu.Lock()
			held := in.held[r]
			in.mu.Unlock()
			if held || r.Running() {
				continue
			}
			exits := r.Exited()
			what := "stopped without a recorded exit"
			if len(exits) > seen[r] {
				what = exits[len(exits)-1]
				seen[r] = len(exits)
			}
			rctx, cancel := context.WithTimeout(ctx, procstack.HealthTimeout)
			err := r.Restart(rctx)
			cancel()
			note := fmt.Sprintf("%s %s at %s: restarted", r.Name(), what, time.Now().Format("15:04:05.000"))
			if err != nil {
				note = fmt.Sprintf("%s %s at %s: restart failed: %v", r.Name(), what, time.Now().Format("15:04:05.000"), err)
			}
			in.logf("supervisor: %s", note)
			in.mu.Lock()
			in.unasked = append(in.unasked, note)
			in.mu.Unlock()
		}
	}
}

// run injects the faults in order: each at its planned time, but not
// before the previous one has recovered (at most RecoverWait) and MinGap
// has passed after that.
func (in *injector) run(ctx context.Context, start time.Time, faults []*Fault, trafficDone <-chan struct{}) {
	next := start
	for _, f := range faults {
		at := start.Add(f.Planned)
		if next.After(at) {
			at = next
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		select {
		case <-trafficDone:
			if f.extra {
				f.Skipped = true
				in.logf("fault %s skipped: due after the traffic", f.Name())
				continue
			}
		default:
			f.DuringTraffic = true
		}
		in.inject(ctx, f)
		if f.Err != "" {
			in.logf("fault %s: %s", f.Name(), f.Err)
		} else {
			in.logf("fault %s at +%s: back after %s, ready %s later", f.Name(), f.At.Sub(start).Round(100*time.Millisecond),
				f.Back.Sub(f.At).Round(10*time.Millisecond), f.Ready.Sub(f.Back).Round(10*time.Millisecond))
		}
		in.waitRecovered(ctx, f)
		next = time.Now().Add(in.cfg.MinGap)
	}
}

// waitRecovered waits until the monitor's samples show f recovered (see
// resolve), at most cfg.RecoverWait; the final resolve at the end of the
// run computes the same Resumed again.
func (in *injector) waitRecovered(ctx context.Context, f *Fault) {
	if f.Err != "" || !f.based {
		return
	}
	deadline := time.Now().Add(in.cfg.RecoverWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resolve([]*Fault{f}, in.mon.all())
		if !f.Resumed.IsZero() {
			in.logf("fault %s: recovered %s after it", f.Name(), f.Resumed.Sub(f.At).Round(10*time.Millisecond))
			return
		}
		sleep(ctx, 250*time.Millisecond)
	}
	in.logf("fault %s: processing not seen to resume within %s; the next fault goes on", f.Name(), in.cfg.RecoverWait)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// affectedBy is what a fault on replica r stops: the partitions its static
// member id held in the newest sample (all its group's partitions when the
// sample shows none).
func (in *injector) affectedBy(r *procstack.Replica) map[string][]tp {
	svc := r.Service.Name
	s, ok := in.mon.before(time.Now())
	if !ok {
		return map[string][]tp{svc: nil}
	}
	var held []tp
	for p, id := range s.owner[svc] {
		if id == r.InstanceID {
			held = append(held, p)
		}
	}
	if len(held) == 0 {
		held = in.mon.partitions(s, svc)
	}
	return map[string][]tp{svc: held}
}

// everything is what a broker or database outage stops: every partition of
// every group.
func (in *injector) everything() map[string][]tp {
	s, _ := in.mon.before(time.Now())
	out := map[string][]tp{}
	for svc := range in.mon.groups {
		out[svc] = in.mon.partitions(s, svc)
	}
	return out
}

func (in *injector) inject(ctx context.Context, f *Fault) {
	fail := func(format string, args ...any) { f.Err = fmt.Sprintf(format, args...) }
	switch f.Kind {
	case KindKill:
		r := f.replica
		in.hold(r, true)
		defer in.hold(r, false)
		f.affected = in.affectedBy(r)
		f.At = time.Now()
		if err := r.Kill(); err != nil {
			fail("%v", err)
		}
		sleep(ctx, f.down)
		f.baseline, f.based = in.mon.sampleNow(ctx)
		f.Back = time.Now()
		f.after = f.Back
		rctx, cancel := context.WithTimeout(ctx, procstack.HealthTimeout)
		defer cancel()
		if err := r.Restart(rctx); err != nil {
			fail("restart: %v", err)
			return
		}
		f.Ready = time.Now()
	case KindPause:
		var err error
		r := f.replica
		in.hold(r, true)
		defer in.hold(r, false)
		f.affected = in.affectedBy(r)
		f.At = time.Now()
		if err := r.Pause(); err != nil {
			fail("%v", err)
			return
		}
		// The paused process cannot commit: offsets seen half a second
		// later are where its partitions stand until someone else takes
		// them.
		sleep(ctx, 500*time.Millisecond)
		f.baseline, f.based = in.mon.sampleNow(ctx)
		f.after = f.At
		sleep(ctx, f.down-500*time.Millisecond)
		lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
		f.LockWaits, err = in.infra.LockWaits(lctx)
		lcancel()
		if err != nil {
			f.LockWaits = []string{fmt.Sprintf("(could not read the lock waits: %v)", err)}
		}
		f.Back = time.Now()
		if err := r.Resume(); err != nil {
			fail("resume: %v", err)
			return
		}
		rctx, cancel := context.WithTimeout(ctx, procstack.HealthTimeout)
		defer cancel()
		if err := r.WaitHealthy(rctx); err != nil {
			fail("after SIGCONT: %v", err)
			return
		}
		f.Ready = time.Now()
	case KindKafka:
		f.affected = in.everything()
		// Nothing can be read from a dead broker: the baseline is taken
		// just before.
		f.baseline, f.based = in.mon.sampleNow(ctx)
		f.At = time.Now()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		argv, err := in.infra.CrashKafka(cctx)
		cancel()
		if err != nil {
			fail("%v", err)
			return
		}
		sleep(ctx, f.down)
		f.Back = time.Now()
		f.after = f.Back
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer rcancel()
		if err := in.infra.RestartKafka(rctx, argv); err != nil {
			fail("%v", err)
			return
		}
		// The port opens before the broker serves (its log recovery, the
		// coordinators' loading): ready is the first full read of the
		// groups' offsets and members.
		for {
			if _, ok := in.mon.sampleNow(rctx); ok {
				break
			}
			if rctx.Err() != nil {
				fail("the restarted broker did not answer the monitor: %v", rctx.Err())
				return
			}
			sleep(rctx, 200*time.Millisecond)
		}
		f.Ready = time.Now()
	case KindPostgres:
		f.affected = in.everything()
		f.At = time.Now()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := in.infra.CrashPostgres(cctx)
		cancel()
		if err != nil {
			fail("%v", err)
			return
		}
		sleep(ctx, f.down)
		f.baseline, f.based = in.mon.sampleNow(ctx)
		f.Back = time.Now()
		f.after = f.Back
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer rcancel()
		if err := in.infra.StartPostgres(rctx); err != nil {
			fail("%v", err)
			return
		}
		f.Ready = time.Now()
	}
}

// moved sets each pause's Moved from the monitor's samples: the first
// sample between the pause and its end in which every partition the paused
// process held belongs to another member of its group.
func moved(faults []*Fault, samples []sample) {
	for _, f := range faults {
		if f.Kind != KindPause || f.replica == nil || f.At.IsZero() {
			continue
		}
		svc, id := f.replica.Service.Name, f.replica.InstanceID
		parts := f.affected[svc]
		if len(parts) == 0 {
			continue
		}
		for _, s := range samples {
			if !s.at.After(f.At) || (!f.Back.IsZero() && s.at.After(f.Back)) {
				continue
			}
			all := true
			for _, p := range parts {
				if o := s.owner[svc][p]; o == "" || o == id {
					all = false
					break
				}
			}
			if all {
				f.Moved = s.at
				break
			}
		}
	}
}

// resolve sets each fault's Resumed from the monitor's samples: the first
// sample after f.after in which every group the fault hit has committed
// past its baseline on one of the partitions it hit, or, once the process
// or server is ready again, has caught up on all of them (nothing was left
// to resume: e.g. a fault at the end of the traffic).
func resolve(faults []*Fault, samples []sample) {
	for _, f := range faults {
		if !f.based || f.Err != "" {
			continue
		}
		for _, s := range samples {
			if !s.at.After(f.after) {
				continue
			}
			all := true
			for svc, parts := range f.affected {
				moved, caughtUp := false, !f.Ready.IsZero() && s.at.After(f.Ready) && len(parts) > 0
				for _, p := range parts {
					// A partition the group never committed on counts from 0:
					// caught up when it is empty (notification answers nothing,
					// so its event topic stays empty and saga-machine's group
					// commits nothing there).
					c := s.committed[svc][p]
					if c > f.baseline.committed[svc][p] {
						moved = true
						break
					}
					if end, known := s.ends[p]; !known || c < end {
						caughtUp = false
					}
				}
				if !moved && !caughtUp {
					all = false
					break
				}
			}
			if all {
				f.Resumed = s.at
				break
			}
		}
	}
}
