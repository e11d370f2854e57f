-- saga-machine's own database on SQLite (the embedded default): the same
-- tables as engine/postgres. Times are INTEGER unix microseconds (UTC), JSON
-- is TEXT, bytes are BLOB.

-- +goose Up
CREATE TABLE saga_instances (
    id           TEXT    PRIMARY KEY NOT NULL,
    saga         TEXT    NOT NULL,
    saga_version INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    context      TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    entered_at   INTEGER NOT NULL,
    rev          INTEGER NOT NULL,
    pending      TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    timer_at     INTEGER
);
CREATE INDEX saga_instances_timer_at ON saga_instances (timer_at) WHERE timer_at IS NOT NULL;
CREATE INDEX saga_instances_saga_state ON saga_instances (saga, state);
CREATE INDEX saga_instances_status ON saga_instances (status);
CREATE INDEX saga_instances_created ON saga_instances (created_at DESC, id DESC);

CREATE TABLE saga_keys (
    saga_id TEXT NOT NULL, -- saga_instances.id (no foreign key, as on PostgreSQL)
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (saga_id, name)
) WITHOUT ROWID;
CREATE INDEX saga_keys_name_value ON saga_keys (name, value);

CREATE TABLE saga_history (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id        TEXT    NOT NULL,
    at             INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    message_id     TEXT    NOT NULL DEFAULT '',
    event          TEXT    NOT NULL DEFAULT '',
    by_participant TEXT    NOT NULL DEFAULT '',
    from_state     TEXT    NOT NULL DEFAULT '',
    to_state       TEXT    NOT NULL DEFAULT '',
    commands       TEXT,
    code           TEXT    NOT NULL DEFAULT '',
    reason         TEXT    NOT NULL DEFAULT '',
    actor          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX saga_history_saga ON saga_history (saga_id, seq);

CREATE TABLE inbox (
    message_id   TEXT    PRIMARY KEY NOT NULL,
    processed_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    claimed_by    TEXT,
    claimed_until INTEGER
);

CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT,
    saga_id         TEXT    NOT NULL DEFAULT '',
    topic           TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    raw             BLOB    NOT NULL,
    code            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    replayed_at     INTEGER,
    replayed_by     TEXT    NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX dead_letters_parked_message ON dead_letters (message_id)
    WHERE replayed_at IS NULL AND message_id IS NOT NULL;

-- +goose Down
DROP TABLE dead_letters;
DROP TABLE outbox;
DROP TABLE inbox;
DROP TABLE saga_history;
DROP TABLE saga_keys;
DROP TABLE saga_instances;
