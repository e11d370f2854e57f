-- A client may cancel a deal that is not settled yet (POST /deals/{id}/cancel,
-- MANUAL_CREATE_ORDER v3): cancel_requested_at records when deals accepted
-- the request (and sent CANCEL_REQUESTED to the saga); FAIL_DEAL of the
-- cancelled saga then marks the deal 'cancelled', final like the others.
-- SQLite cannot change a CHECK constraint: the table is rebuilt with the
-- same columns, rows (seq kept, so cursors stay valid) and indexes.

-- +goose Up
CREATE TABLE deals_v3 (
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
    status          TEXT NOT NULL CHECK (status IN ('draft', 'executed', 'rejected', 'failed', 'cancelled')),
    reason          TEXT NOT NULL DEFAULT '',
    saga_id         TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    cancel_requested_at TIMESTAMP
);
INSERT INTO deals_v3 (seq, id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
    status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at)
SELECT seq, id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
    status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at FROM deals;
DROP TABLE deals;
ALTER TABLE deals_v3 RENAME TO deals;
CREATE UNIQUE INDEX deals_user_idempotency ON deals (user_id, idempotency_key);
CREATE INDEX deals_user_seq ON deals (user_id, seq DESC);

-- +goose Down
-- Fails while a cancelled deal exists: such a deal has no status in the old schema.
CREATE TABLE deals_v2b (
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
    status          TEXT NOT NULL CHECK (status IN ('draft', 'executed', 'rejected', 'failed')),
    reason          TEXT NOT NULL DEFAULT '',
    saga_id         TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
INSERT INTO deals_v2b (seq, id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
    status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at)
SELECT seq, id, user_id, portfolio_id, side, instrument, quantity, price, amount, currency,
    status, reason, saga_id, idempotency_key, request_hash, created_at, updated_at FROM deals;
DROP TABLE deals;
ALTER TABLE deals_v2b RENAME TO deals;
CREATE UNIQUE INDEX deals_user_idempotency ON deals (user_id, idempotency_key);
CREATE INDEX deals_user_seq ON deals (user_id, seq DESC);

