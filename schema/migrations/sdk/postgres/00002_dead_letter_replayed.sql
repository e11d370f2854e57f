-- +goose Up
-- A replayed dead letter is kept and marked (Participant.Replay and
-- POST /admin/dead-letters/{id}/replay share one implementation): when it
-- was replayed successfully and by whom. Prune removes it with its inbox
-- record.
ALTER TABLE sdk_dead_letters ADD COLUMN replayed_at TIMESTAMPTZ NULL;
ALTER TABLE sdk_dead_letters ADD COLUMN replayed_by TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE sdk_dead_letters DROP COLUMN replayed_by;
ALTER TABLE sdk_dead_letters DROP COLUMN replayed_at;
