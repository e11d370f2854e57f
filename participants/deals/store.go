package deals

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

const dealColumns = `seq, id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
	status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at, cancel_requested_at, basket_id`

// NewDeal is a validated request to create a deal.
type NewDeal struct {
	PortfolioID string
	Side        string
	Instrument  string
	Quantity    string // decimal strings as received; validated by parseNewDeal
	Price       string
	Currency    string
}

// hash fingerprints the request for Idempotency-Key reuse detection.
func (n NewDeal) hash() string {
	b, _ := json.Marshal(n) // a struct of strings always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Create stores a draft deal for userID and starts its saga in the same
// transaction (shared with the deals created at the same time: group.go). With a non-empty idemKey, a second call with the same key
// returns the first deal (replayed true) without starting another saga; the
// same key with a different request is a 422 problem.
func (s *Service) Create(ctx context.Context, userID string, in NewDeal, idemKey string) (deal Deal, replayed bool, err error) {
	dc, err := parseNewDeal(in)
	if err != nil {
		return Deal{}, false, err
	}
	in.PortfolioID = dc.PortfolioID // canonical: the same request in any case
	now := s.now().UTC()
	d := Deal{
		ID: envelope.NewID(), UserID: userID, PortfolioID: dc.PortfolioID, Side: dc.Side,
		Instrument: dc.Instrument, Quantity: dc.Quantity, Price: dc.Price, Amount: dc.Amount,
		Currency: dc.Currency, Status: StatusDraft, CreatedAt: now, UpdatedAt: now,
		RequestHash: in.hash(),
	}
	if idemKey != "" {
		d.IdempotencyKey = sql.NullString{String: idemKey, Valid: true}
	}
	dc.DealID, dc.UserID = d.ID, userID
	// The saga id is chosen now so the deal row carries it from its INSERT.
	d.SagaID = sdk.NewSagaID()
	if err := ctx.Err(); err != nil {
		return Deal{}, false, fmt.Errorf("create deal: %w", err)
	}
	inserted, err := s.insertDeal(trace.SpanContextFromContext(ctx), d, dc)
	if err != nil {
		return Deal{}, false, fmt.Errorf("create deal %s: %w", d.ID, err)
	}
	if !inserted {
		// The key was used before by this user: answer with that deal.
		prev, err := s.byIdempotencyKey(ctx, userID, idemKey)
		if err != nil {
			return Deal{}, false, err
		}
		if prev.RequestHash != d.RequestHash {
			return Deal{}, false, service.NewError(http.StatusUnprocessableEntity, service.TypeIdempotencyReuse,
				fmt.Sprintf("Idempotency-Key %q was already used for deal %s with a different request; use a new key for a new deal", idemKey, prev.ID))
		}
		return prev, true, nil
	}
	s.log.InfoContext(ctx, "deal created", "deal_id", d.ID, "saga_id", d.SagaID, "user_id", userID)
	return d, false, nil
}

// writeDeal inserts d and starts its saga in tx; it reports false, writing
// nothing, if d's Idempotency-Key was used before by the same user.
func (s *Service) writeDeal(ctx context.Context, tx *sqlx.Tx, d Deal, dc dealctx.DealContext) (bool, error) {
	const q = "INSERT INTO deals (" + dealColumnsInsert + ") VALUES " + dealValues + `
		ON CONFLICT (user_id, idempotency_key) DO NOTHING`
	res, err := s.sql.Exec(ctx, tx, q, dealArgs(nil, d)...)
	if err != nil {
		return false, fmt.Errorf("insert: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("insert: %w", err)
	} else if n == 0 {
		return false, nil
	}
	if err := s.p.StartSagaWithID(ctx, tx, d.SagaID, SagaName, StartEvent, dealctx.Wrap(dc)); err != nil {
		return false, fmt.Errorf("start saga %s: %w", SagaName, err)
	}
	return true, nil
}

func (s *Service) byIdempotencyKey(ctx context.Context, userID, key string) (Deal, error) {
	var d Deal
	q := s.db.Rebind(`SELECT ` + dealColumns + ` FROM deals WHERE user_id = ? AND idempotency_key = ?`)
	if err := s.db.GetContext(ctx, &d, q, userID, key); err != nil {
		return Deal{}, fmt.Errorf("read deal of Idempotency-Key %q: %w", key, err)
	}
	d.normalize()
	return d, nil
}

// Get returns the deal id of userID (id in any case); another user's deal
// is not found.
func (s *Service) Get(ctx context.Context, userID, id string) (Deal, error) {
	id = dealctx.CanonicalOrSame(id)
	var d Deal
	q := s.db.Rebind(`SELECT ` + dealColumns + ` FROM deals WHERE id = ? AND user_id = ?`)
	err := s.db.GetContext(ctx, &d, q, id, userID)
	if errors.Is(err, sql.ErrNoRows) {
		return Deal{}, service.NotFound("deal", id)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("read deal %s: %w", id, err)
	}
	d.normalize()
	return d, nil
}

// List returns a page of userID's deals, newest first, optionally only
// those of one status.
func (s *Service) List(ctx context.Context, userID, status string, page service.PageRequest) (service.Page[Deal], error) {
	q := `SELECT ` + dealColumns + ` FROM deals WHERE user_id = ?`
	args := []any{userID}
	if status != "" {
		q += ` AND status = ?`
		args = append(args, status)
	}
	if page.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, page.Before)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, page.Limit+1)
	var rows []Deal
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return service.Page[Deal]{}, fmt.Errorf("list deals of %s: %w", userID, err)
	}
	for i := range rows {
		rows[i].normalize()
	}
	return service.NewPage(rows, page.Limit, func(d Deal) int64 { return d.Seq }), nil
}

