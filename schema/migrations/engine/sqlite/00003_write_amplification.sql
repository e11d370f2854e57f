-- Fewer index writes per saga transition, as on PostgreSQL: listing by
-- status walks saga_instances_created newest first and filters.

-- +goose Up
DROP INDEX IF EXISTS saga_instances_status;

-- +goose Down
CREATE INDEX saga_instances_status ON saga_instances (status);
