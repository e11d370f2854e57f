-- saga-machine's own database on PostgreSQL: saga instances, their business
-- keys and timelines, the consumer inbox, the outbox and dead letters.
-- Times are timestamptz (UTC, microseconds). JSON columns are json, not
-- jsonb: stored as written, cheaper to write and read back in batches.

-- +goose Up
CREATE TABLE saga_instances (
    id           text        PRIMARY KEY,
    saga         text        NOT NULL,
    saga_version integer     NOT NULL,
    state        text        NOT NULL,
    status       text        NOT NULL,
    context      json,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    entered_at   timestamptz NOT NULL,
    rev          bigint      NOT NULL,
    pending      json,
    attempts     integer     NOT NULL DEFAULT 0,
    timer_at     timestamptz
);
CREATE INDEX saga_instances_timer_at ON saga_instances (timer_at) WHERE timer_at IS NOT NULL;
CREATE INDEX saga_instances_saga_state ON saga_instances (saga, state);
CREATE INDEX saga_instances_status ON saga_instances (status);
CREATE INDEX saga_instances_created ON saga_instances (created_at DESC, id DESC);

CREATE TABLE saga_keys (
    saga_id text NOT NULL, -- saga_instances.id (no foreign key: it costs a trigger per row)
    name    text NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (saga_id, name)
);
CREATE INDEX saga_keys_name_value ON saga_keys (name, value);

CREATE TABLE saga_history (
    seq            bigserial   PRIMARY KEY,
    saga_id        text        NOT NULL,
    at             timestamptz NOT NULL,
    kind           text        NOT NULL,
    message_id     text        NOT NULL DEFAULT '',
    event          text        NOT NULL DEFAULT '',
    by_participant text        NOT NULL DEFAULT '',
    from_state     text        NOT NULL DEFAULT '',
    to_state       text        NOT NULL DEFAULT '',
    commands       json,
    code           text        NOT NULL DEFAULT '',
    reason         text        NOT NULL DEFAULT '',
    actor          text        NOT NULL DEFAULT ''
);
CREATE INDEX saga_history_saga ON saga_history (saga_id, seq);

CREATE TABLE inbox (
    message_id   text        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    seq           bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           text        NOT NULL,
    message       json        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_by    text,
    claimed_until timestamptz
);

CREATE TABLE dead_letters (
    id              bigserial   PRIMARY KEY,
    message_id      text,
    saga_id         text        NOT NULL DEFAULT '',
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    raw             bytea       NOT NULL,
    code            text        NOT NULL,
    reason          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    replayed_at     timestamptz,
    replayed_by     text        NOT NULL DEFAULT ''
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
