package profile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// CHECK_BASKET of the BASKET_ORDER saga and its answer.
const (
	CommandCheckBasket = "CHECK_BASKET"
	EventBasketChecked = "BASKET_CHECKED"
)

// Limits of a basket (BASKET_ORDER's BASKET_REGISTERED schema says the same).
const (
	// MaxBasketLines is the most lines (deals) a basket may have.
	MaxBasketLines = 20
	// MaxCheckReasonBytes bounds BASKET_CHECKED's reason (the saga's
	// event schema refuses a longer one).
	MaxCheckReasonBytes = 1000
	maxBasketUserBytes  = 256
)

// Basket is the saga context's basket: a client's deals in one portfolio,
// executed all or nothing. Every line is a deal_context of the basket's
// user, portfolio and currency.
type Basket struct {
	BasketID    string                `json:"basket_id"`
	UserID      string                `json:"user_id"`
	PortfolioID string                `json:"portfolio_id"`
	Currency    string                `json:"currency"`
	Lines       []dealctx.DealContext `json:"lines"`
}

// BasketEnvelope is the payload of CHECK_BASKET: {"basket": {...}}. Other
// keys are ignored.
type BasketEnvelope struct {
	Basket *Basket `json:"basket"`
}

// BasketCheck is BASKET_CHECKED's basket_check: whether the portfolio can
// pay for the basket as a whole, and if not why (Reason is "" when it can).
type BasketCheck struct {
	Sufficient bool   `json:"sufficient"`
	Reason     string `json:"reason"`
}

// BasketCheckEnvelope is the payload of BASKET_CHECKED.
type BasketCheckEnvelope struct {
	BasketCheck BasketCheck `json:"basket_check"`
}

// Validate checks a basket received from the bus: its ids (basket and
// portfolio are UUIDs), user and currency; 1 to MaxBasketLines lines, each
// a valid deal_context (dealctx.DealContext.Validate) of the basket's user,
// portfolio (the same UUID, in any case) and currency, no deal twice. The
// error lists every problem found.
func (b Basket) Validate() error {
	var errs []error
	if _, err := uuid.Parse(b.BasketID); err != nil {
		errs = append(errs, fmt.Errorf("basket_id %q is not a UUID", truncate(b.BasketID, 64)))
	}
	switch {
	case strings.TrimSpace(b.UserID) == "":
		errs = append(errs, errors.New("user_id is empty"))
	case len(b.UserID) > maxBasketUserBytes:
		errs = append(errs, fmt.Errorf("user_id has %d bytes, more than %d", len(b.UserID), maxBasketUserBytes))
	}
	if _, err := uuid.Parse(b.PortfolioID); err != nil {
		errs = append(errs, fmt.Errorf("portfolio_id %q is not a UUID", truncate(b.PortfolioID, 64)))
	}
	if err := dealctx.CheckCurrency(b.Currency); err != nil {
		errs = append(errs, err)
	}
	switch n := len(b.Lines); {
	case n == 0:
		errs = append(errs, fmt.Errorf("the basket has no lines: it needs 1 to %d", MaxBasketLines))
	case n > MaxBasketLines:
		// Not looked into: a basket this size is refused as a whole.
		return errors.Join(append(errs, fmt.Errorf("the basket has %d lines, more than %d", n, MaxBasketLines))...)
	}
	pid := dealctx.CanonicalOrSame(b.PortfolioID)
	seen := map[string]int{}
	for i, l := range b.Lines {
		line := fmt.Sprintf("line %d (deal %q)", i+1, truncate(l.DealID, 64))
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", line, err))
			continue
		}
		if l.UserID != b.UserID {
			errs = append(errs, fmt.Errorf("%s: user_id %q is not the basket's %q", line, truncate(l.UserID, 64), truncate(b.UserID, 64)))
		}
		if dealctx.CanonicalOrSame(l.PortfolioID) != pid {
			errs = append(errs, fmt.Errorf("%s: portfolio_id %s is not the basket's %s", line, l.PortfolioID, b.PortfolioID))
		}
		if l.Currency != b.Currency {
			errs = append(errs, fmt.Errorf("%s: currency %s is not the basket's %s", line, l.Currency, b.Currency))
		}
		id := dealctx.CanonicalOrSame(l.DealID)
		if first, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s: the deal is line %d too", line, first))
		} else {
			seen[id] = i + 1
		}
	}
	return errors.Join(errs...)
}

// basketFromCommand returns the command's basket after Validate.
func basketFromCommand(e BasketEnvelope) (Basket, error) {
	if e.Basket == nil {
		return Basket{}, errors.New("the payload has no basket")
	}
	b := *e.Basket
	if err := b.Validate(); err != nil {
		return Basket{}, fmt.Errorf("basket %q: %w", truncate(b.BasketID, 64), err)
	}
	return b, nil
}

