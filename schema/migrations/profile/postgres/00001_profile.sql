-- The profile service's business tables (package participants/profile),
-- tracked by goose in profile_goose_db_version. The SDK's inbox/outbox tables
-- live in the same database (sdk_goose_db_version).

-- +goose Up
-- One row per user, created on the first GET /login from the token claims.
CREATE TABLE profiles (
    user_id    TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    email      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Investment portfolios: cash in the portfolio's currency.
CREATE TABLE portfolios (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    cash       NUMERIC NOT NULL CHECK (cash >= 0),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX portfolios_user ON portfolios (user_id, seq);

-- Holdings: one row per instrument held (rows at zero are deleted).
CREATE TABLE positions (
    portfolio_id TEXT NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    instrument   TEXT NOT NULL,
    quantity     NUMERIC NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (portfolio_id, instrument)
);

-- Dated snapshots: one per portfolio per day (UTC, 'YYYY-MM-DD'), upserted
-- by every change of that day, so it holds the position at the end of it.
CREATE TABLE snapshots (
    portfolio_id TEXT NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    day          TEXT NOT NULL,
    cash         NUMERIC NOT NULL,
    positions    TEXT NOT NULL,
    taken_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (portfolio_id, day)
);

-- The decision taken on each deal (APPROVE_ORDER), so that a deal is applied
-- to a portfolio at most once even if its command arrives again under a new
-- message id.
CREATE TABLE order_decisions (
    deal_id      TEXT PRIMARY KEY,
    portfolio_id TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('approved', 'rejected')),
    reason       TEXT NOT NULL DEFAULT '',
    decided_at   TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE order_decisions;
DROP TABLE snapshots;
DROP TABLE positions;
DROP TABLE portfolios;
DROP TABLE profiles;
