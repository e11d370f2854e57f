package profile

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// BenchmarkApproveOrder measures one APPROVE_ORDER through the Kafka
// intake's code path (inbox, portfolio lock, cash and position update,
// snapshot upsert, decision, reply in the outbox: one transaction).
func BenchmarkApproveOrder(b *testing.B) {
	dbs := map[string]func(testing.TB, func(context.Context, *sqlx.DB) error) *sqlx.DB{
		"sqlite": servicetest.SQLite, "postgres": servicetest.Postgres,
	}
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			db := dbs[name](b, Migrate)
			p, err := sdk.New(sdk.Config{Name: Name, DB: db, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(Config{DB: db, Participant: p, Auth: devAuth(b), Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			s.RegisterHandlers(p)
			ctx := context.Background()
			pf, err := fundedPortfolio(ctx, s, "alice", dec("1000000000"))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				raw, _ := json.Marshal(dealctx.Wrap(deal("alice", pf.ID, "buy", "1", "1.25")))
				out, err := p.Dispatch(ctx, record(p, uuid.NewString(), raw))
				if err != nil || out.Reply == nil || out.Reply.Name != EventOrderApproved {
					b.Fatalf("dispatch: %+v %v", out, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}
