-- Which command decided each deal: APPROVE_ORDER stores its command id with
-- the decision (approved or rejected), so that REVERT_ORDER can check that
-- the command it compensates (its compensates field) is the one that decided
-- the deal its payload names. A REVERT_ORDER whose payload names another
-- deal than the order it undoes is then a dead letter instead of reverting
-- the wrong deal and answering ORDER_REVERTED for the right one.

-- +goose Up
-- NULL on decisions taken before this migration (a reversal then trusts the
-- payload, as before).
ALTER TABLE order_decisions ADD COLUMN command_id TEXT;
-- A reversal looks the compensated command up: which deal did it decide?
CREATE INDEX order_decisions_command ON order_decisions (command_id);

-- +goose Down
DROP INDEX order_decisions_command;
ALTER TABLE order_decisions DROP COLUMN command_id;
