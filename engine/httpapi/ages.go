package httpapi

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// ageCollector reads, at scrape time, how long work has been waiting in
// the store (engine.AgeReporter): the alerts on stuck sagas and on a
// stalled outbox rest on it.
type ageCollector struct {
	ages      engine.AgeReporter
	now       func() time.Time
	stateAge  *prometheus.Desc
	outboxAge *prometheus.Desc
}

// newAgeCollector returns nil when st does not report ages.
func newAgeCollector(st engine.Queries, now func() time.Time) *ageCollector {
	ages, ok := st.(engine.AgeReporter)
	if !ok {
		return nil
	}
	return &ageCollector{
		ages: ages, now: now,
		stateAge: prometheus.NewDesc(namespace+"_instances_oldest_age_seconds",
			"Seconds the longest-waiting instance not done (status running, compensating or compensation_failed) has been in its state, per definition, version, state and status; read from the store at scrape time. No series when no instance is there.",
			[]string{"saga", "version", "state", "status"}, nil),
		outboxAge: prometheus.NewDesc(namespace+"_outbox_oldest_age_seconds",
			"Seconds since the oldest unpublished outbox command was stored (0 when the outbox is empty); read from the store at scrape time.", nil, nil),
	}
}

// Describe sends the collector's descriptors.
func (c *ageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stateAge
	ch <- c.outboxAge
}

// Collect queries the store; a failed query is reported as an invalid
// metric and the scrape goes on (saga_machine_store_up tells the outage).
func (c *ageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	now := c.now()
	ages, err := c.ages.LiveStateAges(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.stateAge, fmt.Errorf("read the oldest live saga per state: %w", err))
	}
	for _, a := range ages {
		ch <- prometheus.MustNewConstMetric(c.stateAge, prometheus.GaugeValue, secondsSince(now, a.OldestEnteredAt),
			a.Saga, strconv.Itoa(a.SagaVersion), a.State, string(a.Status))
	}
	created, ok, err := c.ages.OldestOutbox(ctx)
	switch {
	case err != nil:
		ch <- prometheus.NewInvalidMetric(c.outboxAge, fmt.Errorf("read the oldest outbox record: %w", err))
	case !ok:
		ch <- prometheus.MustNewConstMetric(c.outboxAge, prometheus.GaugeValue, 0)
	default:
		ch <- prometheus.MustNewConstMetric(c.outboxAge, prometheus.GaugeValue, secondsSince(now, created))
	}
}

// secondsSince is now - t in seconds, never negative (another replica's
// clock may be ahead of ours).
func secondsSince(now, t time.Time) float64 { return max(now.Sub(t).Seconds(), 0) }
