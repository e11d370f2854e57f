package deals

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// BenchmarkDealsSettle measures APPROVE_DEAL end to end through Run on
// PostgreSQL and Kafka: b.N draft deals, b.N commands published to the
// command topic at once, until b.N DEAL_UPDATED replies are read back. It
// reports commands/s and the SQL statements the participant sent per
// command (all of them, BEGIN and COMMIT included, relay too; and those on
// the deals table), counted by a wrapper around lib/pq.
func BenchmarkDealsSettle(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	db, counter := servicetest.CountedPostgres(b, testenv.Postgres(b), Migrate, func(q string) bool {
		return strings.Contains(q, "UPDATE deals") || strings.Contains(q, "FROM deals")
	})
	bus := servicetest.NewKafkaBus(ctx, b, "deals", "DEALS_TOPIC", 6)
	p, err := sdk.New(bus.Config(Name, db, quiet))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(b), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	s.RegisterHandlers(p)

	// b.N draft deals (their REGISTER events are dropped: not measured).
	deals := make([]Deal, b.N)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < b.N; i += 16 {
				d, _, err := s.Create(ctx, "alice", buyRequest(), "")
				if err != nil {
					errs <- err
					return
				}
				deals[i] = d
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM sdk_outbox`); err != nil {
		b.Fatal(err)
	}
	recs := make([]kafka.Record, b.N)
	for i, d := range deals {
		dc := d.context()
		dc.Status = dealctx.StatusApproved
		m := envelope.Message{V: envelope.Version, ID: uuid.NewString(), SagaID: d.SagaID, Saga: SagaName, SagaVersion: 1,
			Kind: envelope.KindCommand, Name: CommandApprove, Participant: Name, OccurredAt: time.Now().UTC(), Payload: mustJSONb(b, dealctx.Wrap(dc))}
		recs[i] = kafka.Record{Topic: bus.CommandTopic, Key: m.SagaID, Value: mustJSONb(b, m),
			Headers: map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}}
	}
	prod := bus.Producer(b)
	cons := bus.Replies(b)
	servicetest.Run(ctx, b, p)

	counter.Reset()
	b.ResetTimer()
	start := time.Now()
	if err := prod.Publish(ctx, recs); err != nil {
		b.Fatal(err)
	}
	for got := 0; got < b.N; {
		rs, err := cons.Fetch(ctx, 1000)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range rs {
			if r.Headers[envelope.HeaderName] == EventUpdated {
				got++
			}
		}
		if err := cons.Commit(ctx, rs); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	counter.Report(b, b.N, elapsed, "deals")
	var executed int
	if err := db.GetContext(ctx, &executed, `SELECT COUNT(*) FROM deals WHERE status = 'executed'`); err != nil {
		b.Fatal(err)
	}
	if executed != b.N {
		b.Fatalf("executed deals = %d, want %d", executed, b.N)
	}
}

func mustJSONb(tb testing.TB, v any) []byte {
	tb.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
