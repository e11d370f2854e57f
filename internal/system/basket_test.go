package system_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
)

// BASKET_ORDER, the second shipped saga, end to end on the real services
// (each on its own database, talking only through Kafka), read back from
// the services' APIs over their databases:
//   - an affordable basket: profile's check says sufficient, every line is
//     applied in one parallel step, deals executes the basket, the client is
//     told once; re-delivering every command changes nothing;
//   - an unaffordable one: the decision takes the default transition, no
//     line is sent, no cash moves, every deal rejected with profile's
//     reason;
//   - a line refused after the check (another deal spent the cash in
//     between): the applied line is reverted with its own payload, the
//     basket's deals failed, the other deal untouched.
func TestBasketOrder(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Run("executed and rejected", func(t *testing.T) { basketExecutedAndRejected(t, be) })
			t.Run("line refused after the check", func(t *testing.T) { basketLineRefused(t, be) })
		})
	}
}

// basketWorld is alice with one funded USD portfolio on a running system.
type basketWorld struct {
	sys *system.System
	c   *system.Client
	pf  profile.Portfolio
}

func newBasketWorld(ctx context.Context, t *testing.T, cfg system.Config, funds string) *basketWorld {
	t.Helper()
	sys := start(t, cfg)
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
	if _, _, err := sys.Fund(ctx, pf.ID, funds, "USD", "basket funding", "basket-"+pf.ID); err != nil {
		t.Fatalf("fund the portfolio: %v", err)
	}
	return &basketWorld{sys: sys, c: c, pf: pf}
}

func (w *basketWorld) basket(ctx context.Context, t *testing.T, lines ...deals.BasketLine) deals.Basket {
	t.Helper()
	b, _, err := w.c.CreateBasket(ctx, deals.NewBasket{PortfolioID: w.pf.ID, Lines: lines}, "")
	if err != nil {
		t.Fatalf("POST /baskets: %v", err)
	}
	if len(b.Deals) != len(lines) || b.SagaID == "" {
		t.Fatalf("basket %+v: want %d deals and a saga", b, len(lines))
	}
	return b
}

