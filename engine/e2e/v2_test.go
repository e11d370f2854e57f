package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/scripted"
)

// The runtime of language v2 end to end, on real PostgreSQL + Apache Kafka
// and on SQLite + the embedded broker: a rebalance saga (a decision on
// the risk score, payload mappings, a parallel step with a fan-out and a
// join, branch compensations) driven by a scripted participant, and the
// attacks on its contracts and joins, each checked in the database.

// rebalRules answers REBAL's commands: CHECK_RISK scores 80 for a
// portfolio whose id starts with RISK (10 otherwise) and says nothing for
// HOLD; PLACE_ORDER refuses a line of qty 999 and says nothing for isin
// HOLD; RESERVE_CASH reserves; the compensations are done at once.
func rebalRules() map[string]scripted.Rule {
	reply := func(event, payload string) []scripted.Reply {
		return []scripted.Reply{{Event: event, Payload: json.RawMessage(payload)}}
	}
	return map[string]scripted.Rule{
		"CHECK_RISK": func(cmd engine.Message) []scripted.Reply {
			var p struct {
				PortfolioID string `json:"portfolio_id"`
			}
			_ = json.Unmarshal(cmd.Payload, &p)
			switch {
			case p.PortfolioID == "HOLD":
				return nil
			case strings.HasPrefix(p.PortfolioID, "RISK"):
				return reply("RISK_CHECKED", `{"risk":{"score":80}}`)
			}
			return reply("RISK_CHECKED", `{"risk":{"score":10}}`)
		},
		"PLACE_ORDER": func(cmd engine.Message) []scripted.Reply {
			var p struct {
				Line struct {
					ISIN string `json:"isin"`
					Qty  int    `json:"qty"`
				} `json:"line"`
				LineNo int `json:"line_no"`
			}
			_ = json.Unmarshal(cmd.Payload, &p)
			switch {
			case p.Line.ISIN == "HOLD":
				return nil
			case p.Line.Qty == 999:
				return reply("ORDER_REFUSED", `{}`)
			}
			return reply("ORDER_PLACED", fmt.Sprintf(`{"orders":["%s-%d"]}`, p.Line.ISIN, p.LineNo))
		},
		"RESERVE_CASH": func(engine.Message) []scripted.Reply { return reply("CASH_RESERVED", `{"cash":{"reserved":true}}`) },
		"CANCEL_ORDER": func(engine.Message) []scripted.Reply { return reply("ORDER_CANCELLED", `{}`) },
		"RELEASE_CASH": func(engine.Message) []scripted.Reply { return reply("CASH_RELEASED", `{}`) },
		"ASK_APPROVAL": func(engine.Message) []scripted.Reply { return nil },
		"NOTIFY":       func(engine.Message) []scripted.Reply { return nil },
	}
}

func rebalEvent(sagaID, name, by, causation, payload string) engine.Message {
	m := scripted.NewEvent("REBAL", sagaID, name, by, json.RawMessage(payload))
	m.CausationID = causation
	return m
}

func startRebal(sagaID, portfolio, lines string) engine.Message {
	return rebalEvent(sagaID, "REBALANCE_REQUESTED", "advisor", "",
		fmt.Sprintf(`{"plan":{"portfolio_id":%q,"cash_needed":100,"lines":%s}}`, portfolio, lines))
}

func readRebal(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../testdata/v2/rebal.yaml")
	if err != nil {
		t.Fatalf("read rebal.yaml: %v", err)
	}
	return string(b)
}

// getInst reads a saga from the database.
func getInst(t *testing.T, st *sqlstore.Store, id string) engine.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	in, err := st.GetInstance(ctx, id)
	if err != nil {
		t.Fatalf("GetInstance(%s): %v", id, err)
	}
	return in
}

