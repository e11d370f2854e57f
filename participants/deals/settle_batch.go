package deals

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// handleApproveBatch is APPROVE_DEAL's batch handler (settleBatch).
func (s *Service) handleApproveBatch(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[dealctx.Envelope]) ([]sdk.Result, error) {
	return s.settleBatch(ctx, tx, cmds, StatusExecuted)
}

// handleRejectBatch is REJECT_DEAL's batch handler (settleBatch).
func (s *Service) handleRejectBatch(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[dealctx.Envelope]) ([]sdk.Result, error) {
	return s.settleBatch(ctx, tx, cmds, StatusRejected)
}

// settleBatch is settle for several commands of one name at once: the
// usual case, a draft deal of the command's user, portfolio and saga, is
// settled for all of them by one UPDATE (settleDrafts). A command whose
// deal was not settled by it (a deal named twice in the batch, already
// settled, of a basket, of someone else, missing) goes through
// settleOther, the per-command checks of settle, in command order. Any
// error is the group's: the SDK rolls back and handles each command alone
// (settle's answers and dead letters, exactly, per command).
func (s *Service) settleBatch(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[dealctx.Envelope], status string) ([]sdk.Result, error) {
	if len(cmds) == 1 {
		r, err := s.settle(ctx, tx, cmds[0], status)
		if err != nil {
			return nil, err
		}
		return []sdk.Result{r}, nil
	}
	dcs := make([]dealctx.DealContext, len(cmds))
	first := make(map[string]int, len(cmds)) // deal id -> the first command naming it
	drafts := make([]draftSettle, 0, len(cmds))
	for i, c := range cmds {
		dc, err := dealctx.FromCommand(c.Payload)
		if err != nil {
			return nil, sdk.Permanent(fmt.Errorf("%s: %w", c.Name, err))
		}
		dcs[i] = dc
		if _, seen := first[dc.DealID]; !seen {
			first[dc.DealID] = i
			drafts = append(drafts, draftSettle{dc: dc, sagaID: c.SagaID, reason: settleReason(dc, status)})
		}
	}
	settled, err := s.settleDrafts(ctx, tx, drafts, status)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmds[0].Name, err)
	}
	res := make([]sdk.Result, len(cmds))
	for i, c := range cmds {
		dc := dcs[i]
		if d, ok := settled[dc.DealID]; ok && first[dc.DealID] == i {
			s.log.InfoContext(ctx, "deal settled", "deal_id", d.ID, "status", status, "reason", d.Reason, "saga_id", c.SagaID)
			res[i] = sdk.Reply(EventUpdated, dealctx.Wrap(d.context()))
			continue
		}
		r, err := s.settleOther(ctx, tx, c, dc, status, settleReason(dc, status))
		if err != nil {
			return nil, err
		}
		res[i] = r
	}
	return res, nil
}

// draftSettle is one deal for settleDrafts: its saga context, the saga of
// the command and the reason it gets.
type draftSettle struct {
	dc     dealctx.DealContext
	sagaID string
	reason string
}

// settleDrafts is settleDraft for several deals (distinct ids) in one
// statement: each one that is a draft of its context's user, portfolio
// and saga, not of a basket, moves to status with its reason. It returns
// the deals it moved, by id; the others are unchanged.
func (s *Service) settleDrafts(ctx context.Context, tx *sqlx.Tx, drafts []draftSettle, status string) (map[string]Deal, error) {
	var q strings.Builder
	args := make([]any, 0, 2+7*len(drafts))
	q.WriteString(`UPDATE deals SET status = ?, reason = CASE id`)
	args = append(args, status)
	for _, d := range drafts {
		q.WriteString(` WHEN ? THEN ?`)
		args = append(args, d.dc.DealID, d.reason)
	}
	q.WriteString(` ELSE reason END, updated_at = ? WHERE status = '` + StatusDraft + `' AND basket_id IS NULL AND (`)
	args = append(args, s.now().UTC())
	for i, d := range drafts {
		if i > 0 {
			q.WriteString(` OR `)
		}
		// The conditions of settleDraft, per deal.
		q.WriteString(`(id = ? AND user_id = ? AND portfolio_id = ? AND (saga_id = '' OR ? = '' OR saga_id = ?))`)
		args = append(args, d.dc.DealID, d.dc.UserID, d.dc.PortfolioID, d.sagaID, d.sagaID)
	}
	q.WriteString(`) RETURNING ` + dealColumns)
	var rows []Deal
	if err := s.sql.Select(ctx, tx, &rows, q.String(), args...); err != nil {
		return nil, fmt.Errorf("set %d deals %s: %w", len(drafts), status, err)
	}
	out := make(map[string]Deal, len(rows))
	for _, d := range rows {
		d.normalize()
		out[d.ID] = d
	}
	return out, nil
}
