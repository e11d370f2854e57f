package deals

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Group commit of new deals. Concurrent POST /deals requests queue their
// deal; a flusher takes everything queued (up to maxGroup) and writes it in
// ONE transaction: every deal's row in one INSERT, every saga start in one
// outbox write (writeDeals), then one commit for all. A deal is durable, and its saga started, when
// its request is answered, exactly as with a transaction per request; only
// the commits (and, on SQLite, the serialised write transactions) are
// shared. If anything in the group fails, the group is rolled back and each
// deal is written again in its own transaction, so one bad deal fails only
// its own request.
const (
	maxGroup = 64
	// groupTimeout bounds a group's transaction (its requests wait for it,
	// whatever their own contexts say, to learn the outcome).
	groupTimeout = 30 * time.Second
)

// pendingDeal is a deal waiting for its group's commit.
type pendingDeal struct {
	d    Deal
	dc   dealctx.DealContext
	span trace.SpanContext // the request's span: the saga's trace starts there (internal/tracing)
	done chan groupResult
}

type groupResult struct {
	inserted bool // false: the Idempotency-Key was used before
	err      error
}

// One flusher writes the groups, on both dialects: while it writes one
// group the next fills, so groups grow with the load. Four concurrent
// flushers on PostgreSQL split the same requests into more, smaller groups
// (58 % of the deals were written alone at 32 clients): more transactions
// and relay rounds for the same deals. Measured against four (cmd/bench on
// PostgreSQL + Kafka, alternating): 200 clients 1,055 and 1,071 against 966
// and 953 sagas/s, PostgreSQL 0.80 against 0.92 ms per saga; 32 clients
// 455, 461, 391 against 412, 411, 386. See docs/operations.md.

// insertDeal writes d (inserted false if its Idempotency-Key was used
// before) and starts its saga, grouped with the deals created meanwhile.
func (s *Service) insertDeal(span trace.SpanContext, d Deal, dc dealctx.DealContext) (bool, error) {
	pd := &pendingDeal{d: d, dc: dc, span: span, done: make(chan groupResult, 1)}
	s.groupMu.Lock()
	s.queue = append(s.queue, pd)
	if !s.flushing {
		s.flushing = true
		go s.flushGroups()
	}
	s.groupMu.Unlock()
	res := <-pd.done
	return res.inserted, res.err
}

// flushGroups writes queued groups until the queue is empty.
func (s *Service) flushGroups() {
	for {
		s.groupMu.Lock()
		n := min(len(s.queue), maxGroup)
		if n == 0 {
			s.flushing = false
			s.groupMu.Unlock()
			return
		}
		group := make([]*pendingDeal, n)
		copy(group, s.queue)
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil // let the backing array go
		}
		s.groupMu.Unlock()
		s.writeGroup(group)
	}
}

// writeGroup writes group in one transaction, or, if that fails, each deal
// in its own.
func (s *Service) writeGroup(group []*pendingDeal) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	if len(group) > 1 {
		inserted, err := s.inTx(ctx, func(tx *sqlx.Tx) ([]bool, error) { return s.writeDeals(ctx, tx, group) })
		if err == nil {
			for i, pd := range group {
				pd.done <- groupResult{inserted: inserted[i]}
			}
			return
		}
		s.log.Info("writing a group of new deals failed; writing them one by one", "deals", len(group), "err", err)
	}
	for _, pd := range group {
		inserted, err := s.inTx(ctx, func(tx *sqlx.Tx) ([]bool, error) {
			ok, err := s.writeDeal(trace.ContextWithSpanContext(ctx, pd.span), tx, pd.d, pd.dc)
			return []bool{ok}, err
		})
		if err != nil {
			pd.done <- groupResult{err: err}
			continue
		}
		pd.done <- groupResult{inserted: inserted[0]}
	}
}

// dealColumnsInsert are the columns writeDeal and writeDeals insert; the
// reason is always empty.
const dealColumnsInsert = `id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
	status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at`

// dealValues is one row of dealColumnsInsert for writeDeal(s).
const dealValues = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)`

// dealArgs appends d's values for dealValues.
func dealArgs(args []any, d Deal) []any {
	return append(args, d.ID, d.UserID, d.PortfolioID, d.Side, d.Instrument, d.Quantity, d.Price, d.Amount,
		d.Currency, d.Status, d.SagaID, d.IdempotencyKey, d.RequestHash, d.CreatedAt, d.UpdatedAt)
}

// writeDeals is writeDeal for a whole group in two statements: one INSERT
// of every deal (ON CONFLICT on the user's Idempotency-Key, RETURNING the
// ids written) and one outbox write of their saga starts. inserted[i] is
// false for a deal whose Idempotency-Key was used before, by an earlier
// deal or by one earlier in the group, as writeDeal one after another
// reports it.
func (s *Service) writeDeals(ctx context.Context, tx *sqlx.Tx, group []*pendingDeal) ([]bool, error) {
	var q strings.Builder
	q.WriteString("INSERT INTO deals (" + dealColumnsInsert + ") VALUES ")
	args := make([]any, 0, 15*len(group))
	for i, pd := range group {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(dealValues)
		args = dealArgs(args, pd.d)
	}
	q.WriteString(" ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id")
	var ids []string
	if err := s.sql.Select(ctx, tx, &ids, q.String(), args...); err != nil {
		return nil, fmt.Errorf("insert %d deals: %w", len(group), err)
	}
	written := make(map[string]bool, len(ids))
	for _, id := range ids {
		written[id] = true
	}
	inserted := make([]bool, len(group))
	starts := make([]sdk.SagaStart, 0, len(ids))
	for i, pd := range group {
		if !written[pd.d.ID] {
			continue
		}
		inserted[i] = true
		starts = append(starts, sdk.SagaStart{SagaID: pd.d.SagaID, Saga: SagaName, Event: StartEvent,
			Payload: dealctx.Wrap(pd.dc), Span: pd.span})
	}
	if err := s.p.StartSagas(ctx, tx, starts); err != nil {
		return nil, fmt.Errorf("start %d sagas %s: %w", len(starts), SagaName, err)
	}
	return inserted, nil
}

// inTx runs fn in a transaction and commits it.
func (s *Service) inTx(ctx context.Context, fn func(tx *sqlx.Tx) ([]bool, error)) ([]bool, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	out, err := fn(tx)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	s.p.Wake() // the saga starts are visible now: publish them
	return out, nil
}
