package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

func benchDB(b *testing.B, kind string) *sqlx.DB {
	b.Helper()
	if kind == "sqlite" {
		return openSQLite(b)
	}
	db, err := sqldb.OpenPostgres(testenv.Postgres(b) + os.Getenv("SDK_BENCH_PG_OPTS")) // driver: $SAGA_PG_DRIVER
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchParticipant is a participant whose APPROVE_ORDER handler writes one
// business row, like a real one.
func benchParticipant(b *testing.B, db *sqlx.DB, cfg sdk.Config) *sdk.Participant {
	b.Helper()
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE approved (deal_id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	cfg.Name, cfg.DB = "profile", db
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := sdk.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		d := cmd.Payload.DealContext
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO approved (deal_id, amount) VALUES (?, ?)`), d.DealID, d.Amount); err != nil {
			return sdk.Result{}, err
		}
		return sdk.Reply("ORDER_APPROVED", map[string]any{"approved": d.DealID}), nil
	})
	return p
}

// BenchmarkDispatch measures one command through inbox, handler and outbox
// (one transaction each, serial), plus relaying the replies in batches.
func BenchmarkDispatch(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) { benchDispatch(b, kind) })
	}
}

// benchDispatch is BenchmarkDispatch on one database kind.
func benchDispatch(b *testing.B, kind string) {
	p := benchParticipant(b, benchDB(b, kind), sdk.Config{})
	ctx := context.Background()
	recs := make([]sdk.Record, b.N)
	for i := range recs {
		_, recs[i] = command(b, "APPROVE_ORDER", uuid.NewString(), orderPayload(fmt.Sprint(i), i))
	}
	discard := func(context.Context, []sdk.Record) error { return nil }
	b.ResetTimer()
	start := time.Now()
	for i, r := range recs {
		if _, err := p.Dispatch(ctx, r); err != nil {
			b.Fatal(err)
		}
		if i%500 == 499 {
			if _, err := p.Flush(ctx, discard); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := p.Flush(ctx, discard); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
}

// BenchmarkRun measures commands/s end to end through Run: b.N commands
// published to the command topic, until b.N replies are read back.
func BenchmarkRun(b *testing.B) {
	setups := []struct {
		name string
		db   string
		bus  func(b *testing.B) []string
	}{
		{"sqlite+embedded", "sqlite", func(b *testing.B) []string {
			br, err := embedded.Start(embedded.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(br.Close)
			return br.Addrs()
		}},
		{"postgres+kafka", "postgres", func(b *testing.B) []string { return testenv.KafkaBrokers(b) }},
	}
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			brokers := s.bus(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmdTopic, evTopic := testenv.Name(b, "PROFILE_TOPIC"), testenv.Name(b, "SAGA_SERVER_TOPIC")
			kcfg := kafka.Config{Brokers: brokers, SASL: testenv.KafkaSASLFor(brokers)}
			if err := kafka.EnsureTopics(ctx, kcfg, 6, cmdTopic, evTopic); err != nil {
				b.Fatal(err)
			}
			p := benchParticipant(b, benchDB(b, s.db), sdk.Config{Brokers: brokers, KafkaSASL: kcfg.SASL, CommandTopic: cmdTopic, EventTopic: evTopic, Group: testenv.Name(b, "profile")})
			prod, err := kafka.NewProducer(kcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer prod.Close()
			cons, err := kafka.NewConsumer(kcfg, testenv.Name(b, "reader"), evTopic)
			if err != nil {
				b.Fatal(err)
			}
			defer cons.Close()
			recs := make([]sdk.Record, b.N)
			for i := range recs {
				_, recs[i] = command(b, "APPROVE_ORDER", uuid.NewString(), orderPayload(fmt.Sprint(i), i))
				recs[i].Topic = cmdTopic
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()
			defer func() { stop(); <-done }()

			b.ResetTimer()
			start := time.Now()
			if err := prod.Publish(ctx, toKafka(recs)); err != nil {
				b.Fatal(err)
			}
			for got := 0; got < b.N; {
				rs, err := cons.Fetch(ctx, 1000)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range rs {
					if r.Headers[envelope.HeaderName] == "ORDER_APPROVED" {
						got++
					}
				}
				if err := cons.Commit(ctx, rs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
		})
	}
}
