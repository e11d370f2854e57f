-- Saga retention (engine.Config.SagaRetention): the pruning job finds the
-- sagas that finished (completed or failed) before a cut-off by
-- updated_at, and removes each with its keys, timeline and idempotency
-- keys. The partial index holds finished sagas only, so a running saga's
-- steps never touch it; the idempotency keys get an index by saga.

-- +goose Up
CREATE INDEX saga_instances_finished ON saga_instances (updated_at) WHERE status IN ('completed', 'failed');
CREATE INDEX idempotency_keys_saga ON idempotency_keys (saga_id);

-- +goose Down
DROP INDEX idempotency_keys_saga;
DROP INDEX saga_instances_finished;
