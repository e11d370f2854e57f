-- Fewer writes per saga transition and per outbox record.
--
-- saga_instances_status goes: every transition changed status or state, so
-- every update wrote a new entry into all five indexes (no HOT update is
-- possible while an indexed column changes). Listing by status walks
-- saga_instances_created newest first and filters (status has a handful of
-- values, so an index on it barely narrows a scan anyway); CountByState
-- reads the whole table either way. (saga, state) stays for "which sagas
-- are in state X". A lower fillfactor leaves room on each page, so that the
-- updates that change no indexed column (context, attempts, pending) can be
-- HOT and the others keep the new row version on the same page.
--
-- The outbox is a queue: rows are inserted, published and deleted within
-- milliseconds, so almost every tuple in it is dead. Vacuum it after a fixed
-- number of dead tuples rather than a share of a table that is nearly empty,
-- and without the cost delay, so that relays' index scans do not wade
-- through dead tuples.

-- +goose Up
DROP INDEX IF EXISTS saga_instances_status;
ALTER TABLE saga_instances SET (fillfactor = 85);
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE inbox SET (autovacuum_vacuum_insert_scale_factor = 0.05);

-- +goose Down
ALTER TABLE inbox RESET (autovacuum_vacuum_insert_scale_factor);
ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold, autovacuum_vacuum_cost_delay);
ALTER TABLE saga_instances RESET (fillfactor);
CREATE INDEX saga_instances_status ON saga_instances (status);
