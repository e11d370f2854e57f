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

// RegisterHandlers registers APPROVE_DEAL, REJECT_DEAL and their (and
// REGISTER's) compensation FAIL_DEAL on p, and BASKET_ORDER's
// EXECUTE_BASKET, REJECT_BASKET and FAIL_BASKET.
func (s *Service) RegisterHandlers(p *sdk.Participant) {
	// Batch handlers: a run of APPROVE_DEAL (or REJECT_DEAL) fetched
	// together is settled in one statement (settle_batch.go).
	sdk.HandleBatch(p, CommandApprove, s.handleApproveBatch)
	sdk.HandleBatch(p, CommandReject, s.handleRejectBatch)
	sdk.Handle(p, CommandFail, s.handleFail)
	// BASKET_ORDER (basket_commands.go).
	sdk.Handle(p, CommandExecuteBasket, s.handleExecuteBasket)
	sdk.Handle(p, CommandRejectBasket, s.handleRejectBasket)
	sdk.Handle(p, CommandFailBasket, s.handleFailBasket)
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
	reason := settleReason(dc, status)
	// The usual case, a draft of this user, portfolio and saga: one statement.
	if d, ok, err := s.settleDraft(ctx, tx, dc, cmd.SagaID, status, reason); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	} else if ok {
		s.log.InfoContext(ctx, "deal settled", "deal_id", d.ID, "status", status, "reason", reason, "saga_id", cmd.SagaID)
		return sdk.Reply(EventUpdated, dealctx.Wrap(d.context())), nil
	}
	return s.settleOther(ctx, tx, cmd, dc, status, reason)
}

// settleReason is the reason a deal settled to status gets.
func settleReason(dc dealctx.DealContext, status string) string {
	if status != StatusRejected {
		return ""
	}
	if dc.Reason == "" {
		return "rejected (profile gave no reason)"
	}
	return dc.Reason
}

// settleOther is settle for a command whose deal was not a draft of its
// user, portfolio and saga: it reads the deal and decides (the same
// status again is answered the same way; anything else is a permanent
// error).
func (s *Service) settleOther(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[dealctx.Envelope], dc dealctx.DealContext, status, reason string) (sdk.Result, error) {
	d, err := s.lockDeal(ctx, tx, dc.DealID)
	if errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s does not exist", cmd.Name, dc.DealID))
	}
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: read deal %s: %w", cmd.Name, dc.DealID, err)
	}
	if err := belongs(d, dc, cmd.SagaID); err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
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

// belongs checks that deal d is the one the saga context dc of saga sagaID
// names: same user, portfolio and (when both are known) saga, and that d is
// a deal of its own: a basket's deals move only by the basket's commands.
func belongs(d Deal, dc dealctx.DealContext, sagaID string) error {
	if d.BasketID != nil {
		return fmt.Errorf("deal %s is a line of basket %s: only the basket's commands (%s, %s, %s) settle it",
			d.ID, *d.BasketID, CommandExecuteBasket, CommandRejectBasket, CommandFailBasket)
	}
	if d.UserID != dc.UserID || d.PortfolioID != dc.PortfolioID {
		return fmt.Errorf("deal %s belongs to user %q, portfolio %s, but the saga context says user %q, portfolio %s",
			d.ID, d.UserID, d.PortfolioID, dc.UserID, dc.PortfolioID)
	}
	if d.SagaID != "" && sagaID != "" && d.SagaID != sagaID {
		return fmt.Errorf("deal %s belongs to saga %s, not %s", d.ID, d.SagaID, sagaID)
	}
	return nil
}

// handleFail marks the deal failed because its saga failed (cancelled, when
// the saga was cancelled by the deal's owner: see Cancel), and answers
// DEAL_FAILED with the deal's deal_context (status failed, reason), which
// the saga-machine merges into the context before it sends NOTIFY. It is the
// compensation of REGISTER (the draft deal), APPROVE_DEAL (the execution)
// and REJECT_DEAL (the rejection), so it runs once or several times for one
// deal, in any order with those:
//
//   - a draft, executed or rejected deal becomes failed; the reason is
//     failureReason of the saga context (what the saga knew when it
//     failed, and whether an operator aborted it: the context's abort);
//   - a failed or cancelled deal stays as it is and the same answer is
//     given again;
//   - a deal of another user, portfolio or saga is refused (permanent
//     error: dead letter) and nothing moves; so is a FAIL_DEAL that is not
//     a compensation (compensates empty) and a deal that does not exist.
//
// An APPROVE_DEAL or REJECT_DEAL arriving after it finds a failed deal: a
// permanent error, nothing moves (settle), if the SDK's barrier has not
// refused it already.
func (s *Service) handleFail(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[failEnvelope]) (sdk.Result, error) {
	dc, err := dealctx.FromCommand(cmd.Payload.Envelope)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	if cmd.Compensates == "" {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s: the command names no message it compensates (compensates is empty): "+
			"FAIL_DEAL is only sent by saga-machine as a compensation", cmd.Name, dc.DealID))
	}
	d, err := s.lockDeal(ctx, tx, dc.DealID)
	if errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: deal %s does not exist", cmd.Name, dc.DealID))
	}
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: read deal %s: %w", cmd.Name, dc.DealID, err)
	}
	if err := belongs(d, dc, cmd.SagaID); err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	if d.Status == StatusFailed || d.Status == StatusCancelled {
		s.log.InfoContext(ctx, "deal "+d.Status+" before: answered again", "deal_id", d.ID, "saga_id", cmd.SagaID)
		return sdk.Reply(EventFailed, dealctx.Wrap(d.context())), nil
	}
	was := d.Status
	status, reason := StatusFailed, failureReason(dc, cmd.Payload.Abort != nil)
	if cancelled(d, cmd.Payload.Cancellation) {
		// The owner cancelled the deal and its saga undid what was done.
		status, reason = StatusCancelled, "cancelled at your request"
	}
	if err := s.setStatus(ctx, tx, &d, status, reason); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	s.log.InfoContext(ctx, "deal "+status, "deal_id", d.ID, "was", was, "reason", reason, "saga_id", cmd.SagaID)
	return sdk.Reply(EventFailed, dealctx.Wrap(d.context())), nil
}

// failureReason says, for the client, why the saga of a deal failed, from
// what its context held then: profile's decision (deal_context.status) if
// it had arrived. The saga fails when a service did not answer in time:
// profile (no decision), or deals (after the decision); or, aborted, when
// an operator stopped it (the context's abort), and then the reason says
// so instead.
func failureReason(dc dealctx.DealContext, aborted bool) string {
	why := func(late, stopped string) string {
		if aborted {
			return stopped
		}
		return late
	}
	switch dc.Status {
	case "", StatusDraft:
		return why("the order could not be confirmed against your portfolio in time",
			"the order was stopped by our staff before it was confirmed against your portfolio")
	case dealctx.StatusApproved:
		return why("the approved order could not be executed in time",
			"the approved order was stopped by our staff before it was executed")
	case dealctx.StatusRejected:
		profile := dc.Reason
		if profile == "" {
			profile = "no reason given"
		}
		return "the order was rejected (" + profile + ") and " + why("the deal could not be settled in time",
			"then stopped by our staff before the deal was settled")
	}
	return why("the deal could not be completed in time", "the order was stopped by our staff before it was completed")
}
