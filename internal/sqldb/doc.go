// Package sqldb opens the databases of the participant services the one
// way every caller does (the services' own runner in
// participants/internal/service and the all-in-one runner in
// internal/system): PostgreSQL through lib/pq with a connection pool, or a
// SQLite file through modernc.org/sqlite in WAL mode with a single
// connection. It also redacts passwords from database URLs for logs.
package sqldb
