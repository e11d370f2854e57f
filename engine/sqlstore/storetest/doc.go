// Package storetest is the conformance suite of saga-machine's stores:
// every implementation (PostgreSQL and SQLite in engine/sqlstore) must pass
// Run. It checks engine.Store (what the orchestrator needs), engine.Queries
// (what operators read) and the outbox lease (Store, the union of the
// three).
//
// The suite checks behaviour through those interfaces and engine.Tx only:
// round trips of every field, inbox claims, optimistic locking, history
// order, outbox leases with concurrent relays (a relay reclaims its own
// leases at once), trace contexts, inbox purging, timers, listing with
// filters and pagination, dead letters, transactions that roll back and
// transactions that run concurrently. The inbox and outbox statements
// themselves are internal/delivery's, whose own suite runs them on both
// databases for saga-machine's tables and the SDK's.
package storetest
