package service

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
)

// Pagination defaults.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// PageRequest is a parsed ?limit=&cursor= pair. Lists are ordered newest
// first by a monotonic sequence number; the cursor is the sequence number of
// the last item of the previous page, opaque to clients.
type PageRequest struct {
	Limit int
	// Before is the exclusive upper bound of the sequence numbers to list;
	// 0 means "from the newest".
	Before int64
}

// ParsePage reads limit and cursor from r's query. Errors are 422 problems.
func ParsePage(r *http.Request) (PageRequest, error) {
	q := r.URL.Query()
	p := PageRequest{Limit: DefaultPageSize}
	var errs []FieldError
	if s := q.Get("limit"); s != "" || q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			errs = append(errs, FieldError{Field: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d, got %q", MaxPageSize, s)})
		} else {
			p.Limit = n
		}
	}
	if s := q.Get("cursor"); s != "" {
		seq, err := DecodeCursor(s)
		if err != nil {
			errs = append(errs, FieldError{Field: "cursor", Message: "is not a cursor returned by this API (use next_cursor of the previous page)"})
		} else {
			p.Before = seq
		}
	}
	if len(errs) > 0 {
		return p, Invalid(errs...)
	}
	return p, nil
}

// EncodeCursor makes the opaque cursor of sequence number seq.
func EncodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("s" + strconv.FormatInt(seq, 10)))
}

// DecodeCursor reverses EncodeCursor.
func DecodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 2 || b[0] != 's' {
		return 0, fmt.Errorf("decode cursor %q: not a cursor", c)
	}
	seq, err := strconv.ParseInt(string(b[1:]), 10, 64)
	if err != nil || seq <= 0 {
		return 0, fmt.Errorf("decode cursor %q: not a cursor", c)
	}
	return seq, nil
}

// Page is one page of a list response.
type Page[T any] struct {
	Items []T `json:"items"`
	// NextCursor fetches the next (older) page; absent on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// NewPage builds a page from up to limit+1 items fetched newest first: the
// extra item only tells that there is a next page.
func NewPage[T any](items []T, limit int, seq func(T) int64) Page[T] {
	p := Page[T]{Items: items}
	if p.Items == nil {
		p.Items = []T{}
	}
	if len(items) > limit {
		p.Items = items[:limit]
		p.NextCursor = EncodeCursor(seq(items[limit-1]))
	}
	return p
}
