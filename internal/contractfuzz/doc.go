// Package contractfuzz holds the API contract fuzzing of the whole system:
// TestContract starts saga-machine, deals, profile and notification in the
// test's process (internal/system, one PostgreSQL database per service, the
// embedded Kafka broker, the in-process OIDC issuer), seeds them with the
// demo (a portfolio, a deposit, two deals and their sagas) and runs PyPI's
// schemathesis against each service with its OpenAPI document
// (schema/openapi/*.yaml), once with a plain user's token and once with an
// operator's (saga-operator, funding-operator). Every check schemathesis has
// runs (no 5xx, status codes, content types, headers and bodies conforming
// to the spec, schema-valid requests accepted and invalid ones refused, 405
// with Allow, authentication not ignored, ...); one failure fails the test.
//
// The run is bounded by a fixed number of examples per operation and a
// fixed seed, so that `make test` stays short and a failure reproduces:
//
//	SAGA_CONTRACT_EXAMPLES   examples per operation (default 10)
//	SAGA_CONTRACT_SEED       seed (default 20261126)
//	SAGA_CONTRACT_SPECS      comma-separated spec names to run (default all four)
//	SAGA_CONTRACT_VERBOSE    set: log schemathesis' whole output (phases,
//	                         warnings such as operations it could not reach)
//	SAGA_SCHEMATHESIS        the schemathesis program (default: the venv of
//	                         scripts/schemathesis.sh under $SAGA_RUN_DIR)
//
// `make contract-fuzz` runs it longer (more examples, a seed of the
// day). scripts/schemathesis.sh installs the pinned schemathesis; without
// it the test skips, and fails under CI=true. The settings schemathesis
// reads are in schemathesis.toml beside this file; every exception there
// says why.
package contractfuzz
