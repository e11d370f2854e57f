package notification

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// BasketDTOKey is the payload key of the basketNotificationDTO: a NOTIFY
// of BASKET_ORDER is {"basketNotificationDTO": {...}} and nothing else.
const BasketDTOKey = "basketNotificationDTO"

// MaxBasketDeals is the most deal ids a basketNotificationDTO may carry
// (a basket has 1 to 20 lines).
const MaxBasketDeals = 20

// BasketDTO is BASKET_ORDER's NOTIFY payload, built by the saga's payload
// mapping: a basket of deals told as a whole to its owner. Every field is
// required (Status and Reason may be empty).
type BasketDTO struct {
	// UserID is the basket's owner, who is told.
	UserID string `json:"user_id"`
	// BasketID and PortfolioID are UUIDs.
	BasketID    string `json:"basket_id"`
	PortfolioID string `json:"portfolio_id"`
	// Currency is the basket's ISO 4217 code.
	Currency string `json:"currency"`
	// DealIDs are the basket's deals (UUIDs, 1 to MaxBasketDeals, no
	// duplicate).
	DealIDs []string `json:"deal_ids"`
	// Status is the basket's outcome: executed, rejected, failed,
	// cancelled (its owner cancelled it: BASKET_ORDER v4), or "" when an
	// operator resolved a compensation by hand (told as a failure).
	Status string `json:"status"`
	// Reason says why a basket was rejected, failed or cancelled; may be "".
	Reason string `json:"reason"`
}

// basketDTOFields are the JSON names of BasketDTO's fields, all required.
var basketDTOFields = []string{"user_id", "basket_id", "portfolio_id", "currency", "deal_ids", "status", "reason"}

// decodeBasketDTO decodes a basketNotificationDTO strictly: an object with
// every field of BasketDTO, of its type, and no other; strings within
// their limits and without control characters; ids UUIDs (returned in
// canonical form); 1 to MaxBasketDeals distinct deal ids; a known status.
// The error lists every problem found.
func decodeBasketDTO(raw json.RawMessage) (BasketDTO, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return BasketDTO{}, errors.New("is not a JSON object")
	}
	var missing []string
	for _, f := range basketDTOFields {
		if _, ok := fields[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return BasketDTO{}, fmt.Errorf("missing fields: %s", strings.Join(missing, ", "))
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	var dto BasketDTO
	if err := d.Decode(&dto); err != nil {
		return BasketDTO{}, fmt.Errorf("decode: %w", err)
	}
	var errs []error
	text := func(name, v string, max int) bool {
		if len(v) > max {
			errs = append(errs, fmt.Errorf("%s has %d bytes, more than %d", name, len(v), max))
			return false
		}
		if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			errs = append(errs, fmt.Errorf("%s has control characters or invalid UTF-8", name))
			return false
		}
		return true
	}
	id := func(name string, v *string) {
		if !text(name, *v, MaxFieldBytes) {
			return
		}
		c, err := uuid.Parse(*v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not a UUID", name, *v))
			return
		}
		*v = c.String()
	}
	if text("user_id", dto.UserID, MaxUserIDBytes) && strings.TrimSpace(dto.UserID) == "" {
		errs = append(errs, errors.New("user_id is empty"))
	}
	id("basket_id", &dto.BasketID)
	id("portfolio_id", &dto.PortfolioID)
	if text("currency", dto.Currency, MaxFieldBytes) {
		if err := dealctx.CheckCurrency(dto.Currency); err != nil {
			errs = append(errs, err)
		}
	}
	switch n := len(dto.DealIDs); {
	case n == 0:
		errs = append(errs, fmt.Errorf("deal_ids is empty: a basket has 1 to %d deals", MaxBasketDeals))
	case n > MaxBasketDeals:
		errs = append(errs, fmt.Errorf("deal_ids has %d ids, more than %d", n, MaxBasketDeals))
	default:
		seen := map[string]int{}
		for i := range dto.DealIDs {
			name := fmt.Sprintf("deal_ids[%d]", i)
			before := len(errs)
			id(name, &dto.DealIDs[i])
			if len(errs) > before {
				continue
			}
			if first, dup := seen[dto.DealIDs[i]]; dup {
				errs = append(errs, fmt.Errorf("%s is deal_ids[%d] again", name, first))
			} else {
				seen[dto.DealIDs[i]] = i
			}
		}
	}
	if text("status", dto.Status, MaxFieldBytes) {
		switch dto.Status {
		case dealctx.StatusExecuted, dealctx.StatusRejected, dealctx.StatusFailed, dealctx.StatusCancelled, "":
		default:
			errs = append(errs, fmt.Errorf("status %q: a basket's NOTIFY expects %q, %q, %q, %q or \"\"", dto.Status,
				dealctx.StatusExecuted, dealctx.StatusRejected, dealctx.StatusFailed, dealctx.StatusCancelled))
		}
	}
	text("reason", dto.Reason, MaxReasonBytes)
	if err := errors.Join(errs...); err != nil {
		return BasketDTO{}, err
	}
	return dto, nil
}

