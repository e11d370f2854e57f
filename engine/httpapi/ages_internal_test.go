package httpapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// agingStore is an engine.Queries (only the age methods are called) that
// reports fixed ages or fails.
type agingStore struct {
	engine.Queries
	ages    []engine.StateAge
	oldest  time.Time
	pending bool
	err     error
}

func (s agingStore) LiveStateAges(context.Context) ([]engine.StateAge, error) { return s.ages, s.err }

func (s agingStore) OldestOutbox(context.Context) (time.Time, bool, error) {
	return s.oldest, s.pending, s.err
}

func TestAgeCollector(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	for _, tc := range []struct {
		name  string
		store agingStore
		want  []string // gathered samples, sorted; nil when the scrape must fail
	}{
		{
			name: "ages and a pending outbox",
			store: agingStore{ages: []engine.StateAge{
				{Saga: "ORDER", SagaVersion: 2, State: "DRAFT", Status: engine.StatusRunning, OldestEnteredAt: now.Add(-90 * time.Second)},
				{Saga: "ORDER", SagaVersion: 2, State: "FAILED", Status: engine.StatusCompensating, OldestEnteredAt: now.Add(time.Second)}, // clock skew: 0
			}, oldest: now.Add(-2500 * time.Millisecond), pending: true},
			want: []string{
				`saga_machine_instances_oldest_age_seconds{saga="ORDER",state="DRAFT",status="running",version="2"} 90`,
				`saga_machine_instances_oldest_age_seconds{saga="ORDER",state="FAILED",status="compensating",version="2"} 0`,
				`saga_machine_outbox_oldest_age_seconds{} 2.5`,
			},
		},
		{
			name:  "nothing live, empty outbox",
			store: agingStore{},
			want:  []string{`saga_machine_outbox_oldest_age_seconds{} 0`},
		},
		{name: "store down", store: agingStore{err: errors.New("connection refused")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newAgeCollector(tc.store, clock)
			if c == nil {
				t.Fatal("newAgeCollector: nil for a store that reports ages")
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			mfs, err := reg.Gather()
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), "connection refused") {
					t.Errorf("Gather with a failing store: got %v, want the store's error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Gather: %v", err)
			}
			var got []string
			for _, mf := range mfs {
				if mf.GetType().String() != "GAUGE" || mf.GetHelp() == "" {
					t.Errorf("%s: type %s, help %q; want a gauge with help", mf.GetName(), mf.GetType(), mf.GetHelp())
				}
				for _, m := range mf.GetMetric() {
					var labels []string
					for _, l := range m.GetLabel() {
						labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
					}
					got = append(got, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), m.GetGauge().GetValue()))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("gathered:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	if c := newAgeCollector(struct{ engine.Queries }{}, clock); c != nil {
		t.Errorf("newAgeCollector of a store without ages: got %v, want nil", c)
	}
}