// waitState waits until the saga is in state with status.
func waitState(t *testing.T, st *sqlstore.Store, id, state string, status engine.Status) engine.Instance {
	t.Helper()
	waitFor(t, id+" in "+state+" "+string(status), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		in, err := st.GetInstance(ctx, id)
		return err == nil && in.State == state && in.Status == status, fmt.Sprintf("%s %s err %v", in.State, in.Status, err)
	})
	return getInst(t, st, id)
}

// waitDeadLetter waits for the dead letter of message id.
func waitDeadLetter(t *testing.T, st *sqlstore.Store, id string) engine.DeadLetter {
	t.Helper()
	var found engine.DeadLetter
	waitFor(t, "dead letter of "+id, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		dls, err := st.DeadLetters(ctx, 500, true)
		for _, d := range dls {
			if d.MessageID == id {
				found = d
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d dead letters, err %v", len(dls), err)
	})
	return found
}

// waitEntry waits for a timeline entry of message id and returns it.
func waitEntry(t *testing.T, st *sqlstore.Store, sagaID, msgID string) engine.HistoryEntry {
	t.Helper()
	var found engine.HistoryEntry
	waitFor(t, "timeline entry of "+msgID, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		hist, err := st.History(ctx, sagaID)
		for _, h := range hist {
			if h.MessageID == msgID {
				found = h
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d entries, err %v", len(hist), err)
	})
	return found
}

func TestRebalanceEndToEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be, readRebal(t))
		p := e.participant(t, func(c *scripted.Config) { c.Rules = rebalRules() })
		_, st := e.runOrchestrator(t, "saga-v2-"+uuid.NewString()[:8], engine.Config{})

		ok, risky, failing := uuid.NewString(), uuid.NewString(), uuid.NewString()
		e.publish(t,
			startRebal(ok, "P-OK", `[{"isin":"DE1","qty":3},{"isin":"FR2","qty":1}]`),
			startRebal(risky, "RISK-1", `[{"isin":"DE1","qty":3}]`),
			startRebal(failing, "P-FAIL", `[{"isin":"DE1","qty":3},{"isin":"FR2","qty":999},{"isin":"IT3","qty":2}]`),
		)

		// The default of the decision: traded at once, every branch ok.
		in := waitState(t, st, ok, "DONE", engine.StatusCompleted)
		if in.Join == nil || in.Join.Outcome != engine.JoinResultDone || len(in.Join.Commands) != 3 {
			t.Fatalf("join = %+v, want done with 3 commands", in.Join)
		}
		if !strings.Contains(string(in.Context), `"orders"`) || !strings.Contains(string(in.Context), `"cash"`) {
			t.Fatalf("context = %s, want the branches' replies merged", in.Context)
		}
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := p.WaitFor(ctx, func(ms []engine.Message) bool {
			for _, m := range ms {
				if m.SagaID == ok && m.Name == "NOTIFY" {
					return string(m.Payload) == `{"notificationDTO":{"message":"rebalanced: 2 orders","user":"P-OK"}}`
				}
			}
			return false
		}); err != nil {
			t.Fatalf("NOTIFY with the mapped notificationDTO: %v", err)
		}
		for _, m := range p.Received() {
			if m.SagaID == ok && m.Name == "CHECK_RISK" && strings.Contains(string(m.Payload), "cash_needed") {
				t.Fatalf("CHECK_RISK carried the whole context: %s", m.Payload)
			}
		}
		hist, err := st.History(ctx, ok)
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		branches := map[string]bool{}
		for _, h := range hist {
			for _, c := range h.Commands {
				if c.Branch != "" {
					branches[c.Branch] = true
				}
			}
		}
		if !branches["1[0]"] || !branches["1[1]"] || !branches["2"] {
			t.Fatalf("timeline branches = %v, want 1[0], 1[1], 2", branches)
		}

		// The decision's condition: the risky plan waits for approval.
		waitState(t, st, risky, "AWAITING_APPROVAL", engine.StatusRunning)
		e.publish(t, rebalEvent(risky, "REBALANCE_APPROVED", "advisor", "", `{"approval":{"by":"client"}}`))
		waitState(t, st, risky, "DONE", engine.StatusCompleted)

		// A refused order fails the step: the placed orders and the cash
		// are compensated together, the refused order is not.
		in = waitState(t, st, failing, "FAILED", engine.StatusFailed)
		var undo []string
		for _, u := range in.Undo {
			undo = append(undo, u.Branch+":"+u.Command+"="+string(u.Status))
		}
		if got, want := strings.Join(undo, " "), "1[0]:CANCEL_ORDER=compensated 1[1]:CANCEL_ORDER=failed 1[2]:CANCEL_ORDER=compensated 2:RELEASE_CASH=compensated"; got != want {
			t.Fatalf("undo = %s, want %s", got, want)
		}
	})
}

