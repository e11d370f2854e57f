package notification

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
)

// DTOKey is the payload key of the notificationDTO: a NOTIFY of
// MANUAL_CREATE_ORDER v3 is {"notificationDTO": {...}} and nothing else.
const DTOKey = "notificationDTO"

// Limits of the text fields of a DTO, in bytes.
const (
	// MaxReasonBytes bounds DTO.Reason, the only free text of a DTO.
	MaxReasonBytes = 1000
	// MaxUserIDBytes bounds DTO.UserID.
	MaxUserIDBytes = 256
	// MaxFieldBytes bounds every other string field (ids, decimals,
	// codes); each is also checked for its own format.
	MaxFieldBytes = 64
)

// DTO is the seed's notificationDTO: what NOTIFY carries in
// MANUAL_CREATE_ORDER v3, built by the saga's payload mapping from the
// context instead of the whole context. Every field is required (Status and
// Reason may be empty); amounts are decimal strings, as in deal_context.
type DTO struct {
	// UserID is the deal's owner, who is told.
	UserID string `json:"user_id"`
	// DealID and PortfolioID are the deal's ids (UUIDs).
	DealID      string `json:"deal_id"`
	PortfolioID string `json:"portfolio_id"`
	// Status is the deal's status when the saga ended: executed, rejected,
	// failed, cancelled, or approved or "" when an operator resolved deals'
	// FAIL_DEAL by hand (told as a failure).
	Status string `json:"status"`
	// Reason says why a deal was rejected, failed or cancelled; may be "".
	Reason string `json:"reason"`
	// Side, Instrument, Quantity, Price, Amount and Currency describe the
	// deal, as in deal_context (Amount is quantity*price rounded).
	Side       string `json:"side"`
	Instrument string `json:"instrument"`
	Quantity   string `json:"quantity"`
	Price      string `json:"price"`
	Amount     string `json:"amount"`
	Currency   string `json:"currency"`
	// Reverted is true when profile gave the cash or the instruments of
	// this deal back (REVERT_ORDER, the compensation of APPROVE_ORDER).
	Reverted bool `json:"reverted"`
}

// dtoFields are the JSON names of DTO's fields, all required.
var dtoFields = []string{"user_id", "deal_id", "portfolio_id", "status", "reason", "side", "instrument",
	"quantity", "price", "amount", "currency", "reverted"}

// notice is what a NOTIFY says, whichever shape it came in: a deal (dc,
// rev) or a basket.
type notice struct {
	dc     dealctx.DealContext
	rev    *dealctx.Reversal
	basket *BasketDTO // set for a basketNotificationDTO (checked, ids lower case); dc and rev are then empty
	shape  string     // "notificationDTO", "deal_context" (the legacy whole context) or "basketNotificationDTO"
}

// parseNotify tells the three shapes of a NOTIFY payload apart and checks
// the one it is: {"notificationDTO": {...}} (v3, nothing beside it), the
// whole saga context with a deal_context (v1 and v2, other keys ignored),
// or {"basketNotificationDTO": {...}} (BASKET_ORDER, nothing beside it).
// Anything else, and a payload with more than one, is an error saying why.
func parseNotify(payload json.RawMessage) (notice, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil || top == nil {
		return notice{}, fmt.Errorf("the payload is not a JSON object: it must be {%q: {...}}, {%q: {...}} or a saga context with deal_context", DTOKey, BasketDTOKey)
	}
	raw, isDTO := top[DTOKey]
	_, isContext := top["deal_context"]
	braw, isBasket := top[BasketDTOKey]
	switch {
	case isBasket && (isDTO || isContext):
		return notice{}, fmt.Errorf("the payload has %s beside notificationDTO or deal_context: it must be one of them", BasketDTOKey)
	case isBasket:
		if len(top) != 1 {
			return notice{}, fmt.Errorf("the payload has keys beside %s (%s): a basketNotificationDTO payload has no other key",
				BasketDTOKey, strings.Join(otherKeys(top, BasketDTOKey), ", "))
		}
		b, err := decodeBasketDTO(braw)
		if err != nil {
			return notice{}, fmt.Errorf("%s: %w", BasketDTOKey, err)
		}
		return notice{basket: &b, shape: BasketDTOKey}, nil
	case isDTO && isContext:
		return notice{}, fmt.Errorf("the payload has both %s and deal_context: it must be one or the other", DTOKey)
	case isDTO:
		if len(top) != 1 {
			return notice{}, fmt.Errorf("the payload has keys beside %s (%s): a notificationDTO payload has no other key", DTOKey, strings.Join(otherKeys(top, DTOKey), ", "))
		}
		dto, err := decodeDTO(raw)
		if err != nil {
			return notice{}, fmt.Errorf("%s: %w", DTOKey, err)
		}
		dc, err := dto.dealContext()
		if err != nil {
			return notice{}, fmt.Errorf("%s of deal %q: %w", DTOKey, dto.DealID, err)
		}
		return notice{dc: dc, rev: &dealctx.Reversal{DealID: dc.DealID, Reverted: dto.Reverted}, shape: DTOKey}, nil
	case isContext:
		var e dealctx.Envelope
		if err := json.Unmarshal(payload, &e); err != nil {
			return notice{}, fmt.Errorf("decode the saga context: %w", err)
		}
		dc, err := dealctx.FromCommand(e)
		if err != nil {
			return notice{}, err
		}
		return notice{dc: dc, rev: e.OrderReversal, shape: "deal_context"}, nil
	}
	return notice{}, fmt.Errorf("the payload has neither %s nor deal_context nor %s (keys: %s)", DTOKey, BasketDTOKey, strings.Join(otherKeys(top, DTOKey), ", "))
}

