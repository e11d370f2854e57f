package kafkalag

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// Timeout bounds the broker requests of one scrape.
const Timeout = 5 * time.Second

// Collector is a prometheus.Collector of one consumer group's lag on its
// topics. Each scrape opens a Kafka client, asks the brokers and closes
// it, so a Collector holds no connection between scrapes and needs no
// Close.
type Collector struct {
	cfg    kafka.Config
	group  string
	topics []string

	lag, committed, end, up *prometheus.Desc
}

// New returns the Collector of group on topics, connecting with cfg
// (brokers, SASL credentials: the consumer's own).
func New(cfg kafka.Config, group string, topics ...string) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka lag collector for group %q: %w", group, err)
	}
	if group == "" {
		return nil, errors.New("kafka lag collector: empty group")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(topics) == 0 || slices.Contains(topics, "") {
		return nil, fmt.Errorf("kafka lag collector for group %q: topics %q: want one or more non-empty names", group, topics)
	}
	pl := []string{"group", "topic", "partition"}
	return &Collector{
		cfg: cfg, group: group, topics: slices.Clone(topics),
		lag: prometheus.NewDesc("saga_kafka_consumer_lag",
			"Records of the partition the consumer group has not consumed yet: end offset minus committed offset (minus the log start offset when the group committed nothing yet), read from the brokers at scrape time.", pl, nil),
		committed: prometheus.NewDesc("saga_kafka_consumer_committed_offset",
			"The consumer group's committed offset on the partition (the next record it will read), read at scrape time; no series before its first commit.", pl, nil),
		end: prometheus.NewDesc("saga_kafka_partition_end_offset",
			"End offset (high watermark) of the partition: the offset the next record written gets, read at scrape time.", []string{"topic", "partition"}, nil),
		up: prometheus.NewDesc("saga_kafka_lag_up",
			"1 if the brokers answered this scrape's offset queries for the consumer group, 0 if not (its lag is then unknown).", []string{"group"}, nil),
	}, nil
}

// Describe sends the collector's descriptors.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.committed
	ch <- c.end
	ch <- c.up
}

// Collect asks the brokers for the offsets and sends the gauges. When
// they cannot be read it sends saga_kafka_lag_up 0 and no lag (an absent
// series, rather than a wrong 0).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	parts, err := c.read(ctx)
	up := 1.0
	if err != nil {
		up = 0
		c.cfg.Logger.Warn("kafka lag: cannot read the offsets", "group", c.group, "topics", c.topics, "err", err)
	}
	for _, p := range parts {
		part := strconv.Itoa(int(p.partition))
		ch <- prometheus.MustNewConstMetric(c.end, prometheus.GaugeValue, float64(p.end), p.topic, part)
		if p.committed >= 0 {
			ch <- prometheus.MustNewConstMetric(c.committed, prometheus.GaugeValue, float64(p.committed), c.group, p.topic, part)
		}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(p.lag()), c.group, p.topic, part)
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, c.group)
}

// partition is what the brokers said about one partition.
type partition struct {
	topic      string
	partition  int32
	start, end int64
	committed  int64 // -1: nothing committed
}

// lag is what the group has left to read on the partition.
func (p partition) lag() int64 {
	from := p.committed
	if from < 0 {
		from = p.start // a new group starts at the earliest offset
	}
	return max(p.end-from, 0)
}

// read asks the brokers for the start, end and committed offsets. On a
// partial failure it returns the partitions it could read and the error.
func (c *Collector) read(ctx context.Context) ([]partition, error) {
	cfg := c.cfg
	if cfg.ClientID == "" {
		cfg.ClientID = kafka.DefaultClientID
	}
	cfg.ClientID += "-lag"
	opts, err := cfg.ClientOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka lag of group %s: new client: %w", c.group, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, c.topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka lag of group %s: list start offsets of %v: %w", c.group, c.topics, err)
	}
	ends, err := adm.ListEndOffsets(ctx, c.topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka lag of group %s: list end offsets of %v: %w", c.group, c.topics, err)
	}
	commits, err := adm.FetchOffsets(ctx, c.group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		// A group that never joined nor committed (the embedded broker
		// says so; Kafka answers with no offsets): it would start at the
		// earliest offset.
		commits, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kafka lag of group %s: fetch committed offsets: %w", c.group, err)
	}
	var (
		out  []partition
		errs []error
	)
	ends.Each(func(e kadm.ListedOffset) {
		if e.Err != nil {
			errs = append(errs, fmt.Errorf("end offset of %s[%d]: %w", e.Topic, e.Partition, e.Err))
			return
		}
		s, ok := starts.Lookup(e.Topic, e.Partition)
		if !ok || s.Err != nil {
			errs = append(errs, fmt.Errorf("start offset of %s[%d]: missing or %v", e.Topic, e.Partition, s.Err))
			return
		}
		p := partition{topic: e.Topic, partition: e.Partition, start: s.Offset, end: e.Offset, committed: -1}
		if o, ok := commits.Lookup(e.Topic, e.Partition); ok {
			if o.Err != nil {
				errs = append(errs, fmt.Errorf("committed offset of %s[%d]: %w", e.Topic, e.Partition, o.Err))
				return
			}
			p.committed = o.At
		}
		out = append(out, p)
	})
	for _, t := range c.topics {
		if _, ok := ends[t]; !ok {
			errs = append(errs, fmt.Errorf("topic %s: no end offsets", t))
		}
	}
	slices.SortFunc(out, func(a, b partition) int {
		if a.topic != b.topic {
			if a.topic < b.topic {
				return -1
			}
			return 1
		}
		return int(a.partition - b.partition)
	})
	if len(errs) > 0 {
		return out, fmt.Errorf("kafka lag of group %s: %w", c.group, errors.Join(errs...))
	}
	return out, nil
}
