package sqldb

import (
	"database/sql/driver"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// PostgreSQL batch statements bind one array per column and expand it with
// unnest (JSON columns: one JSON array expanded with json_array_elements,
// which PostgreSQL parses once). The types below serve both drivers
// (DriverEnv):
//
//   - lib/pq calls Value, which writes the array literal in PostgreSQL's
//     text form with one allocation of about the right size, bound as
//     []byte, which lib/pq sends without copying again. FuzzTextArray checks
//     the literals against lib/pq's own parser.
//   - pgx never calls Value for these: they are pgtype.ArrayGetters, which
//     pgx encodes itself in PostgreSQL's binary array form (length-prefixed
//     elements: nothing to escape in Go, nothing to parse in PostgreSQL;
//     times as microseconds, bytes as they are). JSONArray is the exception:
//     a json parameter takes Value's bytes as they are under both drivers.
//
// The element type must be one pgx can write in the parameter's type:
// strings for text[], integers for int[]/bigint[], TimeArray for
// timestamptz[] (a TextArray of formatted times works with lib/pq only
// through the text form, so pgx would have to fall back to it).

// pgDims is the one dimension of an array of n elements.
func pgDims(n int) []pgtype.ArrayDimension {
	return []pgtype.ArrayDimension{{Length: int32(n), LowerBound: 1}}
}

// TextArray is a PostgreSQL text[] (under lib/pq: its array literal, which
// SQL may also cast to another element type; under pgx only text[]). It
// does what pq.StringArray does, with one allocation of about the right
// size, and is bound as []byte, which lib/pq sends without copying it
// again.
type TextArray []string

// Value implements driver.Valuer.
func (a TextArray) Value() (driver.Value, error) {
	return arrayLiteral(len(a), func(i int) (string, bool) { return a[i], true }), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx). A nil TextArray is an
// empty array, as its Value is.
func (a TextArray) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter.
func (a TextArray) Index(i int) any { return a[i] }

// IndexType implements pgtype.ArrayGetter.
func (a TextArray) IndexType() any { return "" }

// NullTextArray is a TextArray whose nil elements are NULL.
type NullTextArray []*string

// Value implements driver.Valuer.
func (a NullTextArray) Value() (driver.Value, error) {
	return arrayLiteral(len(a), func(i int) (string, bool) {
		if a[i] == nil {
			return "", false
		}
		return *a[i], true
	}), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx).
func (a NullTextArray) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter: a nil element is NULL.
func (a NullTextArray) Index(i int) any { return a[i] }

// IndexType implements pgtype.ArrayGetter.
func (a NullTextArray) IndexType() any { return (*string)(nil) }

// arrayLiteral writes {"e1","e2",NULL}, escaping " and \ in elements.
// It makes one pass over the elements into a buffer sized for the usual
// share of quotes in JSON documents.
func arrayLiteral(n int, elem func(i int) (string, bool)) []byte {
	size := 2 + 3*n
	for i := range n {
		if e, ok := elem(i); ok {
			size += len(e) + len(e)/6
		}
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		e, ok := elem(i)
		if !ok {
			b = append(b, "NULL"...)
			continue
		}
		b = append(b, '"')
		last := 0
		for j := 0; j < len(e); j++ {
			if c := e[j]; c == '"' || c == '\\' {
				b = append(b, e[last:j]...)
				b = append(b, '\\', c)
				last = j + 1
			}
		}
		b = append(b, e[last:]...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// JSONArray is a JSON array of JSON documents, nil elements as null. Every
// element must be one valid JSON value (the callers check), or the
// elements would not line up with the other columns.
type JSONArray []*string

// Value implements driver.Valuer.
func (a JSONArray) Value() (driver.Value, error) {
	size := 2 + len(a)
	for _, e := range a {
		if e == nil {
			size += 4
		} else {
			size += len(*e)
		}
	}
	b := make([]byte, 0, size)
	b = append(b, '[')
	for i, e := range a {
		if i > 0 {
			b = append(b, ',')
		}
		if e == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, *e...)
		}
	}
	return append(b, ']'), nil
}

// Int64Array is a PostgreSQL array literal of integers, like pq.Int64Array
// with one allocation of about the right size.
type Int64Array []int64

// Value implements driver.Valuer.
func (a Int64Array) Value() (driver.Value, error) {
	b := make([]byte, 0, 2+len(a)*8)
	b = append(b, '{')
	for i, v := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return append(b, '}'), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx).
func (a Int64Array) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter.
func (a Int64Array) Index(i int) any { return a[i] }

// IndexType implements pgtype.ArrayGetter.
func (a Int64Array) IndexType() any { return int64(0) }

// pgTimeLayout is the text form of a timestamptz element: UTC with
// microseconds, PostgreSQL's precision.
const pgTimeLayout = "2006-01-02T15:04:05.999999Z07:00"

// TimeArray is a PostgreSQL timestamptz[]; its times are stored to the
// microsecond (PostgreSQL's precision; finer parts are cut, not rounded,
// under both drivers).
type TimeArray []time.Time

// Value implements driver.Valuer: {"2006-01-02T15:04:05.999999Z",...}.
func (a TimeArray) Value() (driver.Value, error) {
	return timeLiteral(len(a), func(i int) (time.Time, bool) { return a[i], true }), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx).
func (a TimeArray) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter.
func (a TimeArray) Index(i int) any { return a[i].Truncate(time.Microsecond) }

// IndexType implements pgtype.ArrayGetter.
func (a TimeArray) IndexType() any { return time.Time{} }

// NullTimeArray is a TimeArray whose nil elements are NULL.
type NullTimeArray []*time.Time

// Value implements driver.Valuer.
func (a NullTimeArray) Value() (driver.Value, error) {
	return timeLiteral(len(a), func(i int) (time.Time, bool) {
		if a[i] == nil {
			return time.Time{}, false
		}
		return *a[i], true
	}), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx).
func (a NullTimeArray) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter: a nil element is NULL.
func (a NullTimeArray) Index(i int) any {
	if a[i] == nil {
		return nil
	}
	return a[i].Truncate(time.Microsecond)
}

// IndexType implements pgtype.ArrayGetter.
func (a NullTimeArray) IndexType() any { return time.Time{} }

// timeLiteral writes {"t1","t2",NULL} with the times in UTC to the
// microsecond.
func timeLiteral(n int, elem func(i int) (time.Time, bool)) []byte {
	b := make([]byte, 0, 2+n*(len(pgTimeLayout)+3))
	b = append(b, '{')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		t, ok := elem(i)
		if !ok {
			b = append(b, "NULL"...)
			continue
		}
		b = append(b, '"')
		b = t.UTC().Truncate(time.Microsecond).AppendFormat(b, pgTimeLayout)
		b = append(b, '"')
	}
	return append(b, '}')
}

// ByteaArray is a PostgreSQL bytea[]. A nil element is an empty bytea
// (not NULL), as in lib/pq's ByteaArray, under both drivers.
type ByteaArray [][]byte

// Value implements driver.Valuer: {"\\x0102",...}, hex like
// pq.ByteaArray, bound as []byte.
func (a ByteaArray) Value() (driver.Value, error) {
	size := 2 + 6*len(a)
	for _, x := range a {
		size += hex.EncodedLen(len(x))
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i, x := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `"\\x`...)
		b = hex.AppendEncode(b, x)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// Dimensions implements pgtype.ArrayGetter (pgx).
func (a ByteaArray) Dimensions() []pgtype.ArrayDimension { return pgDims(len(a)) }

// Index implements pgtype.ArrayGetter: the bytes as they are, sent in
// binary (a nil element as an empty bytea).
func (a ByteaArray) Index(i int) any {
	if a[i] == nil {
		return []byte{}
	}
	return a[i]
}

// IndexType implements pgtype.ArrayGetter.
func (a ByteaArray) IndexType() any { return []byte(nil) }
