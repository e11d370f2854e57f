// Package sqlstore implements engine.Store on PostgreSQL (jmoiron/sqlx +
// the driver sqldb.DriverEnv selects, pgx or lib/pq) and SQLite
// (modernc.org/sqlite, pure Go, the embedded default).
//
// Open picks the database from the URL:
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL
//	sqlite:/var/lib/saga/saga.db                   SQLite file (also file:PATH, or any PATH ending in .db)
//	sqlite::memory:                                SQLite in a throwaway file removed by Close (tests)
//
// and applies the embedded goose migrations (schema/migrations/engine/<dialect>)
// unless WithoutMigrations is given; MigrateOnly serves a `migrate` subcommand.
//
// The inbox and the outbox are the delivery core's (internal/delivery, layout
// EngineTables), which the participant SDK runs on its own tables: claims,
// outbox writes, the relay's locks (PostgreSQL) or leases (SQLite) and
// pruning are the same code for both.
//
// Every Tx method writes a whole batch with a constant number of statements on
// PostgreSQL (one array per column expanded by unnest; JSON columns as one
// JSON array expanded by json_array_elements), so that the orchestrator can
// apply hundreds of events per transaction. The statements are prepared once
// per connection; RefreshStats (run by the orchestrator every few seconds)
// analyzes the tables as they grow, so that their cached generic plans are
// made again with the tables' real sizes. On SQLite, which
// runs in-process, batches use prepared statements per row inside the
// transaction; SQLite runs in WAL mode with synchronous=FULL (the relay's
// lease and deletion at NORMAL: losing them only publishes again), foreign
// keys and a busy timeout, with one writer connection and a separate pool of
// readers (for file databases).
//
// Times are stored in UTC with microsecond precision on both databases
// (timestamptz on PostgreSQL, INTEGER unix microseconds on SQLite): a time
// read back equals the time written, truncated to the microsecond.
//
// Errors are *engine.Error: CodeNotFound for a missing saga or dead letter,
// CodeConflict for an optimistic-lock conflict, a duplicate id or a database
// deadlock (retry the transaction), CodeInvalid for bad input, and
// CodeUnavailable when the database cannot be reached.
//
// The conformance suite every implementation passes is in package storetest.
package sqlstore
