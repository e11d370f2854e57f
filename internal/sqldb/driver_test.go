package sqldb_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// pgDrivers are the PostgreSQL drivers every driver test runs under.
var pgDrivers = []string{sqldb.DriverPgx, sqldb.DriverLibPQ}

func TestParsePostgresDriver(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: sqldb.DefaultPostgresDriver},
		{in: "pgx", want: sqldb.DriverPgx},
		{in: " PGX ", want: sqldb.DriverPgx},
		{in: "pgx/v5", want: sqldb.DriverPgx},
		{in: "pq", want: sqldb.DriverLibPQ},
		{in: "lib/pq", want: sqldb.DriverLibPQ},
		{in: "postgres", want: sqldb.DriverLibPQ},
		{in: "sqlite", bad: true},
		{in: "pgx;DROP", bad: true},
	}
	for _, tt := range tests {
		got, err := sqldb.ParsePostgresDriver(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("ParsePostgresDriver(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePostgresDriver(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestOpenFollowsDriverEnv checks that Open picks the driver of DriverEnv
// and refuses an unknown one without opening anything.
func TestOpenFollowsDriverEnv(t *testing.T) {
	u := testenv.Postgres(t)
	for _, tt := range []struct{ env, want string }{{"pgx", sqldb.DriverPgx}, {"pq", sqldb.DriverLibPQ}, {"", sqldb.DefaultPostgresDriver}} {
		t.Setenv(sqldb.DriverEnv, tt.env)
		db, err := sqldb.Open(context.Background(), u, 2)
		if err != nil {
			t.Fatalf("%s=%q: Open: %v", sqldb.DriverEnv, tt.env, err)
		}
		if got := db.DriverName(); got != tt.want {
			t.Errorf("%s=%q: driver %q, want %q", sqldb.DriverEnv, tt.env, got, tt.want)
		}
		if d, err := sqldb.DialectOf(db); err != nil || d != sqldb.Postgres {
			t.Errorf("%s=%q: dialect %q, %v; want postgres", sqldb.DriverEnv, tt.env, d, err)
		}
		db.Close()
	}
	t.Setenv(sqldb.DriverEnv, "mysql")
	if db, err := sqldb.Open(context.Background(), u, 2); err == nil {
		db.Close()
		t.Fatalf("%s=mysql: Open succeeded, want an error", sqldb.DriverEnv)
	}
	if _, err := sqldb.OpenPostgresWith("sqlite", u); err == nil {
		t.Fatal("OpenPostgresWith(sqlite): got no error, want one")
	}
}

// openBoth opens the test database with driver.
func openBoth(t *testing.T, driver, u string) *sqlx.DB {
	t.Helper()
	db, err := sqldb.OpenPostgresWith(driver, u)
	if err != nil {
		t.Fatalf("open with %s: %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestRuntimeParamOnEveryConnection checks that a run-time parameter in the
// URL (saga-machine's store adds plan_cache_mode=force_custom_plan) is in
// force on every pooled connection under both drivers: pgx and lib/pq
// take it from the URL differently (pgx: RuntimeParams of its config).
func TestRuntimeParamOnEveryConnection(t *testing.T) {
	u := testenv.Postgres(t) + "&plan_cache_mode=force_custom_plan"
	if !strings.Contains(u, "?") {
		t.Fatalf("test URL %q has no query", u)
	}
	ctx := context.Background()
	for _, driver := range pgDrivers {
		t.Run(driver, func(t *testing.T) {
			db := openBoth(t, driver, u)
			db.SetMaxOpenConns(3)
			var conns []*sql.Conn
			pids := map[int]bool{}
			for range 3 { // three connections held at once: three backends
				c, err := db.Conn(ctx)
				if err != nil {
					t.Fatalf("conn: %v", err)
				}
				conns = append(conns, c)
				var mode string
				var pid int
				if err := c.QueryRowContext(ctx, `SELECT current_setting('plan_cache_mode'), pg_backend_pid()`).Scan(&mode, &pid); err != nil {
					t.Fatalf("read plan_cache_mode: %v", err)
				}
				if mode != "force_custom_plan" {
					t.Errorf("plan_cache_mode on backend %d: got %q, want force_custom_plan", pid, mode)
				}
				pids[pid] = true
				var shown string
				if err := c.QueryRowContext(ctx, `SHOW plan_cache_mode`).Scan(&shown); err != nil || shown != "force_custom_plan" {
					t.Errorf("SHOW plan_cache_mode on backend %d: got %q (err %v), want force_custom_plan", pid, shown, err)
				}
			}
			if len(pids) != 3 {
				t.Errorf("got %d distinct backends, want 3", len(pids))
			}
			for _, c := range conns {
				c.Close()
			}
			// Without the parameter the server default (auto) holds: the
			// check above can fail.
			plain := openBoth(t, driver, testenv.Postgres(t))
			var mode string
			if err := plain.QueryRowContext(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != "auto" {
				t.Errorf("plan_cache_mode without the URL parameter: got %q (err %v), want auto", mode, err)
			}
		})
	}
}

// TestArraysRoundTrip binds every batch array type, as a prepared statement
// (the hot path) and directly, under both drivers and reads the elements
// back: hostile text (quotes, backslashes, braces, commas, "NULL", empty,
// non-ASCII), NULLs, times to the microsecond and arbitrary bytes.
func TestArraysRoundTrip(t *testing.T) {
	s := func(v string) *string { return &v }
	texts := []string{"", "NULL", `q"uote`, `back\slash`, "{a,b}", "é, ü", " ", `{"k":"v\\w"}`, "x'); DROP TABLE t; --"}
	nullTexts := sqldb.NullTextArray{s("a"), nil, s(`"`), s("NULL")}
	ints := sqldb.Int64Array{0, -1, 9223372036854775807, -9223372036854775808}
	t0 := time.Date(2026, 11, 26, 8, 30, 0, 123456789, time.FixedZone("X", 3*3600))
	times := sqldb.TimeArray{t0, time.Unix(0, 0), time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)}
	t1 := t0.Add(time.Hour)
	nullTimes := sqldb.NullTimeArray{nil, &t1, nil}
	blobs := sqldb.ByteaArray{{0, 1, 2, 255}, nil, []byte(`\x"{}`), {}}
	docs := sqldb.JSONArray{s(`{"a":"b\"c"}`), nil, s(`[1,2]`), s(`"x"`)}
	ctx := context.Background()
	for _, driver := range pgDrivers {
		t.Run(driver, func(t *testing.T) {
			db := openBoth(t, driver, testenv.Postgres(t))
			const q = `SELECT (SELECT array_agg(x ORDER BY n) FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(x ORDER BY n) FROM unnest($2::text[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(x ORDER BY n) FROM unnest($3::bigint[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(to_char(x AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') ORDER BY n) FROM unnest($4::timestamptz[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(to_char(x AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') ORDER BY n) FROM unnest($5::timestamptz[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(encode(x, 'hex') ORDER BY n) FROM unnest($6::bytea[]) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(x ORDER BY n) FROM json_array_elements($7::json) WITH ORDINALITY AS u(x, n))::text,
				(SELECT json_agg(x ORDER BY n) FROM unnest($8::int[]) WITH ORDINALITY AS u(x, n))::text`
			args := []any{sqldb.TextArray(texts), nullTexts, ints, times, nullTimes, blobs, docs, sqldb.Int64Array{1, 2}}
			st, err := db.PreparexContext(ctx, q)
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			defer st.Close()
			for _, run := range []struct {
				name string
				row  func() *sql.Row
			}{
				{"prepared", func() *sql.Row { return st.QueryRowContext(ctx, args...) }},
				{"direct", func() *sql.Row { return db.QueryRowContext(ctx, q, args...) }},
				{"prepared again", func() *sql.Row { return st.QueryRowContext(ctx, args...) }},
			} {
				var gotTexts, gotNull, gotInts, gotTimes, gotNullTimes, gotBlobs, gotDocs, gotInt4 string
				if err := run.row().Scan(&gotTexts, &gotNull, &gotInts, &gotTimes, &gotNullTimes, &gotBlobs, &gotDocs, &gotInt4); err != nil {
					t.Fatalf("%s: query: %v", run.name, err)
				}
				// text[] comes back in PostgreSQL's own array output; compare
				// element by element through json instead.
				var back []string
				if err := db.QueryRowContext(ctx, `SELECT json_agg(x ORDER BY n)::text FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n)`, gotTexts).Scan(&gotTexts); err != nil {
					t.Fatalf("%s: reread text[]: %v", run.name, err)
				}
				if err := json.Unmarshal([]byte(gotTexts), &back); err != nil || !slices.Equal(back, texts) {
					t.Errorf("%s: text[] read back as %q (%v), want %q", run.name, back, err, texts)
				}
				checks := []struct{ what, got, want string }{
					{"NullTextArray", gotNull, `["a", null, "\"", "NULL"]`},
					{"Int64Array", gotInts, `[0, -1, 9223372036854775807, -9223372036854775808]`},
					{"TimeArray", gotTimes, `["2026-11-26T05:30:00.123456", "1970-01-01T00:00:00.000000", "1999-12-31T23:59:59.999999"]`},
					{"NullTimeArray", gotNullTimes, `[null, "2026-11-26T06:30:00.123456", null]`},
					{"ByteaArray", gotBlobs, `["000102ff", "", "5c78227b7d", ""]`},
					{"JSONArray", gotDocs, `[{"a":"b\"c"}, null, [1,2], "x"]`},
					{"Int64Array as int[]", gotInt4, `[1, 2]`},
				}
				for _, c := range checks {
					if c.got != c.want {
						t.Errorf("%s: %s read back as %s, want %s", run.name, c.what, c.got, c.want)
					}
				}
			}
			// Empty and nil arrays are empty arrays (not NULL) under both.
			var n int
			var isNull bool
			if err := db.QueryRowContext(ctx, `SELECT cardinality($1::text[]) + cardinality($2::bigint[]) + cardinality($3::bytea[]) + cardinality($4::timestamptz[]), $5::text[] IS NULL`,
				sqldb.TextArray(nil), sqldb.Int64Array{}, sqldb.ByteaArray(nil), sqldb.TimeArray(nil), sqldb.TextArray(nil)).Scan(&n, &isNull); err != nil || n != 0 || isNull {
				t.Errorf("empty arrays: cardinality %d, NULL %v, err %v; want 0, false, nil", n, isNull, err)
			}
		})
	}
}

// TestSQLStateBothDrivers checks that SQLState reads the code of a
// PostgreSQL error under both drivers (error classification of the store
// and of CREATE DATABASE depends on it), through wrapping.
func TestSQLStateBothDrivers(t *testing.T) {
	ctx := context.Background()
	if got := sqldb.SQLState(errors.New("plain")); got != "" {
		t.Errorf("SQLState(plain error) = %q, want empty", got)
	}
	if got := sqldb.SQLState(nil); got != "" {
		t.Errorf("SQLState(nil) = %q, want empty", got)
	}
	for _, driver := range pgDrivers {
		t.Run(driver, func(t *testing.T) {
			db := openBoth(t, driver, testenv.Postgres(t))
			if _, err := db.ExecContext(ctx, `CREATE TABLE u (id text PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO u VALUES ('a')`); err != nil {
				t.Fatal(err)
			}
			_, err := db.ExecContext(ctx, `INSERT INTO u VALUES ($1)`, "a")
			if got := sqldb.SQLState(wrapErr(err)); got != "23505" {
				t.Errorf("duplicate key: SQLState = %q (err %v), want 23505", got, err)
			}
			_, err = db.ExecContext(ctx, `SELECT 1/0`)
			if got := sqldb.SQLState(err); got != "22012" {
				t.Errorf("division by zero: SQLState = %q (err %v), want 22012", got, err)
			}
			var count int
			if err := db.GetContext(ctx, &count, `SELECT count(*) FROM u`); err != nil || count != 1 {
				t.Errorf("rows after the refused insert: %d (err %v), want 1", count, err)
			}
		})
	}
}

type wrapped struct{ err error }

func (w wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func wrapErr(err error) error {
	if err == nil {
		return nil
	}
	return wrapped{err}
}

// TestQuoteIdentifier checks the quoting against hostile names: on a real
// server a name built to close the quote and run a second statement
// becomes one odd table name, and nothing else happens.
func TestQuoteIdentifier(t *testing.T) {
	tests := []struct{ in, want string }{
		{"saga", `"saga"`},
		{`a"b`, `"a""b"`},
		{"x\x00y", `"x"`},
		{"", `""`},
	}
	for _, tt := range tests {
		if got := sqldb.QuoteIdentifier(tt.in); got != tt.want {
			t.Errorf("QuoteIdentifier(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	ctx := context.Background()
	for _, driver := range pgDrivers {
		t.Run(driver, func(t *testing.T) {
			db := openBoth(t, driver, testenv.Postgres(t))
			if _, err := db.ExecContext(ctx, `CREATE TABLE victim (v int); INSERT INTO victim VALUES (1)`); err != nil {
				// pgx runs a statement without arguments with the simple
				// protocol, as lib/pq does: both take several statements.
				t.Fatal(err)
			}
			hostile := `t"; DROP TABLE victim; --`
			if _, err := db.ExecContext(ctx, `CREATE TABLE `+sqldb.QuoteIdentifier(hostile)+` (v int)`); err != nil {
				t.Fatalf("create table %q: %v", hostile, err)
			}
			var n int
			if err := db.GetContext(ctx, &n, `SELECT count(*) FROM victim`); err != nil || n != 1 {
				t.Errorf("victim after the hostile name: %d rows (err %v), want 1", n, err)
			}
			var name string
			if err := db.GetContext(ctx, &name, `SELECT relname FROM pg_class WHERE relname LIKE 't"%'`); err != nil || name != hostile {
				t.Errorf("table created: %q (err %v), want %q", name, err, hostile)
			}
		})
	}
}

// TestByteaArrayLiteral checks the lib/pq text form of ByteaArray against
// pq.ByteaArray's (which it replaces).
func TestByteaArrayLiteral(t *testing.T) {
	for _, tc := range []struct {
		in   sqldb.ByteaArray
		want string
	}{
		{nil, `{}`},
		{sqldb.ByteaArray{}, `{}`},
		{sqldb.ByteaArray{nil, {}}, `{"\\x","\\x"}`},
		{sqldb.ByteaArray{{0, 0xab}, []byte("a")}, `{"\\x00ab","\\x61"}`},
	} {
		v, err := tc.in.Value()
		got, _ := v.([]byte)
		if err != nil || !bytes.Equal(got, []byte(tc.want)) {
			t.Errorf("ByteaArray(%q).Value() = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestPgxEncodesArraysInBinary checks that pgx writes the batch arrays
// itself in PostgreSQL's binary array form (the reason they are
// pgtype.ArrayGetters): had it fallen back to Value, the text literal
// could not be written as a binary array and Encode would fail.
func TestPgxEncodesArraysInBinary(t *testing.T) {
	s := "x"
	now := time.Now()
	m := pgtype.NewMap()
	for _, tc := range []struct {
		oid uint32
		v   any
	}{
		{pgtype.TextArrayOID, sqldb.TextArray{"a", `"`}},
		{pgtype.TextArrayOID, sqldb.NullTextArray{&s, nil}},
		{pgtype.Int8ArrayOID, sqldb.Int64Array{1, 2}},
		{pgtype.Int4ArrayOID, sqldb.Int64Array{1, 2}},
		{pgtype.TimestamptzArrayOID, sqldb.TimeArray{now}},
		{pgtype.TimestamptzArrayOID, sqldb.NullTimeArray{&now, nil}},
		{pgtype.ByteaArrayOID, sqldb.ByteaArray{{1}, nil}},
	} {
		buf, err := m.Encode(tc.oid, pgtype.BinaryFormatCode, tc.v, nil)
		if err != nil || len(buf) < 12 {
			t.Errorf("binary encode of %T as oid %d: %d bytes, %v; want a binary array", tc.v, tc.oid, len(buf), err)
		}
	}
}
