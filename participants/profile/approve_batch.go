package profile

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// handleApproveBatch is APPROVE_ORDER's batch handler (sdk.HandleBatch).
// One command runs handleApproveOrder, unchanged. A group of several is
// decided set-based with the same rules and answers:
//
//  1. every portfolio the group names is locked in one statement, in id
//     order (PostgreSQL: FOR UPDATE; concurrent groups, REVERT_ORDER and
//     deposits lock one portfolio or several in the same order, so they
//     queue instead of deadlocking);
//  2. one statement, after the lock (its snapshot then sees what the
//     previous holder of a lock committed, as in loadOrder), reads the
//     positions of those portfolios and the decisions and reversals of
//     every deal of the group;
//  3. each command is decided in command order against in-memory
//     portfolios with decide, so that two orders of one portfolio see each
//     other exactly as if handled one after the other (an order the
//     sequential handling would reject is rejected);
//  4. the effects are written at once: on PostgreSQL one statement (final
//     cash per portfolio, final quantity per position, zero ones deleted,
//     today's snapshot per portfolio, one decision row per decided
//     command); SQLite, whose write transactions exclude each other, runs
//     the per-row statements of apply in the same transaction.
//
// The unusual cases are decided inside the batch exactly as
// handleApproveOrder decides them, in the same order of checks: a deal
// reverted before (rejected), a deal decided before or earlier in the
// group (the same decision again, nothing applied twice), a missing
// portfolio or another user's (rejected, and recorded). Replies carry the
// deal_context as received. Only a payload that fails dealctx.FromCommand
// fails the group (a permanent error): the SDK then rolls back and
// handles each command alone, so that the malformed one is parked with
// its own reason and the others are answered.
func (s *Service) handleApproveBatch(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[dealctx.Envelope]) ([]sdk.Result, error) {
	if len(cmds) == 1 {
		r, err := s.handleApproveOrder(ctx, tx, cmds[0])
		if err != nil {
			return nil, err
		}
		return []sdk.Result{r}, nil
	}
	dcs := make([]dealctx.DealContext, len(cmds))
	var pids, dealIDs []string
	seenPF, seenDeal := map[string]bool{}, map[string]bool{}
	for i, c := range cmds {
		dc, err := dealctx.FromCommand(c.Payload)
		if err != nil {
			return nil, sdk.Permanent(fmt.Errorf("%s: %w", c.Name, err))
		}
		dcs[i] = dc
		if pid := dealctx.CanonicalOrSame(dc.PortfolioID); !seenPF[pid] {
			seenPF[pid] = true
			pids = append(pids, pid)
		}
		if !seenDeal[dc.DealID] {
			seenDeal[dc.DealID] = true
			dealIDs = append(dealIDs, dc.DealID)
		}
	}
	pfs, err := s.lockPortfolios(ctx, tx, pids)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmds[0].Name, err)
	}
	prev, err := s.loadGroup(ctx, tx, pfs, pids, dealIDs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmds[0].Name, err)
	}
	now := s.now().UTC()
	var w groupWrites
	res := make([]sdk.Result, len(cmds))
	for i, c := range cmds {
		dc := dcs[i]
		pid := dealctx.CanonicalOrSame(dc.PortfolioID)
		p := prev[dc.DealID]
		// The checks of handleApproveOrder, in its order.
		if p != nil && p.Reversed {
			reason := fmt.Sprintf("the order of deal %s was reverted (REVERT_ORDER: its saga failed); it is not applied again", dc.DealID)
			s.log.InfoContext(ctx, "order not decided: reverted before", "deal_id", dc.DealID, "saga_id", c.SagaID)
			res[i] = s.answer(dc, dealctx.StatusRejected, reason)
			continue
		}
		if p != nil && p.Status != "" {
			res[i] = s.answer(dc, p.Status, p.Reason)
			continue
		}
		var status, reason string
		pf, found := pfs[pid]
		if found && pf.UserID == dc.UserID {
			var held decimal.Decimal
			status, reason, held = decide(pf, dc)
			if status == dealctx.StatusApproved {
				pf.UpdatedAt = now
				w.touch(pf, dc.Instrument, held)
			}
		} else {
			status, reason = dealctx.StatusRejected, fmt.Sprintf("portfolio %s not found for user %s", dc.PortfolioID, dc.UserID)
		}
		w.decisions = append(w.decisions, groupDecision{dc: dc, portfolioID: pid, status: status, reason: reason, sagaID: c.SagaID, commandID: c.ID})
		// Later commands of the same deal answer this decision, as they
		// would read it from order_decisions one by one.
		if p == nil {
			p = &decision{}
			prev[dc.DealID] = p
		}
		p.Status, p.Reason = status, reason
		s.log.InfoContext(ctx, "order decided", "deal_id", dc.DealID, "portfolio_id", dc.PortfolioID, "status", status, "reason", reason, "saga_id", c.SagaID)
		res[i] = s.answer(dc, status, reason)
	}
	if err := s.writeGroup(ctx, tx, &w, now); err != nil {
		return nil, fmt.Errorf("%s: %w", cmds[0].Name, err)
	}
	return res, nil
}

