// Package dealctx is the deal_context document of the MANUAL_CREATE_ORDER
// saga as the participant services read and write it: deals creates it
// (REGISTER), profile adds its decision (ORDER_APPROVED / ORDER_REJECTED),
// deals adds the deal's final status (DEAL_UPDATED, or DEAL_FAILED when the
// saga failed) and notification reads it (NOTIFY). The saga-machine merges
// top-level keys of every event payload into the saga context, so each reply
// carries the whole deal_context; profile's ORDER_REVERTED carries only
// order_reversal (Reversal), leaving deal_context as it was.
//
// Money and quantities are shopspring/decimal values, encoded in JSON as
// strings, never floats.
package dealctx
