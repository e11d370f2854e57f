package profile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// REVERT_ORDER, the compensation of APPROVE_ORDER (MANUAL_CREATE_ORDER v2),
// and its done event.
const (
	CommandRevertOrder = "REVERT_ORDER"
	EventOrderReverted = "ORDER_REVERTED"
)

// Outcomes of a reversal (order_reversals.outcome).
const (
	outcomeReverted = "reverted" // the approval's effect was undone
	outcomeNothing  = "nothing"  // there was none: rejected, or not decided (and now never approved)
)

// decisionRecord is a stored decision as a reversal reads it: what the
// approval moved and the APPROVE_ORDER command that decided it. Side is ""
// and Quantity, Amount are NULL on decisions taken before migration 00003
// (the saga context says then); CommandID is NULL on decisions taken
// before migration 00004 (the payload is trusted then).
type decisionRecord struct {
	PortfolioID string              `db:"portfolio_id"`
	Status      string              `db:"status"`
	SagaID      string              `db:"saga_id"`
	Side        string              `db:"side"`
	Instrument  string              `db:"instrument"`
	Quantity    decimal.NullDecimal `db:"quantity"`
	Amount      decimal.NullDecimal `db:"amount"`
	CommandID   sql.NullString      `db:"command_id"`
}

// reversal is one row of order_reversals.
type reversal struct {
	DealID        string          `db:"deal_id"`
	PortfolioID   string          `db:"portfolio_id"`
	SagaID        string          `db:"saga_id"`
	Outcome       string          `db:"outcome"`
	Instrument    string          `db:"instrument"`
	CashDelta     decimal.Decimal `db:"cash_delta"`
	QuantityDelta decimal.Decimal `db:"quantity_delta"`
	Reason        string          `db:"reason"`
}

