package profile

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

const portfolioColumns = `seq, id, user_id, name, currency, cash, created_at, updated_at`

// Login returns the profile of u, creating it from the token claims on the
// first call and refreshing name and email when the token's changed.
func (s *Service) Login(ctx context.Context, u auth.User) (Profile, error) {
	now := s.now().UTC()
	q := s.db.Rebind(`INSERT INTO profiles (user_id, name, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email, updated_at = excluded.updated_at
		WHERE profiles.name <> excluded.name OR profiles.email <> excluded.email`)
	if _, err := s.db.ExecContext(ctx, q, u.Subject, u.Name, u.Email, now, now); err != nil {
		return Profile{}, fmt.Errorf("log in %s: upsert profile: %w", u.Subject, err)
	}
	var p Profile
	if err := s.db.GetContext(ctx, &p, s.db.Rebind(`SELECT user_id, name, email, created_at, updated_at FROM profiles WHERE user_id = ?`), u.Subject); err != nil {
		return Profile{}, fmt.Errorf("log in %s: read profile: %w", u.Subject, err)
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	p.Roles = u.Roles
	if p.Roles == nil {
		p.Roles = []string{}
	}
	return p, nil
}

// NewPortfolio is a validated request to create a portfolio. A portfolio
// starts with no cash: funding is a deposit (Deposit), by a funding
// operator.
type NewPortfolio struct {
	Name     string
	Currency string
}

// CreatePortfolio creates a portfolio of userID, with no cash, and its
// first snapshot.
func (s *Service) CreatePortfolio(ctx context.Context, userID string, in NewPortfolio) (Portfolio, error) {
	now := s.now().UTC()
	pf := Portfolio{ID: envelope.NewID(), UserID: userID, Name: in.Name, Currency: in.Currency, Cash: decimal.Zero,
		Positions: Positions{}, CreatedAt: now, UpdatedAt: now}
	err := s.inTx(ctx, "create portfolio", func(tx *sqlx.Tx) error {
		q := tx.Rebind(`INSERT INTO portfolios (id, user_id, name, currency, cash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`)
		if _, err := tx.ExecContext(ctx, q, pf.ID, pf.UserID, pf.Name, pf.Currency, pf.Cash, pf.CreatedAt, pf.UpdatedAt); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		return s.upsertSnapshot(ctx, tx, pf)
	})
	if err != nil {
		return Portfolio{}, err
	}
	return pf, nil
}

// PortfolioUpdate is a validated PUT: a new name. The cash is never
// changed by an update (see Deposit).
type PortfolioUpdate struct {
	Name string
}

// UpdatePortfolio renames a portfolio of userID (id in any case) and
// upserts today's snapshot.
func (s *Service) UpdatePortfolio(ctx context.Context, userID, id string, in PortfolioUpdate) (Portfolio, error) {
	id = dealctx.CanonicalOrSame(id)
	var pf Portfolio
	err := s.inTx(ctx, "update portfolio "+id, func(tx *sqlx.Tx) error {
		var err error
		pf, err = s.lockPortfolio(ctx, tx, id)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && pf.UserID != userID) {
			return service.NotFound("portfolio", id)
		}
		if err != nil {
			return err
		}
		pf.Name, pf.UpdatedAt = in.Name, s.now().UTC()
		q := tx.Rebind(`UPDATE portfolios SET name = ?, updated_at = ? WHERE id = ?`)
		if _, err := tx.ExecContext(ctx, q, pf.Name, pf.UpdatedAt, pf.ID); err != nil {
			return fmt.Errorf("update: %w", err)
		}
		return s.upsertSnapshot(ctx, tx, pf)
	})
	if err != nil {
		return Portfolio{}, err
	}
	return pf, nil
}

// Portfolio returns the portfolio id (any case) of userID; another user's
// is not found.
func (s *Service) Portfolio(ctx context.Context, userID, id string) (Portfolio, error) {
	id = dealctx.CanonicalOrSame(id)
	var pf Portfolio
	err := s.db.GetContext(ctx, &pf, s.db.Rebind(`SELECT `+portfolioColumns+` FROM portfolios WHERE id = ? AND user_id = ?`), id, userID)
	if errors.Is(err, sql.ErrNoRows) {
		return Portfolio{}, service.NotFound("portfolio", id)
	}
	if err != nil {
		return Portfolio{}, fmt.Errorf("read portfolio %s: %w", id, err)
	}
	pf.normalize()
	if pf.Positions, err = positions(ctx, s.db, id); err != nil {
		return Portfolio{}, err
	}
	return pf, nil
}

