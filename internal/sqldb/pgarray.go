package sqldb

import (
	"database/sql/driver"
	"strconv"
)

// PostgreSQL batch statements bind one array per column and expand it with
// unnest (JSON columns: one JSON array expanded with json_array_elements,
// which PostgreSQL parses once). These types write the array literals with
// one allocation of about the right size and are bound as []byte, which
// lib/pq sends without copying again. FuzzTextArray checks them against
// lib/pq's own parser.

// TextArray is a PostgreSQL array literal of text; SQL casts it to the
// element type (text[], timestamptz[], ...). It does what pq.StringArray
// does, with one allocation of the exact size, and is bound as []byte,
// which lib/pq sends without copying it again.
type TextArray []string

// Value implements driver.Valuer.
func (a TextArray) Value() (driver.Value, error) {
	return arrayLiteral(len(a), func(i int) (string, bool) { return a[i], true }), nil
}

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
