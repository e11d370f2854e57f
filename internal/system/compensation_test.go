package system_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// shortBudget is the shipped definitions with MANUAL_CREATE_ORDER v4's
// APPROVE_ORDER retry budget shortened to 2 sends 200ms apart (600ms in
// all), so that a test outlasts it in its time; everything else as shipped.
func shortBudget(t *testing.T) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	files, err := fs.Glob(sagas.FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := fs.ReadFile(sagas.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		if f == "manual_create_order.yaml" {
			const shipped = "retry: { attempts: 5, backoff: 2s, max_backoff: 1m, exhausted: PROFILE_UNAVAILABLE }"
			if !strings.Contains(string(b), shipped) {
				t.Fatalf("%s has no %q to shorten", f, shipped)
			}
			b = []byte(strings.Replace(string(b), shipped, "retry: { attempts: 2, backoff: 200ms, exhausted: PROFILE_UNAVAILABLE }", 1))
		}
		out[f] = &fstest.MapFile{Data: b}
	}
	return out
}

// The outage of issue 9, on the whole system (PostgreSQL + Kafka, SQLite +
// the embedded broker): profile's consumer is down while a buy is placed,
// longer than APPROVE_ORDER's retry budget, and comes back once the saga
// has failed. Either profile refuses the queued APPROVE_ORDER for its
// deadline (clocks in sync: no effect), or it applies it (its clock runs
// an hour behind: the effect happens after saga-machine gave up, and the
// reply comes too late). Both ways, read from the databases: the saga is
// FAILED and compensated, the deal failed with its reason, the cash and
// positions are back where they were, exactly one failure notification
// says why, and saga-machine dead-lettered nothing.
func TestProfileTooLate(t *testing.T) {
	cases := []struct {
		name       string
		behind     time.Duration // profile's clock (sdk.Config.Now) runs this much behind
		applied    bool          // profile applied the approval (and reverted it)
		wantText   string
		wantReason string
	}{
		{name: "refused for its deadline",
			wantReason: "the order could not be confirmed against your portfolio in time",
			wantText:   "Your buy of 2 ACME at 100.00 USD failed: the order could not be confirmed against your portfolio in time"},
		{name: "applied late by a clock behind", behind: time.Hour, applied: true,
			wantReason: "the order could not be confirmed against your portfolio in time",
			wantText: "Your buy of 2 ACME at 100.00 USD failed: the order could not be confirmed against your portfolio in time. " +
				"The 200.00 USD taken from your cash were returned"},
	}
	for _, be := range backends {
		for _, tc := range cases {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				cfg := be.config(t)
				cfg.Sagas = shortBudget(t)
				cfg.Paused = []string{system.Profile}
				if tc.behind != 0 {
					cfg.Participant = func(name string, c *sdk.Config) {
						if name == system.Profile {
							c.Now = func() time.Time { return time.Now().Add(-tc.behind) }
						}
					}
				}
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
				if _, _, err := sys.Fund(ctx, pf.ID, "1000.00", "USD", "funding", "fund-"+pf.ID); err != nil {
					t.Fatalf("fund: %v", err)
				}
				d, _, err := c.CreateDeal(ctx, system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "2", Price: "100.00", Currency: "USD"}, "")
				if err != nil {
					t.Fatalf("POST /deals: %v", err)
				}

				// profile is down: the saga fails and waits for REVERT_ORDER.
				waitFor(ctx, t, "the saga fails", func() (bool, error) {
					inst, err := sys.SagaMachine.Store.GetInstance(ctx, d.SagaID)
					return err == nil && inst.State == "FAILED", nil
				})
				if err := sys.Resume(system.Profile); err != nil {
					t.Fatal(err)
				}
				inst, err := sys.WaitFinal(ctx, d.SagaID)
				if err != nil {
					t.Fatal(err)
				}
				if inst.State != "FAILED" || inst.Status != engine.StatusFailed || inst.SagaVersion != 4 {
					t.Fatalf("saga: v%d %s %s, want v4 FAILED failed (every compensation done)", inst.SagaVersion, inst.State, inst.Status)
				}
				waitFor(ctx, t, "the notification is stored", func() (bool, error) {
					var n int
					err := sys.Notification.DB.GetContext(ctx, &n, sys.Notification.DB.Rebind(`SELECT count(*) FROM notifications WHERE deal_id = ?`), d.ID)
					return n > 0, err
				})
				quiesce(ctx, t, sys, cfg.GroupPrefix)

				// deals: the deal is final, failed, with its reason.
				var deal struct{ Status, Reason string }
				if err := sys.Deals.DB.GetContext(ctx, &deal, sys.Deals.DB.Rebind(`SELECT status, reason FROM deals WHERE id = ?`), d.ID); err != nil {
					t.Fatal(err)
				}
				if deal.Status != "failed" || deal.Reason != tc.wantReason {
					t.Errorf("deal: %q %q, want failed %q", deal.Status, deal.Reason, tc.wantReason)
				}
				// profile: the cash and positions as funded; the approval, if
				// it happened, reverted once.
				pdb := sys.Profile.DB
				var cash string
				if err := pdb.GetContext(ctx, &cash, pdb.Rebind(`SELECT cash FROM portfolios WHERE id = ?`), pf.ID); err != nil {
					t.Fatal(err)
				}
				var positions, reversals int
				if err := pdb.GetContext(ctx, &positions, pdb.Rebind(`SELECT count(*) FROM positions WHERE portfolio_id = ?`), pf.ID); err != nil {
					t.Fatal(err)
				}
				var decisions []string
				if err := pdb.SelectContext(ctx, &decisions, pdb.Rebind(`SELECT status FROM order_decisions WHERE deal_id = ?`), d.ID); err != nil {
					t.Fatal(err)
				}
				var outcome, cashDelta string
				if err := pdb.GetContext(ctx, &reversals, pdb.Rebind(`SELECT count(*) FROM order_reversals WHERE deal_id = ?`), d.ID); err != nil {
					t.Fatal(err)
				}
				if err := pdb.QueryRowxContext(ctx, pdb.Rebind(`SELECT outcome, cash_delta FROM order_reversals WHERE deal_id = ?`), d.ID).Scan(&outcome, &cashDelta); err != nil {
					t.Fatal(err)
				}
				if !decimal.RequireFromString(cash).Equal(decimal.RequireFromString("1000")) || positions != 0 {
					t.Errorf("portfolio: cash %s, %d positions, want 1000 and none", cash, positions)
				}
				wantDecisions, wantOutcome, wantDelta := "", "nothing", "0"
				if tc.applied {
					wantDecisions, wantOutcome, wantDelta = "approved", "reverted", "200"
				}
				if strings.Join(decisions, ",") != wantDecisions || reversals != 1 || outcome != wantOutcome || !decimal.RequireFromString(cashDelta).Equal(decimal.RequireFromString(wantDelta)) {
					t.Errorf("profile's record: decisions %v, %d reversal(s) %s of %s; want decisions [%s], one reversal %s of %s",
						decisions, reversals, outcome, cashDelta, wantDecisions, wantOutcome, wantDelta)
				}
				snaps, err := c.Snapshots(ctx, pf.ID)
				if err != nil || len(snaps) == 0 {
					t.Fatalf("snapshots: %v %v", snaps, err)
				}
				if last := snaps[len(snaps)-1]; !last.Cash.Equal(decimal.RequireFromString("1000")) || len(last.Positions) != 0 {
					t.Errorf("today's snapshot: %s %v, want 1000 and no position", last.Cash, last.Positions)
				}
				// notification: one failure notification, saying why.
				var notes []struct{ Status, Text string }
				ndb := sys.Notification.DB
				if err := ndb.SelectContext(ctx, &notes, ndb.Rebind(`SELECT status, text FROM notifications WHERE deal_id = ?`), d.ID); err != nil {
					t.Fatal(err)
				}
				if len(notes) != 1 || notes[0].Status != "failed" || notes[0].Text != tc.wantText {
					t.Errorf("notifications: %+v, want one failed: %q", notes, tc.wantText)
				}
				// saga-machine: nothing dead-lettered (a late answer is
				// recorded in the timeline, not parked), no participant
				// parked anything.
				dls, err := sys.SagaMachine.Store.DeadLetters(ctx, 100, true)
				if err != nil {
					t.Fatal(err)
				}
				if len(dls) != 0 {
					t.Errorf("saga-machine dead letters: %+v, want none", dls)
				}
				for _, svc := range []*system.Service{sys.Deals, sys.Profile, sys.Notification} {
					parked, err := svc.Participant.DeadLetters(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if len(parked) != 0 {
						t.Errorf("%s dead letters: %+v, want none", svc.Name, parked)
					}
				}
				hist, err := sys.SagaMachine.Store.History(ctx, d.SagaID)
				if err != nil {
					t.Fatal(err)
				}
				var late []string
				for _, h := range hist {
					if h.Kind == engine.EntryLate {
						late = append(late, h.Event)
					}
				}
				wantLate := engine.EventCommandExpired
				if tc.applied {
					wantLate = "ORDER_APPROVED"
				}
				if !strings.Contains(strings.Join(late, " "), wantLate) {
					t.Errorf("timeline's late answers: %v, want %s among them", late, wantLate)
				}
			})
		}
	}
}

// TestPausedConfig: Paused names participant services only, and Resume
// starts a paused consumer once.
func TestPausedConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if _, err := system.Start(ctx, system.Config{DataDir: t.TempDir(), EphemeralPorts: true, Paused: []string{"saga"}}); err == nil || !strings.Contains(err.Error(), "not a participant service") {
		t.Errorf("Paused saga: got %v, want a refusal", err)
	}
	sys := start(t, system.Config{DataDir: t.TempDir(), Paused: []string{system.Notification}})
	if err := sys.Resume(system.Deals); err == nil || !strings.Contains(err.Error(), "runs already") {
		t.Errorf("Resume of a running service: got %v, want an error", err)
	}
	if err := sys.Resume(system.Notification); err != nil {
		t.Errorf("Resume of the paused service: %v", err)
	}
	if err := sys.Resume(system.Notification); err == nil {
		t.Errorf("second Resume: got nil, want an error")
	}
	if err := sys.Resume("nobody"); err == nil {
		t.Errorf("Resume of an unknown service: got nil, want an error")
	}
}
