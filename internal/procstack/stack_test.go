package procstack

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// waitDeal polls deals' database until deal id has status want.
func waitDeal(t *testing.T, s *Stack, id, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got string
	for {
		err := s.DB(Deals).GetContext(ctx, &got, `SELECT status FROM deals WHERE id = $1`, id)
		if err == nil && got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deal %s: status %q (err %v), want %s", id, got, err, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestStack runs the four services as processes on isolated topics,
// principals and databases: a funded buy executes; profile killed with
// SIGKILL and restarted (same static member id) handles the next one;
// deals paused with SIGSTOP answers nothing until SIGCONT; at the end the
// stack is quiet and Check finds every invariant kept.
func TestStack(t *testing.T) {
	s := New(t, Config{LogLevel: "warn"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pf, err := s.OpenPortfolio(ctx, "alice."+s.ID, "USD", "1000")
	if err != nil {
		t.Fatal(err)
	}
	buy := Deal{PortfolioID: pf, Side: "buy", Instrument: "AAPL", Quantity: "2", Price: "10", Currency: "USD"}
	first, err := s.PostDeal(ctx, "alice."+s.ID, buy)
	if err != nil {
		t.Fatal(err)
	}
	waitDeal(t, s, first, "executed")

	pid := s.Profile.PID()
	if err := s.Profile.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Profile.Running() || s.Profile.PID() != 0 {
		t.Fatalf("profile still runs after Kill (pid %d)", s.Profile.PID())
	}
	second, err := s.PostDeal(ctx, "alice."+s.ID, buy)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Profile.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Profile.PID(); got == 0 || got == pid {
		t.Errorf("profile pid after restart = %d, want a new process (was %d)", got, pid)
	}
	waitDeal(t, s, second, "executed")

	if err := s.Deals.Pause(); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, _, err = s.Deals.Call(pctx, "GET", "/healthz", Caller{}, nil, nil)
	pcancel()
	if err == nil {
		t.Error("a paused deals answered /healthz")
	}
	if err := s.Deals.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := s.Deals.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}

	act, err := s.WaitQuiescent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("quiet: %s; %s", act, rep.Summary())
	if err := rep.Err(); err != nil {
		t.Error(err)
	}
	if rep.Deals["executed"] != 2 || rep.Notifications != 2 || rep.Portfolios != 1 {
		t.Errorf("got %s, want 2 executed deals, 2 notifications, 1 portfolio", rep.Summary())
	}
	if ex := s.Exited(); len(ex) > 0 {
		t.Errorf("processes exited unasked: %v", ex)
	}
	if got := s.Profile.Runs(); got != 2 {
		t.Errorf("profile runs = %d, want 2", got)
	}
}

// TestCheckFindsBrokenMoney: Check is not blind. Cash taken from a
// portfolio behind the saga's back, a deal left draft and a notification
// removed are each reported.
func TestCheckFindsBrokenMoney(t *testing.T) {
	s := New(t, Config{LogLevel: "warn"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	user := "bob." + s.ID
	pf, err := s.OpenPortfolio(ctx, user, "USD", "500")
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.PostDeal(ctx, user, Deal{PortfolioID: pf, Side: "buy", Instrument: "MSFT", Quantity: "1", Price: "100", Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	waitDeal(t, s, id, "executed")
	if _, err := s.WaitQuiescent(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("before tampering: %v", err)
	}
	for _, tc := range []struct {
		name, db, sql, undo, want string
	}{
		{"cash taken", Profile, `UPDATE portfolios SET cash = cash - 1`, `UPDATE portfolios SET cash = cash + 1`, "has cash 399"},
		{"deal left draft", Deals, `UPDATE deals SET status = 'draft'`, `UPDATE deals SET status = 'executed'`, "not final"},
		{"notification lost", Notification, `UPDATE notifications SET deal_id = 'x' || deal_id`, `UPDATE notifications SET deal_id = substr(deal_id, 2)`, "0 notifications"},
		{"position grown", Profile, `UPDATE positions SET quantity = quantity + 1`, `UPDATE positions SET quantity = quantity - 1`, "holds 2 MSFT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.DB(tc.db).ExecContext(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if _, err := s.DB(tc.db).ExecContext(ctx, tc.undo); err != nil {
					t.Fatal(err)
				}
			}()
			rep, err := s.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := rep.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want a violation containing %q", err, tc.want)
			}
		})
	}
}

// TestProcExitReported: a process that exits on its own (here: refused
// flags) makes Restart fail with its output and is listed by Exited.
func TestProcExitReported(t *testing.T) {
	bins := Build(t)
	p := NewProc(t, Spec{Name: "bad", Binary: bins.Deals, Args: []string{"--no-such-flag"}, Health: "http://127.0.0.1:1/healthz"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.Restart(ctx)
	if err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("Restart = %v, want the exit with the process's complaint about --no-such-flag", err)
	}
	if ex := p.Exited(); len(ex) != 1 {
		t.Errorf("Exited = %v, want one unasked exit", ex)
	}
	if p.Running() {
		t.Error("Running after the process exited")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: %v", err)
	}
}
