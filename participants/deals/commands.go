package deals

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// RegisterHandlers registers APPROVE_DEAL and REJECT_DEAL on p.
func (s *Service) RegisterHandlers(p *sdk.Participant) {
	sdk.Handle(p, CommandApprove, s.handleApprove)
	sdk.Handle(p, CommandReject, s.handleReject)
}

func (s *Service) handleApprove(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope]) (sdk.Result, error) {
	return s.settle(ctx, tx, cmd, StatusExecuted)
}

func (s *Service) handleReject(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope]) (sdk.Result, error) {
	return s.settle(ctx, tx, cmd, StatusRejected)
}

// settle moves a draft deal to status (executed or rejected) and replies
// DEAL_UPDATED. The same status again is answered the same way; the other
// final status is a permanent error (dead letter).
func (s *Service) settle(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope], status string) (sdk.Result, error) {
	dc, err := dealctx.FromCommand(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	reason := ""
	if status == StatusRejected {
		reason = dc.Reason
		if reason == "" {
			reason = "rejected (profile gave no reason)"
		}
	}
	// The usual case, a draft of this user, portfolio and saga: one statement.
	if d, ok, err := s.settleDraft(ctx, tx, dc, cmd.SagaID, status, reason); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	} else if ok {
		s.log.InfoContext(ctx, "deal settled", "deal_id", d.ID, "status", status, "reason", reason, "saga_id", cmd.SagaID)
		return sdk.Reply(EventUpdated, dealctx.Wrap(d.context())), nil
	}
	// Otherwise find out why: read the deal and decide.
	d, err := s.lockDeal(ctx, tx, dc.DealID)
	if errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s does not exist", cmd.Name, dc.DealID))
	}
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: read deal %s: %w", cmd.Name, dc.DealID, err)
	}
	if d.UserID != dc.UserID || d.PortfolioID != dc.PortfolioID {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s belongs to user %q, portfolio %s, but the saga context says user %q, portfolio %s",
			cmd.Name, d.ID, d.UserID, d.PortfolioID, dc.UserID, dc.PortfolioID))
	}
	if d.SagaID != "" && cmd.SagaID != "" && d.SagaID != cmd.SagaID {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s belongs to saga %s, not %s", cmd.Name, d.ID, d.SagaID, cmd.SagaID))
	}
	switch d.Status {
	case StatusDraft:
		if err := s.setStatus(ctx, tx, &d, status, reason); err != nil {
			return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
		}
		s.log.InfoContext(ctx, "deal settled", "deal_id", d.ID, "status", status, "reason", reason, "saga_id", cmd.SagaID)
	case status:
		// Already settled this way (the command came again under a new id):
		// answer the same.
	default:
		detail := ""
		if d.Reason != "" {
			detail = " (" + d.Reason + ")"
		}
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s cannot become %s: it is already %s%s",
			cmd.Name, d.ID, status, d.Status, detail))
	}
	return sdk.Reply(EventUpdated, dealctx.Wrap(d.context())), nil
}
