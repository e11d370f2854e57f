// Package system wires the whole saga-machine system into one process: the
// saga-machine orchestrator with its HTTP API and console, the deals,
// profile and notification participant services, an in-process OIDC issuer
// (internal/auth/issuer) whose tokens every component verifies exactly as it
// would verify Keycloak's, and, unless real Kafka brokers are given, the
// embedded Kafka-protocol broker.
//
// Each service keeps its own database (SQLite files under Config.DataDir by
// default, or one PostgreSQL database per service) and the services talk to
// saga-machine only through Kafka topics, as separate deployments would.
//
//	sys, err := system.Start(ctx, system.Config{})   // embedded defaults
//	defer sys.Close()
//	res, err := sys.RunDemo(ctx)                      // demo user, two orders
//
// cmd/dev (make run), cmd/bench and the end-to-end tests are built on it.
// SagaMachine is the orchestrator part alone, for cmd/saga-machine.
package system
