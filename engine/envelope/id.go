package envelope

import "github.com/google/uuid"

// NewID returns a fresh id for a message, a saga instance or a business
// row: a UUID version 7 (RFC 9562), whose first 48 bits are the Unix time
// in milliseconds and whose other 74 bits are a counter within the
// millisecond and random bits.
//
// Why not a random UUID (version 4): every table that remembers these ids
// keeps them in a B-tree (the inboxes, saga_instances, saga_history by
// saga, the business tables). Random ids put each new row on a random leaf
// page, so a transaction of fifty rows dirties fifty pages of each index,
// and each dirty page is written whole to SQLite's WAL (and, after a
// checkpoint, to PostgreSQL's). Ids made close in time sort close
// together, so a batch's rows share the few rightmost pages.
//
// The ids carry their creation time to the millisecond. None of them is a
// secret or a capability: every API checks who may see or change a
// resource, and 74 bits remain unguessable.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }
