-- +goose Up
-- Outbox leases, as saga-machine's outbox has them: the relay (the one
-- delivery core both share, internal/delivery) leases records to one
-- replica while it publishes them where it does not hold a transaction
-- open (SQLite), so that two relays of one database never publish the same
-- record at once, and skips records another relay leased until the lease
-- runs out. On PostgreSQL the relay locks the rows instead and these stay
-- empty. Nullable, so replicas of the previous version keep writing.
ALTER TABLE sdk_outbox ADD COLUMN claimed_by TEXT NULL;
ALTER TABLE sdk_outbox ADD COLUMN claimed_until TIMESTAMPTZ NULL;

-- +goose Down
ALTER TABLE sdk_outbox DROP COLUMN claimed_until;
ALTER TABLE sdk_outbox DROP COLUMN claimed_by;
