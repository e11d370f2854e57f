-- Reverting an approved order (REVERT_ORDER, the compensation of
-- APPROVE_ORDER in MANUAL_CREATE_ORDER v2): a decision now records what it
-- was taken on, so that a reversal undoes exactly what the approval did
-- whatever the saga context says by then; each reversal is recorded once per
-- deal, in the same transaction as the cash, position and snapshot it moved.

-- +goose Up
-- The saga that asked, and the deal as decided: side, instrument, quantity
-- moved and cash moved (dealctx.CashAmount). Empty / NULL on decisions taken
-- before this migration (a reversal then reads them from the saga context).
ALTER TABLE order_decisions ADD COLUMN saga_id TEXT NOT NULL DEFAULT '';
ALTER TABLE order_decisions ADD COLUMN side TEXT NOT NULL DEFAULT '';
ALTER TABLE order_decisions ADD COLUMN instrument TEXT NOT NULL DEFAULT '';
ALTER TABLE order_decisions ADD COLUMN quantity TEXT;
ALTER TABLE order_decisions ADD COLUMN amount TEXT;

-- One row per deal whose order was reverted (REVERT_ORDER). outcome
-- 'reverted': the approval's effect was undone (cash_delta was added to the
-- cash, quantity_delta to the position of instrument); 'nothing': there was
-- nothing to undo (the order was rejected, or not decided yet: an
-- APPROVE_ORDER of the deal arriving later is then rejected). A second
-- REVERT_ORDER of the deal answers this row and changes nothing. Rows are
-- never updated or deleted. Decimals are TEXT (exact), as in 00001.
CREATE TABLE order_reversals (
    deal_id        TEXT PRIMARY KEY,
    portfolio_id   TEXT NOT NULL,
    saga_id        TEXT NOT NULL,
    outcome        TEXT NOT NULL CHECK (outcome IN ('reverted', 'nothing')),
    instrument     TEXT NOT NULL DEFAULT '',
    cash_delta     TEXT NOT NULL DEFAULT '0',
    quantity_delta TEXT NOT NULL DEFAULT '0',
    reason         TEXT NOT NULL,
    reverted_at    TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE order_reversals;
ALTER TABLE order_decisions DROP COLUMN amount;
ALTER TABLE order_decisions DROP COLUMN quantity;
ALTER TABLE order_decisions DROP COLUMN instrument;
ALTER TABLE order_decisions DROP COLUMN side;
ALTER TABLE order_decisions DROP COLUMN saga_id;
