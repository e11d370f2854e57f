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
// process started: how many, their records and the time spent in them.
type stageTotals struct {
	batches, records int64
	busy             time.Duration
}

// StageReport is one stage's batches over the measured window: the
// engine's intake (one batch at a time) or a participant's committed
// batches. Busy is the share of the window the stage spent in batches:
// near 1 it is the stage that limits throughput (a participant can pass 1
// when large batches run partition by partition at once).
type StageReport struct {
	Name            string  `json:"name"`
	Batches         int64   `json:"batches"`
	RecordsPerBatch float64 `json:"records_per_batch"`
	MsPerBatch      float64 `json:"ms_per_batch"`
	Busy            float64 `json:"busy_fraction"`
}

// stageSampler reads every stage's totals (nil when the stages cannot be
// seen: a system bench did not start).
type stageSampler func(ctx context.Context) (map[string]stageTotals, error)

// Stage names in the report.
const (
	stageIntake = "saga-machine intake"
)

// systemStages samples the stages of a system started in this process:
// the intake from saga-machine's metrics registry
// (saga_machine_intake_batch_seconds and _records) and each participant
// from sdk.Participant.Stats.
func systemStages(sys *system.System) stageSampler {
	return func(ctx context.Context) (map[string]stageTotals, error) {
		out := map[string]stageTotals{}
		intake, err := intakeTotals(sys.SagaMachine.Registry)
		if err != nil {
			return nil, err
		}
		out[stageIntake] = intake
		for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
			if svc == nil || svc.Participant == nil {
				continue
			}
			st, err := svc.Participant.Stats(ctx)
			if err != nil {
				return nil, fmt.Errorf("stages: %s: %w", svc.Name, err)
			}
			out[svc.Name] = stageTotals{batches: st.Batches, records: st.BatchCommands, busy: st.BatchTime}
		}
		return out, nil
	}
}

// intakeTotals reads the intake's histograms from reg.
func intakeTotals(reg prometheus.Gatherer) (stageTotals, error) {
	fams, err := reg.Gather()
	if err != nil {
		return stageTotals{}, fmt.Errorf("stages: gather saga-machine's metrics: %w", err)
	}
	var t stageTotals
	found := 0
	for _, f := range fams {
		if len(f.GetMetric()) != 1 || f.GetMetric()[0].GetHistogram() == nil {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		switch f.GetName() {
		case "saga_machine_intake_batch_seconds":
			t.batches = int64(h.GetSampleCount())
			t.busy = time.Duration(h.GetSampleSum() * float64(time.Second))
			found++
		case "saga_machine_intake_batch_records":
			t.records = int64(h.GetSampleSum())
			found++
		}
	}
	if found != 2 {
		return stageTotals{}, fmt.Errorf("stages: saga-machine's registry lacks the intake batch histograms")
	}
	return t, nil
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
		r := StageReport{Name: n, Batches: a.batches - b.batches}
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
