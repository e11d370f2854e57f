// Command saga-machine is the saga orchestrator daemon: it loads and
// validates the saga definitions, migrates its database, makes sure the
// Kafka topics exist, consumes participants' events from the server topic,
// keeps every saga instance durable, relays the commands they cause, fires
// timeouts and retries, and serves health probes over HTTP.
//
//	saga-machine [flags]                run the daemon
//	saga-machine migrate --db URL       only apply the database migrations
//
// Every flag has an environment variable; a flag given on the command line
// wins over the variable, which wins over the built-in default:
//
//	--sagas DIR         SAGA_SAGAS_DIR      definitions directory (default: the built-in sagas)
//	--db URL            SAGA_DB_URL         sqlite:./.saga-machine/saga.db
//	--brokers LIST      SAGA_KAFKA_BROKERS  (default: an embedded broker on 127.0.0.1:9092)
//	--kafka-data DIR    SAGA_KAFKA_DATA_DIR ./.saga-machine/kafka (embedded broker only)
//	--listen ADDR       SAGA_LISTEN         127.0.0.1:8080
//	--topic NAME        SAGA_SERVER_TOPIC   SAGA_SERVER_TOPIC
//	--group NAME        SAGA_GROUP          saga-machine
//	--partitions N      SAGA_PARTITIONS     3 (for topics created at start)
//	--log-level LEVEL   SAGA_LOG_LEVEL      info
//	--kafka-session-timeout D  SAGA_KAFKA_SESSION_TIMEOUT  45s (how soon a crashed replica's partitions move)
//
// SIGTERM or SIGINT stops fetching, finishes the batch in flight, commits
// its offsets, flushes the outbox (bounded) and exits 0. See
// docs/operations.md.
package main
