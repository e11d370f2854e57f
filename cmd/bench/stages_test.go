package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
)

// stageReport gives each stage's batches, records per batch, time per
// batch and busy share between two samples; a stage missing from the first
// sample is left out, and a stage with no batches reports zeros.
func TestStageReportFromTwoSamples(t *testing.T) {
	before := map[string]stageTotals{
		"intake": {batches: 10, records: 100, busy: time.Second},
		"deals":  {batches: 4, records: 8, busy: 200 * time.Millisecond},
	}
	after := map[string]stageTotals{
		"intake": {batches: 30, records: 500, busy: 3 * time.Second}, // 20 batches of 20 records, 2 s
		"deals":  {batches: 4, records: 8, busy: 200 * time.Millisecond},
		"late":   {batches: 5, records: 5, busy: time.Second},
	}
	got := stageReport(before, after, 4*time.Second)
	want := []StageReport{
		{Name: "deals"},
		{Name: "intake", Batches: 20, RecordsPerBatch: 20, MsPerBatch: 100, Busy: 0.5},
	}
	if len(got) != len(want) {
		t.Fatalf("stages = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("stage %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// intakeTotals reads the histograms httpapi.Metrics fills from the
// intake's batches, and refuses a registry without them.
func TestIntakeTotalsFromMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.BatchHandled(3, 20*time.Millisecond)
	m.BatchHandled(5, 30*time.Millisecond)
	got, err := intakeTotals(reg)
	if err != nil {
		t.Fatal(err)
	}
	if got.batches != 2 || got.records != 8 || got.busy != 50*time.Millisecond {
		t.Errorf("intake totals = %+v, want 2 batches, 8 records, 50ms", got)
	}
	if _, err := intakeTotals(prometheus.NewRegistry()); err == nil {
		t.Error("a registry without the intake's histograms: nil error")
	}
}
