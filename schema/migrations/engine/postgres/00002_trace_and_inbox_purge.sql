-- W3C trace context (traceparent) kept with every command in the outbox and
-- with every saga (the trace of its latest accepted event, carried by
-- re-sent commands and by events the engine raises), and an index for
-- purging old inbox records. BRIN: processed_at grows with insertion order,
-- so the index is tiny and costs claims next to nothing.

-- +goose Up
ALTER TABLE outbox ADD COLUMN traceparent text;
ALTER TABLE saga_instances ADD COLUMN traceparent text;
CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);

-- +goose Down
DROP INDEX inbox_processed_at;
ALTER TABLE saga_instances DROP COLUMN traceparent;
ALTER TABLE outbox DROP COLUMN traceparent;
