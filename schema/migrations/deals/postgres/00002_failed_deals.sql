-- A deal whose saga failed (MANUAL_CREATE_ORDER v2) is marked 'failed' by
-- FAIL_DEAL, the compensation of REGISTER, APPROVE_DEAL and REJECT_DEAL:
-- reason then says why. 'failed' is final, like 'executed' and 'rejected'.

-- +goose Up
ALTER TABLE deals DROP CONSTRAINT deals_status_check;
ALTER TABLE deals ADD CONSTRAINT deals_status_check CHECK (status IN ('draft', 'executed', 'rejected', 'failed'));

-- +goose Down
-- Fails while a failed deal exists: such a deal has no status in the old schema.
ALTER TABLE deals DROP CONSTRAINT deals_status_check;
ALTER TABLE deals ADD CONSTRAINT deals_status_check CHECK (status IN ('draft', 'executed', 'rejected'));
