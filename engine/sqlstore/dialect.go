package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// dialect holds the few things that differ between PostgreSQL and SQLite;
// everything else is shared SQL written with ? placeholders and rebound.
type dialect struct {
	name     string
	postgres bool
	bind     int    // sqlx bind type
	keysAgg  string // aggregate of a saga's keys into a JSON object
}

var postgresDialect = dialect{
	name:     "postgres",
	postgres: true,
	bind:     sqlx.DOLLAR,
	keysAgg:  "(SELECT json_object_agg(k.name, k.value) FROM saga_keys k WHERE k.saga_id = s.id)",
}

var sqliteDialect = dialect{
	name:    "sqlite",
	bind:    sqlx.QUESTION,
	keysAgg: "(SELECT json_group_object(k.name, k.value) FROM saga_keys k WHERE k.saga_id = s.id)",
}

// q rebinds a query written with ? placeholders.
func (d dialect) q(query string) string { return sqlx.Rebind(d.bind, query) }

// in returns "col IN list" for a list of values bound as one argument (see list).
func (d dialect) in(col string) string {
	if d.postgres {
		return col + " = ANY(?)"
	}
	return col + " IN (SELECT value FROM json_each(?))"
}

// list binds a list of strings or int64s as one argument for in.
func (d dialect) list(v any) (any, error) {
	if d.postgres {
		switch v := v.(type) {
		case []string:
			return sqldb.TextArray(v), nil
		case []int64:
			return sqldb.Int64Array(v), nil
		}
		return nil, fmt.Errorf("bind a list of %T: want []string or []int64", v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// micro is the precision of stored times.
const micro = time.Microsecond

// t converts a time to its column value.
func (d dialect) t(t time.Time) any {
	if d.postgres {
		return t.UTC().Truncate(micro)
	}
	return t.UnixMicro()
}

// nt converts an optional time to its column value.
func (d dialect) nt(t *time.Time) any {
	if t == nil {
		return nil
	}
	return d.t(*t)
}

// dbTime scans a time column of either dialect.
type dbTime struct {
	T     time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (x *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*x = dbTime{}
	case time.Time:
		*x = dbTime{T: v.UTC(), Valid: true}
	case int64:
		*x = dbTime{T: time.UnixMicro(v).UTC(), Valid: true}
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return fmt.Errorf("scan time %q: %w", v, err)
		}
		*x = dbTime{T: t.UTC(), Valid: true}
	case []byte:
		return x.Scan(string(v))
	default:
		return fmt.Errorf("scan time: unsupported %T", src)
	}
	return nil
}

func (x dbTime) ptr() *time.Time {
	if !x.Valid {
		return nil
	}
	t := x.T
	return &t
}

// pgTime is a time as a PostgreSQL timestamptz[] element stores it: UTC,
// to the microsecond.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(micro) }

// pgNullTime is pgTime of an optional time.
func pgNullTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := pgTime(*t)
	return &v
}

// nullJSON returns nil for an empty document. The string shares b's
// bytes: it is used only while the caller's document stays unchanged
// (during the store call).
func nullJSON(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := unsafe.String(unsafe.SliceData(b), len(b))
	return &s
}

// wrap turns a database error into an *engine.Error saying what was done.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *engine.Error
	if errors.As(err, &e) && e.Op != "" {
		return fmt.Errorf("%s: %w", op, err)
	}
	return &engine.Error{Code: classify(err), Op: op, Err: err}
}

// classify maps driver errors to engine codes.
func classify(err error) engine.Code {
	if errors.Is(err, sql.ErrNoRows) {
		return engine.CodeNotFound
	}
	if code := sqldb.SQLState(err); len(code) == 5 { // lib/pq's *pq.Error or pgx's *pgconn.PgError
		switch class := code[:2]; {
		case code == "40001", code == "40P01", code == "23505":
			return engine.CodeConflict // serialization failure, deadlock, unique violation
		case class == "08", class == "53", class == "57":
			return engine.CodeUnavailable // connection, resources, operator intervention
		case class == "22", class == "23":
			return engine.CodeInvalid // data exception, integrity constraint
		}
		return engine.CodeInternal
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff {
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return engine.CodeUnavailable
		case 19: // SQLITE_CONSTRAINT
			switch liteErr.Code() {
			case 1555, 2067: // PRIMARYKEY, UNIQUE
				return engine.CodeConflict
			}
			return engine.CodeInvalid
		case 14, 10: // SQLITE_CANTOPEN, SQLITE_IOERR
			return engine.CodeUnavailable
		}
		return engine.CodeInternal
	}
	var netErr net.Error
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr):
		return engine.CodeUnavailable
	}
	if strings.Contains(err.Error(), "connection refused") {
		return engine.CodeUnavailable
	}
	return engine.CodeInternal
}