// BasketText is the message for a basket whose saga ended, and the status
// it is stored under: "Your basket of 3 deals was executed", "... was
// rejected: <reason>", "... failed: <reason>", "... was cancelled at your
// request" (BASKET_ORDER v4's CANCELLED; the lines applied were reverted).
// Status "" (an operator resolved a compensation by hand) is told as a
// failure. dto is checked (its status is one of those).
func BasketText(dto BasketDTO) (text, status string) {
	what := fmt.Sprintf("Your basket of %d deals", len(dto.DealIDs))
	if len(dto.DealIDs) == 1 {
		what = "Your basket of 1 deal"
	}
	switch dto.Status {
	case dealctx.StatusExecuted:
		return what + " was executed", dealctx.StatusExecuted
	case dealctx.StatusRejected:
		reason := dto.Reason
		if reason == "" {
			reason = "no reason given"
		}
		return what + " was rejected: " + reason, dealctx.StatusRejected
	case dealctx.StatusCancelled:
		return what + " was cancelled at your request: the lines already applied to your portfolio were reverted", dealctx.StatusCancelled
	}
	reason := dto.Reason
	if reason == "" {
		reason = "the basket could not be completed"
	}
	return what + " failed: " + reason, dealctx.StatusFailed
}

// notifyBasket stores the notification of a basket for its owner, once: a
// NOTIFY for a basket already notified (under a new message id) changes
// nothing. checkBasketRecipient parks a NOTIFY that contradicts the
// basket's earlier notification.
func (s *Service) notifyBasket(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[json.RawMessage], b BasketDTO) (sdk.Result, error) {
	text, status := BasketText(b)
	ids, err := json.Marshal(b.DealIDs)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: encode the deal ids of basket %s: %w", cmd.Name, b.BasketID, err)
	}
	n := Notification{ID: envelope.NewID(), UserID: b.UserID, DealID: b.BasketID, SagaID: cmd.SagaID, BasketID: b.BasketID,
		Status: status, Text: text, CreatedAt: s.now().UTC()}
	sent, err := s.checkBasketRecipient(ctx, tx, n, string(ids))
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	if sent {
		s.log.InfoContext(ctx, "notification already sent", "basket_id", b.BasketID, "status", status)
		return sdk.NoReply(), nil
	}
	const q = `INSERT INTO notifications (id, user_id, deal_id, saga_id, status, text, created_at, basket_id, deal_ids)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	res, err := s.sql.Exec(ctx, tx, q, n.ID, n.UserID, n.DealID, n.SagaID, n.Status, n.Text, n.CreatedAt, n.BasketID, string(ids))
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: store notification of basket %s: %w", cmd.Name, b.BasketID, err)
	}
	if k, err := res.RowsAffected(); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: store notification of basket %s: %w", cmd.Name, b.BasketID, err)
	} else if k == 0 {
		// Another NOTIFY of the basket committed since the check: it is
		// handled again (a retry), and checked against that one.
		return sdk.Result{}, fmt.Errorf("%s: basket %s was notified meanwhile by another command: trying again", cmd.Name, b.BasketID)
	}
	// The stub gateway: a real one would send here (through its own outbox).
	s.log.InfoContext(ctx, "notification (stub gateway: would send)", "to_user", n.UserID, "notification_id", n.ID,
		"basket_id", n.BasketID, "deals", len(b.DealIDs), "saga_id", n.SagaID, "text", n.Text)
	return sdk.NoReply(), nil
}

// checkBasketRecipient compares the notification n of a basket (deal ids
// ids, JSON) with what was stored before under its id. sent is true when
// the same notification was stored before (a repetition: nothing to do).
// Refused (permanently, nobody told): a basket notified before to another
// user, in another saga, or otherwise (another outcome or other deals: a
// basket's saga notifies once); a basket id that is a deal's, notified as
// such; a deal of the basket notified before to another user or in
// another saga. The service keeps no baskets: the first NOTIFY of a basket
// is trusted as saga-machine built it (see checkRecipient).
func (s *Service) checkBasketRecipient(ctx context.Context, tx *sqlx.Tx, n Notification, ids string) (sent bool, err error) {
	var prev struct {
		UserID   string `db:"user_id"`
		SagaID   string `db:"saga_id"`
		BasketID string `db:"basket_id"`
		Status   string `db:"status"`
		DealIDs  string `db:"deal_ids"`
	}
	const q = `SELECT user_id, saga_id, basket_id, status, deal_ids FROM notifications WHERE deal_id = ? OR basket_id = ? ORDER BY seq LIMIT 1`
	err = s.sql.Get(ctx, tx, &prev, q, n.BasketID, n.BasketID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("check the earlier notifications of basket %s: %w", n.BasketID, err)
	case prev.BasketID == "":
		return false, sdk.Permanent(fmt.Errorf("basket %s: that id was notified before as a deal's; refusing it as a basket's", n.BasketID))
	case prev.UserID != n.UserID:
		return false, sdk.Permanent(fmt.Errorf("basket %s was notified to another user before; refusing to tell user %q about it", n.BasketID, truncate(n.UserID, 64)))
	case prev.SagaID != n.SagaID:
		return false, sdk.Permanent(fmt.Errorf("basket %s was notified before in saga %s; refusing a notification from saga %s", n.BasketID, prev.SagaID, n.SagaID))
	case prev.Status != n.Status || prev.DealIDs != ids:
		return false, sdk.Permanent(fmt.Errorf("basket %s was notified before (%s, deals %s); refusing another notification of it (%s, deals %s)",
			n.BasketID, prev.Status, prev.DealIDs, n.Status, ids))
	default:
		return true, nil
	}
	var dealIDs []string
	if err := json.Unmarshal([]byte(ids), &dealIDs); err != nil {
		return false, fmt.Errorf("check the deals of basket %s: %w", n.BasketID, err)
	}
	args := []any{n.UserID, n.SagaID}
	for _, id := range dealIDs {
		args = append(args, id)
	}
	dq := `SELECT deal_id FROM notifications WHERE (user_id <> ? OR saga_id <> ?) AND deal_id IN (?` + strings.Repeat(", ?", len(dealIDs)-1) + `) LIMIT 1`
	var dealID string
	err = s.sql.Get(ctx, tx, &dealID, dq, args...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check the earlier notifications of the deals of basket %s: %w", n.BasketID, err)
	}
	return false, sdk.Permanent(fmt.Errorf("basket %s: its deal %s was notified before to another user or in another saga; refusing to tell user %q about it",
		n.BasketID, dealID, truncate(n.UserID, 64)))
}
