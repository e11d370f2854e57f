package delivery

import (
	"context"
	"database/sql"
	"time"

	"github.com/jmoiron/sqlx"
)

// TakeFree runs the statement of Publish that takes the rows, in tx
// (PostgreSQL).
func TakeFree(ctx context.Context, t *Tables, tx *sqlx.Tx, owner string, limit int, lease time.Duration) ([]Row, error) {
	return t.takeFree(ctx, tx, owner, limit, lease)
}

// SetPurgeChunk sets the rows per purge statement for a test and returns
// the previous value.
func SetPurgeChunk(n int) int {
	old := purgeChunk
	purgeChunk = n
	return old
}

// Unsynced runs fn as Publish runs its lease and deletion (SQLite).
func Unsynced(ctx context.Context, t *Tables, fn func(c *sql.Conn) error) error {
	return t.unsynced(ctx, fn)
}
