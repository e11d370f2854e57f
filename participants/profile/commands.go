package profile

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// RegisterHandlers registers APPROVE_ORDER (a batch handler:
// handleApproveBatch, handleApproveOrder for one command) and its
// compensation REVERT_ORDER, and BASKET_ORDER's CHECK_BASKET, on p.
func (s *Service) RegisterHandlers(p *sdk.Participant) {
	sdk.HandleBatch(p, CommandApproveOrder, s.handleApproveBatch)
	sdk.Handle(p, CommandRevertOrder, s.handleRevertOrder)
	sdk.Handle(p, CommandCheckBasket, s.handleCheckBasket)
}

// decision is a stored order decision and whether the deal's order was
// reverted since (or before it was decided: Status is then "").
type decision struct {
	Status   string `db:"status"`
	Reason   string `db:"reason"`
	Reversed bool   `db:"-"`
}

// orderView is what deciding an order reads in one statement: the
// portfolio (locked on PostgreSQL), its positions, the decision already
// taken on the deal, if any, and whether its order was reverted.
type orderView struct {
	Portfolio
	PositionsJSON sql.NullString `db:"positions_json"`
	PrevStatus    sql.NullString `db:"prev_status"`
	PrevReason    sql.NullString `db:"prev_reason"`
	Reversed      sql.NullString `db:"reversed"`
}

