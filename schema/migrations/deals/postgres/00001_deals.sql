-- The deals service's business tables (package participants/deals), tracked
-- by goose in deals_goose_db_version. The SDK's inbox/outbox tables live in
-- the same database (sdk_goose_db_version).

-- +goose Up
-- One row per deal (order) a client registered. seq orders lists (newest
-- first) and is the pagination cursor; id is the public identifier.
CREATE TABLE deals (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    portfolio_id    TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    instrument      TEXT NOT NULL,
    quantity        NUMERIC NOT NULL CHECK (quantity > 0),
    price           NUMERIC NOT NULL CHECK (price > 0),
    amount          NUMERIC NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'executed', 'rejected')),
    reason          TEXT NOT NULL DEFAULT '',
    saga_id         TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
-- NULL keys are distinct: deals created without Idempotency-Key never clash.
CREATE UNIQUE INDEX deals_user_idempotency ON deals (user_id, idempotency_key);
CREATE INDEX deals_user_seq ON deals (user_id, seq DESC);

-- +goose Down
DROP TABLE deals;
