package profile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// RegisterHandlers registers APPROVE_ORDER on p.
func (s *Service) RegisterHandlers(p *sdk.Participant) {
	sdk.Handle(p, CommandApproveOrder, s.handleApproveOrder)
}

// decision is a stored order decision.
type decision struct {
	Status string `db:"status"`
	Reason string `db:"reason"`
}

func (s *Service) handleApproveOrder(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope]) (sdk.Result, error) {
	dc, err := dealctx.FromCommand(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	// A deal is decided once; the same decision is repeated if asked again.
	var prev decision
	err = s.sql.Get(ctx, tx, &prev, `SELECT status, reason FROM order_decisions WHERE deal_id = ?`, dc.DealID)
	switch {
	case err == nil:
		return s.answer(dc, prev.Status, prev.Reason), nil
	case !errors.Is(err, sql.ErrNoRows):
		return sdk.Result{}, fmt.Errorf("%s: read the decision on deal %s: %w", cmd.Name, dc.DealID, err)
	}
	status, reason, err := s.decide(ctx, tx, dc)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: deal %s: %w", cmd.Name, dc.DealID, err)
	}
	const q = `INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at) VALUES (?, ?, ?, ?, ?)`
	if _, err := s.sql.Exec(ctx, tx, q, dc.DealID, dc.PortfolioID, status, reason, s.now().UTC()); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: record the decision on deal %s: %w", cmd.Name, dc.DealID, err)
	}
	s.log.InfoContext(ctx, "order decided", "deal_id", dc.DealID, "portfolio_id", dc.PortfolioID, "status", status, "reason", reason, "saga_id", cmd.SagaID)
	return s.answer(dc, status, reason), nil
}

func (s *Service) answer(dc dealctx.DealContext, status, reason string) sdk.Result {
	dc.Status, dc.Reason = status, reason
	if status == dealctx.StatusApproved {
		return sdk.Reply(EventOrderApproved, dealctx.Wrap(dc))
	}
	return sdk.Reject(EventOrderRejected, reason, dealctx.Wrap(dc))
}

// decide checks the deal against its portfolio and, when it is approved,
// applies it: cash and position move and today's snapshot is upserted. It
// returns the status (approved or rejected) and, for a rejection, why.
func (s *Service) decide(ctx context.Context, tx *sqlx.Tx, dc dealctx.DealContext) (status, reason string, err error) {
	rejected := func(format string, args ...any) (string, string, error) {
		return dealctx.StatusRejected, fmt.Sprintf(format, args...), nil
	}
	pf, err := s.lockPortfolio(ctx, tx, dc.PortfolioID)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && pf.UserID != dc.UserID) {
		return rejected("portfolio %s not found for user %s", dc.PortfolioID, dc.UserID)
	}
	if err != nil {
		return "", "", err
	}
	if pf.Currency != dc.Currency {
		return rejected("currency mismatch: the deal is in %s, portfolio %s holds %s", dc.Currency, pf.ID, pf.Currency)
	}
	amount := dc.Quantity.Mul(dc.Price)
	held := pf.Positions[dc.Instrument]
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
		pf.Cash = pf.Cash.Add(amount)
		held = held.Sub(dc.Quantity)
	}
	pf.UpdatedAt = s.now().UTC()
	const q = `UPDATE portfolios SET cash = ?, updated_at = ? WHERE id = ?`
	if _, err := s.sql.Exec(ctx, tx, q, pf.Cash, pf.UpdatedAt, pf.ID); err != nil {
		return "", "", fmt.Errorf("update cash of portfolio %s: %w", pf.ID, err)
	}
	if err := s.savePosition(ctx, tx, pf.ID, dc.Instrument, held); err != nil {
		return "", "", err
	}
	if held.IsZero() {
		delete(pf.Positions, dc.Instrument)
	} else {
		pf.Positions[dc.Instrument] = held
	}
	if err := s.upsertSnapshot(ctx, tx, pf); err != nil {
		return "", "", err
	}
	return dealctx.StatusApproved, "", nil
}
