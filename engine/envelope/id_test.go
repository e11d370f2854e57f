package envelope_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// TestNewIDOrderedByTime: ids are version 7 UUIDs carrying the time they
// were made, unique, and a sequence made one after another sorts as made
// (as text, the order of the B-tree indexes keyed by them).
func TestNewIDOrderedByTime(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = envelope.NewID()
	}
	after := time.Now()
	if !slices.IsSorted(ids) {
		t.Fatal("ids made one after another do not sort in the order they were made")
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("id %s made twice", id)
		}
		seen[id] = true
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("id %q is not a UUID: %v", id, err)
		}
		if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("id %s: version %d, variant %v; want 7, RFC 4122", id, u.Version(), u.Variant())
		}
		// google/uuid keeps v7 ids in order within a millisecond with a
		// 12-bit sub-millisecond count (256 ns a step): ids made faster than
		// that borrow the next steps, so their time may run ahead of the
		// clock by up to 256 ns an id (a run saw one 26 µs ahead).
		sec, nsec := u.Time().UnixTime()
		ahead := time.Duration(len(ids)) * 256 * time.Nanosecond
		if at := time.Unix(sec, nsec); at.Before(before) || at.After(after.Add(ahead)) {
			t.Fatalf("id %s carries %v, not between %v and %v (+%v)", id, at, before, after, ahead)
		}
	}
}
