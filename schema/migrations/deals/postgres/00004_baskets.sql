-- A basket is a client's group of 1 to 20 deals in one portfolio and one
-- currency, executed all or nothing by the BASKET_ORDER saga (POST /baskets).
-- Each line of a basket is a deal row like any other; its basket_id names
-- the basket, and its saga_id is the basket's saga. Deals made by POST /deals
-- have no basket (basket_id NULL). A basket's status is derived from its
-- deals; the basket row keeps who owns it, where, and its Idempotency-Key.

-- +goose Up
CREATE TABLE baskets (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    portfolio_id    TEXT NOT NULL,
    currency        TEXT NOT NULL,
    saga_id         TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
-- NULL keys are distinct: baskets created without Idempotency-Key never clash.
CREATE UNIQUE INDEX baskets_user_idempotency ON baskets (user_id, idempotency_key);
CREATE INDEX baskets_user_seq ON baskets (user_id, seq DESC);
ALTER TABLE deals ADD COLUMN basket_id TEXT REFERENCES baskets (id);
CREATE INDEX deals_basket ON deals (basket_id);

-- +goose Down
-- Drops the baskets; their deals stay, as deals without a basket.
DROP INDEX deals_basket;
ALTER TABLE deals DROP COLUMN basket_id;
DROP TABLE baskets;
