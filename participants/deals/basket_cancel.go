package deals

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// BasketCancellation is a BASKET_ORDER saga context's "cancellation", added
// by CANCEL_REQUESTED (BASKET_ORDER v4): which basket its owner cancelled,
// and when. FAIL_BASKET marks the basket's deals cancelled (not failed)
// when the context carries it and deals accepted it.
type BasketCancellation struct {
	BasketID    string    `json:"basket_id"`
	RequestedAt time.Time `json:"requested_at"`
}

// basketCancelPayload is the payload of a basket's CANCEL_REQUESTED.
type basketCancelPayload struct {
	Cancellation BasketCancellation `json:"cancellation"`
}

// basketCancelledReason is the reason stored on the deals of a basket its
// owner cancelled.
const basketCancelledReason = "cancelled at your request"

// handleCancelBasket is POST /baskets/{id}/cancel: the basket's owner
// cancels it.
func (s *Service) handleCancelBasket(w http.ResponseWriter, r *http.Request, u auth.User) error {
	// The key is checked as on creation; a cancel is done once whatever it is.
	if _, err := idempotencyKey(r); err != nil {
		return err
	}
	b, replayed, err := s.CancelBasket(r.Context(), u.Subject, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	writeAt(w, http.StatusAccepted, "/baskets/"+b.ID, replayed, b)
	return nil
}

// CancelBasket asks, for userID, to cancel the basket id (any case). A
// basket whose deals are all drafts is cancelled: in one transaction each
// deal's cancel_requested_at is set and CANCEL_REQUESTED goes to the
// basket's saga (outbox), which undoes what was done (the applied lines
// reverted) and has deals mark the deals cancelled (FAIL_BASKET), then
// tells the client; the basket is returned as it is now (still a draft,
// with CancelRequestedAt). Cancelling again answers the same (replayed
// true) and sends nothing. Another user's basket, or none, is not found
// (404); a basket already executed is refused as too late (409), and so is
// a basket rejected, failed or cancelled (nothing to cancel); nothing
// changes then.
//
// The basket's row lock (PostgreSQL; SQLite has one writer) orders the
// cancellation with EXECUTE_BASKET and REJECT_BASKET, which lock it too:
// deals accepts a cancellation only while every deal is a draft, so
// CANCEL_REQUESTED is on the bus before any BASKET_EXECUTED or
// BASKET_REJECTED of the basket.
func (s *Service) CancelBasket(ctx context.Context, userID, id string) (basket Basket, replayed bool, err error) {
	id = dealctx.CanonicalOrSame(id)
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: begin: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	b, err := s.lockBasket(ctx, tx, id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && b.UserID != userID) {
		// Another user's basket is not found either: ids are not disclosed.
		return Basket{}, false, service.NotFound("basket", id)
	}
	if err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: read it: %w", id, err)
	}
	deals, err := s.basketDeals(ctx, tx, b.ID)
	if err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: read its deals: %w", b.ID, err)
	}
	b.Deals = deals
	b.Status, b.Reason = basketStatus(deals)
	b.CancelRequestedAt = basketCancelRequestedAt(deals)
	if b.CancelRequestedAt != nil {
		return b, true, nil
	}
	if b.Status != StatusDraft {
		return Basket{}, false, notCancellable("basket", b.ID, b.Status, b.Reason, b.UpdatedAt)
	}
	for _, d := range deals {
		if d.Status != StatusDraft {
			// basketStatus says draft while any deal is one; the saga
			// moves them together, so this is a basket half settled.
			return Basket{}, false, service.NewError(http.StatusConflict, service.TypeConflict,
				fmt.Sprintf("basket %s is being settled (its deal %s is already %s): it is too late to cancel it", b.ID, d.ID, d.Status))
		}
	}
	if len(deals) == 0 || b.SagaID == "" {
		return Basket{}, false, service.NewError(http.StatusConflict, service.TypeConflict,
			fmt.Sprintf("basket %s has no saga to cancel", b.ID))
	}
	now := s.now().UTC()
	res, err := s.sql.Exec(ctx, tx, `UPDATE deals SET cancel_requested_at = ?, updated_at = ? WHERE basket_id = ? AND status = ? AND cancel_requested_at IS NULL`,
		now, now, b.ID, StatusDraft)
	if err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: %w", b.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(deals)) {
		return Basket{}, false, fmt.Errorf("cancel basket %s: %d of its %d deals marked (%v): the basket changed under its lock", b.ID, n, len(deals), err)
	}
	if _, err := s.sql.Exec(ctx, tx, `UPDATE baskets SET updated_at = ? WHERE id = ?`, now, b.ID); err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: touch it: %w", b.ID, err)
	}
	if err := s.p.EmitEvent(ctx, tx, b.SagaID, BasketSagaName, EventCancelRequested,
		basketCancelPayload{BasketCancellation{BasketID: b.ID, RequestedAt: now}}); err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: %w", b.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return Basket{}, false, fmt.Errorf("cancel basket %s: commit: %w", b.ID, err)
	}
	s.p.Wake()
	for i := range b.Deals {
		b.Deals[i].CancelRequestedAt, b.Deals[i].UpdatedAt = &now, now
	}
	b.CancelRequestedAt, b.UpdatedAt = &now, now
	s.log.InfoContext(ctx, "basket cancellation accepted", "basket_id", b.ID, "deals", len(deals), "saga_id", b.SagaID, "user_id", userID)
	return b, false, nil
}

// basketCancelRequestedAt is when the basket's owner cancelled it: the
// deals' cancel_requested_at, which CancelBasket sets on all of them at
// once; nil when it was not cancelled.
func basketCancelRequestedAt(deals []Deal) *time.Time {
	for _, d := range deals {
		if d.CancelRequestedAt != nil {
			t := d.CancelRequestedAt.UTC()
			return &t
		}
	}
	return nil
}

// basketCancelled reports whether FAIL_BASKET's saga was cancelled by the
// owner of basket b: the saga's context carries the cancellation of this
// basket and deals accepted it (its deals' cancel_requested_at). A context
// naming a cancellation deals never accepted is not one.
func basketCancelled(b Basket, deals []Deal, c *BasketCancellation) bool {
	return c != nil && dealctx.CanonicalOrSame(c.BasketID) == b.ID && basketCancelRequestedAt(deals) != nil
}