// handleRevertOrder undoes what APPROVE_ORDER did to the deal's portfolio,
// once, and answers ORDER_REVERTED (order_reversal: reverted or not, and
// why) in every case it can settle:
//
//   - the order was approved: the cash and the position move back (a buy's
//     cost returns to the cash and its quantity leaves the position; a
//     sell's proceeds leave the cash and its quantity returns), today's
//     snapshot is upserted, and the reversal is recorded;
//   - it was rejected, or not decided at all (APPROVE_ORDER never came, was
//     refused for its deadline, or is still on its way): nothing moves, and
//     the reversal is recorded so that a later APPROVE_ORDER of the deal is
//     rejected;
//   - it was reverted before: the recorded answer again, nothing moves.
//
// A reversal that would take the position or the cash below zero (the
// bought quantity was sold since, the sell's proceeds spent) is refused as
// a permanent error: nothing moves, the command is parked with the reason,
// saga-machine's re-sends are parked again until it gives up
// (compensation_failed), and an operator settles it (docs/services.md).
// So is a command that is not a compensation, a decision taken in another
// saga, a portfolio that is not the deal's user's, and a payload that names
// another deal than the order the command undoes (checkUndoes): the
// compensation then stays unanswered, loudly, instead of reverting the
// wrong deal and answering ORDER_REVERTED for the right one.
func (s *Service) handleRevertOrder(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope]) (sdk.Result, error) {
	dc, err := dealctx.FromCommand(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	if cmd.Compensates == "" {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s: the command names no APPROVE_ORDER it compensates (compensates is empty): "+
			"REVERT_ORDER is only sent by saga-machine as a compensation", cmd.Name, dc.DealID))
	}
	pid := dealctx.CanonicalOrSame(dc.PortfolioID)
	// The portfolio row is locked first (PostgreSQL), as APPROVE_ORDER
	// does: an approval of the same deal then either committed before (and
	// is read below) or waits and sees this reversal.
	pf, err := s.lockPortfolio(ctx, tx, pid)
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, fmt.Errorf("%s: deal %s: %w", cmd.Name, dc.DealID, err)
	}
	var d decisionRecord
	err = s.sql.Get(ctx, tx, &d, `SELECT portfolio_id, status, saga_id, side, instrument, quantity, amount, command_id
		FROM order_decisions WHERE deal_id = ?`, dc.DealID)
	decided := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, fmt.Errorf("%s: read the decision on deal %s: %w", cmd.Name, dc.DealID, err)
	}
	// Checked before anything else, a reversal recorded before included:
	// a command that undoes another deal's order is parked on every
	// delivery.
	if err := s.checkUndoes(ctx, tx, cmd.Compensates, dc.DealID, d, decided); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	var done reversal
	err = s.sql.Get(ctx, tx, &done, `SELECT deal_id, portfolio_id, saga_id, outcome, instrument, cash_delta, quantity_delta, reason
		FROM order_reversals WHERE deal_id = ?`, dc.DealID)
	switch {
	case err == nil:
		// Reverted before (another command id of the same compensation):
		// the same answer, nothing moves again.
		s.log.InfoContext(ctx, "order reverted before: answered again", "deal_id", dc.DealID, "outcome", done.Outcome, "saga_id", cmd.SagaID)
		return revertedReply(dc.DealID, done.Outcome == outcomeReverted, done.Reason), nil
	case !errors.Is(err, sql.ErrNoRows):
		return sdk.Result{}, fmt.Errorf("%s: read the reversal of deal %s: %w", cmd.Name, dc.DealID, err)
	}
	var rev reversal
	switch {
	case !decided:
		rev = reversal{Outcome: outcomeNothing,
			Reason: "the order was not decided: nothing to undo, and it will not be applied if it arrives later"}
	default:
		if err := sameDeal(d, dc, pid, cmd.SagaID); err != nil {
			return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
		}
		if d.Status != dealctx.StatusApproved {
			rev = reversal{Outcome: outcomeNothing, Reason: "the order was " + d.Status + ": nothing to undo"}
			break
		}
		if !found || pf.UserID != dc.UserID {
			return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s was approved on portfolio %s, which does not exist or is not user %s's: "+
				"it cannot be reverted automatically", cmd.Name, dc.DealID, pid, dc.UserID))
		}
		if rev, err = s.revertApproval(ctx, tx, &pf, undoOf(d, dc)); err != nil {
			return sdk.Result{}, fmt.Errorf("%s: deal %s: %w", cmd.Name, dc.DealID, err)
		}
	}
	rev.DealID, rev.PortfolioID, rev.SagaID = dc.DealID, pid, cmd.SagaID
	const q = `INSERT INTO order_reversals (deal_id, portfolio_id, saga_id, outcome, instrument, cash_delta, quantity_delta, reason, reverted_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	if _, err := s.sql.Exec(ctx, tx, q, rev.DealID, rev.PortfolioID, rev.SagaID, rev.Outcome, rev.Instrument,
		rev.CashDelta, rev.QuantityDelta, rev.Reason, s.now().UTC()); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: record the reversal of deal %s: %w", cmd.Name, dc.DealID, err)
	}
	s.log.InfoContext(ctx, "order reverted", "deal_id", dc.DealID, "portfolio_id", pid, "outcome", rev.Outcome,
		"cash_delta", rev.CashDelta, "quantity_delta", rev.QuantityDelta, "reason", rev.Reason, "saga_id", cmd.SagaID)
	return revertedReply(dc.DealID, rev.Outcome == outcomeReverted, rev.Reason), nil
}

// checkUndoes checks that the deal dealID named by a REVERT_ORDER's
// payload is the order of the command it compensates (compensates, the id
// of the APPROVE_ORDER it undoes, which APPROVE_ORDER stores with its
// decision): the deal's decision d (if decided) must have been taken by
// that command, and that command must not have decided another deal. It
// returns a permanent error naming both commands or both deals otherwise.
// When the named deal has no decision or one taken before its command was
// recorded (migration 00004), and the compensated command decided no other
// deal (it has not arrived, was refused, or only repeated a decision), the
// payload is trusted and the reversal goes on as before (the barrier
// case). A deal decided by one command and compensated under another id is
// parked: saga-machine re-sends a command under its id, so that is not the
// order the compensation undoes.
func (s *Service) checkUndoes(ctx context.Context, tx *sqlx.Tx, compensates, dealID string, d decisionRecord, decided bool) error {
	if decided && d.CommandID.Valid {
		if d.CommandID.String == compensates {
			return nil // one command decides one deal: no other to look for
		}
		return sdk.Permanent(fmt.Errorf("%s compensates command %s, but deal %s was decided by command %s: "+
			"the payload names another deal than the order it undoes; nothing was moved: an operator must settle it",
			CommandRevertOrder, compensates, dealID, d.CommandID.String))
	}
	var other []string
	if err := s.sql.Select(ctx, tx, &other, `SELECT deal_id FROM order_decisions WHERE command_id = ? AND deal_id <> ?`,
		compensates, dealID); err != nil {
		return fmt.Errorf("read the deal decided by command %s: %w", compensates, err)
	}
	if len(other) > 0 {
		return sdk.Permanent(fmt.Errorf("%s compensates command %s, which decided deal %s, not deal %s: "+
			"the payload names another deal than the order it undoes; nothing was moved: an operator must settle it",
			CommandRevertOrder, compensates, other[0], dealID))
	}
	return nil
}

// sameDeal checks that a stored decision is the one the compensation
// means: taken in the same saga (when recorded) on the same portfolio.
func sameDeal(d decisionRecord, dc dealctx.DealContext, portfolioID, sagaID string) error {
	if d.SagaID != "" && d.SagaID != sagaID {
		return fmt.Errorf("deal %s was decided in saga %s, not %s: a saga reverts only its own order", dc.DealID, d.SagaID, sagaID)
	}
	if d.PortfolioID != portfolioID {
		return fmt.Errorf("deal %s was decided on portfolio %s, but the saga context names portfolio %s", dc.DealID, d.PortfolioID, portfolioID)
	}
	return nil
}

// undo is what reverting one approval moves.
type undo struct {
	side, instrument string
	quantity, amount decimal.Decimal
	currency         string
}

// undoOf returns what the approval d moved: as recorded with the decision,
// or, for a decision taken before that was recorded, as the saga context
// says (the deal's fields do not change during a saga).
func undoOf(d decisionRecord, dc dealctx.DealContext) undo {
	u := undo{side: dc.Side, instrument: dc.Instrument, quantity: dc.Quantity, amount: dc.Amount, currency: dc.Currency}
	if d.Side != "" && d.Quantity.Valid && d.Amount.Valid {
		u.side, u.instrument, u.quantity, u.amount = d.Side, d.Instrument, d.Quantity.Decimal, d.Amount.Decimal
	}
	return u
}

// revertApproval moves pf's cash and position back by u, upserts today's
// snapshot and returns the reversal to record. A reversal the portfolio
// cannot take (the position or the cash would go below zero, the cash
// above the limit) is a permanent error and moves nothing.
func (s *Service) revertApproval(ctx context.Context, tx *sqlx.Tx, pf *Portfolio, u undo) (reversal, error) {
	held := pf.Positions[u.instrument]
	var cashDelta, qtyDelta decimal.Decimal
	var reason string
	switch u.side {
	case dealctx.Buy:
		if held.LessThan(u.quantity) {
			return reversal{}, sdk.Permanent(fmt.Errorf("the buy cannot be reverted automatically: portfolio %s holds %s %s, "+
				"fewer than the %s it bought (sold since?); nothing was moved: an operator must settle it", pf.ID, held, u.instrument, u.quantity))
		}
		cashDelta, qtyDelta = u.amount, u.quantity.Neg()
		reason = fmt.Sprintf("the buy was undone: %s %s returned to the cash, %s %s taken back",
			dealctx.Money(u.amount), u.currency, u.quantity, u.instrument)
	case dealctx.Sell:
		if pf.Cash.LessThan(u.amount) {
			return reversal{}, sdk.Permanent(fmt.Errorf("the sell cannot be reverted automatically: portfolio %s has %s %s in cash, "+
				"less than the %s %s it was paid (spent since?); nothing was moved: an operator must settle it",
				pf.ID, dealctx.Money(pf.Cash), pf.Currency, dealctx.Money(u.amount), u.currency))
		}
		cashDelta, qtyDelta = u.amount.Neg(), u.quantity
		reason = fmt.Sprintf("the sell was undone: %s %s taken back from the cash, %s %s returned",
			dealctx.Money(u.amount), u.currency, u.quantity, u.instrument)
	default:
		return reversal{}, sdk.Permanent(fmt.Errorf("the approved order has side %q: it cannot be reverted", u.side))
	}
	cash := pf.Cash.Add(cashDelta)
	if err := dealctx.CheckAmount("the resulting cash", cash); err != nil {
		return reversal{}, sdk.Permanent(fmt.Errorf("the order cannot be reverted: %w", err))
	}
	held = held.Add(qtyDelta)
	pf.Cash, pf.UpdatedAt = cash, s.now().UTC()
	if held.IsZero() {
		delete(pf.Positions, u.instrument)
	} else {
		pf.Positions[u.instrument] = held
	}
	const q = `UPDATE portfolios SET cash = ?, updated_at = ? WHERE id = ?`
	if _, err := s.sql.Exec(ctx, tx, q, pf.Cash, pf.UpdatedAt, pf.ID); err != nil {
		return reversal{}, fmt.Errorf("update cash of portfolio %s: %w", pf.ID, err)
	}
	if err := s.savePosition(ctx, tx, pf.ID, u.instrument, held); err != nil {
		return reversal{}, err
	}
	if err := s.upsertSnapshot(ctx, tx, *pf); err != nil {
		return reversal{}, err
	}
	return reversal{Outcome: outcomeReverted, Instrument: u.instrument, CashDelta: cashDelta, QuantityDelta: qtyDelta, Reason: reason}, nil
}

// revertedReply is ORDER_REVERTED with its order_reversal (and no
// deal_context, which stays as it is in the saga context).
func revertedReply(dealID string, reverted bool, reason string) sdk.Result {
	return sdk.Reply(EventOrderReverted, dealctx.ReversalEnvelope{
		OrderReversal: dealctx.Reversal{DealID: dealID, Reverted: reverted, Reason: reason}})
}