// Attacks on a running rebalance saga: a participant writing a key it
// does not own, a payload breaking its schema, a reply naming a branch
// command that does not exist, and a duplicate branch reply. Each refusal
// is a dead letter; the saga's context is read back from the database.
func TestRebalanceAttacks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be, readRebal(t))
		e.participant(t, func(c *scripted.Config) { c.Rules = rebalRules() })
		_, st := e.runOrchestrator(t, "saga-v2-"+uuid.NewString()[:8], engine.Config{})

		held := uuid.NewString()
		e.publish(t, startRebal(held, "HOLD", `[{"isin":"DE1","qty":3}]`))
		before := waitState(t, st, held, "CHECKING_RISK", engine.StatusRunning)

		foreign := rebalEvent(held, "RISK_CHECKED", "profile", "", `{"risk":{"score":1},"plan":{"portfolio_id":"STOLEN","lines":[]}}`)
		broken := rebalEvent(held, "RISK_CHECKED", "profile", "", `{"risk":{"score":"very low"}}`)
		e.publish(t, foreign, broken)
		if dl := waitDeadLetter(t, st, foreign.ID); dl.Code != engine.CodeInvalid || !strings.Contains(dl.Reason, "may write only risk") {
			t.Fatalf("foreign key: dead letter %s %q", dl.Code, dl.Reason)
		}
		if dl := waitDeadLetter(t, st, broken.ID); dl.Code != engine.CodeInvalid || !strings.Contains(dl.Reason, "breaks its schema") {
			t.Fatalf("schema: dead letter %s %q", dl.Code, dl.Reason)
		}
		after := getInst(t, st, held)
		if after.State != "CHECKING_RISK" || string(after.Context) != string(before.Context) || after.Keys["portfolio_id"] != "HOLD" {
			t.Fatalf("saga after the attacks = %s %s keys %v, want CHECKING_RISK %s", after.State, after.Context, after.Keys, before.Context)
		}

		// A saga waiting for its join: PLACE_ORDER of the HOLD line is not answered.
		waiting := uuid.NewString()
		e.publish(t, startRebal(waiting, "P-W", `[{"isin":"DE1","qty":3},{"isin":"HOLD","qty":1}]`))
		waitFor(t, "two of three branch commands answered", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			in, err := st.GetInstance(ctx, waiting)
			if err != nil || in.Join == nil {
				return false, fmt.Sprintf("%s err %v", in.State, err)
			}
			ok, failed := in.Join.Count()
			return ok == 2 && failed == 0, fmt.Sprintf("%s: %d ok %d failed", in.State, ok, failed)
		})
		in := getInst(t, st, waiting)
		cmds := map[string]engine.BranchCommand{}
		for _, c := range in.Join.Commands {
			cmds[c.Label()] = c
		}
		ghost := rebalEvent(waiting, "ORDER_PLACED", "deals", uuid.NewString(), `{"orders":["ghost"]}`)
		dup := rebalEvent(waiting, "ORDER_PLACED", "deals", cmds["1[0]"].ID, `{"orders":["twice"]}`)
		e.publish(t, ghost, dup)
		if dl := waitDeadLetter(t, st, ghost.ID); dl.Code != engine.CodeNotFound {
			t.Fatalf("ghost branch: dead letter %s %q, want not_found", dl.Code, dl.Reason)
		}
		if h := waitEntry(t, st, waiting, dup.ID); h.Kind != engine.EntryLate || !strings.Contains(h.Reason, "counted once") {
			t.Fatalf("duplicate reply entry = %s %q, want late, counted once", h.Kind, h.Reason)
		}
		in = getInst(t, st, waiting)
		if ok, failed := in.Join.Count(); ok != 2 || failed != 0 || in.State != "TRADING" {
			t.Fatalf("after the attacks: %d ok, %d failed in %s, want 2, 0 in TRADING", ok, failed, in.State)
		}
		if c := string(in.Context); strings.Contains(c, "ghost") || strings.Contains(c, "twice") {
			t.Fatalf("context = %s: a refused or duplicate reply was merged", c)
		}
		// The real reply completes the step.
		e.publish(t, rebalEvent(waiting, "ORDER_PLACED", "deals", cmds["1[1]"].ID, `{"orders":["HOLD-1"]}`))
		waitState(t, st, waiting, "DONE", engine.StatusCompleted)
	})
}

