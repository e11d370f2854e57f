package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// stageTotals are the running totals of one stage's batches since its
// process started: how many, their records, how many of them had no
// record (a relay's empty rounds) and the time spent in them.
type stageTotals struct {
	batches, records, empty int64
	busy                    time.Duration
}

// StageReport is one stage's batches over the measured window: the
// engine's intake (one batch at a time), a participant's committed
// batches, or an outbox relay's rounds (EmptyBatches: the rounds that
// found nothing, each a transaction for nothing). Busy is the share of
// the window the stage spent in batches: near 1 it is the stage that
// limits throughput (a participant can pass 1 when large batches run
// partition by partition at once).
type StageReport struct {
	Name            string  `json:"name"`
	Batches         int64   `json:"batches"`
	EmptyBatches    int64   `json:"empty_batches"`
	RecordsPerBatch float64 `json:"records_per_batch"`
	MsPerBatch      float64 `json:"ms_per_batch"`
	Busy            float64 `json:"busy_fraction"`
}

// stageSampler reads every stage's totals (nil when the stages cannot be
// seen: a system bench did not start).
type stageSampler func(ctx context.Context) (map[string]stageTotals, error)

// Stage names in the report; a participant's are its name and its name
// with relaySuffix.
const (
	stageIntake = "saga-machine intake"
	stageRelay  = "saga-machine relay"
	relaySuffix = " relay"
)

// systemStages samples the stages of a system started in this process:
// the intake and the relay from saga-machine's metrics registry
// (saga_machine_intake_batch_seconds and _records, saga_machine_relay_*)
// and each participant's batches and relay from sdk.Participant.Stats.
func systemStages(sys *system.System) stageSampler {
	return func(ctx context.Context) (map[string]stageTotals, error) {
		out := map[string]stageTotals{}
		intake, relay, err := engineTotals(sys.SagaMachine.Registry)
		if err != nil {
			return nil, err
		}
		out[stageIntake], out[stageRelay] = intake, relay
		for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
			if svc == nil || svc.Participant == nil {
				continue
			}
			st, err := svc.Participant.Stats(ctx)
			if err != nil {
				return nil, fmt.Errorf("stages: %s: %w", svc.Name, err)
			}
			out[svc.Name] = stageTotals{batches: st.Batches, records: st.BatchCommands, busy: st.BatchTime}
			out[svc.Name+relaySuffix] = stageTotals{batches: st.RelayRounds, records: st.RelayPublished,
				empty: st.RelayEmptyRounds, busy: st.RelayTime}
		}
		return out, nil
	}
}

// engineTotals reads the intake's histograms and the relay's counters
// from reg.
func engineTotals(reg prometheus.Gatherer) (intake, relay stageTotals, err error) {
	fams, err := reg.Gather()
	if err != nil {
		return intake, relay, fmt.Errorf("stages: gather saga-machine's metrics: %w", err)
	}
	found := 0
	for _, f := range fams {
		ms := f.GetMetric()
		switch f.GetName() {
		case "saga_machine_intake_batch_seconds":
			if len(ms) == 1 && ms[0].GetHistogram() != nil {
				h := ms[0].GetHistogram()
				intake.batches = int64(h.GetSampleCount())
				intake.busy = time.Duration(h.GetSampleSum() * float64(time.Second))
				found++
			}
		case "saga_machine_intake_batch_records":
			if len(ms) == 1 && ms[0].GetHistogram() != nil {
				intake.records = int64(ms[0].GetHistogram().GetSampleSum())
				found++
			}
		case "saga_machine_relay_rounds_total":
			for _, m := range ms {
				n := int64(m.GetCounter().GetValue())
				relay.batches += n
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" && l.GetValue() == "empty" {
						relay.empty += n
					}
				}
			}
		case "saga_machine_relay_seconds_total":
			if len(ms) == 1 {
				relay.busy = time.Duration(ms[0].GetCounter().GetValue() * float64(time.Second))
				found++
			}
		case "saga_machine_commands_published_total":
			if len(ms) == 1 {
				relay.records = int64(ms[0].GetCounter().GetValue())
				found++
			}
		}
	}
	if found != 4 {
		return intake, relay, fmt.Errorf("stages: saga-machine's registry lacks the intake batch histograms or the relay counters")
	}
	return intake, relay, nil
}

// stageReport is what each stage did between the samples before and
// after, window apart, sorted by name.
func stageReport(before, after map[string]stageTotals, window time.Duration) []StageReport {
	names := make([]string, 0, len(after))
	for n := range after {
		if _, ok := before[n]; ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]StageReport, 0, len(names))
	for _, n := range names {
		b, a := before[n], after[n]
		r := StageReport{Name: n, Batches: a.batches - b.batches, EmptyBatches: a.empty - b.empty}
		busy := a.busy - b.busy
		if r.Batches > 0 {
			r.RecordsPerBatch = float64(a.records-b.records) / float64(r.Batches)
			r.MsPerBatch = busy.Seconds() * 1000 / float64(r.Batches)
		}
		if window > 0 {
			r.Busy = busy.Seconds() / window.Seconds()
		}
		out = append(out, r)
	}
	return out
}