func (s *Service) handleApproveOrder(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope]) (sdk.Result, error) {
	dc, err := dealctx.FromCommand(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	// The portfolio is looked up by its canonical id (deals sends it so;
	// a deal registered before deals normalised ids may carry upper case);
	// the reply carries the deal_context as received.
	key := dc
	key.PortfolioID = dealctx.CanonicalOrSame(dc.PortfolioID)
	pf, prev, found, err := s.loadOrder(ctx, tx, key)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: deal %s: %w", cmd.Name, dc.DealID, err)
	}
	// The deal's order was reverted (its saga failed): it is never applied
	// again, whatever came before. The SDK's barrier refuses this very
	// command if its compensation came first; this covers the same deal
	// under another command id.
	if prev != nil && prev.Reversed {
		reason := fmt.Sprintf("the order of deal %s was reverted (REVERT_ORDER: its saga failed); it is not applied again", dc.DealID)
		s.log.InfoContext(ctx, "order not decided: reverted before", "deal_id", dc.DealID, "saga_id", cmd.SagaID)
		return s.answer(dc, dealctx.StatusRejected, reason), nil
	}
	// A deal is decided once; the same decision is repeated if asked again.
	if prev != nil && prev.Status != "" {
		return s.answer(dc, prev.Status, prev.Reason), nil
	}
	var status, reason string
	var held decimal.Decimal
	if found && pf.UserID == dc.UserID {
		status, reason, held = decide(&pf, dc)
	} else {
		status, reason = dealctx.StatusRejected, fmt.Sprintf("portfolio %s not found for user %s", dc.PortfolioID, dc.UserID)
	}
	if status == dealctx.StatusApproved {
		pf.UpdatedAt = s.now().UTC()
		if err := s.apply(ctx, tx, key, cmd.SagaID, cmd.ID, pf, held); err != nil {
			return sdk.Result{}, fmt.Errorf("%s: deal %s: %w", cmd.Name, dc.DealID, err)
		}
	} else {
		const q = `INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at, saga_id, side, instrument, quantity, amount, command_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
		if _, err := s.sql.Exec(ctx, tx, q, dc.DealID, key.PortfolioID, status, reason, s.now().UTC(),
			cmd.SagaID, dc.Side, dc.Instrument, dc.Quantity, dc.Amount, cmd.ID); err != nil {
			return sdk.Result{}, fmt.Errorf("%s: record the decision on deal %s: %w", cmd.Name, dc.DealID, err)
		}
	}
	s.log.InfoContext(ctx, "order decided", "deal_id", dc.DealID, "portfolio_id", dc.PortfolioID, "status", status, "reason", reason, "saga_id", cmd.SagaID)
	return s.answer(dc, status, reason), nil
}

// loadOrder reads the deal's portfolio with its positions, the decision
// already taken on the deal and whether its order was reverted (prev, nil
// if neither; Status "" if only reverted): one statement on SQLite (whose
// write transactions exclude each other); on PostgreSQL the portfolio row
// is locked first, then positions, decision and reversal are read by a
// second statement, whose snapshot sees what the previous holder of the
// lock committed (in one statement they would be read as of before the
// wait: a lost update, or an approval after its reversal). found is false
// if the portfolio does not exist; decision and reversal are then read on
// their own.
func (s *Service) loadOrder(ctx context.Context, tx *sqlx.Tx, dc dealctx.DealContext) (pf Portfolio, prev *decision, found bool, err error) {
	var v orderView
	if s.dialect == service.Postgres {
		err = s.sql.Get(ctx, tx, &v.Portfolio, s.lockPortfolioSQL, dc.PortfolioID)
		if err == nil {
			err = s.sql.Get(ctx, tx, &v, s.loadOrderSQL, dc.DealID, dc.DealID, dc.DealID, dc.PortfolioID)
		}
	} else {
		err = s.sql.Get(ctx, tx, &v, s.loadOrderSQL, dc.DealID, dc.DealID, dc.DealID, dc.PortfolioID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		const q = `SELECT (SELECT status FROM order_decisions WHERE deal_id = ?) AS prev_status,
			(SELECT reason FROM order_decisions WHERE deal_id = ?) AS prev_reason,
			(SELECT outcome FROM order_reversals WHERE deal_id = ?) AS reversed`
		if err := s.sql.Get(ctx, tx, &v, q, dc.DealID, dc.DealID, dc.DealID); err != nil {
			return Portfolio{}, nil, false, fmt.Errorf("read the decision on the deal: %w", err)
		}
		return Portfolio{}, v.previous(), false, nil
	}
	if err != nil {
		return Portfolio{}, nil, false, fmt.Errorf("read portfolio %s: %w", dc.PortfolioID, err)
	}
	prev = v.previous()
	pf = v.Portfolio
	pf.normalize()
	if v.PositionsJSON.Valid && v.PositionsJSON.String != "" {
		if err := json.Unmarshal([]byte(v.PositionsJSON.String), &pf.Positions); err != nil {
			return Portfolio{}, nil, false, fmt.Errorf("read positions of portfolio %s: %w", pf.ID, err)
		}
	}
	return pf, prev, true, nil
}

// previous is the decision and reversal v read, nil if neither.
func (v *orderView) previous() *decision {
	if !v.PrevStatus.Valid && !v.Reversed.Valid {
		return nil
	}
	return &decision{Status: v.PrevStatus.String, Reason: v.PrevReason.String, Reversed: v.Reversed.Valid}
}

// orderViewSQL is loadOrder's reading statement (arguments: deal id three
// times, portfolio id): on PostgreSQL positions, decision and reversal only
// (the portfolio is read by the locking statement before it), on SQLite
// the portfolio too.
func orderViewSQL(postgres bool) string {
	const sub = `(SELECT json_group_object(instrument, quantity) FROM positions WHERE portfolio_id = p.id) AS positions_json,
		(SELECT status FROM order_decisions WHERE deal_id = ?) AS prev_status,
		(SELECT reason FROM order_decisions WHERE deal_id = ?) AS prev_reason,
		(SELECT outcome FROM order_reversals WHERE deal_id = ?) AS reversed`
	if postgres {
		return `SELECT (SELECT json_object_agg(instrument, quantity)::text FROM positions WHERE portfolio_id = p.id) AS positions_json,
		(SELECT status FROM order_decisions WHERE deal_id = ?) AS prev_status,
		(SELECT reason FROM order_decisions WHERE deal_id = ?) AS prev_reason,
		(SELECT outcome FROM order_reversals WHERE deal_id = ?) AS reversed
		FROM (SELECT CAST(? AS text) AS id) AS p`
	}
	return `SELECT p.seq, p.id, p.user_id, p.name, p.currency, p.cash, p.created_at, p.updated_at, ` + sub + `
		FROM portfolios p WHERE p.id = ?`
}

func (s *Service) answer(dc dealctx.DealContext, status, reason string) sdk.Result {
	dc.Status, dc.Reason = status, reason
	if status == dealctx.StatusApproved {
		return sdk.Reply(EventOrderApproved, dealctx.Wrap(dc))
	}
	return sdk.Reject(EventOrderRejected, reason, dealctx.Wrap(dc))
}

// decide checks the deal against its portfolio pf and, when it is
// approved, applies it to pf in memory (cash and the position move). The
// cash moved is dealctx.CashAmount: quantity*price rounded to 8 places
// against the portfolio (a buy's cost up, a sell's proceeds down), so cash
// always keeps at most 8 places. It returns the status (approved or
// rejected), for a rejection why, and the quantity of the instrument now
// held.
func decide(pf *Portfolio, dc dealctx.DealContext) (status, reason string, held decimal.Decimal) {
	rejected := func(format string, args ...any) (string, string, decimal.Decimal) {
		return dealctx.StatusRejected, fmt.Sprintf(format, args...), decimal.Decimal{}
	}
	if pf.Currency != dc.Currency {
		return rejected("currency mismatch: the deal is in %s, portfolio %s holds %s", dc.Currency, pf.ID, pf.Currency)
	}
	amount := dealctx.CashAmount(dc.Side, dc.Quantity, dc.Price)
	held = pf.Positions[dc.Instrument]
	switch dc.Side {
	case dealctx.Buy:
		if pf.Cash.LessThan(amount) {
			return rejected("insufficient cash: need %s %s, have %s %s",
				dealctx.Money(amount), pf.Currency, dealctx.Money(pf.Cash), pf.Currency)
		}
		pf.Cash = pf.Cash.Sub(amount)
		held = held.Add(dc.Quantity)
	case dealctx.Sell:
		if held.LessThan(dc.Quantity) {
			return rejected("insufficient holdings: need %s %s, have %s %s", dc.Quantity, dc.Instrument, held, dc.Instrument)
		}
		if err := dealctx.CheckAmount("the resulting cash", pf.Cash.Add(amount)); err != nil {
			return rejected("%v", err)
		}
		pf.Cash = pf.Cash.Add(amount)
		held = held.Sub(dc.Quantity)
	}
	if held.IsZero() {
		delete(pf.Positions, dc.Instrument)
	} else {
		pf.Positions[dc.Instrument] = held
	}
	return dealctx.StatusApproved, "", held
}

// apply writes an approved deal of saga sagaID, decided by the
// APPROVE_ORDER command commandID: the portfolio's cash, the position,
// today's snapshot and the decision (with what it moved and the command,
// for a reversal). On PostgreSQL that is one statement (one round trip); SQLite
// runs them one by one, in process.
func (s *Service) apply(ctx context.Context, tx *sqlx.Tx, dc dealctx.DealContext, sagaID, commandID string, pf Portfolio, held decimal.Decimal) error {
	now := s.now().UTC()
	snap, err := snapshotJSON(pf)
	if err != nil {
		return err
	}
	if s.dialect == service.Postgres {
		position := `INSERT INTO positions (portfolio_id, instrument, quantity) VALUES ($3, $4, $5)
			ON CONFLICT (portfolio_id, instrument) DO UPDATE SET quantity = excluded.quantity`
		if held.IsZero() {
			position = `DELETE FROM positions WHERE portfolio_id = $3 AND instrument = $4 AND $5::numeric = 0`
		}
		q := `WITH pf AS (UPDATE portfolios SET cash = $1, updated_at = $2 WHERE id = $3),
			pos AS (` + position + `),
			snap AS (INSERT INTO snapshots (portfolio_id, day, cash, positions, taken_at) VALUES ($3, $6, $1, $7, $2)
				ON CONFLICT (portfolio_id, day) DO UPDATE SET cash = excluded.cash, positions = excluded.positions, taken_at = excluded.taken_at)
			INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at, saga_id, side, instrument, quantity, amount, command_id)
				VALUES ($8, $3, $9, '', $2, $10, $11, $4, $12, $13, $14)`
		if _, err := s.sql.Exec(ctx, tx, q, pf.Cash, pf.UpdatedAt, pf.ID, dc.Instrument, held,
			now.Format(DateLayout), snap, dc.DealID, dealctx.StatusApproved, sagaID, dc.Side, dc.Quantity, dc.Amount, commandID); err != nil {
			return fmt.Errorf("apply the deal to portfolio %s: %w", pf.ID, err)
		}
		return nil
	}
	const q = `UPDATE portfolios SET cash = ?, updated_at = ? WHERE id = ?`
	if _, err := s.sql.Exec(ctx, tx, q, pf.Cash, pf.UpdatedAt, pf.ID); err != nil {
		return fmt.Errorf("update cash of portfolio %s: %w", pf.ID, err)
	}
	if err := s.savePosition(ctx, tx, pf.ID, dc.Instrument, held); err != nil {
		return err
	}
	if err := s.upsertSnapshot(ctx, tx, pf); err != nil {
		return err
	}
	const qd = `INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at, saga_id, side, instrument, quantity, amount, command_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	if _, err := s.sql.Exec(ctx, tx, qd, dc.DealID, dc.PortfolioID, dealctx.StatusApproved, "", now,
		sagaID, dc.Side, dc.Instrument, dc.Quantity, dc.Amount, commandID); err != nil {
		return fmt.Errorf("record the decision: %w", err)
	}
	return nil
}