// lockPortfolios reads the portfolios ids (canonical, distinct) in one
// statement, locking their rows on PostgreSQL in id order, and returns
// those that exist by id, with no positions read yet.
func (s *Service) lockPortfolios(ctx context.Context, tx *sqlx.Tx, ids []string) (map[string]*Portfolio, error) {
	q, arg, err := s.inList(`SELECT `+portfolioColumns+` FROM portfolios WHERE id %s ORDER BY id`+s.dialect.ForUpdate(), ids)
	if err != nil {
		return nil, err
	}
	var rows []Portfolio
	if err := s.sql.Select(ctx, tx, &rows, q, arg); err != nil {
		return nil, fmt.Errorf("lock %d portfolios: %w", len(ids), err)
	}
	out := make(map[string]*Portfolio, len(rows))
	for i := range rows {
		rows[i].normalize()
		out[rows[i].ID] = &rows[i]
	}
	return out, nil
}

// groupRow is one row of loadGroup's statement: a position (kind "p":
// portfolio id, instrument, quantity), a decision ("d": deal id, status,
// reason) or a reversal ("r": deal id, outcome).
type groupRow struct {
	Kind string `db:"kind"`
	Key  string `db:"k"`
	A    string `db:"a"`
	B    string `db:"b"`
}

// loadGroup reads, in one statement, the positions of the portfolios
// pids (into pfs) and the decisions and reversals of the deals dealIDs
// (returned by deal id, as loadOrder's prev). Run it after
// lockPortfolios.
func (s *Service) loadGroup(ctx context.Context, tx *sqlx.Tx, pfs map[string]*Portfolio, pids, dealIDs []string) (map[string]*decision, error) {
	var q string
	var args []any
	if s.dialect == service.Postgres {
		q = `SELECT 'p' AS kind, portfolio_id AS k, instrument AS a, CAST(quantity AS text) AS b FROM positions WHERE portfolio_id = ANY(CAST($1 AS text[]))
			UNION ALL SELECT 'd', deal_id, status, reason FROM order_decisions WHERE deal_id = ANY(CAST($2 AS text[]))
			UNION ALL SELECT 'r', deal_id, outcome, '' FROM order_reversals WHERE deal_id = ANY(CAST($2 AS text[]))`
		args = []any{sqldb.TextArray(pids), sqldb.TextArray(dealIDs)}
	} else {
		q = `SELECT 'p' AS kind, portfolio_id AS k, instrument AS a, quantity AS b FROM positions WHERE portfolio_id IN (SELECT value FROM json_each(?))
			UNION ALL SELECT 'd', deal_id, status, reason FROM order_decisions WHERE deal_id IN (SELECT value FROM json_each(?))
			UNION ALL SELECT 'r', deal_id, outcome, '' FROM order_reversals WHERE deal_id IN (SELECT value FROM json_each(?))`
		p, err := json.Marshal(pids)
		if err != nil {
			return nil, fmt.Errorf("encode portfolio ids: %w", err)
		}
		d, err := json.Marshal(dealIDs)
		if err != nil {
			return nil, fmt.Errorf("encode deal ids: %w", err)
		}
		args = []any{string(p), string(d), string(d)}
	}
	var rows []groupRow
	if err := s.sql.Select(ctx, tx, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("read positions, decisions and reversals of %d deals: %w", len(dealIDs), err)
	}
	prev := map[string]*decision{}
	get := func(id string) *decision {
		d := prev[id]
		if d == nil {
			d = &decision{}
			prev[id] = d
		}
		return d
	}
	for _, r := range rows {
		switch r.Kind {
		case "p":
			pf := pfs[r.Key]
			if pf == nil {
				continue
			}
			qty, err := decimal.NewFromString(r.B)
			if err != nil {
				return nil, fmt.Errorf("read position %s of portfolio %s: %w", r.A, r.Key, err)
			}
			pf.Positions[r.A] = qty
		case "d":
			d := get(r.Key)
			d.Status, d.Reason = r.A, r.B
		case "r":
			get(r.Key).Reversed = true
		}
	}
	return prev, nil
}

