-- Ids, names and key values compare byte by byte (COLLATE "C"): they are
-- UUIDs and identifiers, not language text, and a linguistic collation
-- (even C.UTF-8 on PostgreSQL 15) costs a strcoll call per comparison in
-- every index insert and lookup. The indexes on these columns are rebuilt;
-- the tables are not rewritten.

-- +goose Up
ALTER TABLE saga_instances ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN saga TYPE text COLLATE "C", ALTER COLUMN state TYPE text COLLATE "C",
    ALTER COLUMN status TYPE text COLLATE "C";
ALTER TABLE saga_keys ALTER COLUMN saga_id TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C", ALTER COLUMN value TYPE text COLLATE "C";
ALTER TABLE saga_history ALTER COLUMN saga_id TYPE text COLLATE "C";
ALTER TABLE inbox ALTER COLUMN message_id TYPE text COLLATE "C";
ALTER TABLE dead_letters ALTER COLUMN message_id TYPE text COLLATE "C";

-- +goose Down
ALTER TABLE dead_letters ALTER COLUMN message_id TYPE text COLLATE "default";
ALTER TABLE inbox ALTER COLUMN message_id TYPE text COLLATE "default";
ALTER TABLE saga_history ALTER COLUMN saga_id TYPE text COLLATE "default";
ALTER TABLE saga_keys ALTER COLUMN saga_id TYPE text COLLATE "default",
    ALTER COLUMN name TYPE text COLLATE "default", ALTER COLUMN value TYPE text COLLATE "default";
ALTER TABLE saga_instances ALTER COLUMN id TYPE text COLLATE "default",
    ALTER COLUMN saga TYPE text COLLATE "default", ALTER COLUMN state TYPE text COLLATE "default",
    ALTER COLUMN status TYPE text COLLATE "default";
