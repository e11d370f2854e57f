-- Fewer writes per saga transition and per outbox record.
--
-- saga_instances_status goes: every transition changed status or state, so
-- every update wrote a new entry into all five indexes (no HOT update is
-- possible while an indexed column changes). Listing by status walks
-- saga_instances_created newest first and filters (status has a handful of
-- values, so an index on it barely narrows a scan anyway); CountByState
-- reads the whole table either way. (saga, state) stays for "which sagas
-- are in state X". (No fillfactor: measured, no update was HOT even with room
-- on the page, as state or timer_at change with nearly every transition.)
--
-- The outbox is a queue: rows are inserted, published and deleted within
-- milliseconds, so almost every tuple in it is dead. Vacuum it after a fixed
-- number of dead tuples rather than a share of a table that is nearly empty,
-- and without the cost delay, so that relays' index scans do not wade
-- through dead tuples. (Its analyze and insert-triggered vacuum stay at the
-- defaults: lower thresholds slowed intake measurably.)

-- +goose Up
DROP INDEX IF EXISTS saga_instances_status;
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0);

-- +goose Down
ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_cost_delay);
CREATE INDEX saga_instances_status ON saga_instances (status);