// inList returns format with its %s replaced by a test of membership in
// ids, and the one argument it takes: = ANY(text[]) on PostgreSQL, IN
// json_each(JSON array) on SQLite (constant statements either way).
func (s *Service) inList(format string, ids []string) (string, any, error) {
	if s.dialect == service.Postgres {
		return fmt.Sprintf(format, `= ANY(CAST(? AS text[]))`), sqldb.TextArray(ids), nil
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return "", nil, fmt.Errorf("encode ids: %w", err)
	}
	return fmt.Sprintf(format, `IN (SELECT value FROM json_each(?))`), string(b), nil
}

// groupDecision is one decision a group takes: the deal as received, the
// canonical portfolio id, the answer, and the command that asked.
type groupDecision struct {
	dc                dealctx.DealContext
	portfolioID       string
	status, reason    string
	sagaID, commandID string
}

// positionKey is one position a group moved.
type positionKey struct{ portfolioID, instrument string }

// groupWrites is what a group writes: the portfolios it moved (in the
// order first moved, each with its final cash and positions), the final
// quantity of each position it moved (zero: deleted) and its decisions in
// command order.
type groupWrites struct {
	portfolios []*Portfolio
	moved      map[string]bool
	positions  []positionKey
	held       map[positionKey]decimal.Decimal
	decisions  []groupDecision
}

// touch records that an approval left pf holding held of instrument.
func (w *groupWrites) touch(pf *Portfolio, instrument string, held decimal.Decimal) {
	if w.moved == nil {
		w.moved, w.held = map[string]bool{}, map[positionKey]decimal.Decimal{}
	}
	if !w.moved[pf.ID] {
		w.moved[pf.ID] = true
		w.portfolios = append(w.portfolios, pf)
	}
	k := positionKey{pf.ID, instrument}
	if _, ok := w.held[k]; !ok {
		w.positions = append(w.positions, k)
	}
	w.held[k] = held
}

// writeGroupSQL is writeGroup's PostgreSQL statement. Arguments: $1..$3
// the moved portfolios' ids, final cash and snapshot positions; $4 the
// time (updated_at, taken_at, decided_at); $5 today; $6..$8 the moved
// positions (portfolio, instrument, final quantity: 0 deletes the row);
// $9..$18 the decisions' columns.
const writeGroupSQL = `WITH pf AS (SELECT * FROM unnest(CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS text[])) AS v(id, cash, positions)),
	upd AS (UPDATE portfolios p SET cash = CAST(pf.cash AS numeric), updated_at = CAST($4 AS timestamptz) FROM pf WHERE p.id = pf.id),
	snap AS (INSERT INTO snapshots (portfolio_id, day, cash, positions, taken_at)
		SELECT id, CAST($5 AS text), CAST(cash AS numeric), positions, CAST($4 AS timestamptz) FROM pf
		ON CONFLICT (portfolio_id, day) DO UPDATE SET cash = excluded.cash, positions = excluded.positions, taken_at = excluded.taken_at),
	pos AS (SELECT * FROM unnest(CAST($6 AS text[]), CAST($7 AS text[]), CAST($8 AS text[])) AS u(portfolio_id, instrument, quantity)),
	put AS (INSERT INTO positions (portfolio_id, instrument, quantity)
		SELECT portfolio_id, instrument, CAST(quantity AS numeric) FROM pos WHERE CAST(quantity AS numeric) <> 0
		ON CONFLICT (portfolio_id, instrument) DO UPDATE SET quantity = excluded.quantity),
	del AS (DELETE FROM positions p USING pos
		WHERE CAST(pos.quantity AS numeric) = 0 AND p.portfolio_id = pos.portfolio_id AND p.instrument = pos.instrument)
	INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at, saga_id, side, instrument, quantity, amount, command_id)
	SELECT deal_id, portfolio_id, status, reason, CAST($4 AS timestamptz), saga_id, side, instrument, CAST(quantity AS numeric), CAST(amount AS numeric), command_id
	FROM unnest(CAST($9 AS text[]), CAST($10 AS text[]), CAST($11 AS text[]), CAST($12 AS text[]), CAST($13 AS text[]),
		CAST($14 AS text[]), CAST($15 AS text[]), CAST($16 AS text[]), CAST($17 AS text[]), CAST($18 AS text[]))
		AS d(deal_id, portfolio_id, status, reason, saga_id, side, instrument, quantity, amount, command_id)`

