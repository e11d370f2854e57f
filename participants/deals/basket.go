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
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Saga, event and commands of a basket (sagas/basket_order.yaml).
const (
	// BasketSagaName is the saga deals starts for each new basket.
	BasketSagaName = "BASKET_ORDER"
	// BasketStartEvent starts it; its payload is {"basket": BasketContext}.
	BasketStartEvent = "BASKET_REGISTERED"
	// CommandExecuteBasket executes every draft deal of the basket;
	// EventBasketExecuted answers it.
	CommandExecuteBasket = "EXECUTE_BASKET"
	EventBasketExecuted  = "BASKET_EXECUTED"
	// CommandRejectBasket rejects every draft deal of the basket with
	// profile's reason; EventBasketRejected answers it.
	CommandRejectBasket = "REJECT_BASKET"
	EventBasketRejected = "BASKET_REJECTED"
	// CommandFailBasket is the compensation of BASKET_REGISTERED,
	// EXECUTE_BASKET and REJECT_BASKET: every deal of the basket becomes
	// failed. EventBasketFailed answers it.
	CommandFailBasket = "FAIL_BASKET"
	EventBasketFailed = "BASKET_FAILED"
)

// MaxBasketLines bounds the lines (deals) of one basket.
const MaxBasketLines = 20

// maxReason bounds a reason deals stores and sends (profile's are shorter).
const maxReason = 1000

const basketColumns = `seq, id, user_id, portfolio_id, currency, saga_id, idempotency_key, request_hash, created_at, updated_at`

// Basket is a client's basket: 1 to MaxBasketLines deals in one portfolio
// and one currency, executed all or nothing by its saga (BASKET_ORDER).
type Basket struct {
	Seq         int64  `json:"-" db:"seq"`
	ID          string `json:"id" db:"id"`
	UserID      string `json:"user_id" db:"user_id"`
	PortfolioID string `json:"portfolio_id" db:"portfolio_id"`
	Currency    string `json:"currency" db:"currency"`
	// Status is derived from the basket's deals (basketStatus): draft,
	// executed, rejected, failed or cancelled.
	Status string `json:"status" db:"-"`
	// Reason is why the basket was rejected, failed or cancelled (its
	// deals' reason).
	Reason string `json:"reason,omitempty" db:"-"`
	// CancelRequestedAt is when the owner's cancellation was accepted (every
	// deal was still a draft: CancelBasket); the basket becomes cancelled
	// once its saga has undone what was done.
	CancelRequestedAt *time.Time `json:"cancel_requested_at,omitempty" db:"-"`
	SagaID            string     `json:"saga_id" db:"saga_id"`
	CreatedAt         time.Time  `json:"created_at" db:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at" db:"updated_at"`
	// Deals are the basket's lines, in the order they were sent.
	Deals []Deal `json:"deals" db:"-"`

	IdempotencyKey sql.NullString `json:"-" db:"idempotency_key"`
	RequestHash    string         `json:"-" db:"request_hash"`
}

// BasketContext is the saga context's "basket" (BASKET_REGISTERED and every
// basket command): the basket and its lines as deal_contexts.
type BasketContext struct {
	BasketID    string                `json:"basket_id"`
	UserID      string                `json:"user_id"`
	PortfolioID string                `json:"portfolio_id"`
	Currency    string                `json:"currency"`
	Lines       []dealctx.DealContext `json:"lines"`
}

// basketEnvelope is the payload of BASKET_REGISTERED.
type basketEnvelope struct {
	Basket BasketContext `json:"basket"`
}

// BasketLine is one line of a new basket: a deal without its portfolio.
type BasketLine struct {
	Side       string `json:"side"`
	Instrument string `json:"instrument"`
	Quantity   string `json:"quantity"`
	Price      string `json:"price"`
	Currency   string `json:"currency"`
}

// NewBasket is a request to create a basket (the body of POST /baskets).
type NewBasket struct {
	PortfolioID string       `json:"portfolio_id"`
	Lines       []BasketLine `json:"lines"`
}

