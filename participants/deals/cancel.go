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

// Cancellation is the saga context's "cancellation", added by
// CANCEL_REQUESTED: which deal its owner cancelled, and when. FAIL_DEAL
// marks the deal cancelled (not failed) when the context carries it.
type Cancellation struct {
	DealID      string    `json:"deal_id"`
	RequestedAt time.Time `json:"requested_at"`
}

// cancelPayload is the payload of CANCEL_REQUESTED: "cancellation" only,
// so that the saga-machine's merge leaves deal_context as it is.
type cancelPayload struct {
	Cancellation Cancellation `json:"cancellation"`
}

// failEnvelope is the payload of FAIL_DEAL: the saga context, of which
// deal_context, for a cancelled saga cancellation, and for a saga an
// operator aborted abort matter.
type failEnvelope struct {
	dealctx.Envelope
	Cancellation *Cancellation `json:"cancellation,omitempty"`
	Abort        *Abort        `json:"abort,omitempty"`
}

// Abort is what saga-machine adds to a saga's context when an operator
// aborts it (the payload of its ABORT event): FAIL_DEAL then tells the
// client that the order was stopped, not that a service was too slow.
type Abort struct {
	At time.Time `json:"at"`
}

// handleCancel is POST /deals/{id}/cancel: the deal's owner cancels it.
func (s *Service) handleCancel(w http.ResponseWriter, r *http.Request, u auth.User) error {
	// The key is checked as on creation; a cancel is done once whatever it is.
	if _, err := idempotencyKey(r); err != nil {
		return err
	}
	d, replayed, err := s.Cancel(r.Context(), u.Subject, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	writeAt(w, http.StatusAccepted, "/deals/"+d.ID, replayed, d)
	return nil
}

// Cancel asks, for userID, to cancel the deal id (any case). A draft deal
// is cancelled: in one transaction its cancel_requested_at is set and
// CANCEL_REQUESTED goes to its saga (outbox), which undoes what was done
// and has deals mark the deal cancelled (FAIL_DEAL), then tells the
// client; the deal is returned as it is now (still a draft, with
// CancelRequestedAt). Cancelling again answers the same (replayed true)
// and sends nothing. Another user's deal, or none, is not found (404); a
// deal already executed is refused as too late (409), and so is a deal
// rejected or failed (nothing to cancel); nothing changes then.
func (s *Service) Cancel(ctx context.Context, userID, id string) (deal Deal, replayed bool, err error) {
	id = dealctx.CanonicalOrSame(id)
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return Deal{}, false, fmt.Errorf("cancel deal %s: begin: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	d, err := s.lockDeal(ctx, tx, id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && d.UserID != userID) {
		// Another user's deal is not found either: ids are not disclosed.
		return Deal{}, false, service.NotFound("deal", id)
	}
	if err != nil {
		return Deal{}, false, fmt.Errorf("cancel deal %s: read it: %w", id, err)
	}
	if d.BasketID != nil {
		return Deal{}, false, service.NewError(http.StatusConflict, service.TypeConflict,
			fmt.Sprintf("deal %s is part of basket %s: a basket is settled as a whole, its deals cannot be cancelled one by one (cancel the basket: POST /baskets/%s/cancel)", d.ID, *d.BasketID, *d.BasketID))
	}
	if d.CancelRequestedAt != nil {
		return d, true, nil
	}
	if d.Status != StatusDraft {
		return Deal{}, false, notCancellable("deal", d.ID, d.Status, d.Reason, d.UpdatedAt)
	}
	if d.SagaID == "" {
		return Deal{}, false, service.NewError(http.StatusConflict, service.TypeConflict,
			fmt.Sprintf("deal %s has no saga to cancel", d.ID))
	}
	now := s.now().UTC()
	const q = `UPDATE deals SET cancel_requested_at = ?, updated_at = ? WHERE id = ? AND status = '` + StatusDraft + `' AND cancel_requested_at IS NULL`
	if _, err := tx.ExecContext(ctx, tx.Rebind(q), now, now, d.ID); err != nil {
		return Deal{}, false, fmt.Errorf("cancel deal %s: %w", d.ID, err)
	}
	if err := s.p.EmitEvent(ctx, tx, d.SagaID, SagaName, EventCancelRequested,
		cancelPayload{Cancellation{DealID: d.ID, RequestedAt: now}}); err != nil {
		return Deal{}, false, fmt.Errorf("cancel deal %s: %w", d.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return Deal{}, false, fmt.Errorf("cancel deal %s: commit: %w", d.ID, err)
	}
	s.p.Wake()
	d.CancelRequestedAt, d.UpdatedAt = &now, now
	s.log.InfoContext(ctx, "deal cancellation accepted", "deal_id", d.ID, "saga_id", d.SagaID, "user_id", userID)
	return d, false, nil
}

// notCancellable is the 409 for a cancel of what ("deal", "basket") id,
// which is no longer a draft: executed is too late, rejected, failed or
// cancelled leaves nothing to cancel.
func notCancellable(what, id, status, reason string, updatedAt time.Time) error {
	if status == StatusExecuted {
		return service.NewError(http.StatusConflict, service.TypeConflict,
			fmt.Sprintf("%s %s was executed at %s: it is too late to cancel it", what, id, updatedAt.Format(time.RFC3339)))
	}
	detail := ""
	if reason != "" {
		detail = " (" + reason + ")"
	}
	return service.NewError(http.StatusConflict, service.TypeConflict,
		fmt.Sprintf("%s %s is already %s%s: there is nothing to cancel", what, id, status, detail))
}

// cancelled reports whether FAIL_DEAL's saga was cancelled by the owner
// of deal d: the saga's context carries the cancellation of this deal and
// deals accepted it (d.CancelRequestedAt). A context naming a cancellation
// deals never accepted is not one.
func cancelled(d Deal, c *Cancellation) bool {
	return c != nil && c.DealID == d.ID && d.CancelRequestedAt != nil
}