// lockDeal reads a deal inside tx, locking its row on PostgreSQL.
func (s *Service) lockDeal(ctx context.Context, tx *sqlx.Tx, id string) (Deal, error) {
	var d Deal
	if err := s.sql.Get(ctx, tx, &d, `SELECT `+dealColumns+` FROM deals WHERE id = ?`+s.dialect.ForUpdate(), id); err != nil {
		return Deal{}, err
	}
	d.normalize()
	return d, nil
}

// settleDraft moves the draft deal dc.DealID of the context's user,
// portfolio and saga to status in one statement and returns it; ok is
// false, with nothing changed, if there is no such draft (the caller then
// finds out why).
func (s *Service) settleDraft(ctx context.Context, tx *sqlx.Tx, dc dealctx.DealContext, sagaID, status, reason string) (d Deal, ok bool, err error) {
	const q = `UPDATE deals SET status = ?, reason = ?, updated_at = ?
		WHERE id = ? AND status = '` + StatusDraft + `' AND user_id = ? AND portfolio_id = ? AND (saga_id = '' OR ? = '' OR saga_id = ?)
		AND basket_id IS NULL
		RETURNING ` + dealColumns
	err = s.sql.Get(ctx, tx, &d, q, status, reason, s.now().UTC(), dc.DealID, dc.UserID, dc.PortfolioID, sagaID, sagaID)
	if errors.Is(err, sql.ErrNoRows) {
		return Deal{}, false, nil
	}
	if err != nil {
		return Deal{}, false, fmt.Errorf("set deal %s %s: %w", dc.DealID, status, err)
	}
	d.normalize()
	return d, true, nil
}

func (s *Service) setStatus(ctx context.Context, tx *sqlx.Tx, d *Deal, status, reason string) error {
	d.Status, d.Reason, d.UpdatedAt = status, reason, s.now().UTC()
	const q = `UPDATE deals SET status = ?, reason = ?, updated_at = ? WHERE id = ?`
	if _, err := s.sql.Exec(ctx, tx, q, d.Status, d.Reason, d.UpdatedAt, d.ID); err != nil {
		return fmt.Errorf("set deal %s %s: %w", d.ID, status, err)
	}
	return nil
}

// context returns the deal's deal_context.
func (d Deal) context() dealctx.DealContext {
	return dealctx.DealContext{
		DealID: d.ID, UserID: d.UserID, PortfolioID: d.PortfolioID, Side: d.Side, Instrument: d.Instrument,
		Quantity: d.Quantity, Price: d.Price, Amount: d.Amount, Currency: d.Currency,
		Status: d.Status, Reason: d.Reason,
	}
}
