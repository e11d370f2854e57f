package procstack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the stack's databases
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
)

// DB is a connection pool to a service's database (by name), for reading
// what the service stored. Closed when the test ends.
func (s *Stack) DB(name string) *sqlx.DB { return s.dbs[name] }

// Activity is a snapshot of what is still moving in a Stack.
type Activity struct {
	// Busy are the sagas running or compensating.
	Busy int
	// Sagas is the number of saga instances.
	Sagas int
	// Outbox is the number of records waiting in each service's outbox.
	Outbox map[string]int
	// Lag is, per consumer group (service name), how many records of its
	// topics it has not committed yet.
	Lag map[string]int64
	// Progress changes whenever a service handles something (the sum of
	// saga history rows and the participants' inbox rows).
	Progress int64
}

// Quiet reports whether nothing moves: no saga running or compensating,
// every outbox empty, every group caught up.
func (a Activity) Quiet() bool {
	if a.Busy > 0 {
		return false
	}
	for _, n := range a.Outbox {
		if n > 0 {
			return false
		}
	}
	for _, n := range a.Lag {
		if n > 0 {
			return false
		}
	}
	return true
}

func (a Activity) String() string {
	return fmt.Sprintf("%d of %d sagas running or compensating, outboxes %v, consumer lag %v", a.Busy, a.Sagas, a.Outbox, a.Lag)
}

