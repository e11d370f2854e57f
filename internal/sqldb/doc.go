// Package sqldb is the database plumbing every component shares: it opens
// the databases of the participant services the one way every caller does
// (Open: PostgreSQL through lib/pq with a connection pool, or a SQLite file
// through modernc.org/sqlite in WAL mode with a single connection), builds
// the one SQLite data source (SQLiteDSN, also used by saga-machine's store
// and the SDK's test kit), tells the dialect of a database (DialectOf),
// applies embedded goose migrations (Migrate: the store's, the SDK's and
// the services') and redacts passwords from database URLs for logs.
package sqldb
