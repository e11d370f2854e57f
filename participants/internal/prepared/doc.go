// Package prepared keeps the prepared statements of a service's hot paths:
// each query is prepared once per database connection and then reused by
// every transaction on that connection, instead of being parsed (and, on
// PostgreSQL, planned and sent in an extra round trip) on every execution.
//
// A Cache belongs to one *sqlx.DB. Its first use of a query inside a
// transaction prepares it on the transaction itself (so a one-connection
// SQLite pool never waits on itself) and, in the background, once on the
// database; later uses bind the database-level statement to the
// transaction with Tx.Stmtx, which database/sql reuses on the connection
// the statement was prepared on (and prepares again on any other).
package prepared