// Portfolios lists the portfolios of userID, oldest first.
func (s *Service) Portfolios(ctx context.Context, userID string) ([]Portfolio, error) {
	var pfs []Portfolio
	if err := s.db.SelectContext(ctx, &pfs, s.db.Rebind(`SELECT `+portfolioColumns+` FROM portfolios WHERE user_id = ? ORDER BY seq`), userID); err != nil {
		return nil, fmt.Errorf("list portfolios of %s: %w", userID, err)
	}
	type posRow struct {
		PortfolioID string          `db:"portfolio_id"`
		Instrument  string          `db:"instrument"`
		Quantity    decimal.Decimal `db:"quantity"`
	}
	var rows []posRow
	q := s.db.Rebind(`SELECT p.portfolio_id, p.instrument, p.quantity FROM positions p JOIN portfolios f ON f.id = p.portfolio_id WHERE f.user_id = ?`)
	if err := s.db.SelectContext(ctx, &rows, q, userID); err != nil {
		return nil, fmt.Errorf("list positions of %s: %w", userID, err)
	}
	byID := map[string]Positions{}
	for _, r := range rows {
		if byID[r.PortfolioID] == nil {
			byID[r.PortfolioID] = Positions{}
		}
		byID[r.PortfolioID][r.Instrument] = r.Quantity
	}
	for i := range pfs {
		pfs[i].normalize()
		if p := byID[pfs[i].ID]; p != nil {
			pfs[i].Positions = p
		}
	}
	if pfs == nil {
		pfs = []Portfolio{}
	}
	return pfs, nil
}

// Snapshots lists the dated snapshots of a portfolio of userID, oldest
// first, optionally from and/or to a date (inclusive, "" for no bound).
func (s *Service) Snapshots(ctx context.Context, userID, id, from, to string) ([]Snapshot, error) {
	id = dealctx.CanonicalOrSame(id)
	pf, err := s.Portfolio(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	q := `SELECT portfolio_id, day, cash, positions, taken_at FROM snapshots WHERE portfolio_id = ?`
	args := []any{id}
	if from != "" {
		q += ` AND day >= ?`
		args = append(args, from)
	}
	if to != "" {
		q += ` AND day <= ?`
		args = append(args, to)
	}
	var rows []snapshotRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q+` ORDER BY day`), args...); err != nil {
		return nil, fmt.Errorf("list snapshots of portfolio %s: %w", id, err)
	}
	out := make([]Snapshot, 0, len(rows))
	for _, r := range rows {
		snap, err := r.snapshot(pf.Currency)
		if err != nil {
			return nil, err
		}
		out = append(out, snap)
	}
	return out, nil
}

// SnapshotAt returns the position of a portfolio of userID as of date
// (YYYY-MM-DD): the latest snapshot on or before it; not found before the
// first snapshot.
func (s *Service) SnapshotAt(ctx context.Context, userID, id, date string) (SnapshotAsOf, error) {
	id = dealctx.CanonicalOrSame(id)
	pf, err := s.Portfolio(ctx, userID, id)
	if err != nil {
		return SnapshotAsOf{}, err
	}
	var r snapshotRow
	q := s.db.Rebind(`SELECT portfolio_id, day, cash, positions, taken_at FROM snapshots WHERE portfolio_id = ? AND day <= ? ORDER BY day DESC LIMIT 1`)
	err = s.db.GetContext(ctx, &r, q, id, date)
	if errors.Is(err, sql.ErrNoRows) {
		return SnapshotAsOf{}, service.NotFound("snapshot of portfolio "+id+" on or before", date)
	}
	if err != nil {
		return SnapshotAsOf{}, fmt.Errorf("read snapshot of portfolio %s as of %s: %w", id, date, err)
	}
	snap, err := r.snapshot(pf.Currency)
	if err != nil {
		return SnapshotAsOf{}, err
	}
	return SnapshotAsOf{AsOf: date, Snapshot: snap}, nil
}

type snapshotRow struct {
	PortfolioID string          `db:"portfolio_id"`
	Day         string          `db:"day"`
	Cash        decimal.Decimal `db:"cash"`
	Positions   string          `db:"positions"`
	TakenAt     time.Time       `db:"taken_at"`
}

func (r snapshotRow) snapshot(currency string) (Snapshot, error) {
	pos := Positions{}
	if err := json.Unmarshal([]byte(r.Positions), &pos); err != nil {
		return Snapshot{}, fmt.Errorf("decode snapshot %s of portfolio %s: %w", r.Day, r.PortfolioID, err)
	}
	return Snapshot{PortfolioID: r.PortfolioID, Date: r.Day, Currency: currency, Cash: r.Cash, Positions: pos, TakenAt: r.TakenAt.UTC()}, nil
}

