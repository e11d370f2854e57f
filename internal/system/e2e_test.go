package system_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
)

// backend is one pair of real database and real broker.
type backend struct {
	name   string
	config func(t *testing.T) system.Config
}

var backends = []backend{
	{"postgres+kafka", func(t *testing.T) system.Config {
		// One fresh database per service, real Kafka, unique topics and groups.
		return system.Config{
			Databases: system.Databases{
				Saga: testenv.Postgres(t), Deals: testenv.Postgres(t),
				Profile: testenv.Postgres(t), Notification: testenv.Postgres(t),
			},
			Brokers:   testenv.KafkaBrokers(t),
			KafkaSASL: testenv.KafkaSASLFor(testenv.KafkaBrokers(t)),
			Topics: system.Topics{
				Events: testenv.Name(t, "SAGA_SERVER_TOPIC"), Deals: testenv.Name(t, "DEALS_TOPIC"),
				Profile: testenv.Name(t, "PROFILE_TOPIC"), Notification: testenv.Name(t, "NOTIFICATION_TOPIC"),
			},
			GroupPrefix: testenv.Name(t, "e2e") + ".",
			DataDir:     t.TempDir(),
		}
	}},
	{"sqlite+embedded", func(t *testing.T) system.Config { return system.Config{DataDir: t.TempDir()} }},
}

// The whole system, each service on its own database and talking only
// through Kafka: a funded buy is executed (portfolio, today's snapshot and
// a notification updated), an unfunded buy is rejected with its reason
// (portfolio unchanged, a notification); then every command sent is
// delivered again and nothing changes.
func TestEndToEnd(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			sys := start(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			c, err := sys.Client("alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Login(ctx); err != nil {
				t.Fatalf("login: %v", err)
			}
			pf, err := c.CreatePortfolio(ctx, "Main", "USD")
			if err != nil {
				t.Fatalf("create portfolio: %v", err)
			}
			if _, _, err := sys.Fund(ctx, pf.ID, "1000.00", "USD", "e2e funding", "e2e-"+pf.ID); err != nil {
				t.Fatalf("fund the portfolio: %v", err)
			}

			// Funded: 2 × 100.00 = 200.00 of 1000.00. The portfolio id is sent
			// in upper case: deals stores it canonical and profile finds it.
			funded := place(ctx, t, sys, c, system.DealRequest{PortfolioID: strings.ToUpper(pf.ID), Side: "buy", Instrument: "ACME", Quantity: "2", Price: "100.00", Currency: "USD"})
			if funded.deal.Status != "executed" || funded.deal.Reason != "" || funded.deal.PortfolioID != pf.ID {
				t.Errorf("funded deal: status %q reason %q portfolio %q, want executed without reason on %s", funded.deal.Status, funded.deal.Reason, funded.deal.PortfolioID, pf.ID)
			}
			afterBuy, err := c.Portfolio(ctx, pf.ID)
			if err != nil {
				t.Fatalf("read portfolio: %v", err)
			}
			checkHoldings(t, "after the funded buy", afterBuy.Cash, afterBuy.Positions, "800", map[string]string{"ACME": "2"})
			today := time.Now().UTC().Format(profile.DateLayout)
			snaps, err := c.Snapshots(ctx, pf.ID)
			if err != nil {
				t.Fatalf("snapshots: %v", err)
			}
			if len(snaps) == 0 || snaps[len(snaps)-1].Date != today {
				t.Fatalf("snapshots %+v: want the last one dated today %s", snaps, today)
			}
			last := snaps[len(snaps)-1]
			checkHoldings(t, "today's snapshot", last.Cash, last.Positions, "800", map[string]string{"ACME": "2"})

			// Unfunded: 50 × 100.00 = 5000.00 > 800.00.
			unfunded := place(ctx, t, sys, c, system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "50", Price: "100.00", Currency: "USD"})
			if unfunded.deal.Status != "rejected" || !strings.Contains(unfunded.deal.Reason, "insufficient cash") {
				t.Errorf("unfunded deal: status %q reason %q, want rejected for insufficient cash", unfunded.deal.Status, unfunded.deal.Reason)
			}
			afterReject, err := c.Portfolio(ctx, pf.ID)
			if err != nil {
				t.Fatalf("read portfolio: %v", err)
			}
			if got, want := mustJSON(t, afterReject), mustJSON(t, afterBuy); got != want {
				t.Errorf("portfolio changed by the rejected buy:\n got %s\nwant %s", got, want)
			}
			// NOTIFY is sent when the saga reaches its final state, so the
			// notification service stores it a moment later: wait for both
			// (bounded by ctx), then check exactly what was stored.
			var notes []notification.Notification
			for {
				var err error
				if notes, err = c.Notifications(ctx); err != nil {
					t.Fatalf("notifications: %v", err)
				}
				if len(notes) >= 2 || ctx.Err() != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			byDeal := map[string]string{}
			for _, n := range notes {
				byDeal[n.DealID] = n.Status
			}
			if len(notes) != 2 || byDeal[funded.deal.ID] != "executed" || byDeal[unfunded.deal.ID] != "rejected" {
				t.Errorf("notifications %+v: want one executed for %s and one rejected for %s", notes, funded.deal.ID, unfunded.deal.ID)
			}

			// Duplicate delivery of every command sent.
			before := observe(ctx, t, sys, c, pf.ID, funded, unfunded)
			sent := commandIDs(before.Sagas)
			if len(sent) != 6 { // APPROVE_ORDER, APPROVE_DEAL|REJECT_DEAL, NOTIFY per saga
				t.Errorf("timelines list %d commands, want 6", len(sent))
			}
			kcfg := sys.Kafka("e2e-test")
			recs := capture(ctx, t, kcfg, sys, sent)
			prod, err := kafka.NewProducer(kcfg)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			if err := prod.Publish(ctx, recs); err != nil {
				t.Fatalf("re-publish %d commands: %v", len(recs), err)
			}
			quiesce(ctx, t, sys, cfg.GroupPrefix)
			after := observe(ctx, t, sys, c, pf.ID, funded, unfunded)
			if got, want := mustJSON(t, after), mustJSON(t, before); got != want {
				t.Errorf("duplicate commands changed the system:\n got %s\nwant %s", got, want)
			}
		})
	}
}

