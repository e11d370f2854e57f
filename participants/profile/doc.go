// Package profile is the profile participant service: client profiles,
// their investment portfolios (cash and positions) and dated snapshots of
// each portfolio, and the balance check of the MANUAL_CREATE_ORDER saga.
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
// (sold or spent since) is refused as a permanent error for an operator;
// see docs/services.md.
package profile
