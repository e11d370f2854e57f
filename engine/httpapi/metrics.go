package httpapi

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// Metric namespace of every saga-machine metric.
const namespace = "saga_machine"

// LatencyBuckets are the histogram buckets (seconds) of the event-to-command
// outbox delay and intake batch histograms: 1ms to about 1 minute.
var LatencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 13)

// Metrics is the engine.Observer that counts what the orchestrator does.
// Create it with NewMetrics and pass it as engine.Config.Observer. It is
// safe for concurrent use.
type Metrics struct {
	started        *prometheus.CounterVec
	finished       *prometheus.CounterVec
	applied        *prometheus.CounterVec
	refused        *prometheus.CounterVec
	eventToCommand *prometheus.HistogramVec
	deadLetters    *prometheus.CounterVec
	published      prometheus.Counter
	outboxDelay    prometheus.Histogram
	retried        *prometheus.CounterVec
	heldBack       *prometheus.CounterVec
	timers         *prometheus.CounterVec
	batchSeconds   prometheus.Histogram
	batchRecords   prometheus.Histogram
	relayRounds    *prometheus.CounterVec
	relaySeconds   prometheus.Counter
	comp           *compensationMetrics
}

var _ engine.Observer = (*Metrics)(nil)

// NewMetrics creates the orchestrator's metrics and registers them in reg.
// It fails if they are already registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sagas_started_total",
			Help: "Saga instances created, per definition and version.",
		}, []string{"saga", "version"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sagas_finished_total",
			Help: "Saga instances that reached a terminal state, per definition, version, state and status (completed or failed; operator aborts included).",
		}, []string{"saga", "version", "state", "status"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_applied_total",
			Help: "Events accepted (participants' and the engine's own timeouts and exhausted retries).",
		}, []string{"saga", "event"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_refused_total",
			Help: "Events refused (and dead-lettered), per definition, event and error code.",
		}, []string{"saga", "event", "code"}),
		eventToCommand: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_to_command_seconds",
			Help:    "From an event's occurred_at to the commit that applied it and stored the command it causes.",
			Buckets: LatencyBuckets,
		}, []string{"saga"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dead_letters_total",
			Help: "Messages stored as dead letters, per error code.",
		}, []string{"code"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_published_total",
			Help: "Commands published by the outbox relay.",
		}),
		outboxDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "outbox_delay_seconds",
			Help:    "Age of the oldest command of each published relay batch, from its creation in the outbox to its publication.",
			Buckets: LatencyBuckets,
		}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_retried_total",
			Help: "Commands re-sent by a retry policy.",
		}, []string{"saga", "command"}),
		heldBack: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_held_back_total",
			Help: "Retry attempts counted but not re-sent: the participant was still answering older commands.",
		}, []string{"saga", "command"}),
		timers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "timers_fired_total",
			Help: "State timeouts and exhausted retries raised as events.",
		}, []string{"saga", "event"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "intake_batch_seconds",
			Help: "Time of each committed intake batch, from its start to its commit (re-runs after conflicts included). " +
				"The intake handles one batch at a time: rate(..._sum) is the share of time it was busy, and near 1 it limits throughput.",
			Buckets: LatencyBuckets,
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "intake_batch_records",
			Help:    "Records per committed intake batch (batches grow with the load).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 … 1,024
		}),
		relayRounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "relay_rounds_total",
			Help: "Rounds of the outbox relay, each a transaction, by result: published (it published commands) or empty (it found none: a poll of an idle outbox).",
		}, []string{"result"}),
		relaySeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "relay_seconds_total",
			Help: "Time spent in those rounds (take, publish, delete): its rate is the share of time the relay was busy.",
		}),
	}
	for _, c := range []prometheus.Collector{m.started, m.finished, m.applied, m.refused, m.eventToCommand,
		m.deadLetters, m.published, m.outboxDelay, m.retried, m.heldBack, m.timers, m.batchSeconds, m.batchRecords,
		m.relayRounds, m.relaySeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register saga-machine metrics: %w", err)
		}
	}
	var err error
	if m.comp, err = newCompensationMetrics(reg); err != nil {
		return nil, err
	}
	return m, nil
}

var _ engine.IntakeObserver = (*Metrics)(nil)

// BatchHandled observes one committed intake batch.
func (m *Metrics) BatchHandled(records int, took time.Duration) {
	m.batchSeconds.Observe(took.Seconds())
	m.batchRecords.Observe(float64(records))
}

var _ engine.RelayObserver = (*Metrics)(nil)

// RelayRound observes one round of the outbox relay.
func (m *Metrics) RelayRound(published int, took time.Duration) {
	result := "published"
	if published == 0 {
		result = "empty"
	}
	m.relayRounds.WithLabelValues(result).Inc()
	m.relaySeconds.Add(took.Seconds())
}

