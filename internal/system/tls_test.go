package system_test

import (
	"context"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

// overTLS is the PostgreSQL + Kafka backend with every Kafka connection
// (saga-machine's, the three services', their lag metrics) on the test
// broker's SASL_SSL listener, trusting only the test CA.
var overTLS = backend{"postgres+kafka over TLS", func(t *testing.T) system.Config {
	cfg := backends[0].config(t)
	k := testenv.KafkaTLS(t)
	cfg.Brokers, cfg.KafkaSASL, cfg.KafkaTLS = k.Brokers, k.SASL, k.TLS
	return cfg
}}

// TestWholeSystemOverTLS: a funded buy goes through the whole system with
// every Kafka connection over TLS, read from every service's database:
// the saga completes, the deal is executed, the cash moved once and the
// client is told once.
func TestWholeSystemOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	w := newCancelWorld(ctx, t, overTLS)
	inst := w.finished(ctx, t)
	if inst.State != "NOTIFICATION" {
		t.Errorf("saga: %s %s, want NOTIFICATION", inst.State, inst.Status)
	}
	if status, _ := w.row(ctx, t); status != deals.StatusExecuted {
		t.Errorf("deal: %s, want executed", status)
	}
	if cash := w.cash(ctx, t); !cash.Equal(decimal.RequireFromString("800")) {
		t.Errorf("alice's cash: %s, want 800 (the buy of 200.00, once)", cash)
	}
	if notes := w.notifications(ctx, t); len(notes) != 1 || notes[0].Status != "executed" {
		t.Errorf("notifications: %+v, want one: executed", notes)
	}
}
