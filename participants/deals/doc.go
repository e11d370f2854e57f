// Package deals is the deals participant service: it keeps clients' deals
// (orders) and starts the MANUAL_CREATE_ORDER saga for each one, and
// baskets of deals, with the BASKET_ORDER saga for each basket.
//
// HTTP (schema/openapi/deals.yaml), every route but the probes behind the
// OIDC bearer-token middleware and scoped to the token's subject:
//
//	POST /deals        validate, store a draft deal and, in the same
//	                   transaction, write the saga's REGISTER event to the
//	                   outbox (sdk.Participant.StartSaga); Idempotency-Key
//	                   supported
//	GET  /deals        the caller's deals, newest first (?status=, ?limit=, ?cursor=)
//	GET  /deals/{id}   one deal (404 when it is another user's)
//	POST /deals/{id}/cancel
//	                   the owner cancels a draft deal: cancel_requested_at
//	                   and, in the same transaction, CANCEL_REQUESTED to the
//	                   saga (sdk.Participant.EmitEvent); 202, again 202
//	                   replayed; executed, rejected or failed: 409 (Cancel);
//	                   a deal of a basket: 409 naming the basket
//	POST /baskets      validate 1 to MaxBasketLines lines (each as POST /deals
//	                   validates a deal, all in one currency), store the basket
//	                   and one draft deal per line (basket_id, the basket's
//	                   saga id) and, in the same transaction, BASKET_REGISTERED
//	                   to the outbox (CreateBasket); Idempotency-Key supported
//	GET  /baskets      the caller's baskets with their deals, newest first (?limit=, ?cursor=)
//	GET  /baskets/{id} one basket (404 when it is another user's); its status
//	                   is derived from its deals
//	POST /baskets/{id}/cancel
//	                   the owner cancels a basket whose deals are all drafts:
//	                   cancel_requested_at on each and, in the same
//	                   transaction, CANCEL_REQUESTED to the basket's saga
//	                   (BASKET_ORDER v4); 202, again 202 replayed; executed,
//	                   rejected, failed or cancelled: 409 (CancelBasket)
//	GET  /healthz, /readyz
//
// The portfolio id of a new deal is accepted in any case and stored in
// canonical lower case; the deal's amount is dealctx.CashAmount, quantity *
// price rounded to 8 decimal places against the portfolio (a buy's cost
// up, a sell's proceeds down), below 10^18. Router refuses cross-origin
// state-changing requests and bodies that are not JSON (service.Guard).
//
// Commands (DEALS_TOPIC): APPROVE_DEAL marks the deal executed, REJECT_DEAL
// marks it rejected with the reason profile put in deal_context; both reply
// DEAL_UPDATED with the deal's deal_context and its status (both are batch
// handlers: a run of them fetched together settles its drafts in one
// UPDATE, settle_batch.go). FAIL_DEAL, the
// compensation of REGISTER, APPROVE_DEAL and REJECT_DEAL (MANUAL_CREATE_ORDER
// v2), marks a draft, executed or rejected deal failed with the reason the
// saga context gives (a failed one stays as it is) and replies DEAL_FAILED;
// cancelled instead when the context carries the cancellation deals
// accepted (MANUAL_CREATE_ORDER v3's CANCELLED).
// A command that contradicts the deal's state (REJECT_DEAL after execution,
// APPROVE_DEAL after rejection, either after failure) is a permanent error:
// the SDK parks it as a dead letter with the reason, and the deal does not
// move.
//
// Basket commands (BASKET_ORDER): EXECUTE_BASKET, REJECT_BASKET and their
// (and BASKET_REGISTERED's) compensation FAIL_BASKET move every deal of the
// basket in one statement and reply BASKET_EXECUTED, BASKET_REJECTED,
// BASKET_FAILED with {"basket_result": {status, reason}}. Each first checks
// that the basket exists and belongs to the command's saga, user, portfolio
// and currency and that the command's lines are exactly its deals, else a
// permanent error: nothing moves. Again, they answer the same. FAIL_BASKET
// marks the deals cancelled instead of failed when the context carries the
// cancellation of the basket deals accepted (BASKET_ORDER v4's CANCELLED),
// and then answers status cancelled. A deal of a
// basket is moved only by these (APPROVE_DEAL, REJECT_DEAL and FAIL_DEAL of
// one are permanent errors).
package deals