// SagaStarted counts a created instance.
func (m *Metrics) SagaStarted(saga string, version int) {
	m.started.WithLabelValues(saga, strconv.Itoa(version)).Inc()
}

// SagaFinished counts an instance that reached a terminal state.
func (m *Metrics) SagaFinished(saga string, version int, state string, status engine.Status) {
	m.finished.WithLabelValues(saga, strconv.Itoa(version), state, string(status)).Inc()
}

// EventApplied counts an accepted event and observes its latency.
func (m *Metrics) EventApplied(saga, event string, latency time.Duration) {
	m.applied.WithLabelValues(saga, event).Inc()
	if latency < 0 {
		latency = 0 // the sender's clock is ahead of ours
	}
	m.eventToCommand.WithLabelValues(saga).Observe(latency.Seconds())
}

// EventRefused counts a refused event.
func (m *Metrics) EventRefused(saga, event string, code engine.Code) {
	m.refused.WithLabelValues(saga, event, string(code)).Inc()
}

// DeadLettered counts a stored dead letter.
func (m *Metrics) DeadLettered(code engine.Code) { m.deadLetters.WithLabelValues(string(code)).Inc() }

// CommandsPublished counts published commands and observes the batch's
// oldest outbox age.
func (m *Metrics) CommandsPublished(n int, oldest time.Duration) {
	m.published.Add(float64(n))
	m.outboxDelay.Observe(oldest.Seconds())
}

// CommandRetried counts a command re-sent by its retry policy.
func (m *Metrics) CommandRetried(saga, command string) {
	m.retried.WithLabelValues(saga, command).Inc()
}

// CommandHeldBack counts a retry attempt not re-sent because the
// participant was behind (engine.ResendObserver).
func (m *Metrics) CommandHeldBack(saga, command string) {
	m.heldBack.WithLabelValues(saga, command).Inc()
}

// TimerFired counts a raised timeout or exhausted retry.
func (m *Metrics) TimerFired(saga, event string) { m.timers.WithLabelValues(saga, event).Inc() }

// storeCollector reads gauges from the store at scrape time.
type storeCollector struct {
	store     engine.Queries
	instances *prometheus.Desc
	byStatus  *prometheus.Desc
	backlog   *prometheus.Desc
	up        *prometheus.Desc
}

func newStoreCollector(st engine.Queries) *storeCollector {
	return &storeCollector{
		store: st,
		instances: prometheus.NewDesc(namespace+"_instances",
			"Saga instances per definition, version and state, read from the store at scrape time.",
			[]string{"saga", "version", "state"}, nil),
		byStatus: prometheus.NewDesc(namespace+"_instances_by_status",
			"Saga instances per definition, version and status (running, compensating, compensation_failed, completed, failed), read from the store at scrape time.",
			[]string{"saga", "version", "status"}, nil),
		backlog: prometheus.NewDesc(namespace+"_outbox_backlog",
			"Commands in the outbox not yet published, read from the store at scrape time.", nil, nil),
		up: prometheus.NewDesc(namespace+"_store_up",
			"1 if the store answered the scrape's queries, 0 if not.", nil, nil),
	}
}

// Describe sends the collector's descriptors.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.byStatus
	ch <- c.backlog
	ch <- c.up
}

// Collect queries the store; a failed query is reported as an invalid
// metric (the scrape continues) and store_up 0.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	up := 1.0
	counts, err := c.store.CountByState(ctx)
	if err != nil {
		up = 0
		ch <- prometheus.NewInvalidMetric(c.instances, fmt.Errorf("count sagas by state: %w", err))
	}
	// The store counts per state and status: sum each way.
	type key struct{ saga, version, label string }
	perState, perStatus := map[key]int64{}, map[key]int64{}
	var order []key
	for _, sc := range counts {
		v := strconv.Itoa(sc.SagaVersion)
		k := key{sc.Saga, v, sc.State}
		if _, seen := perState[k]; !seen {
			order = append(order, k)
		}
		perState[k] += sc.Count
		perStatus[key{sc.Saga, v, string(sc.Status)}] += sc.Count
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(perState[k]), k.saga, k.version, k.label)
	}
	for k, n := range perStatus {
		ch <- prometheus.MustNewConstMetric(c.byStatus, prometheus.GaugeValue, float64(n), k.saga, k.version, k.label)
	}
	n, err := c.store.OutboxBacklog(ctx)
	if err != nil {
		up = 0
		ch <- prometheus.NewInvalidMetric(c.backlog, fmt.Errorf("count outbox backlog: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(n))
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}
