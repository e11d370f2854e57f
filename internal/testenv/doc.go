// Package testenv gives tests the real services they need (PostgreSQL and
// Apache Kafka, started by `make up`) and decides what happens when one is
// missing: outside CI the test is skipped with a hint; under CI=true it fails,
// so a green CI run always means the integration was exercised.
//
// Addresses come from the environment, with the defaults `make up` uses:
//
//	SAGA_TEST_POSTGRES_URL  postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable
//	SAGA_TEST_KAFKA_BROKERS 127.0.0.1:59092
package testenv
