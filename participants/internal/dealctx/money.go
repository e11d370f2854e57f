package dealctx

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// AmountPlaces is the number of decimal places of every amount of money the
// services store or send (cash, deal amounts, deposits): the same as the
// most an input may have (MaxFractionDigits).
const AmountPlaces = MaxFractionDigits

// MaxAmount is the exclusive upper bound of an amount and of a cash balance:
// 10^18, i.e. at most MaxIntegerDigits integer digits, the most an input
// may have. A deal whose amount, or a deposit whose resulting cash, would
// reach it is refused.
var MaxAmount = decimal.New(1, MaxIntegerDigits)

// CashAmount is the cash a deal of quantity at price moves, under the one
// rounding rule of the services: quantity*price is rounded to AmountPlaces
// decimal places AGAINST the portfolio, i.e. a buy's cost is rounded up and
// a sell's proceeds are rounded down. No trade can then move less cash than
// its exact value out of a portfolio or more into it: repeating tiny trades
// cannot create money (a buy of 0.00000001 at 0.00000001 costs 0.00000001,
// not 0.0000000000000001, and not 0 as half-even rounding would make it).
// Amounts whose product has at most AmountPlaces places are not changed.
// side is Buy or Sell; quantity and price are positive.
func CashAmount(side string, quantity, price decimal.Decimal) decimal.Decimal {
	exact := quantity.Mul(price)
	if side == Buy {
		return exact.RoundCeil(AmountPlaces)
	}
	return exact.RoundFloor(AmountPlaces)
}

// ParseAmount parses a positive decimal string as ParseDecimal does (at
// most MaxIntegerDigits integer and MaxFractionDigits fraction digits, so
// never more than AmountPlaces places: an over-precise input is refused,
// never rounded). Zero and negative values are refused.
func ParseAmount(s string) (decimal.Decimal, error) {
	d, err := ParseDecimal(s)
	if err != nil {
		return decimal.Decimal{}, err
	}
	if !d.IsPositive() {
		return decimal.Decimal{}, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}

// CheckAmount checks that an amount of money is below MaxAmount and has at
// most AmountPlaces decimal places.
func CheckAmount(what string, d decimal.Decimal) error {
	if d.Abs().Cmp(MaxAmount) >= 0 {
		return fmt.Errorf("%s %s is too large: amounts must stay below 10^%d", what, d, MaxIntegerDigits)
	}
	if !d.Equal(d.Truncate(AmountPlaces)) {
		return fmt.Errorf("%s %s has more than %d decimal places", what, d, AmountPlaces)
	}
	return nil
}

// CanonicalID returns the canonical form of a UUID written in the
// standard 36-character form, in any case: lower-case hex with hyphens.
// Ids are normalised with it where they enter (HTTP paths and bodies), so
// that an id sent in upper case finds the object stored in lower case.
func CanonicalID(s string) (string, error) {
	if len(s) != 36 {
		return "", fmt.Errorf("%q is not a UUID (36 characters such as 6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d)", s)
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a UUID (36 characters such as 6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d)", s)
	}
	return u.String(), nil
}

// CanonicalOrSame is CanonicalID, or s unchanged when it is not a UUID (a
// path id that then finds nothing).
func CanonicalOrSame(s string) string {
	if id, err := CanonicalID(s); err == nil {
		return id
	}
	return s
}