// hash fingerprints the request for Idempotency-Key reuse detection.
func (n NewBasket) hash() string {
	b, _ := json.Marshal(n) // strings only: always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// parseNewBasket validates a basket request like POST /deals validates a
// deal (parseNewDeal, line by line), and that it has 1 to MaxBasketLines
// lines, all in one currency. It returns the lines' deal_contexts (without
// deal and user ids), portfolio id canonical. Every invalid field is
// reported at once: "portfolio_id", "lines", "lines[i].<field>".
func parseNewBasket(in NewBasket) ([]dealctx.DealContext, error) {
	// The portfolio once, with POST /deals' rule and message.
	var errs []service.FieldError
	if _, err := parseNewDeal(NewDeal{PortfolioID: in.PortfolioID}); err != nil {
		for _, fe := range fieldErrors(err, "") {
			if fe.Field == "portfolio_id" {
				errs = append(errs, fe)
			}
		}
	}
	if n := len(in.Lines); n < 1 || n > MaxBasketLines {
		errs = append(errs, service.FieldError{Field: "lines",
			Message: fmt.Sprintf("must hold 1 to %d lines (deals), got %d", MaxBasketLines, n)})
		return nil, service.Invalid(errs...)
	}
	lines := make([]dealctx.DealContext, 0, len(in.Lines))
	for i, l := range in.Lines {
		dc, err := parseNewDeal(NewDeal{PortfolioID: in.PortfolioID, Side: l.Side, Instrument: l.Instrument,
			Quantity: l.Quantity, Price: l.Price, Currency: l.Currency})
		if err == nil {
			lines = append(lines, dc)
			continue
		}
		for _, fe := range fieldErrors(err, "") {
			if fe.Field == "portfolio_id" {
				continue // reported once above
			}
			fe.Field = "lines[" + strconv.Itoa(i) + "]." + fe.Field
			errs = append(errs, fe)
		}
	}
	if len(errs) == 0 {
		for i, dc := range lines {
			if dc.Currency != lines[0].Currency {
				errs = append(errs, service.FieldError{Field: "lines[" + strconv.Itoa(i) + "].currency",
					Message: fmt.Sprintf("must be the basket's currency %s (the currency of its first line: a basket is in one currency), got %s",
						lines[0].Currency, quote(dc.Currency))})
			}
		}
	}
	if len(errs) > 0 {
		return nil, service.Invalid(errs...)
	}
	return lines, nil
}

// fieldErrors returns the field errors of a validation problem, or err as
// one error of field (other errors).
func fieldErrors(err error, field string) []service.FieldError {
	var e *service.Error
	if errors.As(err, &e) && len(e.Errors) > 0 {
		return append([]service.FieldError(nil), e.Errors...)
	}
	return []service.FieldError{{Field: field, Message: err.Error()}}
}

// CreateBasket stores a basket for userID, owner of every line, with one
// draft deal per line (each with the basket's id and saga id), and in the
// same transaction starts its saga BASKET_ORDER with BASKET_REGISTERED
// (outbox). With a non-empty idemKey, a second call with the same key
// returns the first basket (replayed true) without starting another saga;
// the same key with a different request is a 422 problem. Keys of baskets
// and of deals (POST /deals) are separate. An invalid request stores
// nothing.
func (s *Service) CreateBasket(ctx context.Context, userID string, in NewBasket, idemKey string) (basket Basket, replayed bool, err error) {
	lines, err := parseNewBasket(in)
	if err != nil {
		return Basket{}, false, err
	}
	in.PortfolioID = lines[0].PortfolioID // canonical: the same request in any case
	now := s.now().UTC()
	b := Basket{
		ID: envelope.NewID(), UserID: userID, PortfolioID: lines[0].PortfolioID, Currency: lines[0].Currency,
		SagaID: sdk.NewSagaID(), CreatedAt: now, UpdatedAt: now, RequestHash: in.hash(),
	}
	if idemKey != "" {
		b.IdempotencyKey = sql.NullString{String: idemKey, Valid: true}
	}
	bc := BasketContext{BasketID: b.ID, UserID: userID, PortfolioID: b.PortfolioID, Currency: b.Currency}
	for _, dc := range lines {
		basketID := b.ID
		d := Deal{
			ID: envelope.NewID(), UserID: userID, PortfolioID: dc.PortfolioID, Side: dc.Side,
			Instrument: dc.Instrument, Quantity: dc.Quantity, Price: dc.Price, Amount: dc.Amount,
			Currency: dc.Currency, Status: StatusDraft, SagaID: b.SagaID, CreatedAt: now, UpdatedAt: now,
			BasketID: &basketID,
		}
		b.Deals = append(b.Deals, d)
		dc.DealID, dc.UserID = d.ID, userID
		bc.Lines = append(bc.Lines, dc)
	}
	inserted, err := s.writeBasket(ctx, b, bc)
	if err != nil {
		return Basket{}, false, fmt.Errorf("create basket %s: %w", b.ID, err)
	}
	if !inserted {
		prev, err := s.basketByIdempotencyKey(ctx, userID, idemKey)
		if err != nil {
			return Basket{}, false, err
		}
		if prev.RequestHash != b.RequestHash {
			return Basket{}, false, service.NewError(http.StatusUnprocessableEntity, service.TypeIdempotencyReuse,
				fmt.Sprintf("Idempotency-Key %q was already used for basket %s with a different request; use a new key for a new basket", idemKey, prev.ID))
		}
		return prev, true, nil
	}
	b.Status = StatusDraft
	s.log.InfoContext(ctx, "basket created", "basket_id", b.ID, "saga_id", b.SagaID, "user_id", userID, "lines", len(b.Deals))
	return b, false, nil
}

// writeBasket inserts the basket, its deals and the start of its saga in
// one transaction; it reports false, writing nothing, if the basket's
// Idempotency-Key was used before by the same user.
func (s *Service) writeBasket(ctx context.Context, b Basket, bc BasketContext) (bool, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	const qb = `INSERT INTO baskets (id, user_id, portfolio_id, currency, saga_id, idempotency_key, request_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, idempotency_key) DO NOTHING`
	res, err := s.sql.Exec(ctx, tx, qb, b.ID, b.UserID, b.PortfolioID, b.Currency, b.SagaID, b.IdempotencyKey, b.RequestHash, b.CreatedAt, b.UpdatedAt)
	if err != nil {
		return false, fmt.Errorf("insert basket: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("insert basket: %w", err)
	} else if n == 0 {
		return false, nil
	}
	// All lines in one statement.
	var q strings.Builder
	q.WriteString(`INSERT INTO deals (id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
		status, reason, saga_id, request_hash, created_at, updated_at, basket_id) VALUES `)
	args := make([]any, 0, 15*len(b.Deals))
	for i, d := range b.Deals {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, '', ?, ?, ?)`)
		args = append(args, d.ID, d.UserID, d.PortfolioID, d.Side, d.Instrument, d.Quantity, d.Price, d.Amount,
			d.Currency, d.Status, d.SagaID, d.CreatedAt, d.UpdatedAt, b.ID)
	}
	if _, err := s.sql.Exec(ctx, tx, q.String(), args...); err != nil {
		return false, fmt.Errorf("insert the basket's deals: %w", err)
	}
	if err := s.p.StartSagaWithID(ctx, tx, b.SagaID, BasketSagaName, BasketStartEvent, basketEnvelope{Basket: bc}); err != nil {
		return false, fmt.Errorf("start saga %s: %w", BasketSagaName, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	s.p.Wake() // the saga start is visible now: publish it
	return true, nil
}

func (s *Service) basketByIdempotencyKey(ctx context.Context, userID, key string) (Basket, error) {
	var b Basket
	q := s.db.Rebind(`SELECT ` + basketColumns + ` FROM baskets WHERE user_id = ? AND idempotency_key = ?`)
	if err := s.db.GetContext(ctx, &b, q, userID, key); err != nil {
		return Basket{}, fmt.Errorf("read basket of Idempotency-Key %q: %w", key, err)
	}
	if err := s.withDeals(ctx, []*Basket{&b}); err != nil {
		return Basket{}, err
	}
	return b, nil
}

// GetBasket returns the basket id of userID (id in any case) with its
// deals; another user's basket is not found.
func (s *Service) GetBasket(ctx context.Context, userID, id string) (Basket, error) {
	id = dealctx.CanonicalOrSame(id)
	var b Basket
	q := s.db.Rebind(`SELECT ` + basketColumns + ` FROM baskets WHERE id = ? AND user_id = ?`)
	err := s.db.GetContext(ctx, &b, q, id, userID)
	if errors.Is(err, sql.ErrNoRows) {
		return Basket{}, service.NotFound("basket", id)
	}
	if err != nil {
		return Basket{}, fmt.Errorf("read basket %s: %w", id, err)
	}
	if err := s.withDeals(ctx, []*Basket{&b}); err != nil {
		return Basket{}, err
	}
	return b, nil
}

// ListBaskets returns a page of userID's baskets with their deals, newest
// first.
func (s *Service) ListBaskets(ctx context.Context, userID string, page service.PageRequest) (service.Page[Basket], error) {
	q := `SELECT ` + basketColumns + ` FROM baskets WHERE user_id = ?`
	args := []any{userID}
	if page.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, page.Before)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, page.Limit+1)
	var rows []Basket
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return service.Page[Basket]{}, fmt.Errorf("list baskets of %s: %w", userID, err)
	}
	p := service.NewPage(rows, page.Limit, func(b Basket) int64 { return b.Seq })
	ptrs := make([]*Basket, len(p.Items))
	for i := range p.Items {
		ptrs[i] = &p.Items[i]
	}
	if err := s.withDeals(ctx, ptrs); err != nil {
		return service.Page[Basket]{}, err
	}
	if p.Items == nil {
		p.Items = []Basket{}
	}
	return p, nil
}

// withDeals reads the deals of baskets (one query) and sets each basket's
// Deals, Status and Reason, and times in UTC.
func (s *Service) withDeals(ctx context.Context, baskets []*Basket) error {
	if len(baskets) == 0 {
		return nil
	}
	ids := make([]any, len(baskets))
	marks := make([]string, len(baskets))
	byID := make(map[string]*Basket, len(baskets))
	for i, b := range baskets {
		ids[i], marks[i] = b.ID, "?"
		byID[b.ID] = b
		b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
		b.Deals = []Deal{}
	}
	q := `SELECT ` + dealColumns + ` FROM deals WHERE basket_id IN (` + strings.Join(marks, ", ") + `) ORDER BY seq`
	var deals []Deal
	if err := s.db.SelectContext(ctx, &deals, s.db.Rebind(q), ids...); err != nil {
		return fmt.Errorf("read the deals of %d baskets: %w", len(baskets), err)
	}
	for _, d := range deals {
		d.normalize()
		if b := byID[*d.BasketID]; b != nil {
			b.Deals = append(b.Deals, d)
		}
	}
	for _, b := range baskets {
		b.Status, b.Reason = basketStatus(b.Deals)
		b.CancelRequestedAt = basketCancelRequestedAt(b.Deals)
	}
	return nil
}

// basketStatus derives a basket's status and reason from its deals, which
// its saga moves together: cancelled if any deal was cancelled, else failed
// if any deal failed, else rejected if any was rejected, else executed if
// all were executed, else draft. The reason is that of the first deal of
// that status.
func basketStatus(deals []Deal) (status, reason string) {
	first := func(st string) (string, bool) {
		for _, d := range deals {
			if d.Status == st {
				return d.Reason, true
			}
		}
		return "", false
	}
	for _, st := range []string{StatusCancelled, StatusFailed, StatusRejected} {
		if r, ok := first(st); ok {
			return st, r
		}
	}
	if len(deals) == 0 {
		return StatusDraft, ""
	}
	for _, d := range deals {
		if d.Status != StatusExecuted {
			return StatusDraft, ""
		}
	}
	return StatusExecuted, ""
}

func (s *Service) handleCreateBasket(w http.ResponseWriter, r *http.Request, u auth.User) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req NewBasket
	if err := service.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	b, replayed, err := s.CreateBasket(r.Context(), u.Subject, req, key)
	if err != nil {
		return err
	}
	writeAt(w, http.StatusCreated, "/baskets/"+b.ID, replayed, b)
	return nil
}

func (s *Service) handleListBaskets(w http.ResponseWriter, r *http.Request, u auth.User) error {
	page, err := service.ParsePage(r)
	if err != nil {
		return err
	}
	p, err := s.ListBaskets(r.Context(), u.Subject, page)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Service) handleGetBasket(w http.ResponseWriter, r *http.Request, u auth.User) error {
	b, err := s.GetBasket(r.Context(), u.Subject, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, b)
	return nil
}

// lockBasket reads a basket inside tx, locking its row on PostgreSQL.
func (s *Service) lockBasket(ctx context.Context, tx *sqlx.Tx, id string) (Basket, error) {
	var b Basket
	if err := s.sql.Get(ctx, tx, &b, `SELECT `+basketColumns+` FROM baskets WHERE id = ?`+s.dialect.ForUpdate(), id); err != nil {
		return Basket{}, err
	}
	b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	return b, nil
}

// basketDeals reads the deals of basket id inside tx, oldest first.
func (s *Service) basketDeals(ctx context.Context, tx *sqlx.Tx, id string) ([]Deal, error) {
	var deals []Deal
	if err := s.sql.Select(ctx, tx, &deals, `SELECT `+dealColumns+` FROM deals WHERE basket_id = ? ORDER BY seq`, id); err != nil {
		return nil, err
	}
	for i := range deals {
		deals[i].normalize()
	}
	return deals, nil
}
