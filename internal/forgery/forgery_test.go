package forgery

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/procstack"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
)

func TestMain(m *testing.M) { procstack.Main(m) }

const saga = "MANUAL_CREATE_ORDER"

// books is what the victim owns and what the participants recorded, read
// from profile's and deals' databases.
type books struct {
	Cash      decimal.Decimal   // the victim portfolio's cash
	Positions map[string]string // the victim portfolio's positions: instrument → quantity
	Decisions []string          // every order decision of profile: "deal status portfolio"
	Deals     []string          // every deal of deals: "id status amount updated_at"
}

func (b books) String() string {
	return fmt.Sprintf("cash %s, positions %v, profile's decisions %v, deals %v", b.Cash, b.Positions, b.Decisions, b.Deals)
}

func readBooks(ctx context.Context, t *testing.T, s *procstack.Stack, portfolio string) books {
	t.Helper()
	b := books{Positions: map[string]string{}}
	var cash string
	if err := s.DB(procstack.Profile).GetContext(ctx, &cash, `SELECT cash::text FROM portfolios WHERE id = $1`, portfolio); err != nil {
		t.Fatalf("read the victim's cash: %v", err)
	}
	var err error
	if b.Cash, err = decimal.NewFromString(cash); err != nil {
		t.Fatalf("victim's cash %q: %v", cash, err)
	}
	var pos []struct {
		Instrument string `db:"instrument"`
		Quantity   string `db:"quantity"`
	}
	if err := s.DB(procstack.Profile).SelectContext(ctx, &pos, `SELECT instrument, quantity::text AS quantity FROM positions WHERE portfolio_id = $1`, portfolio); err != nil {
		t.Fatalf("read the victim's positions: %v", err)
	}
	for _, p := range pos {
		b.Positions[p.Instrument] = p.Quantity
	}
	if err := s.DB(procstack.Profile).SelectContext(ctx, &b.Decisions,
		`SELECT deal_id || ' ' || status || ' ' || portfolio_id FROM order_decisions ORDER BY deal_id`); err != nil {
		t.Fatalf("read profile's decisions: %v", err)
	}
	if err := s.DB(procstack.Deals).SelectContext(ctx, &b.Deals,
		`SELECT id || ' ' || status || ' ' || amount::text || ' ' || updated_at::text FROM deals ORDER BY seq`); err != nil {
		t.Fatalf("read deals: %v", err)
	}
	return b
}

// sagaRow is a saga instance as saga-machine stored it.
type sagaRow struct {
	State   string `db:"state"`
	Status  string `db:"status"`
	Rev     int64  `db:"rev"`
	Context string `db:"context"`
}