func (pf *Portfolio) normalize() {
	pf.CreatedAt, pf.UpdatedAt = pf.CreatedAt.UTC(), pf.UpdatedAt.UTC()
	if pf.Positions == nil {
		pf.Positions = Positions{}
	}
}

// lockPortfolio reads a portfolio and its positions inside tx, locking the
// portfolio row on PostgreSQL. It returns sql.ErrNoRows if there is none.
func (s *Service) lockPortfolio(ctx context.Context, tx *sqlx.Tx, id string) (Portfolio, error) {
	var pf Portfolio
	if err := s.sql.Get(ctx, tx, &pf, s.lockPortfolioSQL, id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Portfolio{}, err
		}
		return Portfolio{}, fmt.Errorf("read portfolio %s: %w", id, err)
	}
	pf.normalize()
	rows, err := s.sql.Query(ctx, tx, `SELECT instrument, quantity FROM positions WHERE portfolio_id = ?`, id)
	if err != nil {
		return Portfolio{}, fmt.Errorf("read positions of portfolio %s: %w", id, err)
	}
	if pf.Positions, err = scanPositions(rows, id); err != nil {
		return Portfolio{}, err
	}
	return pf, nil
}

// queryer is a *sqlx.DB or a *sqlx.Tx.
type queryer interface {
	sqlx.QueryerContext
	Rebind(query string) string
}

func positions(ctx context.Context, q queryer, id string) (Positions, error) {
	rows, err := q.QueryxContext(ctx, q.Rebind(`SELECT instrument, quantity FROM positions WHERE portfolio_id = ?`), id)
	if err != nil {
		return nil, fmt.Errorf("read positions of portfolio %s: %w", id, err)
	}
	return scanPositions(rows, id)
}

// scanPositions reads and closes rows of (instrument, quantity).
func scanPositions(rows *sqlx.Rows, id string) (Positions, error) {
	defer rows.Close()
	pos := Positions{}
	for rows.Next() {
		var inst string
		var qty decimal.Decimal
		if err := rows.Scan(&inst, &qty); err != nil {
			return nil, fmt.Errorf("read positions of portfolio %s: %w", id, err)
		}
		pos[inst] = qty
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read positions of portfolio %s: %w", id, err)
	}
	return pos, nil
}

// savePosition writes the quantity held of one instrument (deleting the row
// at zero).
func (s *Service) savePosition(ctx context.Context, tx *sqlx.Tx, portfolioID, instrument string, qty decimal.Decimal) error {
	if qty.IsZero() {
		const q = `DELETE FROM positions WHERE portfolio_id = ? AND instrument = ?`
		if _, err := s.sql.Exec(ctx, tx, q, portfolioID, instrument); err != nil {
			return fmt.Errorf("delete position %s of portfolio %s: %w", instrument, portfolioID, err)
		}
		return nil
	}
	const q = `INSERT INTO positions (portfolio_id, instrument, quantity) VALUES (?, ?, ?)
		ON CONFLICT (portfolio_id, instrument) DO UPDATE SET quantity = excluded.quantity`
	if _, err := s.sql.Exec(ctx, tx, q, portfolioID, instrument, qty); err != nil {
		return fmt.Errorf("save position %s of portfolio %s: %w", instrument, portfolioID, err)
	}
	return nil
}

// upsertSnapshot writes today's snapshot of pf (its cash and positions as
// they are now), replacing an earlier one of the same day.
func (s *Service) upsertSnapshot(ctx context.Context, tx *sqlx.Tx, pf Portfolio) error {
	now := s.now().UTC()
	b, err := snapshotJSON(pf)
	if err != nil {
		return err
	}
	const q = `INSERT INTO snapshots (portfolio_id, day, cash, positions, taken_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (portfolio_id, day) DO UPDATE SET cash = excluded.cash, positions = excluded.positions, taken_at = excluded.taken_at`
	if _, err := s.sql.Exec(ctx, tx, q, pf.ID, now.Format(DateLayout), pf.Cash, b, now); err != nil {
		return fmt.Errorf("upsert snapshot of portfolio %s: %w", pf.ID, err)
	}
	return nil
}

// snapshotJSON encodes the positions of pf as a snapshot keeps them.
func snapshotJSON(pf Portfolio) (string, error) {
	pos := pf.Positions
	if pos == nil {
		pos = Positions{}
	}
	b, err := json.Marshal(pos)
	if err != nil {
		return "", fmt.Errorf("encode snapshot of portfolio %s: %w", pf.ID, err)
	}
	return string(b), nil
}

// inTx runs fn in a transaction, wrapping its error with op.
func (s *Service) inTx(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", op, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := fn(tx); err != nil {
		var pe *service.Error
		if errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", op, err)
	}
	return nil
}
