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
		"relay":  {batches: 14, records: 30, empty: 3, busy: 1400 * time.Millisecond}, // 4 rounds, 1 empty, 20 records, 0.4 s
	}
	before["relay"] = stageTotals{batches: 10, records: 10, empty: 2, busy: time.Second}
	got := stageReport(before, after, 4*time.Second)
	want := []StageReport{
		{Name: "deals"},
		{Name: "intake", Batches: 20, RecordsPerBatch: 20, MsPerBatch: 100, Busy: 0.5},
		{Name: "relay", Batches: 4, EmptyBatches: 1, RecordsPerBatch: 5, MsPerBatch: 100, Busy: 0.1},
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

// engineTotals reads the histograms and counters httpapi.Metrics fills
// from the intake's batches and the relay's rounds, and refuses a registry
// without them.
func TestEngineTotalsFromMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.BatchHandled(3, 20*time.Millisecond)
	m.BatchHandled(5, 30*time.Millisecond)
	m.RelayRound(4, 10*time.Millisecond)
	m.CommandsPublished(4, time.Millisecond)
	m.RelayRound(0, 5*time.Millisecond)
	intake, relay, err := engineTotals(reg)
	if err != nil {
		t.Fatal(err)
	}
	if intake.batches != 2 || intake.records != 8 || intake.busy != 50*time.Millisecond {
		t.Errorf("intake totals = %+v, want 2 batches, 8 records, 50ms", intake)
	}
	if relay.batches != 2 || relay.empty != 1 || relay.records != 4 || relay.busy != 15*time.Millisecond {
		t.Errorf("relay totals = %+v, want 2 rounds (1 empty), 4 commands, 15ms", relay)
	}
	if _, _, err := engineTotals(prometheus.NewRegistry()); err == nil {
		t.Error("a registry without the intake's histograms: nil error")
	}
}
