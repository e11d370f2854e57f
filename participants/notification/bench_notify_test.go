package notification

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// BenchmarkNotify measures NOTIFY end to end through Run on PostgreSQL
// and Kafka, with the handler registered one command at a time (single:
// sdk.Handle with handleNotify, as before batch handlers) and as the
// service registers it (batch: RegisterHandlers, handleNotifyBatch): b.N
// notificationDTO commands for b.N deals, published at once to a
// 6-partition command topic (after one warm-up command, handled before
// the timer starts), until b.N notifications are stored (read on a
// second, uncounted connection). It reports commands/s and the SQL
// statements the participant sent per command (all of them, BEGIN and
// COMMIT included, relay and pruning too; and those on the notifications
// table), counted by a wrapper around lib/pq.
func BenchmarkNotify(b *testing.B) {
	for _, mode := range []string{"single", "batch"} {
		b.Run(mode, func(b *testing.B) { benchNotify(b, mode == "batch") })
	}
}

func benchNotify(b *testing.B, batch bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	url := testenv.Postgres(b)
	db, counter := servicetest.CountedPostgres(b, url, Migrate, onNotifications)
	watch, err := sqlx.Open("postgres", url) // not counted
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { watch.Close() })
	bus := servicetest.NewKafkaBus(ctx, b, "notification", "NOTIFICATION_TOPIC", 6)
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
		sdk.Handle(p, CommandNotify, s.handleNotify)
	}
	recs := make([]kafka.Record, b.N+1) // recs[0]: the warm-up, stored before the timer starts
	for i := range recs {
		status := dealctx.StatusExecuted
		if i%4 == 3 {
			status = dealctx.StatusRejected
		}
		dc := settled("alice", status, "")
		m := envelope.Message{V: envelope.Version, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "MANUAL_CREATE_ORDER", SagaVersion: 3,
			Kind: envelope.KindCommand, Name: CommandNotify, Participant: Name, OccurredAt: time.Now().UTC(),
			Payload: mustJSON(b, map[string]any{DTOKey: dtoOf(dc, false)})}
		recs[i] = kafka.Record{Topic: bus.CommandTopic, Key: m.SagaID, Value: mustJSON(b, m),
			Headers: map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}}
	}
	prod := bus.Producer(b)
	servicetest.Run(ctx, b, p)

	// The consumer has joined its group and handled one command before
	// the timer starts.
	waitStored := func(n int) {
		for stored := 0; stored < n; {
			if err := watch.GetContext(ctx, &stored, `SELECT COUNT(*) FROM notifications`); err != nil {
				b.Fatalf("waiting for %d notifications: %v", n, err)
			}
			if stored < n {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	if err := prod.Publish(ctx, recs[:1]); err != nil {
		b.Fatal(err)
	}
	waitStored(1)
	counter.Reset()
	b.ResetTimer()
	start := time.Now()
	if err := prod.Publish(ctx, recs[1:]); err != nil {
		b.Fatal(err)
	}
	waitStored(b.N + 1)
	elapsed := time.Since(start)
	b.StopTimer()
	counter.Report(b, b.N, elapsed, "notif")
	var parked int
	if err := watch.GetContext(ctx, &parked, `SELECT COUNT(*) FROM sdk_dead_letters`); err != nil || parked != 0 {
		b.Fatalf("dead letters = %d (err %v), want 0", parked, err)
	}
}

func mustJSON(tb testing.TB, v any) json.RawMessage {
	tb.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// onNotifications picks the statements on the notifications table.
func onNotifications(q string) bool {
	return strings.Contains(q, "FROM notifications") || strings.Contains(q, "INTO notifications")
}