type placed struct {
	deal struct {
		ID, Status, Reason, SagaID, PortfolioID string
	}
	saga engine.Instance
}

// place posts a deal and waits until its saga is final.
func place(ctx context.Context, t *testing.T, sys *system.System, c *system.Client, req system.DealRequest) placed {
	t.Helper()
	d, _, err := c.CreateDeal(ctx, req, "")
	if err != nil {
		t.Fatalf("POST /deals: %v", err)
	}
	inst, err := sys.WaitFinal(ctx, d.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != "NOTIFICATION" || inst.Status != engine.StatusCompleted {
		t.Errorf("saga %s: state %s status %s, want NOTIFICATION completed", inst.ID, inst.State, inst.Status)
	}
	got, err := c.Deal(ctx, d.ID)
	if err != nil {
		t.Fatalf("GET /deals/%s: %v", d.ID, err)
	}
	var p placed
	p.deal.ID, p.deal.Status, p.deal.Reason, p.deal.SagaID, p.deal.PortfolioID = got.ID, got.Status, got.Reason, got.SagaID, got.PortfolioID
	p.saga = inst
	return p
}

func checkHoldings(t *testing.T, what string, cash decimal.Decimal, pos profile.Positions, wantCash string, wantPos map[string]string) {
	t.Helper()
	if !cash.Equal(decimal.RequireFromString(wantCash)) {
		t.Errorf("%s: cash %s, want %s", what, cash, wantCash)
	}
	if len(pos) != len(wantPos) {
		t.Errorf("%s: positions %v, want %v", what, pos, wantPos)
	}
	for inst, q := range wantPos {
		if !pos[inst].Equal(decimal.RequireFromString(q)) {
			t.Errorf("%s: %s position %s, want %s", what, inst, pos[inst], q)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// world is everything a duplicate must not change.
type world struct {
	Deals         []deals.Deal
	Portfolio     profile.Portfolio
	Snapshots     []profile.Snapshot
	Notifications int
	Sagas         []sagaView
}

type sagaView struct {
	Saga     engine.Instance
	Timeline []engine.HistoryEntry
}

func observe(ctx context.Context, t *testing.T, sys *system.System, c *system.Client, pfID string, ps ...placed) world {
	t.Helper()
	var w world
	var err error
	for _, p := range ps {
		d, err := c.Deal(ctx, p.deal.ID)
		if err != nil {
			t.Fatalf("GET /deals/%s: %v", p.deal.ID, err)
		}
		w.Deals = append(w.Deals, d)
		inst, err := sys.SagaMachine.Store.GetInstance(ctx, p.deal.SagaID)
		if err != nil {
			t.Fatalf("saga %s: %v", p.deal.SagaID, err)
		}
		hist, err := sys.SagaMachine.Store.History(ctx, p.deal.SagaID)
		if err != nil {
			t.Fatalf("history of saga %s: %v", p.deal.SagaID, err)
		}
		w.Sagas = append(w.Sagas, sagaView{inst, hist})
	}
	if w.Portfolio, err = c.Portfolio(ctx, pfID); err != nil {
		t.Fatalf("portfolio: %v", err)
	}
	if w.Snapshots, err = c.Snapshots(ctx, pfID); err != nil {
		t.Fatalf("snapshots: %v", err)
	}
	notes, err := c.Notifications(ctx)
	if err != nil {
		t.Fatalf("notifications: %v", err)
	}
	w.Notifications = len(notes)
	return w
}

// commandIDs are the ids of every command the sagas' timelines list.
func commandIDs(sagas []sagaView) map[string]bool {
	ids := map[string]bool{}
	for _, s := range sagas {
		for _, h := range s.Timeline {
			for _, c := range h.Commands {
				ids[c.ID] = true
			}
		}
	}
	return ids
}

// capture reads the participants' command topics from the start until every
// command in want was seen, and returns those records for re-publishing.
func capture(ctx context.Context, t *testing.T, kcfg kafka.Config, sys *system.System, want map[string]bool) []kafka.Record {
	t.Helper()
	topics := []string{sys.Topics.Deals, sys.Topics.Profile, sys.Topics.Notification}
	opts, err := kcfg.ClientOpts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []kafka.Record
	seen := map[string]bool{}
	for len(seen) < len(want) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("captured %d of %d commands from %v: %v", len(seen), len(want), topics, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s[%d]: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			var m engine.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("record on %s is not an envelope: %v", r.Topic, err)
			}
			if !want[m.ID] {
				return
			}
			seen[m.ID] = true
			h := map[string]string{}
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			out = append(out, kafka.Record{Topic: r.Topic, Key: string(r.Key), Value: r.Value, Headers: h})
		})
	}
	return out
}

// quiesce waits until the participants consumed everything on their
// command topics, relayed their outboxes (the re-sent replies), and
// saga-machine consumed everything on the event topic.
func quiesce(ctx context.Context, t *testing.T, sys *system.System, groupPrefix string) {
	t.Helper()
	opts, err := sys.Kafka("").ClientOpts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	waitFor(ctx, t, "participants consumed their commands", func() (bool, error) {
		for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
			ok, err := caughtUp(ctx, adm, groupPrefix+svc.Name, sys.Topics.Command(svc.Name))
			if !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	})
	waitFor(ctx, t, "participants relayed their outboxes", func() (bool, error) {
		for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
			var n int
			if err := svc.DB.GetContext(ctx, &n, `SELECT count(*) FROM sdk_outbox`); err != nil || n > 0 {
				return false, err
			}
		}
		return true, nil
	})
	waitFor(ctx, t, "saga-machine consumed its events", func() (bool, error) {
		for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
			ok, err := caughtUp(ctx, adm, groupPrefix+"saga-machine", engine.EventTopic(sys.Topics.Events, svc.Name))
			if !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// caughtUp reports whether group committed every partition of topic up to
// its end offset.
func caughtUp(ctx context.Context, adm *kadm.Client, group, topic string) (bool, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	ok := true
	ends.Each(func(lo kadm.ListedOffset) {
		if lo.Offset == 0 {
			return
		}
		c, found := committed.Lookup(topic, lo.Partition)
		if !found || c.At < lo.Offset {
			ok = false
		}
	})
	return ok, nil
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	for {
		ok, err := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v (last error %v)", what, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
