package chaos

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/procstack"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// logWriter writes the run's progress lines to the test log until the test
// ends.
type logWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// TestChaosShort is the short chaos run (Short: 1,000 sagas at 8/s from 50
// users) on a private PostgreSQL and Kafka: every service killed with
// SIGKILL once, the broker and PostgreSQL restarted once, a profile replica
// paused past the session timeout; then it checks, from the databases,
// every invariant (Report.Err) and that each kind of fault was injected and
// recovered from. It asserts no time: the recovery times and the
// throughput are in the log (go test -v), not checked. Under CI=true a
// machine that cannot start PostgreSQL or Kafka (scripts/up.sh: no
// PostgreSQL, no Java, no Kafka jars) fails it; elsewhere it is skipped.
func TestChaosShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	lw := &logWriter{t: t}
	defer func() { lw.mu.Lock(); lw.done = true; lw.mu.Unlock() }()
	cfg := Short()
	cfg.Log = lw
	rep, err := Run(ctx, cfg)
	if errors.Is(err, ErrServers) {
		testenv.Missing(t, "a private PostgreSQL and Apache Kafka (scripts/up.sh)", err)
	}
	if rep != nil {
		var b strings.Builder
		rep.Format(&b)
		t.Logf("report:\n%s", b.String())
	}
	if err != nil {
		t.Fatalf("the chaos run could not be carried out: %v", err)
	}
	if err := rep.Err(); err != nil {
		t.Errorf("the chaos run found problems: %v", err)
	}

	// Report.Err covers these; they are spelled out so that a change to
	// what Err checks cannot hollow this test out.
	if rep.Lost != 0 || rep.Doubled != 0 {
		t.Errorf("lost %d, doubled %d; want 0 and 0", rep.Lost, rep.Doubled)
	}
	// Aborts and cancels (3 % each of 1,000 deals): each answered done or
	// too late; a done one's deal failed or cancelled (Err lists it
	// otherwise).
	// Those of baskets (3 % each of about 50) may be none in a short run.
	for _, a := range []struct {
		what string
		acts Acts
		some bool
	}{{"operator aborts", rep.Aborts, true}, {"client cancels", rep.Cancels, true},
		{"operator aborts of baskets", rep.BasketAborts, false}, {"client cancels of baskets", rep.BasketCancels, false}} {
		if (a.some && a.acts.Sent == 0) || a.acts.Done+a.acts.TooLate != a.acts.Sent {
			t.Errorf("%s: %s; want each done or too late (and some: %v)", a.what, a.acts, a.some)
		}
	}
	if rep.Offered != cfg.Sagas || rep.Accepted != cfg.Sagas {
		t.Errorf("%d deals offered, %d accepted; want %d and %d", rep.Offered, rep.Accepted, cfg.Sagas, cfg.Sagas)
	}
	sagas := 0
	for status, n := range rep.Check.Sagas {
		sagas += n
		if status != "completed" && status != "failed" {
			t.Errorf("%d sagas %s at the end, want every saga completed or failed", n, status)
		}
	}
	if sagas != cfg.Sagas {
		t.Errorf("%d sagas in saga-machine's database, want %d (one per deal)", sagas, cfg.Sagas)
	}
	if rep.Check.Notifications != cfg.Sagas {
		t.Errorf("%d notifications, want %d (one per deal)", rep.Check.Notifications, cfg.Sagas)
	}
	if rep.Check.Portfolios != cfg.Users {
		t.Errorf("%d portfolios checked, want %d", rep.Check.Portfolios, cfg.Users)
	}
	if len(rep.Check.DeadLetters) != 0 {
		t.Errorf("dead letters %v, want none", rep.Check.DeadLetters)
	}
	for g, n := range rep.Activity.Lag {
		if n != 0 {
			t.Errorf("consumer group %s: lag %d at the end, want 0", g, n)
		}
	}
	if len(rep.Activity.Lag) != 4 {
		t.Errorf("lag known for %v, want the four groups", rep.Activity.Lag)
	}
	// Each kind of fault once, injected without error.
	got := map[string]int{}
	for _, f := range rep.Faults {
		if f.Err != "" || f.At.IsZero() {
			t.Errorf("fault %s: injected %v, error %q", f.Name(), !f.At.IsZero(), f.Err)
			continue
		}
		if _, ok := f.Recovery(); !ok {
			t.Errorf("fault %s: processing not seen to resume", f.Name())
		}
		k := f.Kind
		if f.Kind == KindKill {
			k += " " + f.replica.Service.Name
		}
		got[k]++
	}
	for _, k := range []string{KindKafka, KindPostgres, KindPause,
		KindKill + " " + procstack.SagaMachine, KindKill + " " + procstack.Deals,
		KindKill + " " + procstack.Profile, KindKill + " " + procstack.Notification} {
		if got[k] != 1 {
			t.Errorf("%d faults %q injected, want 1 (all: %v)", got[k], k, got)
		}
	}
}
