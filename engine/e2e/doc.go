// Package e2e holds the integration tests of the orchestrator and the
// saga-machine daemon against real parts: PostgreSQL and Apache Kafka (from
// internal/testenv), and SQLite with the embedded kfake broker. Each
// guarantee of the runtime has its own test; the crash test runs the
// saga-machine binary as a subprocess and kills it with SIGKILL.
package e2e
