package service

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/kafkalag"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// metricsTimeout bounds the database reads of one scrape.
const metricsTimeout = 5 * time.Second

// AddMetrics registers the unauthenticated GET /metrics on r: Prometheus
// metrics of the participant p, read at scrape time (a registry of its
// own per call):
//
//	saga_participant_dead_letters{participant,state}      parked / handled (sdk.Stats)
//	saga_participant_outbox_backlog{participant}           replies and saga starts not yet published
//	saga_participant_outbox_oldest_age_seconds{participant} age of the oldest of them (0 when none)
//	saga_participant_store_up{participant}                 1 if the database answered
//	saga_participant_batches_total{participant}            batches handled in one transaction (sdk.Stats)
//	saga_participant_batch_commands_total{participant}     their commands
//	saga_participant_batch_seconds_total{participant}      their time, start to commit (rate: busy share)
//	saga_participant_relay_rounds_total{participant,result} the outbox relay's rounds: published / empty
//	saga_participant_relay_published_total{participant}    the outbox rows they published
//	saga_participant_relay_seconds_total{participant}      the rounds' time (rate: the relay's busy share)
//	saga_kafka_consumer_lag{group,topic,partition} ...     the command consumer group's lag (internal/kafkalag)
//
// and the Go runtime and process collectors. Like saga-machine's, the
// endpoint is not routed by the ingress: protect it by network policy.
// With a nil p only the runtime metrics are served; without brokers
// (a participant driven through Dispatch) there is no lag.
func AddMetrics(r *mux.Router, p *sdk.Participant) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.Default()
	if p != nil {
		cfg := p.Config()
		log = cfg.Logger
		reg.MustRegister(newStatsCollector(p))
		if len(cfg.Brokers) > 0 {
			lag, err := kafkalag.New(kafka.Config{Brokers: cfg.Brokers, ClientID: "saga-participant-" + cfg.Name, SASL: cfg.KafkaSASL, TLS: cfg.KafkaTLS, Logger: cfg.Logger},
				cfg.Group, cfg.CommandTopic)
			if err != nil {
				// sdk.New validated the same brokers and credentials.
				panic(fmt.Sprintf("service.AddMetrics: %v", err))
			}
			reg.MustRegister(lag)
		}
	}
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})).Methods(http.MethodGet)
}

// statsCollector reads sdk.Stats at scrape time.
type statsCollector struct {
	p                                   *sdk.Participant
	deadLetters, backlog, oldestAge, up *prometheus.Desc
	batches, batchCommands, batchTime   *prometheus.Desc
	relayRounds, relayPublished         *prometheus.Desc
	relaySeconds                        *prometheus.Desc
}

func newStatsCollector(p *sdk.Participant) *statsCollector {
	l := prometheus.Labels{"participant": p.Name()}
	return &statsCollector{
		p: p,
		deadLetters: prometheus.NewDesc("saga_participant_dead_letters",
			"Dead letters in the participant's database per state: parked (the command has not been handled since: waits for an operator) or handled (replayed or delivered again successfully, until pruned); read at scrape time.",
			[]string{"state"}, l),
		backlog: prometheus.NewDesc("saga_participant_outbox_backlog",
			"Replies and saga starts in the participant's outbox not yet published, read at scrape time.", nil, l),
		oldestAge: prometheus.NewDesc("saga_participant_outbox_oldest_age_seconds",
			"Seconds since the oldest unpublished outbox record was stored (0 when the outbox is empty), read at scrape time.", nil, l),
		up: prometheus.NewDesc("saga_participant_store_up",
			"1 if the participant's database answered the scrape's queries, 0 if not.", nil, l),
		batches: prometheus.NewDesc("saga_participant_batches_total",
			"Fetched batches of commands handled in one transaction each and committed (sdk.Stats).", nil, l),
		batchCommands: prometheus.NewDesc("saga_participant_batch_commands_total",
			"Commands in those batches: the ratio to batches_total is the mean batch size, which grows with the load.", nil, l),
		batchTime: prometheus.NewDesc("saga_participant_batch_seconds_total",
			"Time spent in those batches, start to commit: its rate is the share of time the participant was busy handling (near 1 it limits throughput).", nil, l),
		relayRounds: prometheus.NewDesc("saga_participant_relay_rounds_total",
			"Rounds of the outbox relay, each a transaction, by result: published (it published rows) or empty (it found none: a poll of an idle outbox, or a wake-up whose rows an earlier round took).",
			[]string{"result"}, l),
		relayPublished: prometheus.NewDesc("saga_participant_relay_published_total",
			"Outbox rows (replies, saga starts) the relay published: the ratio to published rounds is the mean relay batch.", nil, l),
		relaySeconds: prometheus.NewDesc("saga_participant_relay_seconds_total",
			"Time spent in the relay's rounds (take, publish, delete): its rate is the share of time the relay was busy.", nil, l),
	}
}

// Describe sends the collector's descriptors.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.deadLetters
	ch <- c.backlog
	ch <- c.oldestAge
	ch <- c.up
	ch <- c.batches
	ch <- c.batchCommands
	ch <- c.batchTime
	ch <- c.relayRounds
	ch <- c.relayPublished
	ch <- c.relaySeconds
}

// Collect reads the stats; when the database does not answer it sends
// store_up 0 and nothing else (no made-up zeros).
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsTimeout)
	defer cancel()
	st, err := c.p.Stats(ctx)
	if err != nil {
		c.p.Config().Logger.Warn("metrics: cannot read the participant's stats", "err", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	age := 0.0
	if !st.OldestOutbox.IsZero() {
		age = max(time.Since(st.OldestOutbox).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.deadLetters, prometheus.GaugeValue, float64(st.DeadLettersParked), sdk.StateParked)
	ch <- prometheus.MustNewConstMetric(c.deadLetters, prometheus.GaugeValue, float64(st.DeadLettersHandled), sdk.StateHandled)
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(st.OutboxBacklog))
	ch <- prometheus.MustNewConstMetric(c.oldestAge, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(st.Batches))
	ch <- prometheus.MustNewConstMetric(c.batchCommands, prometheus.CounterValue, float64(st.BatchCommands))
	ch <- prometheus.MustNewConstMetric(c.batchTime, prometheus.CounterValue, st.BatchTime.Seconds())
	ch <- prometheus.MustNewConstMetric(c.relayRounds, prometheus.CounterValue, float64(st.RelayRounds-st.RelayEmptyRounds), "published")
	ch <- prometheus.MustNewConstMetric(c.relayRounds, prometheus.CounterValue, float64(st.RelayEmptyRounds), "empty")
	ch <- prometheus.MustNewConstMetric(c.relayPublished, prometheus.CounterValue, float64(st.RelayPublished))
	ch <- prometheus.MustNewConstMetric(c.relaySeconds, prometheus.CounterValue, st.RelayTime.Seconds())
}
