-- The participant SDK's own tables (package participants/sdk). They live in
-- the participant's database beside its business tables; goose tracks them in
-- sdk_goose_db_version so the service's own migrations are independent.

-- +goose Up
-- Inbox: one row per command id handled, written in the same transaction as
-- the handler's business change. The reply is kept so a duplicate command
-- re-sends the same reply (same message id) instead of running the handler.
CREATE TABLE sdk_inbox (
    message_id   TEXT PRIMARY KEY,
    saga_id      TEXT NOT NULL,
    command      TEXT NOT NULL,
    reply_id     TEXT,
    reply        BLOB,
    processed_at TIMESTAMP NOT NULL
);
CREATE INDEX sdk_inbox_processed_at ON sdk_inbox (processed_at);

-- Outbox: messages to publish, written in the same transaction as the change
-- that caused them; the relay publishes them in seq order and deletes them.
CREATE TABLE sdk_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    topic      TEXT NOT NULL,
    msg_key    TEXT NOT NULL,
    name       TEXT NOT NULL,
    headers    TEXT NOT NULL DEFAULT '{}',
    body       BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Dead letters: commands that could not be handled (malformed, unknown, or
-- failing after every attempt), kept for operators (Participant.DeadLetters,
-- Participant.Replay).
CREATE TABLE sdk_dead_letters (
    id         TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    saga_id    TEXT NOT NULL,
    command    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    kpartition INTEGER NOT NULL,
    koffset    INTEGER NOT NULL,
    headers    TEXT NOT NULL DEFAULT '{}',
    body       BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX sdk_dead_letters_created_at ON sdk_dead_letters (created_at);
CREATE INDEX sdk_dead_letters_message_id ON sdk_dead_letters (message_id);

-- +goose Down
DROP TABLE sdk_dead_letters;
DROP TABLE sdk_outbox;
DROP TABLE sdk_inbox;
