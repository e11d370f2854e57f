// Command notification runs the notification participant service (package
// participants/notification) as its own process: HTTP API on --listen (default
// 127.0.0.1:8083) and the NOTIFICATION_TOPIC command consumer.
//
//	notification [flags]            serve until SIGTERM or interrupt (graceful stop)
//	notification migrate [--db URL] apply the SDK's and the service's migrations and exit (the migration job)
//
// Flags and variables: --db / NOTIFICATION_DB_URL (postgres://… or sqlite:PATH,
// default sqlite:./.saga-machine/notification.db), --brokers / SAGA_KAFKA_BROKERS
// (default 127.0.0.1:9092, the embedded broker saga-machine starts),
// --listen / NOTIFICATION_LISTEN, --issuer / OIDC_ISSUER, --audience /
// OIDC_AUDIENCE, --skip-audience, --dev-header (explicit dev mode: loopback
// --listen only; with it, or an issuer on loopback, only loopback Host names
// are answered), --migrate (default true), --log-level / NOTIFICATION_LOG_LEVEL,
// --command-topic / NOTIFICATION_COMMAND_TOPIC (default NOTIFICATION_TOPIC), --event-topic /
// NOTIFICATION_EVENT_TOPIC (default SAGA_SERVER_TOPIC_NOTIFICATION), --group / NOTIFICATION_GROUP
// (default notification).
package main
