-- The notification service's business tables (package
-- participants/notification), tracked by goose in
-- notification_goose_db_version. The SDK's inbox/outbox tables live in the
-- same database (sdk_goose_db_version).

-- +goose Up
-- Notifications "sent" to users (the service is a stub of a real gateway: it
-- stores and logs them). seq orders lists (newest first) and is the cursor.
CREATE TABLE notifications (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    deal_id    TEXT NOT NULL,
    saga_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX notifications_user_seq ON notifications (user_id, seq DESC);
-- One notification per deal outcome, even if NOTIFY arrives again under a
-- new message id.
CREATE UNIQUE INDEX notifications_deal_status ON notifications (deal_id, status);

-- +goose Down
DROP TABLE notifications;
