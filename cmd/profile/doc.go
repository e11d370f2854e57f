// Command profile runs the profile participant service (package
// participants/profile) as its own process: HTTP API on --listen (default
// 127.0.0.1:8081) and the PROFILE_TOPIC command consumer.
//
//	profile [flags]            serve until SIGTERM or interrupt (graceful stop)
//	profile migrate [--db URL] apply the SDK's and the service's migrations and exit (the migration job)
//
// Flags and variables: --db / PROFILE_DB_URL (postgres://… or sqlite:PATH,
// default sqlite:./.saga-machine/profile.db), --brokers / SAGA_KAFKA_BROKERS
// (default 127.0.0.1:9092, the embedded broker saga-machine starts),
// --listen / PROFILE_LISTEN, --issuer / OIDC_ISSUER, --audience /
// OIDC_AUDIENCE, --skip-audience, --dev-header (explicit dev mode: loopback
// --listen only; with it, or an issuer on loopback, only loopback Host names
// are answered), --migrate (default true), --log-level / PROFILE_LOG_LEVEL,
// --command-topic / PROFILE_COMMAND_TOPIC (default PROFILE_TOPIC), --event-topic /
// PROFILE_EVENT_TOPIC (default SAGA_SERVER_TOPIC_PROFILE), --group / PROFILE_GROUP
// (default profile).
package main
