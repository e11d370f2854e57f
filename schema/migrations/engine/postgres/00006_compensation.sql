-- Compensation: every saga keeps its compensable effects and their
-- compensations' progress (undo: a JSON array of engine.UndoEntry, oldest
-- first), and the command of its failed transition held back until the
-- compensations are done (deferred: one envelope without payload). Both
-- are NULL for sagas without compensations, so v1 rows are unchanged.
-- Statuses gain compensating and compensation_failed (status is free text).

-- +goose Up
ALTER TABLE saga_instances ADD COLUMN undo json, ADD COLUMN deferred json;

-- +goose Down
ALTER TABLE saga_instances DROP COLUMN deferred, DROP COLUMN undo;
