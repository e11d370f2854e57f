-- Parallel steps (language v2): a saga's latest parallel step, its branch
-- commands and their replies (join_state: one engine.Join as JSON). NULL
-- for sagas that never took a parallel step, so earlier rows are
-- unchanged. Undo entries gain group, branch, next_at and stuck inside the
-- existing undo JSON, and history command references a branch label inside
-- the existing commands JSON: no column for those.

-- +goose Up
ALTER TABLE saga_instances ADD COLUMN join_state TEXT;

-- +goose Down
ALTER TABLE saga_instances DROP COLUMN join_state;