// Activity reads what is still moving from the databases and the brokers.
func (s *Stack) Activity(ctx context.Context) (Activity, error) {
	a := Activity{Outbox: map[string]int{}, Lag: map[string]int64{}}
	sm := s.DB(SagaMachine)
	var history int64
	if err := sm.QueryRowxContext(ctx, `SELECT count(*) FILTER (WHERE status IN ('running', 'compensating')), count(*) FROM saga_instances`).
		Scan(&a.Busy, &a.Sagas); err != nil {
		return a, fmt.Errorf("procstack: count sagas: %w", err)
	}
	var n int
	if err := sm.GetContext(ctx, &n, `SELECT count(*) FROM outbox`); err != nil {
		return a, fmt.Errorf("procstack: count saga-machine's outbox: %w", err)
	}
	a.Outbox[SagaMachine] = n
	if err := sm.GetContext(ctx, &history, `SELECT coalesce(max(seq), 0) FROM saga_history`); err != nil {
		return a, fmt.Errorf("procstack: saga history: %w", err)
	}
	a.Progress = history
	for _, name := range Participants {
		db := s.DB(name)
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM sdk_outbox`); err != nil {
			return a, fmt.Errorf("procstack: count %s's outbox: %w", name, err)
		}
		a.Outbox[name] = n
		var inbox int64
		if err := db.GetContext(ctx, &inbox, `SELECT count(*) FROM sdk_inbox`); err != nil {
			return a, fmt.Errorf("procstack: count %s's inbox: %w", name, err)
		}
		a.Progress += inbox
	}
	cl, err := s.adminClient()
	if err != nil {
		return a, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var events []string
	for _, name := range Participants {
		sv := s.Service(name)
		events = append(events, sv.EventTopic)
		if a.Lag[name], err = groupLag(ctx, adm, sv.Group, sv.CommandTopic); err != nil {
			return a, err
		}
	}
	if a.Lag[SagaMachine], err = groupLag(ctx, adm, s.SagaMachine.Group, events...); err != nil {
		return a, err
	}
	return a, nil
}

// groupLag is how many records of topics group has not committed.
func groupLag(ctx context.Context, adm *kadm.Client, group string, topics ...string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("procstack: end offsets of %v: %w", topics, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("procstack: start offsets of %v: %w", topics, err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("procstack: committed offsets of group %s: %w", group, err)
	}
	var lag int64
	ends.Each(func(o kadm.ListedOffset) {
		from := int64(0)
		if st, ok := starts.Lookup(o.Topic, o.Partition); ok {
			from = st.Offset
		}
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.At >= from {
			from = c.At
		}
		if o.Offset > from {
			lag += o.Offset - from
		}
	})
	return lag, nil
}

// WaitQuiescent waits until the stack is quiet (Activity.Quiet) in two
// looks in a row at least 500 ms apart with no progress between them, or
// until ctx ends (an error with the last Activity). Sagas stopped as
// compensation_failed count as quiet: they wait for an operator, and Check
// reports them.
func (s *Stack) WaitQuiescent(ctx context.Context) (Activity, error) {
	var last Activity
	var lastErr error
	quietSince := int64(-1)
	for {
		a, err := s.Activity(ctx)
		switch {
		case err != nil:
			lastErr = err
			quietSince = -1
		case a.Quiet() && quietSince == a.Progress:
			return a, nil
		case a.Quiet():
			quietSince = a.Progress
		default:
			quietSince = -1
		}
		if err == nil {
			last, lastErr = a, nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("procstack: the stack did not quiesce: %w (last error: %v)", ctx.Err(), lastErr)
			}
			return last, fmt.Errorf("procstack: the stack did not quiesce: %w; still %s", ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Report is what Check found in the databases.
type Report struct {
	// Deals counts the deals by status (deals' database).
	Deals map[string]int
	// Sagas counts the saga instances by status (saga-machine's database).
	Sagas map[string]int
	// Decisions counts profile's order decisions by status.
	Decisions map[string]int
	// Reversals counts profile's order reversals by outcome ("reverted":
	// an approval's effect was undone; "nothing").
	Reversals map[string]int
	// FailedAfterApproval is how many failed deals had been approved by
	// profile (and so were reverted).
	FailedAfterApproval int
	// Notifications is the number of notifications stored.
	Notifications int
	// Portfolios is the number of portfolios whose cash was checked.
	Portfolios int
	// DeadLetters lists every dead letter of every service, with its code
	// or command and reason.
	DeadLetters []string
	// Violations lists every broken invariant; empty when the stack and
	// its participants agree. At most 20 of one kind are listed.
	Violations []string
	// Broken counts the broken invariants by kind, all of them (see
	// the Broken* constants).
	Broken map[string]int
}

// Kinds of broken invariants (Report.Broken).
const (
	BrokenNotFinal      = "deal-not-final"       // a deal is still draft
	BrokenSaga          = "saga-disagrees"       // a deal's saga is missing or its status does not match the deal's
	BrokenMoved         = "executed-not-moved"   // executed ⇔ cash moved is broken (one deal)
	BrokenPortfolio     = "wrong-portfolio"      // a deal was decided on another portfolio
	BrokenNotifyMissing = "notification-missing" // a deal has no notification
	BrokenNotifyExtra   = "notification-extra"   // a deal has more than one notification
	BrokenNotifyStatus  = "notification-status"  // a deal's notification tells another outcome
	BrokenOrphan        = "orphan"               // a decision, notification or saga names no deal
	BrokenNotTerminal   = "saga-not-terminal"    // a saga is running, compensating or compensation_failed
	BrokenCashShort     = "cash-short"           // a portfolio has less cash than deposits − executed buys + sells
	BrokenCashOver      = "cash-over"            // a portfolio has more
	BrokenPosition      = "position"             // a position is not its executed buys − sells
	BrokenDeadLetter    = "dead-letter"          // a dead letter in some service
	BrokenOutbox        = "outbox"               // an outbox still holds records
)

func (r *Report) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// maxListed bounds how many violations of one kind Check lists.
const maxListed = 20

// Check reads the four databases and checks the invariants of
// MANUAL_CREATE_ORDER (call it once the stack is quiet):
//
//   - every deal is final (executed, rejected or failed) and has one saga,
//     completed when the deal was executed or rejected, failed when the deal
//     failed; no saga is running, compensating or compensation_failed, and
//     every saga has its deal;
//   - a deal is executed exactly when profile approved it and did not
//     revert it; a rejected or failed deal moved nothing: its approval, if
//     any, was reverted;
//   - each portfolio's cash is its deposits − its executed buys + its
//     executed sells, and each position is its executed buys − sells;
//   - exactly one notification per deal, with the deal's status;
//   - no dead letter in any service (saga-machine's listed with code and
//     reason, code "finished" being a reply dropped after the saga ended);
//     every outbox empty.
//
// The error is for failures to read; broken invariants are in
// Report.Violations.
func (s *Stack) Check(ctx context.Context) (Report, error) {
	r := Report{Deals: map[string]int{}, Sagas: map[string]int{}, Decisions: map[string]int{}, Reversals: map[string]int{}, Broken: map[string]int{}}
	type deal struct {
		ID          string          `db:"id"`
		UserID      string          `db:"user_id"`
		PortfolioID string          `db:"portfolio_id"`
		Side        string          `db:"side"`
		Instrument  string          `db:"instrument"`
		Quantity    decimal.Decimal `db:"quantity"`
		Amount      decimal.Decimal `db:"amount"`
		Status      string          `db:"status"`
		SagaID      string          `db:"saga_id"`
		BasketID    string          `db:"basket_id"` // "" for a deal of its own
	}
	var deals []deal
	if err := s.DB(Deals).SelectContext(ctx, &deals, `SELECT id, user_id, portfolio_id, side, instrument, quantity::text AS quantity,
		amount::text AS amount, status, saga_id, coalesce(basket_id, '') AS basket_id FROM deals ORDER BY seq`); err != nil {
		return r, fmt.Errorf("procstack: read deals: %w", err)
	}
	type saga struct {
		ID     string `db:"id"`
		Status string `db:"status"`
		State  string `db:"state"`
	}
	var sagaRows []saga
	if err := s.DB(SagaMachine).SelectContext(ctx, &sagaRows, `SELECT id, status, state FROM saga_instances`); err != nil {
		return r, fmt.Errorf("procstack: read sagas: %w", err)
	}
	sagas := map[string]saga{}
	for _, sg := range sagaRows {
		sagas[sg.ID] = sg
		r.Sagas[sg.Status]++
	}
	type decision struct {
		DealID      string `db:"deal_id"`
		PortfolioID string `db:"portfolio_id"`
		Status      string `db:"status"`
	}
	var decRows []decision
	if err := s.DB(Profile).SelectContext(ctx, &decRows, `SELECT deal_id, portfolio_id, status FROM order_decisions`); err != nil {
		return r, fmt.Errorf("procstack: read order decisions: %w", err)
	}
	decisions := map[string]decision{}
	for _, d := range decRows {
		decisions[d.DealID] = d
		r.Decisions[d.Status]++
	}
	type reversal struct {
		DealID  string `db:"deal_id"`
		Outcome string `db:"outcome"`
	}
	var revRows []reversal
	if err := s.DB(Profile).SelectContext(ctx, &revRows, `SELECT deal_id, outcome FROM order_reversals`); err != nil {
		return r, fmt.Errorf("procstack: read order reversals: %w", err)
	}
	reverted := map[string]bool{}
	for _, rv := range revRows {
		r.Reversals[rv.Outcome]++
		reverted[rv.DealID] = rv.Outcome == "reverted"
	}
	type note struct {
		DealID   string `db:"deal_id"`
		BasketID string `db:"basket_id"`
		Status   string `db:"status"`
	}
	var notes []note
	if err := s.DB(Notification).SelectContext(ctx, &notes, `SELECT deal_id, basket_id, status FROM notifications`); err != nil {
		return r, fmt.Errorf("procstack: read notifications: %w", err)
	}
	r.Notifications = len(notes)
	// A deal's notifications by deal id, a basket's (one for all its
	// deals, BASKET_ORDER) by basket id.
	notesOf, basketNotes := map[string][]string{}, map[string][]string{}
	for _, n := range notes {
		if n.BasketID != "" {
			basketNotes[n.BasketID] = append(basketNotes[n.BasketID], n.Status)
			continue
		}
		notesOf[n.DealID] = append(notesOf[n.DealID], n.Status)
	}

	kinds := map[string]int{} // counted by limit, listed up to maxListed
	limit := func(kind string) bool { kinds[kind]++; return kinds[kind] <= maxListed }
	type key struct{ portfolio, instrument string }
	cashMoved := map[string]decimal.Decimal{}
	heldMoved := map[key]decimal.Decimal{}
	dealIDs, basketIDs := map[string]bool{}, map[string]bool{}
	sagaOfDeal := map[string]bool{}
	for _, d := range deals {
		dealIDs[d.ID] = true
		if d.BasketID != "" {
			basketIDs[d.BasketID] = true
		}
		r.Deals[d.Status]++
		sg, ok := sagas[d.SagaID]
		sagaOfDeal[d.SagaID] = true
		wantSaga := "completed"
		switch d.Status {
		case "executed", "rejected":
		case "failed", "cancelled":
			wantSaga = "failed"
		default:
			if limit(BrokenNotFinal) {
				r.violate("deal %s is %s, not final (saga %s: %s in %s)", d.ID, d.Status, d.SagaID, sg.Status, sg.State)
			}
		}
		switch {
		case !ok:
			if limit(BrokenSaga) {
				r.violate("deal %s (%s) has no saga (saga id %q)", d.ID, d.Status, d.SagaID)
			}
		case sg.Status != wantSaga && d.Status != "draft":
			if limit(BrokenSaga) {
				r.violate("deal %s is %s but its saga %s is %s in %s, want %s", d.ID, d.Status, d.SagaID, sg.Status, sg.State, wantSaga)
			}
		}
		dec, decided := decisions[d.ID]
		approved := decided && dec.Status == "approved"
		moved := approved && !reverted[d.ID]
		if (d.Status == "executed") != moved && limit(BrokenMoved) {
			r.violate("deal %s is %s (saga %s) but profile's decision is %q, reverted %v: executed ⇔ cash moved is broken",
				d.ID, d.Status, d.SagaID, dec.Status, reverted[d.ID])
		}
		if decided && dec.PortfolioID != d.PortfolioID && limit(BrokenPortfolio) {
			r.violate("deal %s of portfolio %s was decided on portfolio %s", d.ID, d.PortfolioID, dec.PortfolioID)
		}
		if d.Status == "failed" && approved {
			r.FailedAfterApproval++
		}
		if d.Status == "executed" {
			k := key{d.PortfolioID, d.Instrument}
			if d.Side == "buy" {
				cashMoved[d.PortfolioID] = cashMoved[d.PortfolioID].Sub(d.Amount)
				heldMoved[k] = heldMoved[k].Add(d.Quantity)
			} else {
				cashMoved[d.PortfolioID] = cashMoved[d.PortfolioID].Add(d.Amount)
				heldMoved[k] = heldMoved[k].Sub(d.Quantity)
			}
		}
		got, of := notesOf[d.ID], "deal "+d.ID
		if d.BasketID != "" {
			got, of = basketNotes[d.BasketID], "basket "+d.BasketID+" of deal "+d.ID
		}
		switch {
		case len(got) != 1:
			kind := BrokenNotifyMissing
			if len(got) > 1 {
				kind = BrokenNotifyExtra
			}
			if limit(kind) {
				r.violate("%s (%s) has %d notifications %v, want exactly 1", of, d.Status, len(got), got)
			}
		case got[0] != d.Status:
			if limit(BrokenNotifyStatus) {
				r.violate("deal %s is %s but the notification of %s says %s", d.ID, d.Status, of, got[0])
			}
		}
	}
	for id := range decisions {
		if !dealIDs[id] && limit(BrokenOrphan) {
			r.violate("profile decided deal %s, which deals does not know", id)
		}
	}
	for id := range notesOf {
		if !dealIDs[id] && limit(BrokenOrphan) {
			r.violate("a notification names deal %s, which deals does not know", id)
		}
	}
	for id := range basketNotes {
		if !basketIDs[id] && limit(BrokenOrphan) {
			r.violate("a notification names basket %s, which deals does not know", id)
		}
	}
	for _, sg := range sagaRows {
		if !sagaOfDeal[sg.ID] && limit(BrokenOrphan) {
			r.violate("saga %s (%s in %s) has no deal", sg.ID, sg.Status, sg.State)
		}
		if sg.Status != "completed" && sg.Status != "failed" && limit(BrokenNotTerminal) {
			r.violate("saga %s is %s in %s, not terminal", sg.ID, sg.Status, sg.State)
		}
	}

	// Money: profile's cash and positions against deposits and executed deals.
	type portfolio struct {
		ID   string          `db:"id"`
		Cash decimal.Decimal `db:"cash"`
	}
	var pfs []portfolio
	if err := s.DB(Profile).SelectContext(ctx, &pfs, `SELECT id, cash::text AS cash FROM portfolios`); err != nil {
		return r, fmt.Errorf("procstack: read portfolios: %w", err)
	}
	type sum struct {
		PortfolioID string          `db:"portfolio_id"`
		Total       decimal.Decimal `db:"total"`
	}
	var deposits []sum
	if err := s.DB(Profile).SelectContext(ctx, &deposits, `SELECT portfolio_id, sum(amount)::text AS total FROM deposits GROUP BY portfolio_id`); err != nil {
		return r, fmt.Errorf("procstack: read deposits: %w", err)
	}
	funded := map[string]decimal.Decimal{}
	for _, d := range deposits {
		funded[d.PortfolioID] = d.Total
	}
	r.Portfolios = len(pfs)
	for _, pf := range pfs {
		want := funded[pf.ID].Add(cashMoved[pf.ID])
		kind := BrokenCashOver
		if pf.Cash.LessThan(want) {
			kind = BrokenCashShort
		}
		if !pf.Cash.Equal(want) && limit(kind) {
			r.violate("portfolio %s has cash %s, want %s = deposits %s + executed deals %s (difference %s)",
				pf.ID, pf.Cash, want, funded[pf.ID], cashMoved[pf.ID], pf.Cash.Sub(want))
		}
	}
	type position struct {
		PortfolioID string          `db:"portfolio_id"`
		Instrument  string          `db:"instrument"`
		Quantity    decimal.Decimal `db:"quantity"`
	}
	var positions []position
	if err := s.DB(Profile).SelectContext(ctx, &positions, `SELECT portfolio_id, instrument, quantity::text AS quantity FROM positions`); err != nil {
		return r, fmt.Errorf("procstack: read positions: %w", err)
	}
	held := map[key]decimal.Decimal{}
	for _, p := range positions {
		held[key{p.PortfolioID, p.Instrument}] = p.Quantity
	}
	for k, q := range heldMoved {
		if !held[k].Equal(q) && limit(BrokenPosition) {
			r.violate("portfolio %s holds %s %s, want %s from its executed deals", k.portfolio, held[k], k.instrument, q)
		}
	}
	for k, q := range held {
		if _, ok := heldMoved[k]; !ok && limit(BrokenPosition) {
			r.violate("portfolio %s holds %s %s, want none from its executed deals", k.portfolio, q, k.instrument)
		}
	}

	// Dead letters and outboxes.
	type smDead struct {
		Code   string `db:"code"`
		Reason string `db:"reason"`
		SagaID string `db:"saga_id"`
		Topic  string `db:"topic"`
	}
	var smDeads []smDead
	if err := s.DB(SagaMachine).SelectContext(ctx, &smDeads, `SELECT code, reason, saga_id, topic FROM dead_letters ORDER BY id`); err != nil {
		return r, fmt.Errorf("procstack: read saga-machine's dead letters: %w", err)
	}
	finished := 0
	for _, d := range smDeads {
		r.DeadLetters = append(r.DeadLetters, fmt.Sprintf("saga-machine: code %s, saga %s, topic %s: %s", d.Code, d.SagaID, d.Topic, d.Reason))
		if d.Code == "finished" {
			finished++
		}
	}
	if finished > 0 {
		r.violate("saga-machine dead-lettered %d replies as finished (a reply to a saga that had ended, its effect possibly kept)", finished)
	}
	for _, name := range Participants {
		var rows []struct {
			Command  string `db:"command"`
			Reason   string `db:"reason"`
			SagaID   string `db:"saga_id"`
			Attempts int    `db:"attempts"`
			Handled  bool   `db:"handled"`
		}
		if err := s.DB(name).SelectContext(ctx, &rows, `SELECT command, reason, saga_id, attempts,
			EXISTS (SELECT 1 FROM sdk_inbox i WHERE i.message_id = d.message_id) AS handled FROM sdk_dead_letters d ORDER BY created_at`); err != nil {
			return r, fmt.Errorf("procstack: read %s's dead letters: %w", name, err)
		}
		for _, d := range rows {
			state := "parked"
			if d.Handled {
				state = "handled since"
			}
			r.DeadLetters = append(r.DeadLetters, fmt.Sprintf("%s: %s of saga %s, %d attempts, %s: %s", name, d.Command, d.SagaID, d.Attempts, state, d.Reason))
		}
	}
	if n := len(r.DeadLetters); n > 0 {
		r.Broken[BrokenDeadLetter] = n
		r.violate("%d dead letters:\n  %s", n, strings.Join(r.DeadLetters, "\n  "))
	}
	for _, sv := range s.Services() {
		table := "sdk_outbox"
		if sv.Name == SagaMachine {
			table = "outbox"
		}
		var n int
		if err := s.DB(sv.Name).GetContext(ctx, &n, `SELECT count(*) FROM `+table); err != nil {
			return r, fmt.Errorf("procstack: count %s's outbox: %w", sv.Name, err)
		}
		if n > 0 {
			r.Broken[BrokenOutbox] += n
			r.violate("%s's outbox still holds %d records", sv.Name, n)
		}
	}
	for kind, n := range kinds {
		r.Broken[kind] += n
		if n > maxListed {
			r.violate("… and %d more violations of the same kind (%s)", n-maxListed, kind)
		}
	}
	return r, nil
}

// Summary is one line of counts, for the test log.
func (r Report) Summary() string {
	return fmt.Sprintf("deals %v; sagas %v; profile decisions %v, reversals %v (failed after approval %d); %d notifications; %d portfolios; %d dead letters; %d violations",
		r.Deals, r.Sagas, r.Decisions, r.Reversals, r.FailedAfterApproval, r.Notifications, r.Portfolios, len(r.DeadLetters), len(r.Violations))
}

// Err is nil without violations, else an error listing them.
func (r Report) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	return errors.New("procstack: " + strings.Join(r.Violations, "\n"))
}
