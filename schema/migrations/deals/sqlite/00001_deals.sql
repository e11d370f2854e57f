-- The deals service's business tables (package participants/deals), tracked
-- by goose in deals_goose_db_version. The SDK's inbox/outbox tables live in
-- the same database (sdk_goose_db_version).

-- +goose Up
-- One row per deal (order) a client registered. Decimals are TEXT (exact;
-- SQLite NUMERIC would turn them into floats). seq orders lists (newest
-- first) and is the pagination cursor; id is the public identifier.
CREATE TABLE deals (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    portfolio_id    TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    instrument      TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    price           TEXT NOT NULL,
    amount          TEXT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'executed', 'rejected')),
    reason          TEXT NOT NULL DEFAULT '',
    saga_id         TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
-- NULL keys are distinct: deals created without Idempotency-Key never clash.
CREATE UNIQUE INDEX deals_user_idempotency ON deals (user_id, idempotency_key);
CREATE INDEX deals_user_seq ON deals (user_id, seq DESC);

-- +goose Down
DROP TABLE deals;