// startStoppable runs an in-process orchestrator that stop ends (and
// waits for); the test's cleanup stops it too.
func (e *env) startStoppable(t *testing.T, group string) (*sqlstore.Store, func()) {
	t.Helper()
	st := e.openStore(t)
	prod, err := kafka.NewProducer(e.kcfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	cons, err := kafka.NewConsumer(e.kcfg, group, e.eventTopic)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	o, err := engine.New(engine.Config{Logger: testLogger(t), TimerPoll: 50 * time.Millisecond, RelayPoll: 50 * time.Millisecond}, e.cat, st, &publisher{prod})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, &consumer{c: cons}) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			cons.Close()
			prod.Close()
		})
	}
	t.Cleanup(stop)
	return st, stop
}

// A saga waiting for its join survives a restart of saga-machine: the
// join's commands and replies are in the database, and the reply that
// arrives while it is down completes the step once it is back.
func TestJoinSurvivesRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		e := newEnv(t, be, readRebal(t))
		e.participant(t, func(c *scripted.Config) { c.Rules = rebalRules() })
		group := "saga-v2-" + uuid.NewString()[:8]
		st, stop := e.startStoppable(t, group)
		id := uuid.NewString()
		e.publish(t, startRebal(id, "P-R", `[{"isin":"HOLD","qty":1},{"isin":"DE1","qty":3}]`))
		waitFor(t, "two of three branch commands answered", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			in, err := st.GetInstance(ctx, id)
			if err != nil || in.Join == nil {
				return false, fmt.Sprintf("%s err %v", in.State, err)
			}
			ok, _ := in.Join.Count()
			return ok == 2, fmt.Sprintf("%s: %d ok", in.State, ok)
		})
		stop()
		in := getInst(t, st, id)
		var hold engine.BranchCommand
		for _, c := range in.Join.Commands {
			if c.Label() == "1[0]" {
				hold = c
			}
		}
		if hold.Status != engine.BranchPending || in.State != "TRADING" {
			t.Fatalf("at the stop: %s, 1[0] %s; want TRADING with 1[0] pending", in.State, hold.Status)
		}
		e.publish(t, rebalEvent(id, "ORDER_PLACED", "deals", hold.ID, `{"orders":["HOLD-0"]}`))
		st2, _ := e.startStoppable(t, group)
		in = waitState(t, st2, id, "DONE", engine.StatusCompleted)
		if in.Join.Outcome != engine.JoinResultDone {
			t.Fatalf("join outcome = %s, want done", in.Join.Outcome)
		}
	})
}