// readSaga returns the saga, or ok=false when saga-machine has none.
func readSaga(ctx context.Context, t *testing.T, s *procstack.Stack, id string) (sagaRow, bool) {
	t.Helper()
	var r sagaRow
	err := s.DB(procstack.SagaMachine).GetContext(ctx, &r, `SELECT state, status, rev, coalesce(context::text, '') AS context FROM saga_instances WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false
	}
	if err != nil {
		t.Fatalf("read saga %s: %v", id, err)
	}
	return r, true
}

// deadLetter is one of saga-machine's dead letters.
type deadLetter struct {
	MessageID string `db:"message_id"`
	SagaID    string `db:"saga_id"`
	Topic     string `db:"topic"`
	Code      string `db:"code"`
	Reason    string `db:"reason"`
}

// waitFor polls cond every 100 ms until it holds or ctx ends (a failure
// naming what).
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v; last seen: %s", what, ctx.Err(), state)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// publish writes m to topic as the principal of cfg.
func publish(ctx context.Context, cfg kafka.Config, topic string, m engine.Message) error {
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		return fmt.Errorf("producer as %s: %w", cfg.SASL.User, err)
	}
	defer p.Close()
	rec := scripted.Record(topic, m)
	return p.Publish(ctx, []kafka.Record{rec})
}

func dealContext(dealID, user, portfolio, side, instrument, quantity, price, amount string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"deal_context": map[string]string{
		"deal_id": dealID, "user_id": user, "portfolio_id": portfolio, "side": side, "instrument": instrument,
		"quantity": quantity, "price": price, "amount": amount, "currency": "USD", "status": "approved",
	}})
	return b
}

// TestForgedMessagesMoveNoMoney is the attack of issue 8, item 4, on the
// whole system (see the package documentation).
func TestForgedMessagesMoveNoMoney(t *testing.T) {
	// APPROVE_ORDER's budget is long enough for the victim's saga to wait
	// in DRAFT while profile is paused, however slow the machine.
	s := procstack.New(t, procstack.Config{LogLevel: "warn", Retries: map[string]procstack.Retry{
		"APPROVE_ORDER": {Attempts: 10, Backoff: 2 * time.Second, MaxBackoff: 30 * time.Second},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	victim := "victim." + s.ID
	pf, err := s.OpenPortfolio(ctx, victim, "USD", "1000.00")
	if err != nil {
		t.Fatal(err)
	}
	funded := readBooks(ctx, t, s, pf)
	if !funded.Cash.Equal(decimal.NewFromInt(1000)) || len(funded.Positions) != 0 || len(funded.Decisions) != 0 || len(funded.Deals) != 0 {
		t.Fatalf("after funding: %s; want 1000 cash and nothing else", funded)
	}
	asDeals := s.Deals.Kafka()
	if asDeals.SASL.User != s.Deals.User || asDeals.SASL.Password == "" {
		t.Fatalf("deals' Kafka credentials: user %q, password set %t", asDeals.SASL.User, asDeals.SASL.Password != "")
	}

	// A saga saga-machine never started, and a deal deals never registered,
	// buying 900 USD of FORGED with the victim's cash.
	ghostSaga, ghostDeal := uuid.NewString(), uuid.NewString()
	ghostPayload := dealContext(ghostDeal, victim, pf, "buy", "FORGED", "9", "100", "900")
	forgedCommand := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: ghostSaga, Saga: saga, SagaVersion: 2,
		Kind: engine.KindCommand, Name: "APPROVE_ORDER", Participant: procstack.Profile, OccurredAt: time.Now().UTC(), Payload: ghostPayload}

	t.Run("deals writes APPROVE_ORDER to profile's command topic: refused by the broker", func(t *testing.T) {
		err := publish(ctx, asDeals, s.Profile.CommandTopic, forgedCommand)
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("publish as deals to %s: %v, want TOPIC_AUTHORIZATION_FAILED", s.Profile.CommandTopic, err)
		}
	})
	t.Run("deals writes ORDER_APPROVED to profile's event topic: refused by the broker", func(t *testing.T) {
		ev := scripted.NewEvent(saga, ghostSaga, "ORDER_APPROVED", procstack.Profile, ghostPayload)
		err := publish(ctx, asDeals, s.Profile.EventTopic, ev)
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("publish as deals to %s: %v, want TOPIC_AUTHORIZATION_FAILED", s.Profile.EventTopic, err)
		}
	})

	// Forged events on deals' own event topic, claiming to be profile: one
	// for the saga that never existed, one for the victim's genuine saga
	// while it waits for profile (paused) to decide.
	ghostEvent := scripted.NewEvent(saga, ghostSaga, "ORDER_APPROVED", procstack.Profile, ghostPayload)
	if err := publish(ctx, asDeals, s.Deals.EventTopic, ghostEvent); err != nil {
		t.Fatalf("deals may write its own event topic: %v", err)
	}
	if err := s.Profile.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = s.Profile.Resume() // the process is killed by procstack's cleanup anyway
		}
	}()
	dealID, err := s.PostDeal(ctx, victim, procstack.Deal{PortfolioID: pf, Side: "buy", Instrument: "AAPL", Quantity: "2", Price: "10", Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	var sagaID string
	var waiting sagaRow
	waitFor(ctx, t, "the victim's saga waits in DRAFT for profile", func() (bool, string) {
		if sagaID == "" {
			if err := s.DB(procstack.Deals).GetContext(ctx, &sagaID, `SELECT saga_id FROM deals WHERE id = $1`, dealID); err != nil {
				return false, err.Error()
			}
		}
		var ok bool
		waiting, ok = readSaga(ctx, t, s, sagaID)
		return ok && waiting.State == "DRAFT", fmt.Sprintf("saga %q %+v", sagaID, waiting)
	})
	before := readBooks(ctx, t, s, pf)
	forgedEvent := scripted.NewEvent(saga, sagaID, "ORDER_APPROVED", procstack.Profile,
		dealContext(dealID, victim, pf, "buy", "AAPL", "2", "0.005", "0.01"))
	if err := publish(ctx, asDeals, s.Deals.EventTopic, forgedEvent); err != nil {
		t.Fatalf("deals may write its own event topic: %v", err)
	}

	// Both forged events end as wrong-participant dead letters. (Wait until
	// saga-machine dealt with both: parked, or, were the check broken, the
	// victim's saga moved.)
	var dead []deadLetter
	waitFor(ctx, t, "saga-machine deals with both forged events", func() (bool, string) {
		dead = dead[:0]
		if err := s.DB(procstack.SagaMachine).SelectContext(ctx, &dead, `SELECT coalesce(message_id, '') AS message_id, saga_id, topic, code, reason
			FROM dead_letters ORDER BY id`); err != nil {
			return false, err.Error()
		}
		parked := map[string]bool{}
		for _, d := range dead {
			parked[d.MessageID] = true
		}
		now, _ := readSaga(ctx, t, s, sagaID)
		return parked[ghostEvent.ID] && (parked[forgedEvent.ID] || now != waiting), fmt.Sprintf("dead letters %+v, saga %+v", dead, now)
	})
	want := map[string]string{ghostEvent.ID: ghostSaga, forgedEvent.ID: sagaID}
	if len(dead) != 2 {
		t.Errorf("saga-machine's dead letters: %+v, want exactly the two forged events", dead)
	}
	for _, d := range dead {
		wantSaga, forged := want[d.MessageID]
		if !forged || d.SagaID != wantSaga || d.Code != string(engine.CodeWrongParticipant) || d.Topic != s.Deals.EventTopic ||
			!strings.Contains(d.Reason, `"profile"`) || !strings.Contains(d.Reason, `"deals"`) {
			t.Errorf("dead letter %+v: want one of the forged events %v, code %s, on %s, naming profile and deals",
				d, want, engine.CodeWrongParticipant, s.Deals.EventTopic)
		}
	}

	// Nothing moved: the waiting saga, the deals, the victim's money.
	if after, _ := readSaga(ctx, t, s, sagaID); after != waiting {
		t.Errorf("the forged ORDER_APPROVED moved the victim's saga: %+v -> %+v", waiting, after)
	}
	if row, ok := readSaga(ctx, t, s, ghostSaga); ok {
		t.Errorf("a saga exists for the forged one: %+v", row)
	}
	if after := readBooks(ctx, t, s, pf); after.String() != before.String() || !after.Cash.Equal(funded.Cash) {
		t.Errorf("the forgeries moved something:\nbefore %s\nafter  %s\nfunded %s", before, after, funded)
	}
	if len(before.Deals) != 1 || !strings.HasPrefix(before.Deals[0], dealID+" draft ") {
		t.Errorf("deals: %v, want only the victim's deal %s, draft", before.Deals, dealID)
	}

	// The genuine deal executes once profile decides it; every invariant
	// of procstack's Check holds but the two parked forgeries.
	if err := s.Profile.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(ctx, t, "the victim's genuine deal executes", func() (bool, string) {
		var status string
		err := s.DB(procstack.Deals).GetContext(ctx, &status, `SELECT status FROM deals WHERE id = $1`, dealID)
		return err == nil && status == "executed", fmt.Sprintf("status %q, err %v", status, err)
	})
	if _, err := s.WaitQuiescent(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the genuine deal: %s", rep.Summary())
	for _, v := range rep.Violations {
		if !strings.HasPrefix(v, fmt.Sprintf("%d dead letters:", len(rep.DeadLetters))) {
			t.Errorf("violation: %s", v)
		}
	}
	if len(rep.DeadLetters) != 2 {
		t.Errorf("dead letters: %v, want only the two forged events", rep.DeadLetters)
	}
	for _, d := range rep.DeadLetters {
		if !strings.HasPrefix(d, "saga-machine: code "+string(engine.CodeWrongParticipant)) {
			t.Errorf("dead letter %s, want saga-machine's wrong-participant", d)
		}
	}
	final := readBooks(ctx, t, s, pf)
	wantDecisions := []string{dealID + " approved " + pf}
	if !final.Cash.Equal(decimal.NewFromInt(980)) || len(final.Positions) != 1 || final.Positions["AAPL"] != "2" ||
		strings.Join(final.Decisions, ",") != strings.Join(wantDecisions, ",") || rep.Deals["executed"] != 1 || len(final.Deals) != 1 {
		t.Errorf("after the genuine deal: %s; want cash 980, 2 AAPL, decisions %v, one executed deal", final, wantDecisions)
	}
	var handled int
	if err := s.DB(procstack.Profile).GetContext(ctx, &handled, `SELECT count(*) FROM sdk_inbox WHERE message_id = $1`, forgedCommand.ID); err != nil {
		t.Fatal(err)
	}
	if handled != 0 {
		t.Errorf("profile handled the forged command %s", forgedCommand.ID)
	}

	// Control: the same forged command, written by the super user (who
	// bypasses the ACLs), is applied by profile and debits the victim: what
	// the broker refused deals was a working attack, not a malformed one.
	if err := publish(ctx, s.Admin, s.Profile.CommandTopic, forgedCommand); err != nil {
		t.Fatalf("publish as the super user: %v", err)
	}
	waitFor(ctx, t, "profile applies the super user's copy of the forged command", func() (bool, string) {
		b := readBooks(ctx, t, s, pf)
		return b.Cash.Equal(decimal.NewFromInt(80)), b.String()
	})
}
