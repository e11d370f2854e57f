package deals

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// basketCommand is the payload of EXECUTE_BASKET ({basket}), REJECT_BASKET
// ({basket, reason}) and FAIL_BASKET (the saga context, or the payload of
// the command it compensates). Other keys are ignored.
type basketCommand struct {
	Basket *BasketContext `json:"basket"`
	// Reason is profile's reason on REJECT_BASKET (and on the FAIL_BASKET
	// that compensates it).
	Reason *string `json:"reason,omitempty"`
	// BasketCheck is profile's answer to CHECK_BASKET, when the context
	// has it.
	BasketCheck *basketCheck `json:"basket_check,omitempty"`
	// DealContext is the last line profile answered, with its reason when
	// it refused it.
	DealContext *lineAnswer `json:"deal_context,omitempty"`
	// Abort is set when an operator aborted the saga (the context's abort;
	// a compensation sent with the context carries it).
	Abort *Abort `json:"abort,omitempty"`
	// Cancellation is set when the basket's owner cancelled it (the
	// context's cancellation, BASKET_ORDER v4; a compensation sent with the
	// context carries it).
	Cancellation *BasketCancellation `json:"cancellation,omitempty"`
}

type basketCheck struct {
	Sufficient bool   `json:"sufficient"`
	Reason     string `json:"reason"`
}

