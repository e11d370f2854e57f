package profile

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
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

// BenchmarkApproveOrderRun measures APPROVE_ORDER end to end through Run on
// PostgreSQL and Kafka, registered as before (sdk.Handle with
// handleApproveOrder: "single") and as now (RegisterHandlers, the batch
// handler: "batch"): 64 funded portfolios, b.N buys spread over them, each
// in its own saga (key: the saga id, so a portfolio's orders cross the 6
// partitions, as in production; or, in "/one-key", all on one key, one
// partition, so that no two of the participant's transactions wait for
// each other's locks), published at once, until b.N
// ORDER_APPROVED are read back. It reports commands/s and the SQL
// statements the participant sent per command (all of them, BEGIN and
// COMMIT, inbox, outbox and relay included; and those on profile's own
// tables), counted by a wrapper around lib/pq, commands per BEGIN (the
// relay's transactions included) and the ROLLBACKs (a transaction that
// failed, e.g. on a deadlock, and was retried).
func BenchmarkApproveOrderRun(b *testing.B) {
	for _, keys := range []string{"", "/one-key"} {
		for _, mode := range []string{"single", "batch"} {
			b.Run(mode+keys, func(b *testing.B) { benchApproveRun(b, mode == "batch", keys != "") })
		}
	}
}

// benchApproveRun is one BenchmarkApproveOrderRun: with the batch handler
// or not, and with every command on one key (one partition: no two
// transactions of the participant wait for each other's locks) or each
// on its saga's.
func benchApproveRun(b *testing.B, batch, oneKey bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	db, counter := servicetest.CountedPostgres(b, testenv.Postgres(b), Migrate, onProfileTables)
	bus := servicetest.NewKafkaBus(ctx, b, "profile", "PROFILE_TOPIC", 6)
	p, err := sdk.New(bus.Config(Name, db, quiet))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{DB: db, Participant: p, Auth: devAuth(b), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if batch {
		s.RegisterHandlers(p)
	} else {
		sdk.Handle(p, CommandApproveOrder, s.handleApproveOrder)
	}
	const portfolios = 64
	pfs := make([]Portfolio, portfolios)
	for i := range pfs {
		if pfs[i], err = fundedPortfolio(ctx, s, "alice", dec("1000000000")); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM sdk_outbox`); err != nil {
		b.Fatal(err)
	}
	recs := make([]kafka.Record, b.N)
	for i := range recs {
		dc := deal("alice", pfs[i%portfolios].ID, "buy", "1", "1.25")
		m := envelope.Message{V: envelope.Version, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
			Kind: envelope.KindCommand, Name: CommandApproveOrder, Participant: Name, OccurredAt: time.Now().UTC(), Payload: mustJSON(b, dealctx.Wrap(dc))}
		key := m.SagaID
		if oneKey {
			key = "one-key"
		}
		recs[i] = kafka.Record{Topic: bus.CommandTopic, Key: key, Value: mustJSON(b, m),
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
			switch r.Headers[envelope.HeaderName] {
			case EventOrderApproved:
				got++
			case EventOrderRejected:
				b.Fatalf("an order was rejected: %s", r.Value)
			}
		}
		if err := cons.Commit(ctx, rs); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	n := counter.Report(b, b.N, elapsed, "profile")
	b.ReportMetric(float64(n.Rollbacks), "rollbacks")
	var approved int
	var cash decimal.Decimal
	if err := db.GetContext(ctx, &approved, `SELECT COUNT(*) FROM order_decisions WHERE status = 'approved'`); err != nil {
		b.Fatal(err)
	}
	if err := db.GetContext(ctx, &cash, `SELECT SUM(cash) FROM portfolios`); err != nil {
		b.Fatal(err)
	}
	if want := dec("1000000000").Mul(decimal.NewFromInt(portfolios)).Sub(dec("1.25").Mul(decimal.NewFromInt(int64(b.N)))); approved != b.N || !cash.Equal(want) {
		b.Fatalf("approved = %d, total cash = %s, want %d and %s", approved, cash, b.N, want)
	}
}

// profileTables are the tables APPROVE_ORDER itself reads and writes.
var profileTables = []string{"portfolios", "positions", "snapshots", "order_decisions", "order_reversals"}

// onProfileTables picks the statements on profileTables.
func onProfileTables(q string) bool {
	for _, t := range profileTables {
		if strings.Contains(q, " "+t+" ") || strings.Contains(q, " "+t+"\n") {
			return true
		}
	}
	return false
}
