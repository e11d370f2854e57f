// Package notification is the notification participant service, a stub of
// a real notification gateway: NOTIFY stores a notification for the deal's
// user, with a text built from the saga's deal_context ("Your buy of 10
// AAPL at 150.00 USD was executed", "... was rejected: <reason>", "...
// failed: <reason>" with what came back when the order was reverted), and
// logs what it would send, once per deal outcome. It emits no reply.
//
// NOTIFY carries either the notificationDTO (DTO, {"notificationDTO":
// {...}}, built by MANUAL_CREATE_ORDER v3's payload mapping) or the whole
// saga context with its deal_context (versions 1 and 2); anything else, a
// DTO that is not exactly DTO, and a NOTIFY for a deal already notified to
// another user or in another saga are parked as dead letters with the
// reason.
//
// BASKET_ORDER's NOTIFY carries the basketNotificationDTO (BasketDTO,
// {"basketNotificationDTO": {...}} and nothing beside it): one notification
// per basket for its owner ("Your basket of 3 deals was executed", "... was
// rejected: <reason>", "... failed: <reason>", "... was cancelled at your
// request: ..."), stored with the basket's
// id and deal ids, once. A malformed DTO, and a NOTIFY for a basket already
// notified to another user, in another saga or differently, are parked
// with the reason.
//
// HTTP (schema/openapi/notification.yaml), every route but the probes
// behind the OIDC bearer-token middleware:
//
//	GET /notifications   the caller's notifications, newest first (?limit=, ?cursor=)
//	GET /healthz, /readyz
package notification
