-- BASKET_ORDER's NOTIFY tells a client about a basket of deals as a whole
-- (participants/notification/basket.go): one notification per basket.

-- +goose Up
-- basket_id: the basket a notification is about ('' for a deal's: the rows
-- before this migration and every deal notification); deal_id then holds
-- the basket's id too (the notification's subject), and deal_ids the JSON
-- array of the basket's deal ids ('' for a deal's).
ALTER TABLE notifications ADD COLUMN basket_id TEXT NOT NULL DEFAULT '';
ALTER TABLE notifications ADD COLUMN deal_ids TEXT NOT NULL DEFAULT '';
-- One notification per basket, even if NOTIFY arrives again under a new
-- message id (or with another status: the first one stays).
CREATE UNIQUE INDEX notifications_basket ON notifications (basket_id) WHERE basket_id <> '';

-- +goose Down
DROP INDEX notifications_basket;
ALTER TABLE notifications DROP COLUMN deal_ids;
ALTER TABLE notifications DROP COLUMN basket_id;
