// Command deals runs the deals participant service (package
// participants/deals) as its own process: HTTP API on --listen (default
// 127.0.0.1:8082) and the DEALS_TOPIC command consumer.
//
//	deals [flags]              serve until SIGTERM or interrupt (graceful stop)
//	deals migrate [--db URL]   apply the SDK's and the service's migrations and exit (the migration job)
//
// Flags and variables: --db / DEALS_DB_URL (postgres://… or sqlite:PATH,
// default sqlite:./.saga-machine/deals.db), --brokers / SAGA_KAFKA_BROKERS
// (default 127.0.0.1:9092, the embedded broker saga-machine starts),
// --listen / DEALS_LISTEN, --issuer / OIDC_ISSUER, --audience /
// OIDC_AUDIENCE, --skip-audience, --dev-header (explicit dev mode: loopback
// --listen only; with it, or an issuer on loopback, only loopback Host names
// are answered), --migrate (default true), --log-level / DEALS_LOG_LEVEL,
// --command-topic / DEALS_COMMAND_TOPIC (default DEALS_TOPIC), --event-topic /
// DEALS_EVENT_TOPIC (default SAGA_SERVER_TOPIC_DEALS), --group / DEALS_GROUP
// (default deals).
package main