// lineAnswer is what FAIL_BASKET reads of the context's deal_context.
type lineAnswer struct {
	DealID string `json:"deal_id"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// BasketResult is the saga context's "basket_result": what deals did with
// the basket's deals (BASKET_EXECUTED, BASKET_REJECTED, BASKET_FAILED).
type BasketResult struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

type basketResultEnvelope struct {
	BasketResult BasketResult `json:"basket_result"`
}

func basketReply(event, status, reason string) sdk.Result {
	return sdk.Reply(event, basketResultEnvelope{BasketResult{Status: status, Reason: reason}})
}

// handleExecuteBasket executes every draft deal of the basket (one
// statement) and answers BASKET_EXECUTED. Executed already: the same
// answer, nothing moves. A deal rejected or failed: a permanent error.
func (s *Service) handleExecuteBasket(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[basketCommand]) (sdk.Result, error) {
	b, deals, err := s.checkBasket(ctx, tx, cmd.Name, cmd.SagaID, cmd.Payload.Basket)
	if err != nil {
		return sdk.Result{}, err
	}
	if err := onlyStatuses(cmd.Name, b, deals, StatusExecuted, StatusDraft, StatusExecuted); err != nil {
		return sdk.Result{}, err
	}
	n, err := s.setBasketStatus(ctx, tx, b, StatusExecuted, "", StatusDraft)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	s.log.InfoContext(ctx, "basket executed", "basket_id", b.ID, "deals", n, "saga_id", cmd.SagaID)
	return basketReply(EventBasketExecuted, StatusExecuted, ""), nil
}

// handleRejectBasket rejects every draft deal of the basket with profile's
// reason (one statement) and answers BASKET_REJECTED. Rejected already: the
// same answer (the reason stored first), nothing moves. A deal executed or
// failed: a permanent error.
func (s *Service) handleRejectBasket(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[basketCommand]) (sdk.Result, error) {
	b, deals, err := s.checkBasket(ctx, tx, cmd.Name, cmd.SagaID, cmd.Payload.Basket)
	if err != nil {
		return sdk.Result{}, err
	}
	if err := onlyStatuses(cmd.Name, b, deals, StatusRejected, StatusDraft, StatusRejected); err != nil {
		return sdk.Result{}, err
	}
	reason := ""
	if cmd.Payload.Reason != nil {
		reason = bounded(strings.TrimSpace(*cmd.Payload.Reason))
	}
	if reason == "" {
		reason = "rejected (profile gave no reason)"
	}
	n, err := s.setBasketStatus(ctx, tx, b, StatusRejected, reason, StatusDraft)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	if n == 0 { // rejected before: the reason given then
		reason = deals[0].Reason
	}
	s.log.InfoContext(ctx, "basket rejected", "basket_id", b.ID, "deals", n, "reason", reason, "saga_id", cmd.SagaID)
	return basketReply(EventBasketRejected, StatusRejected, reason), nil
}

// handleFailBasket is the compensation of BASKET_REGISTERED, EXECUTE_BASKET
// and REJECT_BASKET: every draft, executed or rejected deal of the basket
// becomes failed (one statement) with a reason for the client
// (failBasketReason), and it answers BASKET_FAILED. When the basket's owner
// cancelled it (the payload carries the context's cancellation of this
// basket and deals accepted it: CancelBasket), the deals become cancelled
// instead, failed ones included (an earlier compensation sent with a mapped
// payload could not see the cancellation), and the answer says cancelled.
// Failed or cancelled already: the same answer (the reason stored first),
// nothing moves; except that a FAIL_BASKET carrying the context's abort
// sets the abort's reason on failed deals (for the same reason). Refused
// (permanent, nothing moves) when it is not a compensation (compensates
// empty), like FAIL_DEAL, and when the basket is not the command's
// (checkBasket).
func (s *Service) handleFailBasket(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[basketCommand]) (sdk.Result, error) {
	if cmd.Compensates == "" {
		id := ""
		if cmd.Payload.Basket != nil {
			id = cmd.Payload.Basket.BasketID
		}
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: basket %q: the command names no message it compensates (compensates is empty): "+
			"%s is only sent by saga-machine as a compensation", cmd.Name, id, CommandFailBasket))
	}
	b, deals, err := s.checkBasket(ctx, tx, cmd.Name, cmd.SagaID, cmd.Payload.Basket)
	if err != nil {
		return sdk.Result{}, err
	}
	if basketCancelled(b, deals, cmd.Payload.Cancellation) {
		n, err := s.setBasketStatus(ctx, tx, b, StatusCancelled, basketCancelledReason, StatusDraft, StatusExecuted, StatusRejected, StatusFailed)
		if err != nil {
			return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
		}
		s.log.InfoContext(ctx, "basket cancelled", "basket_id", b.ID, "deals", n, "saga_id", cmd.SagaID)
		return basketReply(EventBasketFailed, StatusCancelled, basketCancelledReason), nil
	}
	reason := failBasketReason(cmd.Payload, deals)
	n, err := s.setBasketStatus(ctx, tx, b, StatusFailed, reason, StatusDraft, StatusExecuted, StatusRejected)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	if n == 0 { // failed or cancelled before: the reason given then
		switch st, r := basketStatus(deals); st {
		case StatusCancelled:
			s.log.InfoContext(ctx, "basket cancelled before: answered again", "basket_id", b.ID, "saga_id", cmd.SagaID)
			return basketReply(EventBasketFailed, StatusCancelled, r), nil
		case StatusFailed:
			reason = r
			// An operator aborted the saga: the compensation that failed
			// the basket first may have been sent with a mapped payload,
			// without the context's abort, and said "in time". This one,
			// with the context (BASKET_REGISTERED's, the last of the
			// undo), sets the client's reason right.
			if cmd.Payload.Abort != nil && r != basketAbortReason {
				now := s.now().UTC()
				if _, err := s.sql.Exec(ctx, tx, `UPDATE deals SET reason = ?, updated_at = ? WHERE basket_id = ? AND status = ?`,
					basketAbortReason, now, b.ID, StatusFailed); err != nil {
					return sdk.Result{}, fmt.Errorf("%s: basket %s: %w", cmd.Name, b.ID, err)
				}
				if _, err := s.sql.Exec(ctx, tx, `UPDATE baskets SET updated_at = ? WHERE id = ?`, now, b.ID); err != nil {
					return sdk.Result{}, fmt.Errorf("%s: touch basket %s: %w", cmd.Name, b.ID, err)
				}
				reason = basketAbortReason
			}
		}
	}
	s.log.InfoContext(ctx, "basket failed", "basket_id", b.ID, "deals", n, "reason", reason, "saga_id", cmd.SagaID)
	return basketReply(EventBasketFailed, StatusFailed, reason), nil
}

// checkBasket checks that the command's basket exists, belongs to saga
// sagaID and to the user, portfolio and currency the command names, and
// that the command's lines are exactly the basket's deals; it locks the
// basket (PostgreSQL) and returns it with its deals. What does not match
// is a permanent error (dead letter) naming the difference: a forged or
// misrouted command moves nothing.
func (s *Service) checkBasket(ctx context.Context, tx *sqlx.Tx, name, sagaID string, bc *BasketContext) (Basket, []Deal, error) {
	if bc == nil {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: the payload has no basket", name))
	}
	id, err := dealctx.CanonicalID(bc.BasketID)
	if err != nil {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: basket_id %q is not a UUID", name, bc.BasketID))
	}
	if n := len(bc.Lines); n < 1 || n > MaxBasketLines {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: basket %s: %d lines, want 1 to %d", name, id, n, MaxBasketLines))
	}
	b, err := s.lockBasket(ctx, tx, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: basket %s does not exist", name, id))
	}
	if err != nil {
		return Basket{}, nil, fmt.Errorf("%s: read basket %s: %w", name, id, err)
	}
	if b.SagaID != sagaID {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: basket %s belongs to saga %s, not %s", name, id, b.SagaID, sagaID))
	}
	if b.UserID != bc.UserID || b.PortfolioID != dealctx.CanonicalOrSame(bc.PortfolioID) || b.Currency != bc.Currency {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: basket %s belongs to user %q, portfolio %s, currency %s, but the command says user %q, portfolio %s, currency %s",
			name, id, b.UserID, b.PortfolioID, b.Currency, bc.UserID, bc.PortfolioID, bc.Currency))
	}
	deals, err := s.basketDeals(ctx, tx, id)
	if err != nil {
		return Basket{}, nil, fmt.Errorf("%s: read the deals of basket %s: %w", name, id, err)
	}
	if err := sameLines(b, deals, bc.Lines); err != nil {
		return Basket{}, nil, sdk.Permanent(fmt.Errorf("%s: %w", name, err))
	}
	return b, deals, nil
}

// sameLines checks that lines are the deals of basket b, each once, as
// stored (user, portfolio, side, instrument, quantity, price, amount,
// currency).
func sameLines(b Basket, deals []Deal, lines []dealctx.DealContext) error {
	if len(lines) != len(deals) {
		return fmt.Errorf("basket %s has %d deals, the command names %d lines", b.ID, len(deals), len(lines))
	}
	byID := make(map[string]Deal, len(deals))
	for _, d := range deals {
		byID[d.ID] = d
	}
	seen := make(map[string]bool, len(lines))
	for i, l := range lines {
		id := dealctx.CanonicalOrSame(l.DealID)
		d, ok := byID[id]
		switch {
		case !ok:
			return fmt.Errorf("line %d names deal %q, which is not a deal of basket %s", i, l.DealID, b.ID)
		case seen[id]:
			return fmt.Errorf("line %d names deal %s again", i, id)
		}
		seen[id] = true
		if l.UserID != d.UserID || dealctx.CanonicalOrSame(l.PortfolioID) != d.PortfolioID || l.Side != d.Side || l.Instrument != d.Instrument ||
			!l.Quantity.Equal(d.Quantity) || !l.Price.Equal(d.Price) || !l.Amount.Equal(d.Amount) || l.Currency != d.Currency {
			return fmt.Errorf("line %d (deal %s of basket %s) says user %q, portfolio %s, %s (amount %s), but the deal is user %q, portfolio %s, %s (amount %s)",
				i, id, b.ID, l.UserID, l.PortfolioID, l.Describe(), l.Amount, d.UserID, d.PortfolioID, d.context().Describe(), d.Amount)
		}
	}
	return nil
}

// onlyStatuses refuses (permanent error) a command `to` status when a deal
// of the basket is in a status other than allowed: the basket was settled
// otherwise.
func onlyStatuses(name string, b Basket, deals []Deal, to string, allowed ...string) error {
	for _, d := range deals {
		ok := false
		for _, a := range allowed {
			ok = ok || d.Status == a
		}
		if !ok {
			detail := ""
			if d.Reason != "" {
				detail = " (" + d.Reason + ")"
			}
			return sdk.Permanent(fmt.Errorf("%s: basket %s cannot become %s: its deal %s is already %s%s", name, b.ID, to, d.ID, d.Status, detail))
		}
	}
	return nil
}

// setBasketStatus moves every deal of basket b whose status is one of from
// to status with reason, in one statement, and touches the basket; it
// returns how many deals moved.
func (s *Service) setBasketStatus(ctx context.Context, tx *sqlx.Tx, b Basket, status, reason string, from ...string) (int64, error) {
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(from)), ", ")
	now := s.now().UTC()
	args := []any{status, reason, now, b.ID}
	for _, f := range from {
		args = append(args, f)
	}
	res, err := s.sql.Exec(ctx, tx, `UPDATE deals SET status = ?, reason = ?, updated_at = ? WHERE basket_id = ? AND status IN (`+marks+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("set the deals of basket %s %s: %w", b.ID, status, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("set the deals of basket %s %s: %w", b.ID, status, err)
	}
	if n > 0 {
		if _, err := s.sql.Exec(ctx, tx, `UPDATE baskets SET updated_at = ? WHERE id = ?`, now, b.ID); err != nil {
			return 0, fmt.Errorf("touch basket %s: %w", b.ID, err)
		}
	}
	return n, nil
}

// basketAbortReason is the client's reason for a basket whose saga an
// operator aborted.
const basketAbortReason = "the basket's saga failed: it was stopped by our staff before it was settled"

// failBasketReason says, for the client, why the basket's saga failed,
// from what the payload holds: the reason profile refused one of the
// basket's lines with ("line AAPL buy 10: insufficient cash: ..."), else
// what was known when the saga failed.
func failBasketReason(p basketCommand, deals []Deal) string {
	if p.Abort != nil {
		return basketAbortReason
	}
	if la := p.DealContext; la != nil && la.Reason != "" && (la.Status == "" || la.Status == dealctx.StatusRejected) {
		id := dealctx.CanonicalOrSame(la.DealID)
		for _, d := range deals {
			if d.ID == id {
				return bounded(fmt.Sprintf("line %s %s %s: %s", d.Instrument, d.Side, d.Quantity, la.Reason))
			}
		}
	}
	const failed = "the basket's saga failed: "
	rejected := ""
	switch {
	case p.Reason != nil:
		rejected = *p.Reason
	case p.BasketCheck != nil && !p.BasketCheck.Sufficient:
		rejected = p.BasketCheck.Reason
	}
	if p.Reason != nil || (p.BasketCheck != nil && !p.BasketCheck.Sufficient) {
		if rejected = strings.TrimSpace(rejected); rejected == "" {
			rejected = "no reason given"
		}
		return bounded(failed + "it was rejected (" + rejected + ") and its deals could not be settled in time")
	}
	if p.BasketCheck != nil {
		return failed + "its lines could not all be applied to your portfolio in time"
	}
	for _, d := range deals {
		if d.Status == StatusExecuted {
			return failed + "its execution could not be confirmed in time"
		}
	}
	return failed + "it could not be completed in time"
}

// bounded cuts s to at most maxReason bytes, on a character boundary.
func bounded(s string) string {
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
