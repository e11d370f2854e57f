package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// claimKey claims k in its own transaction.
func claimKey(t *testing.T, s Store, k engine.IdempotencyKey) (engine.IdempotencyKey, bool) {
	t.Helper()
	var got engine.IdempotencyKey
	var fresh bool
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		var err error
		got, fresh, err = tx.ClaimIdempotencyKey(ctx, k)
		return err
	})
	return got, fresh
}

func diffKey(got, want engine.IdempotencyKey) string {
	if got.Caller != want.Caller || got.Saga != want.Saga || got.Key != want.Key || got.RequestHash != want.RequestHash ||
		got.SagaID != want.SagaID || !timeEqual(got.CreatedAt, want.CreatedAt) {
		return fmt.Sprintf("got %+v, want %+v", got, want)
	}
	return ""
}

// testIdempotencyKeys: a key is stored once per (caller, saga, key); a
// second claim returns the first one's hash and saga; other callers, other
// definitions and keys differing in case are other keys; a rolled-back
// claim is forgotten; bad input is CodeInvalid.
func testIdempotencyKeys(t *testing.T, s Store) {
	ctx := context.Background()
	alice := engine.IdempotencyKey{Caller: "alice", Saga: "PAY_ORDER", Key: "order-1", RequestHash: "h1", SagaID: "s-1", CreatedAt: at(0)}
	got, fresh := claimKey(t, s, alice)
	if !fresh || diffKey(got, alice) != "" {
		t.Fatalf("first claim: fresh %v, %s", fresh, diffKey(got, alice))
	}
	again := alice
	again.RequestHash, again.SagaID, again.CreatedAt = "h2", "s-2", at(time.Hour)
	got, fresh = claimKey(t, s, again)
	if fresh {
		t.Errorf("second claim of alice's key: fresh, want the stored key")
	}
	if d := diffKey(got, alice); d != "" {
		t.Errorf("second claim returned the wrong key: %s", d)
	}

	for _, tc := range []struct {
		name string
		edit func(k *engine.IdempotencyKey)
	}{
		{"another caller", func(k *engine.IdempotencyKey) { k.Caller = "bob" }},
		{"the in-process caller", func(k *engine.IdempotencyKey) { k.Caller = "" }},
		{"another definition", func(k *engine.IdempotencyKey) { k.Saga = "OTHER" }},
		{"key in other case", func(k *engine.IdempotencyKey) { k.Key = "ORDER-1" }},
		{"caller in other case", func(k *engine.IdempotencyKey) { k.Caller = "Alice" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := alice
			k.RequestHash, k.SagaID = "h-"+tc.name, "s-"+tc.name
			tc.edit(&k)
			got, fresh := claimKey(t, s, k)
			if !fresh || diffKey(got, k) != "" {
				t.Errorf("claim: fresh %v, %s; want a fresh key", fresh, diffKey(got, k))
			}
		})
	}

	// A claim in a transaction that rolls back is forgotten.
	errBoom := errors.New("boom")
	rolled := engine.IdempotencyKey{Caller: "carol", Saga: "PAY_ORDER", Key: "k", RequestHash: "h", SagaID: "s-rolled", CreatedAt: at(0)}
	err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		if _, _, err := tx.ClaimIdempotencyKey(ctx, rolled); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx: got %v, want %v", err, errBoom)
	}
	if _, fresh := claimKey(t, s, rolled); !fresh {
		t.Errorf("key claimed in a rolled-back transaction is still stored")
	}

	for _, tc := range []struct {
		name string
		edit func(k *engine.IdempotencyKey)
	}{
		{"empty key", func(k *engine.IdempotencyKey) { k.Key = "" }},
		{"empty saga", func(k *engine.IdempotencyKey) { k.Saga = "" }},
		{"empty hash", func(k *engine.IdempotencyKey) { k.RequestHash = "" }},
		{"empty saga id", func(k *engine.IdempotencyKey) { k.SagaID = "" }},
		{"NUL in caller", func(k *engine.IdempotencyKey) { k.Caller = "a\x00b" }},
		{"NUL in key", func(k *engine.IdempotencyKey) { k.Key = "a\x00b" }},
	} {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			k := alice
			k.Caller = "invalid"
			tc.edit(&k)
			err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
				_, _, err := tx.ClaimIdempotencyKey(ctx, k)
				return err
			})
			wantCode(t, "ClaimIdempotencyKey", err, engine.CodeInvalid)
		})
	}
}

// testIdempotencyKeysConcurrent: many transactions claiming one key at
// once store it once, and every loser sees the winner's saga.
func testIdempotencyKeysConcurrent(t *testing.T, s Store) {
	ctx := context.Background()
	const workers = 8
	type result struct {
		fresh  bool
		sagaID string
		err    error
	}
	results := make([]result, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			k := engine.IdempotencyKey{Caller: "dave", Saga: "PAY_ORDER", Key: "race", RequestHash: "h",
				SagaID: fmt.Sprintf("s-%d", w), CreatedAt: at(time.Duration(w) * time.Second)}
			for attempt := 0; ; attempt++ {
				var r result
				r.err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
					got, fresh, err := tx.ClaimIdempotencyKey(ctx, k)
					r.fresh, r.sagaID = fresh, got.SagaID
					return err
				})
				if r.err == nil || engine.ErrorCode(r.err) != engine.CodeConflict || attempt > 100 {
					results[w] = r
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	winners, winner := 0, ""
	for w, r := range results {
		if r.err != nil {
			t.Errorf("worker %d: %v", w, r.err)
			continue
		}
		if r.fresh {
			winners++
			winner = r.sagaID
		}
	}
	if winners != 1 {
		t.Fatalf("%d workers stored the key, want exactly 1", winners)
	}
	for w, r := range results {
		if r.err == nil && r.sagaID != winner {
			t.Errorf("worker %d saw saga %s, want the winner's %s", w, r.sagaID, winner)
		}
	}
}
