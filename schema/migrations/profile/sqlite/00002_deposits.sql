-- Funding is an operation of its own: a funding operator (role
-- funding-operator) deposits cash into a portfolio with
-- POST /portfolios/{id}/deposits. Each deposit is recorded here in the same
-- transaction as the cash change: who, when, how much, why and the cash it
-- left. Rows are never updated or deleted (no cascade from portfolios).
-- Decimals are TEXT (exact), as in 00001.

-- +goose Up
CREATE TABLE deposits (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    portfolio_id    TEXT NOT NULL REFERENCES portfolios (id),
    amount          TEXT NOT NULL,
    currency        TEXT NOT NULL,
    reason          TEXT NOT NULL CHECK (reason <> ''),
    cash_after      TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    -- Idempotency-Key of the request, scoped to the operator who sent it,
    -- and the fingerprint of the request it was used for.
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    UNIQUE (created_by, idempotency_key)
);
CREATE INDEX deposits_portfolio ON deposits (portfolio_id, seq);

-- +goose Down
DROP TABLE deposits;
