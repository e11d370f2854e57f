package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/procstack"
)

// tp is a topic partition.
type tp struct {
	topic     string
	partition int32
}

// sample is what the monitor read from the broker at one moment: per
// consumer group (service name), the committed offset of each partition of
// its topics and which static member holds each partition; the end offset
// of every partition.
type sample struct {
	at        time.Time
	committed map[string]map[tp]int64  // service → partition → committed offset
	owner     map[string]map[tp]string // service → partition → instance id (when described)
	ends      map[tp]int64
}

// lag is the sum over groups of end − committed.
func (s sample) lag(groups map[string][]string) int64 {
	var n int64
	for svc, topics := range groups {
		for p, end := range s.ends {
			if !contains(topics, p.topic) {
				continue
			}
			if c := s.committed[svc][p]; end > c {
				n += end - c
			}
		}
	}
	return n
}

// handled is the sum of committed offsets of all groups (what they have
// consumed so far).
func (s sample) handled() int64 {
	var n int64
	for _, m := range s.committed {
		for _, o := range m {
			n += o
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// monitor samples the stack's consumer groups from the broker every
// interval (and on demand), keeping every successful sample: the base of the
// recovery times (when processing resumed on the partitions a fault hit)
// and of the lag over time.
type monitor struct {
	cl     *kgo.Client
	adm    *kadm.Client
	groups map[string][]string // service → the topics its group consumes
	gname  map[string]string   // service → group

	mu      sync.Mutex // serializes reads of the broker
	smu     sync.Mutex
	samples []sample
	errors  int
}

func newMonitor(admin kafka.Config, s *procstack.Stack) (*monitor, error) {
	opts, err := admin.ClientOpts()
	if err != nil {
		return nil, fmt.Errorf("chaos: monitor client: %w", err)
	}
	opts = append(opts, kgo.RetryTimeout(2*time.Second), kgo.RequestTimeoutOverhead(2*time.Second))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("chaos: monitor client: %w", err)
	}
	m := &monitor{cl: cl, adm: kadm.NewClient(cl), groups: map[string][]string{}, gname: map[string]string{}}
	var events []string
	for _, name := range procstack.Participants {
		sv := s.Service(name)
		m.groups[name] = []string{sv.CommandTopic}
		m.gname[name] = sv.Group
		events = append(events, sv.EventTopic)
	}
	m.groups[procstack.SagaMachine] = events
	m.gname[procstack.SagaMachine] = s.SagaMachine.Group
	return m, nil
}

func (m *monitor) close() { m.cl.Close() }

// run samples every interval until ctx ends.
func (m *monitor) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.sampleNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sampleNow reads one sample (bounded to 3 s) and keeps it if every read
// succeeded; it returns it and whether it did.
func (m *monitor) sampleNow(ctx context.Context) (sample, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := m.read(ctx)
	m.smu.Lock()
	defer m.smu.Unlock()
	if err != nil {
		m.errors++
		return s, false
	}
	m.samples = append(m.samples, s)
	return s, true
}

func (m *monitor) read(ctx context.Context) (sample, error) {
	s := sample{committed: map[string]map[tp]int64{}, owner: map[string]map[tp]string{}, ends: map[tp]int64{}}
	var topics []string
	for _, ts := range m.groups {
		topics = append(topics, ts...)
	}
	ends, err := m.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return s, err
	}
	ends.Each(func(o kadm.ListedOffset) { s.ends[tp{o.Topic, o.Partition}] = o.Offset })
	for svc, group := range m.gname {
		offs, err := m.adm.FetchOffsets(ctx, group)
		if err == nil {
			err = offs.Error()
		}
		if err != nil {
			return s, err
		}
		c := map[tp]int64{}
		offs.Each(func(o kadm.OffsetResponse) { c[tp{o.Topic, o.Partition}] = o.At })
		s.committed[svc] = c
	}
	var groups []string
	for _, g := range m.gname {
		groups = append(groups, g)
	}
	described, err := m.adm.DescribeGroups(ctx, groups...)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return s, err
	}
	for svc, group := range m.gname {
		owners := map[tp]string{}
		if g, ok := described[group]; ok {
			for _, mem := range g.Members {
				a, ok := mem.Assigned.AsConsumer()
				if !ok || mem.InstanceID == nil {
					continue
				}
				for _, t := range a.Topics {
					for _, p := range t.Partitions {
						owners[tp{t.Topic, p}] = *mem.InstanceID
					}
				}
			}
		}
		s.owner[svc] = owners
	}
	s.at = time.Now()
	return s, nil
}

// all returns a copy of the samples so far.
func (m *monitor) all() []sample {
	m.smu.Lock()
	defer m.smu.Unlock()
	return append([]sample(nil), m.samples...)
}

// before returns the newest sample taken before t.
func (m *monitor) before(t time.Time) (sample, bool) {
	m.smu.Lock()
	defer m.smu.Unlock()
	for i := len(m.samples) - 1; i >= 0; i-- {
		if m.samples[i].at.Before(t) {
			return m.samples[i], true
		}
	}
	return sample{}, false
}

// partitions returns the partitions of service svc's topics.
func (m *monitor) partitions(s sample, svc string) []tp {
	var out []tp
	for p := range s.ends {
		if contains(m.groups[svc], p.topic) {
			out = append(out, p)
		}
	}
	return out
}
