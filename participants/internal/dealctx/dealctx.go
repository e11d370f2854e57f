package dealctx

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// Sides of a deal.
const (
	Buy  = "buy"
	Sell = "sell"
)

// Statuses carried in DealContext.Status.
const (
	StatusApproved = "approved" // profile approved the order (ORDER_APPROVED)
	StatusRejected = "rejected" // profile rejected it (ORDER_REJECTED), or deals marked the deal rejected
	StatusExecuted = "executed" // deals executed the deal (DEAL_UPDATED)
	StatusFailed   = "failed"   // the saga failed and deals marked the deal failed (DEAL_FAILED); Reason says why
	// StatusCancelled: the client cancelled the deal before it was settled
	// and deals marked it cancelled (DEAL_FAILED of the cancelled saga).
	StatusCancelled = "cancelled"
)

// Limits of decimal inputs.
const (
	MaxIntegerDigits  = 18
	MaxFractionDigits = 8
)

var (
	tickerRE   = regexp.MustCompile(`^[A-Z][A-Z0-9.\-]{0,11}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
)

// DealContext is the saga context's deal_context.
type DealContext struct {
	DealID      string          `json:"deal_id"`
	UserID      string          `json:"user_id"`
	PortfolioID string          `json:"portfolio_id"`
	Side        string          `json:"side"`
	Instrument  string          `json:"instrument"`
	Quantity    decimal.Decimal `json:"quantity"`
	Price       decimal.Decimal `json:"price"`
	// Amount is CashAmount(Side, Quantity, Price): quantity*price rounded
	// to AmountPlaces places against the portfolio.
	Amount   decimal.Decimal `json:"amount"`
	Currency string          `json:"currency"`
	// Status is set by profile (approved/rejected) and then deals
	// (executed/rejected, or failed when the saga failed); absent on
	// REGISTER.
	Status string `json:"status,omitempty"`
	// Reason explains a rejection or a failure.
	Reason string `json:"reason,omitempty"`
}

// Envelope is the payload of the saga's commands and events: the saga
// context, of which only deal_context and order_reversal matter here.
// Other keys of the saga context are ignored on decoding.
type Envelope struct {
	DealContext *DealContext `json:"deal_context"`
	// OrderReversal is what profile's REVERT_ORDER did (the payload of
	// ORDER_REVERTED); absent until the saga failed and profile answered.
	OrderReversal *Reversal `json:"order_reversal,omitempty"`
}

// Reversal is the saga context's order_reversal: profile's answer to
// REVERT_ORDER, the compensation of APPROVE_ORDER.
type Reversal struct {
	DealID string `json:"deal_id"`
	// Reverted is true when the approval's effect (cash, position) was
	// undone; false when there was none to undo (the order was rejected,
	// or never decided and now never will be).
	Reverted bool `json:"reverted"`
	// Reason says, for people, what was undone or why nothing was.
	Reason string `json:"reason"`
}

// ReversalEnvelope is the payload of ORDER_REVERTED: order_reversal only,
// so that the saga-machine's merge leaves deal_context as it was.
type ReversalEnvelope struct {
	OrderReversal Reversal `json:"order_reversal"`
}

// Wrap returns the event payload carrying dc.
func Wrap(dc DealContext) Envelope { return Envelope{DealContext: &dc} }

// FromCommand returns the command's deal_context after checking it is
// complete and consistent; the error says which field is wrong.
func FromCommand(e Envelope) (DealContext, error) {
	if e.DealContext == nil {
		return DealContext{}, errors.New("the payload has no deal_context")
	}
	dc := *e.DealContext
	if err := dc.Validate(); err != nil {
		return DealContext{}, fmt.Errorf("deal_context of deal %q: %w", dc.DealID, err)
	}
	return dc, nil
}

// Validate checks every field of a deal_context received from the bus:
// ids are UUIDs (any case: profile looks portfolios up by the canonical
// form), quantity and price positive, amount = CashAmount of side,
// quantity and price and below MaxAmount.
func (dc DealContext) Validate() error {
	var errs []error
	if _, err := uuid.Parse(dc.DealID); err != nil {
		errs = append(errs, fmt.Errorf("deal_id %q is not a UUID", dc.DealID))
	}
	if strings.TrimSpace(dc.UserID) == "" {
		errs = append(errs, errors.New("user_id is empty"))
	}
	if _, err := uuid.Parse(dc.PortfolioID); err != nil {
		errs = append(errs, fmt.Errorf("portfolio_id %q is not a UUID", dc.PortfolioID))
	}
	if err := CheckSide(dc.Side); err != nil {
		errs = append(errs, err)
	}
	if err := CheckTicker(dc.Instrument); err != nil {
		errs = append(errs, err)
	}
	if err := CheckCurrency(dc.Currency); err != nil {
		errs = append(errs, err)
	}
	if !dc.Quantity.IsPositive() {
		errs = append(errs, fmt.Errorf("quantity %s is not positive", dc.Quantity))
	}
	if !dc.Price.IsPositive() {
		errs = append(errs, fmt.Errorf("price %s is not positive", dc.Price))
	}
	if dc.Quantity.IsPositive() && dc.Price.IsPositive() && CheckSide(dc.Side) == nil {
		if want := CashAmount(dc.Side, dc.Quantity, dc.Price); !dc.Amount.Equal(want) {
			errs = append(errs, fmt.Errorf("amount %s is not quantity*price rounded to %d places against the portfolio (%s)", dc.Amount, AmountPlaces, want))
		} else if err := CheckAmount("amount", dc.Amount); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckSide checks a deal side.
func CheckSide(s string) error {
	if s != Buy && s != Sell {
		return fmt.Errorf("side %q must be %q or %q", s, Buy, Sell)
	}
	return nil
}

// CheckTicker checks an instrument ticker: 1 to 12 characters, an
// upper-case letter first, then upper-case letters, digits, '.' or '-'.
func CheckTicker(s string) error {
	if !tickerRE.MatchString(s) {
		return fmt.Errorf("instrument %q must be a ticker: 1 to 12 characters, an upper-case letter first, then upper-case letters, digits, '.' or '-' (e.g. AAPL, BRK.B)", s)
	}
	return nil
}

// CheckCurrency checks an ISO 4217 alphabetic currency code.
func CheckCurrency(s string) error {
	if !currencyRE.MatchString(s) {
		return fmt.Errorf("currency %q must be an ISO 4217 code of 3 upper-case letters (e.g. USD)", s)
	}
	return nil
}

// ParseDecimal parses a decimal string of at most MaxIntegerDigits integer
// and MaxFractionDigits fraction digits (plain notation: digits with an
// optional '.' part, optional leading '-'; no exponent, no spaces).
func ParseDecimal(s string) (decimal.Decimal, error) {
	body := strings.TrimPrefix(s, "-")
	intPart, frac, hasDot := strings.Cut(body, ".")
	if intPart == "" || (hasDot && frac == "") || !digits(intPart) || !digits(frac) {
		return decimal.Decimal{}, fmt.Errorf("%q is not a decimal number such as \"10\" or \"150.25\"", s)
	}
	if len(strings.TrimLeft(intPart, "0")) > MaxIntegerDigits {
		return decimal.Decimal{}, fmt.Errorf("%q has more than %d integer digits", s, MaxIntegerDigits)
	}
	if len(frac) > MaxFractionDigits {
		return decimal.Decimal{}, fmt.Errorf("%q has more than %d decimal places", s, MaxFractionDigits)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("%q is not a decimal number: %w", s, err)
	}
	return d, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Money formats an amount for people: at least two decimal places, more
// when the amount has them (never rounded), e.g. 1500 → "1500.00",
// 0.125 → "0.125".
func Money(d decimal.Decimal) string {
	if d.Equal(d.Truncate(2)) {
		return d.StringFixed(2)
	}
	return d.String()
}

// Describe is the human phrase of a deal, e.g. "buy of 10 AAPL at 150.00 USD".
func (dc DealContext) Describe() string {
	return fmt.Sprintf("%s of %s %s at %s %s", dc.Side, dc.Quantity, dc.Instrument, Money(dc.Price), dc.Currency)
}
