// Command dev runs the whole saga-machine system in one process — `make
// run` is `go run ./cmd/dev` — on a bare machine: saga-machine (orchestrator,
// HTTP API and operator console), the deals, profile and notification
// services, an in-process OIDC issuer whose tokens every service verifies
// exactly as it would verify Keycloak's, SQLite files under ./.saga-machine
// and the embedded Kafka-protocol broker.
//
// At start it creates a demo user ("demo", role saga-operator) with a
// portfolio, which the funding operator "treasury" (role funding-operator)
// funds with a deposit of 10,000.00 USD, places a buy the cash covers (approved) and
// one it does not (rejected), waits until both sagas are final and prints
// their ids and states, where to look, the console's demo logins (the
// console signs in on the issuer's login page: user demo, password demo
// for the operator; viewer/viewer read-only; guest/guest without a role),
// and for curl `export SAGA_TOKEN=…` and examples. Then it serves until
// Ctrl-C (graceful stop). Re-running reuses the data: the portfolio and the
// two orders are not duplicated.
//
// Addresses (127.0.0.1): saga-machine API + console :8080 (--listen),
// profile :8081, deals :8082, notification :8083, issuer :8090, embedded
// Kafka :9092. Every address must be loopback: the in-process issuer mints
// any token for anyone, so every server answers only requests addressed to
// localhost or a loopback IP (others get 421; DNS rebinding).
//
// Flags (and variables; a flag wins over its variable):
//
//	--db-dir DIR       SAGA_DEV_DB_DIR     SQLite files and embedded broker data (default ./.saga-machine)
//	--postgres URL     SAGA_DEV_POSTGRES   a PostgreSQL server; each service gets its own database
//	                                       (saga, deals, profile, notification), created if absent
//	--brokers LIST     SAGA_KAFKA_BROKERS  real Kafka brokers instead of the embedded broker
//	--listen ADDR      SAGA_LISTEN         saga-machine's address (default 127.0.0.1:8080)
//	--free-ports                           every service on a free port (printed)
//	--log-level LEVEL  SAGA_LOG_LEVEL      logs on stderr (default warn)
//	--no-demo                              skip the demo user and orders
package main
