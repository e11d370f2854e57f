package sdk_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

func TestRunBarrier(t *testing.T) { onBothBackends(t, runBarrier) }

// runBarrier sends through a real broker, as saga-machine would after an
// outage: a command past its deadline, a compensation that overtook its
// forward command (then the forward command, twice), and a command in
// time. Only the last may have an effect; every command gets its answer.
func runBarrier(t *testing.T, db *sqlx.DB, brokers []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmdTopic, evTopic := testenv.Name(t, "PROFILE_TOPIC"), testenv.Name(t, "SAGA_SERVER_TOPIC")
	kcfg := kafka.Config{Brokers: brokers, SASL: testenv.KafkaSASLFor(brokers)}
	if err := kafka.EnsureTopics(ctx, kcfg, 3, cmdTopic, evTopic); err != nil {
		t.Fatal(err)
	}
	l := newLedger(t, db, sdk.Config{Brokers: brokers, KafkaSASL: kcfg.SASL, CommandTopic: cmdTopic, EventTopic: evTopic, Group: testenv.Name(t, "profile")})
	now := l.clock.Now()
	expired := forward("d-expired", now.Add(-time.Minute))
	hanging := forward("d-hanging", now.Add(time.Minute))
	comp := compensation(hanging)
	inTime := forward("d-in-time", now.Add(time.Minute))
	msgs := []envelope.Message{expired, comp, hanging, hanging, inTime}
	recs := make([]sdk.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = record(t, m)
		recs[i].Topic = cmdTopic
	}

	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- l.p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	prod, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, toKafka(recs)); err != nil {
		t.Fatal(err)
	}

	cons, err := kafka.NewConsumer(kcfg, testenv.Name(t, "reader"), evTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	byCause := map[string][]envelope.Message{}
	for got := 0; got < len(msgs); {
		rs, err := cons.Fetch(ctx, 100)
		if err != nil {
			t.Fatalf("read replies (have %d of %d): %v", got, len(msgs), err)
		}
		for _, r := range rs {
			var m envelope.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("reply is not an envelope: %v", err)
			}
			byCause[m.CausationID] = append(byCause[m.CausationID], m)
			got++
		}
		if err := cons.Commit(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	wants := []struct {
		cmd   envelope.Message
		n     int
		event string
	}{
		{expired, 1, envelope.CommandExpired},
		{comp, 1, "ORDER_REVERTED"},
		{hanging, 2, envelope.CommandExpired}, // the refusal, then the same reply again
		{inTime, 1, "ORDER_APPROVED"},
	}
	for _, w := range wants {
		rs := byCause[w.cmd.ID]
		if len(rs) != w.n || rs[0].Name != w.event || rs[len(rs)-1].ID != rs[0].ID {
			t.Errorf("replies to %s %s: %+v, want %d × %s (one message id)", w.cmd.Name, w.cmd.Payload, rs, w.n, w.event)
		}
	}
	if got := l.debits(t); len(got) != 1 || got[0] != "d-in-time" {
		t.Errorf("debits = %v, want only d-in-time", got)
	}
	if got, want := l.cash(t), ledgerCash-30; got != want {
		t.Errorf("cash = %d, want %d", got, want)
	}
	if got, want := l.handlerRuns("APPROVE_ORDER"), 1; got < want {
		t.Errorf("APPROVE_ORDER runs = %d, want at least %d", got, want)
	}
}
