-- Idempotency-Keys of POST /api/v1/sagas, scoped to the caller: one row per
-- (caller, definition, key), with the hex SHA-256 of the canonical request
-- that first used it (a different request under the same key is refused)
-- and the saga it started. Kept as long as the sagas are. Keys compare byte
-- by byte (COLLATE "C"), as the other ids do.

-- +goose Up
CREATE TABLE idempotency_keys (
    caller       text COLLATE "C" NOT NULL, -- the caller's subject ('' for in-process starts)
    saga         text COLLATE "C" NOT NULL,
    idem_key     text COLLATE "C" NOT NULL,
    request_hash text             NOT NULL,
    saga_id      text             NOT NULL,
    created_at   timestamptz      NOT NULL,
    PRIMARY KEY (caller, saga, idem_key)
);

-- +goose Down
DROP TABLE idempotency_keys;
