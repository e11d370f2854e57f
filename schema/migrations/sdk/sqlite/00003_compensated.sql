-- +goose Up
-- Compensation barrier: one row per message whose effect a compensation
-- command undid (the command's `compensates`), written in the same
-- transaction as the compensation handler's changes. A forward command whose
-- id is here is refused before its handler runs (reply COMMAND_EXPIRED,
-- "compensated before it arrived"), so a command delayed past its
-- compensation never applies. Pruned with the inbox (Config.InboxRetention).
CREATE TABLE sdk_compensated (
    message_id      TEXT PRIMARY KEY,
    saga_id         TEXT NOT NULL,
    compensation_id TEXT NOT NULL,
    compensated_at  TIMESTAMP NOT NULL
);
CREATE INDEX sdk_compensated_compensated_at ON sdk_compensated (compensated_at);

-- +goose Down
DROP TABLE sdk_compensated;
