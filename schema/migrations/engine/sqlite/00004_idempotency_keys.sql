-- Idempotency-Keys of POST /api/v1/sagas, scoped to the caller: one row per
-- (caller, definition, key), with the hex SHA-256 of the canonical request
-- that first used it (a different request under the same key is refused)
-- and the saga it started. Kept as long as the sagas are. Times are
-- microseconds since the epoch, as in the other tables.

-- +goose Up
CREATE TABLE idempotency_keys (
    caller       TEXT    NOT NULL, -- the caller's subject ('' for in-process starts)
    saga         TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    saga_id      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (caller, saga, idem_key)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE idempotency_keys;