// otherKeys lists top's keys but key, sorted, at most 10 of them, each cut to 40 bytes.
func otherKeys(top map[string]json.RawMessage, key string) []string {
	var keys []string
	for k := range top {
		if k != key {
			keys = append(keys, fmt.Sprintf("%q", truncate(k, 40)))
		}
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return []string{"none"}
	}
	if len(keys) > 10 {
		keys = append(keys[:10], fmt.Sprintf("and %d more", len(keys)-10))
	}
	return keys
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// decodeDTO decodes a notificationDTO strictly: an object with every field
// of DTO, of its type, and no other; strings within their limits.
func decodeDTO(raw json.RawMessage) (DTO, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return DTO{}, errors.New("is not a JSON object")
	}
	var missing []string
	for _, f := range dtoFields {
		if _, ok := fields[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return DTO{}, fmt.Errorf("missing fields: %s", strings.Join(missing, ", "))
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	var dto DTO
	if err := d.Decode(&dto); err != nil {
		return DTO{}, fmt.Errorf("decode: %w", err)
	}
	var errs []error
	check := func(name, v string, max int) {
		if len(v) > max {
			errs = append(errs, fmt.Errorf("%s has %d bytes, more than %d", name, len(v), max))
		} else if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			errs = append(errs, fmt.Errorf("%s has control characters or invalid UTF-8", name))
		}
	}
	check("user_id", dto.UserID, MaxUserIDBytes)
	check("reason", dto.Reason, MaxReasonBytes)
	for _, f := range []struct{ name, v string }{{"deal_id", dto.DealID}, {"portfolio_id", dto.PortfolioID},
		{"status", dto.Status}, {"side", dto.Side}, {"instrument", dto.Instrument}, {"quantity", dto.Quantity},
		{"price", dto.Price}, {"amount", dto.Amount}, {"currency", dto.Currency}} {
		check(f.name, f.v, MaxFieldBytes)
	}
	if err := errors.Join(errs...); err != nil {
		return DTO{}, err
	}
	return dto, nil
}

// dealContext is the deal the DTO describes, checked as every
// deal_context is (dealctx.DealContext.Validate).
func (dto DTO) dealContext() (dealctx.DealContext, error) {
	dc := dealctx.DealContext{DealID: dto.DealID, UserID: dto.UserID, PortfolioID: dto.PortfolioID, Side: dto.Side,
		Instrument: dto.Instrument, Currency: dto.Currency, Status: dto.Status, Reason: dto.Reason}
	var errs []error
	for _, f := range []struct {
		name, v string
		dst     *decimal.Decimal
	}{{"quantity", dto.Quantity, &dc.Quantity}, {"price", dto.Price, &dc.Price}, {"amount", dto.Amount, &dc.Amount}} {
		d, err := dealctx.ParseDecimal(f.v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
			continue
		}
		*f.dst = d
	}
	if err := errors.Join(errs...); err != nil {
		return dealctx.DealContext{}, err
	}
	if err := dc.Validate(); err != nil {
		return dealctx.DealContext{}, err
	}
	return dc, nil
}