// writeGroup writes w at time now: on PostgreSQL one statement
// (writeGroupSQL), on SQLite the per-row statements of apply and of
// handleApproveOrder's rejection, in the transaction.
func (s *Service) writeGroup(ctx context.Context, tx *sqlx.Tx, w *groupWrites, now time.Time) error {
	if len(w.decisions) == 0 {
		return nil
	}
	if s.dialect != service.Postgres {
		return s.writeGroupRows(ctx, tx, w, now)
	}
	n := len(w.portfolios)
	ids, cash, snaps := make([]string, n), make([]string, n), make([]string, n)
	for i, pf := range w.portfolios {
		snap, err := snapshotJSON(*pf)
		if err != nil {
			return err
		}
		ids[i], cash[i], snaps[i] = pf.ID, pf.Cash.String(), snap
	}
	m := len(w.positions)
	ppf, pinst, pqty := make([]string, m), make([]string, m), make([]string, m)
	for i, k := range w.positions {
		ppf[i], pinst[i], pqty[i] = k.portfolioID, k.instrument, w.held[k].String()
	}
	var d [10][]string
	for _, x := range w.decisions {
		for j, v := range []string{x.dc.DealID, x.portfolioID, x.status, x.reason, x.sagaID, x.dc.Side, x.dc.Instrument,
			x.dc.Quantity.String(), x.dc.Amount.String(), x.commandID} {
			d[j] = append(d[j], v)
		}
	}
	args := []any{sqldb.TextArray(ids), sqldb.TextArray(cash), sqldb.TextArray(snaps), now, now.Format(DateLayout),
		sqldb.TextArray(ppf), sqldb.TextArray(pinst), sqldb.TextArray(pqty)}
	for _, col := range d {
		args = append(args, sqldb.TextArray(col))
	}
	if _, err := s.sql.Exec(ctx, tx, writeGroupSQL, args...); err != nil {
		return fmt.Errorf("apply %d decisions to %d portfolios: %w", len(w.decisions), n, err)
	}
	return nil
}

// writeGroupRows is writeGroup on SQLite: per-row statements.
func (s *Service) writeGroupRows(ctx context.Context, tx *sqlx.Tx, w *groupWrites, now time.Time) error {
	for _, pf := range w.portfolios {
		const q = `UPDATE portfolios SET cash = ?, updated_at = ? WHERE id = ?`
		if _, err := s.sql.Exec(ctx, tx, q, pf.Cash, now, pf.ID); err != nil {
			return fmt.Errorf("update cash of portfolio %s: %w", pf.ID, err)
		}
		if err := s.upsertSnapshot(ctx, tx, *pf); err != nil {
			return err
		}
	}
	for _, k := range w.positions {
		if err := s.savePosition(ctx, tx, k.portfolioID, k.instrument, w.held[k]); err != nil {
			return err
		}
	}
	const qd = `INSERT INTO order_decisions (deal_id, portfolio_id, status, reason, decided_at, saga_id, side, instrument, quantity, amount, command_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	for _, x := range w.decisions {
		if _, err := s.sql.Exec(ctx, tx, qd, x.dc.DealID, x.portfolioID, x.status, x.reason, now,
			x.sagaID, x.dc.Side, x.dc.Instrument, x.dc.Quantity, x.dc.Amount, x.commandID); err != nil {
			return fmt.Errorf("record the decision on deal %s: %w", x.dc.DealID, err)
		}
	}
	return nil
}
