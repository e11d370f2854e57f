// Package profile is the profile participant service: client profiles,
// their investment portfolios (cash and positions) and dated snapshots of
// each portfolio, and the balance checks of the MANUAL_CREATE_ORDER and
// BASKET_ORDER sagas.
//
// HTTP (schema/openapi/profile.yaml), every route but the probes behind the
// OIDC bearer-token middleware and scoped to the token's subject (another
// user's portfolio is 404), ids accepted in any case:
//
//	GET  /login                              the caller's profile, created from the token claims on first call
//	GET  /portfolios, POST /portfolios       list / create (cash starts at 0)
//	GET  /portfolios/{id}, PUT /portfolios/{id}   read / rename (cash and currency cannot change here)
//	POST /portfolios/{id}/deposits           fund a portfolio: role funding-operator, never one's own; Idempotency-Key required
//	GET  /portfolios/{id}/deposits           the audit trail of deposits: the owner and funding operators
//	GET  /portfolios/{id}/snapshots          dated snapshots (one per day, the position at the end of it)
//	GET  /portfolios/{id}/snapshots/{date}   the position as of date: the latest snapshot on or before it
//	GET  /healthz, /readyz
//
// Cash changes only by deposits (Deposit: the cash, today's snapshot and
// an audit row in one transaction) and by approved deals. Amounts keep at
// most 8 decimal places: a deal moves dealctx.CashAmount, quantity*price
// rounded to 8 places against the portfolio (a buy's cost up, a sell's
// proceeds down).
//
// Command (PROFILE_TOPIC): APPROVE_ORDER checks the deal against the
// portfolio (it must be the deal user's, in the deal's currency; a buy needs
// cash >= its amount, a sell needs holdings >= quantity). On approval it
// moves cash and positions, upserts today's snapshot and replies
// ORDER_APPROVED, all in the command's transaction; otherwise it replies
// ORDER_REJECTED with a precise reason. Both replies carry deal_context with
// status ("approved" / "rejected") and reason, for deals to record. Each
// deal is decided once: its decision (with the saga, side, instrument,
// quantity and amount it moved) is stored and repeated if the command comes
// again.
//
// REVERT_ORDER, the compensation of APPROVE_ORDER (MANUAL_CREATE_ORDER v2),
// undoes an approval once: the cash and the position move back and today's
// snapshot is upserted, in one transaction with the reversal's record
// (table order_reversals); a rejected or undecided order moves nothing, and
// an APPROVE_ORDER of a reverted deal is rejected afterwards. It answers
// ORDER_REVERTED with order_reversal (reverted or not, and why) and no
// deal_context. A reversal that would take a position or the cash below zero
// (sold or spent since) is refused as a permanent error for an operator,
// and so is one whose payload names another deal than the order it undoes:
// APPROVE_ORDER stores its command id with the decision, and the command
// REVERT_ORDER compensates must be the one that decided the payload's deal
// (decisions stored before that are trusted); see docs/services.md.
//
// CHECK_BASKET (the BASKET_ORDER saga, docs/basket-order.md) checks a
// client's basket of 1 to MaxBasketLines deals in one portfolio as a whole
// and moves nothing: it reads the portfolio and its positions once and
// answers BASKET_CHECKED with basket_check {sufficient, reason}. Sufficient
// only if the portfolio is the basket user's, in its currency, its cash
// covers the sum of the buys' costs (the sells' proceeds are not counted:
// the lines are applied in parallel, in any order) and, per instrument, the
// holdings cover the sum of its sells; otherwise the reason names every
// shortfall as APPROVE_ORDER would ("insufficient cash: need 1600.00 USD,
// have 1500.00 USD"). A malformed basket (Basket.Validate) is a permanent
// error. Each line is then applied and, if the basket fails, reverted by
// the ordinary APPROVE_ORDER and REVERT_ORDER, which are keyed by deal: a
// saga may decide and revert several deals of one portfolio.
package profile
