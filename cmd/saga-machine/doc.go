// Command saga-machine is the saga orchestrator daemon: it loads and
// validates the saga definitions, migrates its database, makes sure the
// Kafka topics exist, consumes participants' events from their own event
// topics (<topic>_<PARTICIPANT>; an event naming another participant than
// its topic's is dead-lettered), keeps every saga instance durable, relays
// the commands they cause, fires timeouts and retries, and serves health
// probes over HTTP.
//
//	saga-machine [flags]                run the daemon
//	saga-machine migrate --db URL       only apply the database migrations
//	saga-machine kafka-setup [flags]    with an administrator's credentials: create the
//	                                    topics, the SCRAM users (--users-dir) and exactly the
//	                                    ACLs of the loaded definitions (--dry-run prints them)
//
// Every flag has an environment variable; a flag given on the command line
// wins over the variable, which wins over the built-in default:
//
//	--sagas DIR         SAGA_SAGAS_DIR      definitions directory (default: the built-in sagas)
//	--db URL            SAGA_DB_URL         sqlite:./.saga-machine/saga.db
//	--brokers LIST      SAGA_KAFKA_BROKERS  (default: an embedded broker on 127.0.0.1:9092)
//	--kafka-data DIR    SAGA_KAFKA_DATA_DIR ./.saga-machine/kafka (embedded broker only)
//	--listen ADDR       SAGA_LISTEN         127.0.0.1:8080
//	--topic NAME        SAGA_SERVER_TOPIC   SAGA_SERVER_TOPIC (base of the event topics)
//	--group NAME        SAGA_GROUP          saga-machine
//	--partitions N      SAGA_PARTITIONS     3 (for topics created at start)
//	--log-level LEVEL   SAGA_LOG_LEVEL      info
//	--kafka-session-timeout D  SAGA_KAFKA_SESSION_TIMEOUT  20s (how soon a dead replica's partitions move)
//	--kafka-user NAME          SAGA_KAFKA_USER            SASL/SCRAM-SHA-512 principal (none: no authentication)
//	--kafka-password-file F    SAGA_KAFKA_PASSWORD_FILE   its password (or SAGA_KAFKA_PASSWORD, --kafka-password)
//	--kafka-sasl-mechanism M   SAGA_KAFKA_SASL_MECHANISM  SCRAM-SHA-512 (default), SCRAM-SHA-256, PLAIN
//	--kafka-instance-id ID     SAGA_KAFKA_INSTANCE_ID     static group membership (stable per replica)
//	--kafka-tls                SAGA_KAFKA_TLS             connect over TLS (SASL_SSL listener), system CAs
//	--saga-retention D         SAGA_SAGA_RETENTION        keep finished sagas for D, then remove them (0: forever)
//	--metrics-token-file F     SAGA_METRICS_TOKEN_FILE    GET /metrics needs Authorization: Bearer <F's token> (none: open)
//	--kafka-tls-ca-file F      SAGA_KAFKA_TLS_CA_FILE     CA(s) of the brokers' certificates (implies --kafka-tls)
//	--issuer URL               OIDC_ISSUER                OIDC issuer of the API's bearer tokens (Keycloak realm URL)
//	--audience ID              OIDC_AUDIENCE              expected aud: saga-machine's client id
//	--console-client-id ID     OIDC_CONSOLE_CLIENT_ID     the console's public client at the issuer (default
//	                                                      saga-console; "" : the console does not sign in)
//	--dev-header                                          DEV ONLY: trust X-Dev-User/X-Dev-Roles (explicit only)
//
// A database URL or Kafka password holding the placeholder CHANGE_ME is
// refused at start. See docs/kafka-security.md.
//
// SIGTERM or SIGINT stops fetching, finishes the batch in flight, commits
// its offsets, flushes the outbox (bounded) and exits 0. See
// docs/operations.md.
package main
