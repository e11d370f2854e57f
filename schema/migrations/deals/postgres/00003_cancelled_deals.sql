-- A client may cancel a deal that is not settled yet (POST /deals/{id}/cancel,
-- MANUAL_CREATE_ORDER v3): cancel_requested_at records when deals accepted
-- the request (and sent CANCEL_REQUESTED to the saga); FAIL_DEAL of the
-- cancelled saga then marks the deal 'cancelled', final like the others.

-- +goose Up
ALTER TABLE deals ADD COLUMN cancel_requested_at TIMESTAMPTZ;
ALTER TABLE deals DROP CONSTRAINT deals_status_check;
ALTER TABLE deals ADD CONSTRAINT deals_status_check CHECK (status IN ('draft', 'executed', 'rejected', 'failed', 'cancelled'));

-- +goose Down
-- Fails while a cancelled deal exists: such a deal has no status in the old schema.
ALTER TABLE deals DROP CONSTRAINT deals_status_check;
ALTER TABLE deals ADD CONSTRAINT deals_status_check CHECK (status IN ('draft', 'executed', 'rejected', 'failed'));
ALTER TABLE deals DROP COLUMN cancel_requested_at;
