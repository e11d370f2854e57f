// Package sqldb is the database plumbing every component shares: it opens
// the databases of the participant services the one way every caller does
// (Open: PostgreSQL with a connection pool, through the driver DriverEnv
// selects, pgx or lib/pq (OpenPostgres); or a SQLite file through
// modernc.org/sqlite in WAL mode with a single connection), builds the one
// SQLite data source (SQLiteDSN, also used by saga-machine's store and the
// SDK's test kit), tells the dialect of a database (DialectOf), binds batch
// arrays in a form both PostgreSQL drivers send efficiently (TextArray,
// TimeArray, ByteaArray, ...), applies embedded goose migrations (Migrate:
// the store's, the SDK's and the services') and redacts passwords from
// database URLs for logs.
package sqldb
