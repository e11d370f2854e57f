package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// BenchmarkHandleRecords measures events applied per second through
// HandleRecords, one batch per iteration, with durable commits. A batch
// pipelines three generations of sagas: REGISTER for new sagas,
// ORDER_APPROVED for the previous batch's, DEAL_UPDATED for the one before,
// so every event is a real transition of a stored instance with a command in
// the outbox. Run with
//
//	go test ./engine -run '^$' -bench BenchmarkHandleRecords -benchtime 40x
func BenchmarkHandleRecords(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"postgres", func(b *testing.B) string { return testenv.Postgres(b) }},
		{"sqlite", func(b *testing.B) string { return "sqlite:" + filepath.Join(b.TempDir(), "bench.db") }},
	} {
		b.Run(db.name, func(b *testing.B) { benchHandle(b, db.url(b)) })
	}
}

func benchHandle(b *testing.B, url string) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, url)
	if err != nil {
		b.Fatalf("open %s: %v", url, err)
	}
	defer st.Close()
	defs, probs := definition.LoadDir(sagas.FS)
	if len(probs) > 0 {
		b.Fatalf("definitions: %v", probs)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		b.Fatal(err)
	}
	o, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	const perStage = 500 / 3
	var gens [][]string // saga ids by generation
	offset := int64(0)
	mk := func(id, name, by, payload string) engine.Record {
		m := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: id, Saga: "MANUAL_CREATE_ORDER",
			Kind: engine.KindEvent, Name: name, Participant: by, OccurredAt: time.Now().UTC()}
		if payload != "" {
			m.Payload = json.RawMessage(payload)
		}
		v, _ := json.Marshal(m)
		offset++
		return engine.Record{Topic: "SAGA_SERVER_TOPIC", Key: id, Value: v, Offset: offset}
	}
	batch := func() []engine.Record {
		ids := make([]string, perStage)
		recs := make([]engine.Record, 0, 3*perStage)
		for i := range ids {
			ids[i] = uuid.NewString()
			recs = append(recs, mk(ids[i], "REGISTER", "deals",
				fmt.Sprintf(`{"deal_context":{"deal_id":"d-%d","user_id":"u-%d","amount":"100.50","ticker":"SBER"}}`, offset, i)))
		}
		if n := len(gens); n >= 1 {
			for _, id := range gens[n-1] {
				recs = append(recs, mk(id, "ORDER_APPROVED", "profile", `{"approval":{"balance_after":"900.00"}}`))
			}
		}
		if n := len(gens); n >= 2 {
			for _, id := range gens[n-2] {
				recs = append(recs, mk(id, "DEAL_UPDATED", "deals", `{"deal_status":"executed"}`))
			}
		}
		gens = append(gens, ids)
		return recs
	}
	// Warm up: two batches so that every later batch is a full mix.
	for i := 0; i < 2; i++ {
		if err := o.HandleRecords(ctx, batch()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	var busy time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		recs := batch()
		b.StartTimer()
		start := time.Now()
		if err := o.HandleRecords(ctx, recs); err != nil {
			b.Fatal(err)
		}
		busy += time.Since(start)
		events += len(recs)
	}
	b.StopTimer()
	b.ReportMetric(float64(events)/busy.Seconds(), "events/s")
	b.ReportMetric(float64(busy.Nanoseconds())/float64(events), "ns/event")
}