// handleCheckBasket answers whether the basket's portfolio can pay for the
// basket as a whole (BASKET_CHECKED), reading the portfolio and its
// positions once and moving nothing (checkBasket says what is checked). A
// malformed basket is a permanent error (a dead letter with the reason),
// not an answer.
func (s *Service) handleCheckBasket(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[BasketEnvelope]) (sdk.Result, error) {
	b, err := basketFromCommand(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	pid := dealctx.CanonicalOrSame(b.PortfolioID)
	pf, err := s.readPortfolio(ctx, tx, pid)
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return sdk.Result{}, fmt.Errorf("%s: basket %s: %w", cmd.Name, b.BasketID, err)
	}
	var check BasketCheck
	if found && pf.UserID == b.UserID {
		check = checkBasket(pf, b)
	} else {
		// As APPROVE_ORDER answers for a deal: an answer, not an error (the
		// saga rejects the basket; deals refuses to touch another user's).
		check = BasketCheck{Reason: fmt.Sprintf("portfolio %s not found for user %s", b.PortfolioID, b.UserID)}
	}
	check.Reason = boundReason(check.Reason)
	s.log.InfoContext(ctx, "basket checked", "basket_id", b.BasketID, "portfolio_id", pid, "lines", len(b.Lines),
		"sufficient", check.Sufficient, "reason", check.Reason, "saga_id", cmd.SagaID)
	return sdk.Reply(EventBasketChecked, BasketCheckEnvelope{BasketCheck: check}), nil
}

// checkBasket checks the valid basket b against its owner's portfolio pf,
// as APPROVE_ORDER's decide checks one deal, but for all lines at once
// (they are applied in parallel, in any order): the currency is the
// portfolio's; the cash covers the sum of the buys' costs
// (dealctx.CashAmount; the sells' proceeds are not counted); for every
// instrument the holdings cover the sum of its sells; and the cash with
// every sell's proceeds stays below dealctx.MaxAmount. Every shortfall is
// named ("insufficient cash: need 2500.00 USD, have 2000.00 USD",
// "insufficient holdings: need 15 AAPL, have 10 AAPL"), cash first, then
// instruments by name.
func checkBasket(pf Portfolio, b Basket) BasketCheck {
	if pf.Currency != b.Currency {
		return BasketCheck{Reason: fmt.Sprintf("currency mismatch: the basket is in %s, portfolio %s holds %s", b.Currency, pf.ID, pf.Currency)}
	}
	buys, proceeds := decimal.Zero, decimal.Zero
	sells := map[string]decimal.Decimal{}
	for _, l := range b.Lines {
		amount := dealctx.CashAmount(l.Side, l.Quantity, l.Price)
		switch l.Side {
		case dealctx.Buy:
			buys = buys.Add(amount)
		case dealctx.Sell:
			proceeds = proceeds.Add(amount)
			sells[l.Instrument] = sells[l.Instrument].Add(l.Quantity)
		}
	}
	var short []string
	if pf.Cash.LessThan(buys) {
		short = append(short, fmt.Sprintf("insufficient cash: need %s %s, have %s %s",
			dealctx.Money(buys), pf.Currency, dealctx.Money(pf.Cash), pf.Currency))
	}
	instruments := make([]string, 0, len(sells))
	for inst := range sells {
		instruments = append(instruments, inst)
	}
	slices.Sort(instruments)
	for _, inst := range instruments {
		if held := pf.Positions[inst]; held.LessThan(sells[inst]) {
			short = append(short, fmt.Sprintf("insufficient holdings: need %s %s, have %s %s", sells[inst], inst, held, inst))
		}
	}
	if len(short) == 0 && proceeds.IsPositive() {
		if err := dealctx.CheckAmount("the resulting cash", pf.Cash.Add(proceeds)); err != nil {
			short = append(short, err.Error())
		}
	}
	if len(short) > 0 {
		return BasketCheck{Reason: strings.Join(short, "; ")}
	}
	return BasketCheck{Sufficient: true}
}

// boundReason keeps a reason within MaxCheckReasonBytes: the shortfalls
// that fit, and how many more there are.
func boundReason(reason string) string {
	if len(reason) <= MaxCheckReasonBytes {
		return reason
	}
	parts := strings.Split(reason, "; ")
	for n := len(parts) - 1; n > 0; n-- {
		s := strings.Join(parts[:n], "; ") + fmt.Sprintf("; and %d more", len(parts)-n)
		if len(s) <= MaxCheckReasonBytes {
			return s
		}
	}
	return truncate(reason, MaxCheckReasonBytes-len("…"))
}

// readPortfolio reads a portfolio and its positions inside tx without
// locking it (CHECK_BASKET moves nothing). It returns sql.ErrNoRows if
// there is none.
func (s *Service) readPortfolio(ctx context.Context, tx *sqlx.Tx, id string) (Portfolio, error) {
	var pf Portfolio
	if err := s.sql.Get(ctx, tx, &pf, `SELECT `+portfolioColumns+` FROM portfolios WHERE id = ?`, id); err != nil {
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

// truncate cuts s to at most n bytes (on a rune boundary), marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
