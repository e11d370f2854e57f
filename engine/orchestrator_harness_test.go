package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

// The orchestrator's unit tests run on the real store (engine/sqlstore on
// a SQLite file, the store's conformance suite's subject): there is no
// in-memory fake to drift from it. testStore adds what the tests inject
// (a failing transaction) and count (transactions, prunings).
type testStore struct {
	*sqlstore.Store
	mu      sync.Mutex
	failTx  error // if set, the next InTx fails with it (and clears it)
	txCount int   // InTx calls
	purges  int   // PurgeInbox calls
}

var _ engine.Store = (*testStore)(nil)

func openTestStore(tb testing.TB, now func() time.Time) *testStore {
	tb.Helper()
	st, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(tb.TempDir(), "saga.db"), sqlstore.WithClock(now))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	return &testStore{Store: st}
}

// InTx fails once with failTx when it is set; otherwise it is the store's.
func (s *testStore) InTx(ctx context.Context, fn func(ctx context.Context, tx engine.Tx) error) error {
	s.mu.Lock()
	s.txCount++
	fail := s.failTx
	s.failTx = nil
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	return s.Store.InTx(ctx, fn)
}

// PurgeInbox counts the calls.
func (s *testStore) PurgeInbox(ctx context.Context, olderThan time.Time) (int64, error) {
	s.mu.Lock()
	s.purges++
	s.mu.Unlock()
	return s.Store.PurgeInbox(ctx, olderThan)
}

// fail makes the next InTx fail with err.
func (s *testStore) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failTx = err
}

func (s *testStore) counts() (txs, purges int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txCount, s.purges
}

// errPeek makes PublishOutbox give the records back unpublished.
var errPeek = errors.New("peek only")

// outbox returns the records waiting in the outbox, oldest first, and
// leaves them there (a publish that fails gives them back at once).
func (s *testStore) outbox(tb testing.TB) []engine.OutboxRecord {
	tb.Helper()
	var recs []engine.OutboxRecord
	_, err := s.Store.PublishOutbox(context.Background(), "peek", 100000, time.Minute, func(_ context.Context, r []engine.OutboxRecord) error {
		recs = append(recs, r...)
		return errPeek
	})
	if err != nil && !errors.Is(err, errPeek) {
		tb.Fatalf("read the outbox: %v", err)
	}
	return recs
}

// inInbox reports whether message id is recorded in the inbox (a claim
// that is rolled back).
func (s *testStore) inInbox(tb testing.TB, id string) bool {
	tb.Helper()
	errRollback := errors.New("roll back")
	var fresh map[string]bool
	err := s.Store.InTx(context.Background(), func(ctx context.Context, tx engine.Tx) error {
		var err error
		if fresh, err = tx.Claim(ctx, []string{id}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		tb.Fatalf("look up %s in the inbox: %v", id, err)
	}
	return !fresh[id]
}

// memPublisher records published records (the bus is not what these tests
// test; engine/e2e runs the orchestrator on Kafka and the embedded broker).
type memPublisher struct {
	mu   sync.Mutex
	recs []engine.Record
	fail error
}

func (p *memPublisher) Publish(_ context.Context, recs []engine.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.recs = append(p.recs, recs...)
	return nil
}

func (p *memPublisher) messages() []engine.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]engine.Message, len(p.recs))
	for i, r := range p.recs {
		_ = json.Unmarshal(r.Value, &out[i])
	}
	return out
}
