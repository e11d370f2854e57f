package profile

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// maxReasonRunes bounds a deposit's reason.
const maxReasonRunes = 500

// Deposit is one funding of a portfolio, as recorded in the audit table.
type Deposit struct {
	Seq         int64           `json:"-" db:"seq"`
	ID          string          `json:"id" db:"id"`
	PortfolioID string          `json:"portfolio_id" db:"portfolio_id"`
	Amount      decimal.Decimal `json:"amount" db:"amount"`
	Currency    string          `json:"currency" db:"currency"`
	Reason      string          `json:"reason" db:"reason"`
	// CashAfter is the portfolio's cash right after the deposit.
	CashAfter decimal.Decimal `json:"cash_after" db:"cash_after"`
	// CreatedBy is the subject of the funding operator who deposited.
	CreatedBy string    `json:"created_by" db:"created_by"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`

	IdempotencyKey string `json:"-" db:"idempotency_key"`
	RequestHash    string `json:"-" db:"request_hash"`
}

const depositColumns = `seq, id, portfolio_id, amount, currency, reason, cash_after, created_by, created_at, idempotency_key, request_hash`

// NewDeposit is a request to fund a portfolio.
type NewDeposit struct {
	// Amount is positive, with at most dealctx.AmountPlaces places.
	Amount decimal.Decimal
	// Currency must be the portfolio's.
	Currency string
	// Reason says why (1 to 500 characters), for the audit trail.
	Reason string
}

// hash fingerprints a deposit request (portfolio, amount, currency,
// reason) for Idempotency-Key reuse detection; "100" and "100.00" are the
// same amount.
func (in NewDeposit) hash(portfolioID string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{portfolioID, in.Amount.String(), in.Currency, in.Reason}, "\x00")))
	return hex.EncodeToString(sum[:])
}

// check validates in on its own (the portfolio's currency is checked
// against the stored portfolio).
func (in NewDeposit) check() []service.FieldError {
	var errs []service.FieldError
	switch {
	case !in.Amount.IsPositive():
		errs = append(errs, service.FieldError{Field: "amount", Message: "must be positive, got " + quote(in.Amount.String())})
	default:
		if err := dealctx.CheckAmount("amount", in.Amount); err != nil {
			errs = append(errs, service.FieldError{Field: "amount", Message: err.Error()})
		}
	}
	if err := dealctx.CheckCurrency(in.Currency); err != nil {
		errs = append(errs, service.FieldError{Field: "currency", Message: err.Error()})
	}
	switch r := strings.TrimSpace(in.Reason); {
	case r == "":
		errs = append(errs, service.FieldError{Field: "reason", Message: `is required: why the portfolio is funded (e.g. "wire 2026-03-02 ref 4711")`})
	case utf8.RuneCountInString(in.Reason) > maxReasonRunes:
		errs = append(errs, service.FieldError{Field: "reason", Message: fmt.Sprintf("must be at most %d characters", maxReasonRunes)})
	case !utf8.ValidString(in.Reason):
		errs = append(errs, service.FieldError{Field: "reason", Message: "must be valid UTF-8"})
	}
	return errs
}

