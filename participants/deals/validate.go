package deals

import (
	"strconv"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// parseNewDeal validates a create request and returns its deal_context
// (without deal and user ids): portfolio_id in canonical lower case, amount
// = dealctx.CashAmount (quantity*price rounded to 8 places against the
// portfolio), below dealctx.MaxAmount. Every invalid field is reported at
// once.
func parseNewDeal(in NewDeal) (dealctx.DealContext, error) {
	var errs []service.FieldError
	bad := func(field, msg string) { errs = append(errs, service.FieldError{Field: field, Message: msg}) }
	dc := dealctx.DealContext{Side: in.Side, Instrument: in.Instrument, Currency: in.Currency}
	if in.PortfolioID == "" {
		bad("portfolio_id", "is required (the id of one of your portfolios)")
	} else if id, err := dealctx.CanonicalID(in.PortfolioID); err != nil {
		bad("portfolio_id", "must be a portfolio id (a UUID), got "+quote(in.PortfolioID))
	} else {
		dc.PortfolioID = id // stored and sent in canonical lower case
	}
	if in.Side == "" {
		bad("side", `is required: "buy" or "sell"`)
	} else if err := dealctx.CheckSide(in.Side); err != nil {
		bad("side", err.Error())
	}
	if in.Instrument == "" {
		bad("instrument", "is required (a ticker such as AAPL)")
	} else if err := dealctx.CheckTicker(in.Instrument); err != nil {
		bad("instrument", err.Error())
	}
	if in.Currency == "" {
		bad("currency", "is required (ISO 4217, e.g. USD)")
	} else if err := dealctx.CheckCurrency(in.Currency); err != nil {
		bad("currency", err.Error())
	}
	for _, f := range []struct {
		name, raw string
		dst       *decimal.Decimal
	}{{"quantity", in.Quantity, &dc.Quantity}, {"price", in.Price, &dc.Price}} {
		if f.raw == "" {
			bad(f.name, `is required: a positive decimal string such as "10" or "150.25"`)
			continue
		}
		v, err := dealctx.ParseDecimal(f.raw)
		switch {
		case err != nil:
			bad(f.name, err.Error())
		case !v.IsPositive():
			bad(f.name, "must be positive, got "+quote(f.raw))
		default:
			*f.dst = v
		}
	}
	if len(errs) == 0 {
		dc.Amount = dealctx.CashAmount(dc.Side, dc.Quantity, dc.Price)
		if err := dealctx.CheckAmount("quantity*price", dc.Amount); err != nil {
			bad("quantity", err.Error())
		}
	}
	if len(errs) > 0 {
		return dealctx.DealContext{}, service.Invalid(errs...)
	}
	return dc, nil
}

func quote(s string) string { return strconv.Quote(s) }