// settle waits for the basket's saga and returns it with the basket read
// back.
func (w *basketWorld) settle(ctx context.Context, t *testing.T, b deals.Basket) (engine.Instance, deals.Basket) {
	t.Helper()
	inst, err := w.sys.WaitFinal(ctx, b.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.c.Basket(ctx, b.ID)
	if err != nil {
		t.Fatalf("GET /baskets/%s: %v", b.ID, err)
	}
	return inst, got
}

func (w *basketWorld) portfolio(ctx context.Context, t *testing.T) profile.Portfolio {
	t.Helper()
	pf, err := w.c.Portfolio(ctx, w.pf.ID)
	if err != nil {
		t.Fatalf("portfolio: %v", err)
	}
	return pf
}

// commandsNamed counts the distinct commands named name that the saga's
// timeline lists (a reply's entry names the command it answers too).
func (w *basketWorld) commandsNamed(ctx context.Context, t *testing.T, sagaID, name string) int {
	t.Helper()
	hist, err := w.sys.SagaMachine.Store.History(ctx, sagaID)
	if err != nil {
		t.Fatalf("history of saga %s: %v", sagaID, err)
	}
	ids := map[string]bool{}
	for _, h := range hist {
		for _, c := range h.Commands {
			if c.Name == name {
				ids[c.ID] = true
			}
		}
	}
	return len(ids)
}

// basketNotes waits until the caller has want basket notifications and
// returns them by basket id.
func (w *basketWorld) basketNotes(ctx context.Context, t *testing.T, want int) map[string]notification.Notification {
	t.Helper()
	out := map[string]notification.Notification{}
	waitFor(ctx, t, "the basket notifications", func() (bool, error) {
		notes, err := w.c.Notifications(ctx)
		if err != nil {
			return false, err
		}
		clear(out)
		for _, n := range notes {
			if n.BasketID != "" {
				out[n.BasketID] = n
			}
		}
		return len(out) >= want, nil
	})
	return out
}

func line(side, instrument, qty, price string) deals.BasketLine {
	return deals.BasketLine{Side: side, Instrument: instrument, Quantity: qty, Price: price, Currency: "USD"}
}

func basketExecutedAndRejected(t *testing.T, be backend) {
	cfg := be.config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	w := newBasketWorld(ctx, t, cfg, "1000.00")

	// 2 × 100.00 + 3 × 50.00 = 350.00 of 1000.00.
	ok := w.basket(ctx, t, line("buy", "ACME", "2", "100.00"), line("buy", "BETA", "3", "50.00"))
	inst, got := w.settle(ctx, t, ok)
	if inst.State != "EXECUTED" || inst.Status != engine.StatusCompleted {
		t.Fatalf("affordable basket: saga %s %s, want EXECUTED completed", inst.State, inst.Status)
	}
	if got.Status != deals.StatusExecuted {
		t.Errorf("affordable basket: status %q, want executed", got.Status)
	}
	for _, d := range got.Deals {
		if d.Status != deals.StatusExecuted || d.BasketID == nil || *d.BasketID != ok.ID {
			t.Errorf("deal %s of the basket: status %q basket %q, want executed in %s", d.ID, d.Status, deref(d.BasketID), ok.ID)
		}
	}
	// One parallel step: both lines sent at once, both answered.
	if inst.Join == nil || len(inst.Join.Commands) != 2 || inst.Join.Outcome != engine.JoinResultDone {
		t.Errorf("affordable basket: join %+v, want 2 commands, done", inst.Join)
	}
	if n := w.commandsNamed(ctx, t, ok.SagaID, "APPROVE_ORDER"); n != 2 {
		t.Errorf("affordable basket: %d APPROVE_ORDER in the timeline, want 2", n)
	}
	afterOK := w.portfolio(ctx, t)
	checkHoldings(t, "after the executed basket", afterOK.Cash, afterOK.Positions, "650", map[string]string{"ACME": "2", "BETA": "3"})

	// 10 × 100.00 = 1000.00 > 650.00: rejected by the check, no line sent.
	// The sell is covered (2 ACME held) but does not fund the buy.
	no := w.basket(ctx, t, line("buy", "ACME", "10", "100.00"), line("sell", "ACME", "1", "100.00"))
	inst, got = w.settle(ctx, t, no)
	if inst.State != "REJECTED" || inst.Status != engine.StatusCompleted {
		t.Fatalf("unaffordable basket: saga %s %s, want REJECTED completed", inst.State, inst.Status)
	}
	if n := w.commandsNamed(ctx, t, no.SagaID, "APPROVE_ORDER"); n != 0 || inst.Join != nil {
		t.Errorf("unaffordable basket: %d APPROVE_ORDER sent (join %+v), want none", n, inst.Join)
	}
	if got.Status != deals.StatusRejected {
		t.Errorf("unaffordable basket: status %q, want rejected", got.Status)
	}
	for _, d := range got.Deals {
		if d.Status != deals.StatusRejected || !strings.Contains(d.Reason, "insufficient cash") {
			t.Errorf("deal %s of the unaffordable basket: %q %q, want rejected for insufficient cash", d.ID, d.Status, d.Reason)
		}
	}
	if a, b := mustJSON(t, w.portfolio(ctx, t)), mustJSON(t, afterOK); a != b {
		t.Errorf("the rejected basket moved the portfolio:\n got %s\nwant %s", a, b)
	}
	notes := w.basketNotes(ctx, t, 2)
	if notes[ok.ID].Status != deals.StatusExecuted || notes[no.ID].Status != deals.StatusRejected || !strings.Contains(notes[no.ID].Text, "insufficient cash") {
		t.Errorf("notifications %+v: want the basket %s executed and %s rejected for insufficient cash", notes, ok.ID, no.ID)
	}

	// Every command of both sagas delivered again: nothing changes.
	before := w.observe(ctx, t, ok, no)
	want := map[string]bool{}
	for _, id := range []string{ok.SagaID, no.SagaID} {
		hist, err := w.sys.SagaMachine.Store.History(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hist {
			for _, c := range h.Commands {
				want[c.ID] = true
			}
		}
	}
	kcfg := w.sys.Kafka("basket-test")
	recs := capture(ctx, t, kcfg, w.sys, want)
	prod, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, recs); err != nil {
		t.Fatalf("re-publish %d commands: %v", len(recs), err)
	}
	quiesce(ctx, t, w.sys, cfg.GroupPrefix)
	if after := w.observe(ctx, t, ok, no); after != before {
		t.Errorf("duplicate commands changed the system:\n got %s\nwant %s", after, before)
	}
}

// observe is what a duplicate must not change: the baskets with their
// deals, the portfolio, the notifications and the sagas.
func (w *basketWorld) observe(ctx context.Context, t *testing.T, bs ...deals.Basket) string {
	t.Helper()
	var v struct {
		Baskets       []deals.Basket
		Portfolio     profile.Portfolio
		Notifications []notification.Notification
		Sagas         []engine.Instance
	}
	for _, b := range bs {
		got, err := w.c.Basket(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		v.Baskets = append(v.Baskets, got)
		inst, err := w.sys.SagaMachine.Store.GetInstance(ctx, b.SagaID)
		if err != nil {
			t.Fatal(err)
		}
		v.Sagas = append(v.Sagas, inst)
	}
	v.Portfolio = w.portfolio(ctx, t)
	var err error
	if v.Notifications, err = w.c.Notifications(ctx); err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, v)
}

func basketLineRefused(t *testing.T, be backend) {
	cfg := be.config(t)
	// One partition per topic: profile reads its commands in the order
	// saga-machine sent them, so the deal's APPROVE_ORDER, sent after the
	// basket's CHECK_BASKET, comes before the basket's lines.
	cfg.Partitions = 1
	cfg.Paused = []string{system.Profile}
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	w := newBasketWorld(ctx, t, cfg, "650.00")
	profileTopic := w.sys.Topics.Command(system.Profile)

	// 300.00 + 300.00 = 600.00 <= 650.00: the check will say sufficient.
	b := w.basket(ctx, t, line("buy", "ACME", "3", "100.00"), line("buy", "BETA", "3", "100.00"))
	w.waitSent(ctx, t, profileTopic, b.SagaID, "CHECK_BASKET")
	// A deal of 100.00 queued behind the check: it leaves 550.00, enough for
	// one line of 300.00, not both.
	d, _, err := w.c.CreateDeal(ctx, system.DealRequest{PortfolioID: w.pf.ID, Side: "buy", Instrument: "GAMMA", Quantity: "1", Price: "100.00", Currency: "USD"}, "")
	if err != nil {
		t.Fatalf("POST /deals: %v", err)
	}
	w.waitSent(ctx, t, profileTopic, d.SagaID, "APPROVE_ORDER")
	if err := w.sys.Resume(system.Profile); err != nil {
		t.Fatal(err)
	}

	inst, got := w.settle(ctx, t, b)
	if inst.State != "FAILED" || inst.Status != engine.StatusFailed {
		t.Fatalf("basket saga %s %s (undo %+v), want FAILED failed once compensated", inst.State, inst.Status, inst.Undo)
	}
	if inst.Join == nil || inst.Join.Outcome != engine.JoinResultFailed {
		t.Errorf("join %+v, want failed", inst.Join)
	}
	// Exactly one line was applied and is reverted; the refused one had no
	// effect and is not; the draft deals are failed.
	undone := map[string]int{}
	for _, e := range inst.Undo {
		undone[e.Command+"="+string(e.Status)]++
	}
	if undone["REVERT_ORDER=compensated"] != 1 || undone["REVERT_ORDER=failed"] != 1 || undone["FAIL_BASKET=compensated"] != 1 {
		t.Errorf("undo %v, want one REVERT_ORDER compensated, one failed (no effect), FAIL_BASKET compensated", undone)
	}
	if got.Status != deals.StatusFailed {
		t.Errorf("basket status %q, want failed", got.Status)
	}
	for _, bd := range got.Deals {
		if bd.Status != deals.StatusFailed || !strings.Contains(bd.Reason, "insufficient cash") {
			t.Errorf("deal %s of the basket: %q %q, want failed naming the refused line's insufficient cash", bd.ID, bd.Status, bd.Reason)
		}
	}
	dealSaga, err := w.sys.WaitFinal(ctx, d.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	other, err := w.c.Deal(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dealSaga.State != "NOTIFICATION" || other.Status != deals.StatusExecuted {
		t.Errorf("the other deal: saga %s, status %q, want NOTIFICATION and executed", dealSaga.State, other.Status)
	}
	// The invariant, from profile's database: only the other deal moved
	// cash; the applied line was given back.
	pf := w.portfolio(ctx, t)
	checkHoldings(t, "after the failed basket", pf.Cash, pf.Positions, "550", map[string]string{"GAMMA": "1"})
	notes := w.basketNotes(ctx, t, 1)
	if n := notes[b.ID]; n.Status != deals.StatusFailed || !strings.Contains(n.Text, "insufficient cash") {
		t.Errorf("basket notification %+v, want failed naming insufficient cash", n)
	}

	// Every command of the failed basket, its compensations (REVERT_ORDER,
	// FAIL_BASKET) included, delivered again: nothing moves.
	want := map[string]bool{}
	hist, err := w.sys.SagaMachine.Store.History(ctx, b.SagaID)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, h := range hist {
		for _, c := range h.Commands {
			want[c.ID], names[c.Name] = true, true
		}
	}
	if !names["REVERT_ORDER"] || !names["FAIL_BASKET"] {
		t.Fatalf("the timeline lists commands %v, want the compensations among them", names)
	}
	before := w.observe(ctx, t, b)
	kcfg := w.sys.Kafka("basket-test")
	recs := capture(ctx, t, kcfg, w.sys, want)
	prod, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Publish(ctx, recs); err != nil {
		t.Fatalf("re-publish %d commands: %v", len(recs), err)
	}
	quiesce(ctx, t, w.sys, cfg.GroupPrefix)
	if after := w.observe(ctx, t, b); after != before {
		t.Errorf("duplicate commands changed the failed basket:\n got %s\nwant %s", after, before)
	}
}

// waitSent waits until saga-machine has published command name of saga
// sagaID on topic (a re-send of another command does not count).
func (w *basketWorld) waitSent(ctx context.Context, t *testing.T, topic, sagaID, name string) {
	t.Helper()
	opts, err := w.sys.Kafka("").ClientOpts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("waiting for %s of saga %s on %s: %v", name, sagaID, topic, err)
		}
		found := false
		fs.EachRecord(func(r *kgo.Record) {
			var m engine.Message
			if json.Unmarshal(r.Value, &m) == nil && m.SagaID == sagaID && m.Name == name {
				found = true
			}
		})
		if found {
			return
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}