// Deposit funds portfolio portfolioID (any case) with in, for operator, and
// records it in the audit table in the same transaction as the cash change
// (and today's snapshot). operator must hold auth.RoleFundingOperator and
// must not own the portfolio (403 otherwise). idemKey (required) makes the
// call idempotent per operator: the same key with the same request returns
// the first deposit with replayed true and changes nothing; with a
// different request it is a 422 idempotency-key-reused problem. The
// portfolio must exist (404), be in in.Currency, and its cash stay below
// dealctx.MaxAmount (422).
func (s *Service) Deposit(ctx context.Context, operator auth.User, portfolioID string, in NewDeposit, idemKey string) (dep Deposit, replayed bool, err error) {
	if !operator.HasRole(auth.RoleFundingOperator) {
		return Deposit{}, false, service.NewError(http.StatusForbidden, service.TypeForbidden,
			fmt.Sprintf("user %q lacks the role %q: only funding operators deposit cash", operator.Subject, auth.RoleFundingOperator))
	}
	if idemKey == "" {
		return Deposit{}, false, service.Invalid(service.FieldError{Field: HeaderIdempotencyKey, Message: "is required for a deposit (e.g. a UUID): a retried request must not fund twice"})
	}
	if errs := in.check(); len(errs) > 0 {
		return Deposit{}, false, service.Invalid(errs...)
	}
	portfolioID = dealctx.CanonicalOrSame(portfolioID)
	now := s.now().UTC()
	dep = Deposit{ID: envelope.NewID(), PortfolioID: portfolioID, Amount: in.Amount, Currency: in.Currency, Reason: in.Reason,
		CreatedBy: operator.Subject, CreatedAt: now, IdempotencyKey: idemKey, RequestHash: in.hash(portfolioID)}
	err = s.inTx(ctx, "deposit into portfolio "+portfolioID, func(tx *sqlx.Tx) error {
		pf, err := s.lockPortfolio(ctx, tx, portfolioID)
		if errors.Is(err, sql.ErrNoRows) {
			return service.NotFound("portfolio", portfolioID)
		}
		if err != nil {
			return err
		}
		prev, found, err := s.depositByKey(ctx, tx, operator.Subject, idemKey)
		if err != nil {
			return err
		}
		if found {
			if err := s.checkReplay(prev, dep.RequestHash, idemKey); err != nil {
				return err
			}
			dep, replayed = prev, true
			return nil
		}
		if pf.UserID == operator.Subject {
			return service.NewError(http.StatusForbidden, service.TypeForbidden,
				"funding operators cannot fund their own portfolio: another funding operator must make this deposit")
		}
		if in.Currency != pf.Currency {
			return service.Invalid(service.FieldError{Field: "currency", Message: "must be the portfolio's currency " + pf.Currency + ", got " + quote(in.Currency)})
		}
		cash := pf.Cash.Add(in.Amount)
		if err := dealctx.CheckAmount("the resulting cash", cash); err != nil {
			return service.Invalid(service.FieldError{Field: "amount", Message: err.Error()})
		}
		dep.CashAfter = cash
		const qi = `INSERT INTO deposits (id, portfolio_id, amount, currency, reason, cash_after, created_by, created_at, idempotency_key, request_hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (created_by, idempotency_key) DO NOTHING`
		res, err := s.sql.Exec(ctx, tx, qi, dep.ID, dep.PortfolioID, dep.Amount, dep.Currency, dep.Reason, dep.CashAfter,
			dep.CreatedBy, dep.CreatedAt, dep.IdempotencyKey, dep.RequestHash)
		if err != nil {
			return fmt.Errorf("record the deposit: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("record the deposit: %w", err)
		} else if n == 0 {
			// The same operator used the key meanwhile, for another portfolio
			// (that request held another row lock). Answer from it.
			return errKeyRaced
		}
		pf.Cash, pf.UpdatedAt = cash, now
		const qu = `UPDATE portfolios SET cash = ?, updated_at = ? WHERE id = ?`
		if _, err := s.sql.Exec(ctx, tx, qu, pf.Cash, pf.UpdatedAt, pf.ID); err != nil {
			return fmt.Errorf("update cash: %w", err)
		}
		return s.upsertSnapshot(ctx, tx, pf)
	})
	if errors.Is(err, errKeyRaced) {
		prev, found, err := s.depositByKey(ctx, s.db, operator.Subject, idemKey)
		if err != nil || !found {
			return Deposit{}, false, fmt.Errorf("deposit into portfolio %s: read the deposit of Idempotency-Key %q: %w", portfolioID, idemKey, errors.Join(err, sql.ErrNoRows))
		}
		return prev, true, s.checkReplay(prev, dep.RequestHash, idemKey)
	}
	if err != nil {
		return Deposit{}, false, err
	}
	if !replayed {
		s.log.InfoContext(ctx, "portfolio funded", "deposit_id", dep.ID, "portfolio_id", dep.PortfolioID, "amount", dep.Amount.String(),
			"currency", dep.Currency, "cash_after", dep.CashAfter.String(), "operator", dep.CreatedBy)
	}
	return dep, replayed, nil
}

// errKeyRaced is Deposit's signal that its Idempotency-Key was used by a
// concurrent request.
var errKeyRaced = errors.New("idempotency key used concurrently")

func (s *Service) checkReplay(prev Deposit, hash, key string) error {
	if prev.RequestHash != hash {
		return service.NewError(http.StatusUnprocessableEntity, service.TypeIdempotencyReuse,
			fmt.Sprintf("Idempotency-Key %q was already used for deposit %s with a different request; use a new key for a new deposit", key, prev.ID))
	}
	return nil
}

// depositByKey reads the deposit operator made with key, if any.
func (s *Service) depositByKey(ctx context.Context, q queryer, operator, key string) (Deposit, bool, error) {
	var d Deposit
	err := sqlx.GetContext(ctx, q, &d, q.Rebind(`SELECT `+depositColumns+` FROM deposits WHERE created_by = ? AND idempotency_key = ?`), operator, key)
	if errors.Is(err, sql.ErrNoRows) {
		return Deposit{}, false, nil
	}
	if err != nil {
		return Deposit{}, false, fmt.Errorf("read the deposit of Idempotency-Key %q: %w", key, err)
	}
	d.CreatedAt = d.CreatedAt.UTC()
	return d, true, nil
}

// Deposits lists a page of the deposits into portfolio id (any case),
// newest first. caller must own the portfolio or hold
// auth.RoleFundingOperator; to anyone else the portfolio is not found.
func (s *Service) Deposits(ctx context.Context, caller auth.User, id string, page service.PageRequest) (service.Page[Deposit], error) {
	id = dealctx.CanonicalOrSame(id)
	var owner string
	err := s.db.GetContext(ctx, &owner, s.db.Rebind(`SELECT user_id FROM portfolios WHERE id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && owner != caller.Subject && !caller.HasRole(auth.RoleFundingOperator)) {
		return service.Page[Deposit]{}, service.NotFound("portfolio", id)
	}
	if err != nil {
		return service.Page[Deposit]{}, fmt.Errorf("read portfolio %s: %w", id, err)
	}
	q := `SELECT ` + depositColumns + ` FROM deposits WHERE portfolio_id = ?`
	args := []any{id}
	if page.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, page.Before)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, page.Limit+1)
	var rows []Deposit
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return service.Page[Deposit]{}, fmt.Errorf("list deposits of portfolio %s: %w", id, err)
	}
	for i := range rows {
		rows[i].CreatedAt = rows[i].CreatedAt.UTC()
	}
	return service.NewPage(rows, page.Limit, func(d Deposit) int64 { return d.Seq }), nil
}
