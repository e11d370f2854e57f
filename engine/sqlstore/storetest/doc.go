// Package storetest is the conformance suite of engine.Store: every
// implementation (PostgreSQL and SQLite in engine/sqlstore) must pass Run.
//
// The suite checks behaviour through the engine.Store and engine.Tx
// interfaces only: round trips of every field, inbox claims, optimistic
// locking, history order, outbox leases with concurrent relays (a relay
// reclaims its own leases at once), trace contexts, inbox purging, timers,
// listing with filters and pagination, dead letters, transactions that roll
// back and transactions that run concurrently.
package storetest
