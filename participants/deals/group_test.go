package deals

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// pending builds a queued deal of userID (as Create does) for writeGroup.
func pending(t *testing.T, userID, idemKey string, in NewDeal) *pendingDeal {
	t.Helper()
	dc, err := parseNewDeal(in)
	if err != nil {
		t.Fatalf("parseNewDeal: %v", err)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d := Deal{ID: uuid.NewString(), UserID: userID, PortfolioID: dc.PortfolioID, Side: dc.Side, Instrument: dc.Instrument,
		Quantity: dc.Quantity, Price: dc.Price, Amount: dc.Amount, Currency: dc.Currency, Status: StatusDraft,
		CreatedAt: now, UpdatedAt: now, RequestHash: in.hash(), SagaID: sdk.NewSagaID()}
	if idemKey != "" {
		d.IdempotencyKey = sql.NullString{String: idemKey, Valid: true}
	}
	dc.DealID, dc.UserID = d.ID, userID
	return &pendingDeal{d: d, dc: dc, done: make(chan groupResult, 1)}
}

// TestWriteGroup writes a group of new deals the way concurrent POST
// /deals share a transaction (two statements: writeDeals) and checks it
// against what writing them one after another means: the deals whose
// Idempotency-Key is new are stored, each with exactly one saga start
// carrying its deal; a key used before, or earlier in the group by the
// same user, writes nothing and reports it; another user's equal key is
// hers.
func TestWriteGroup(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newService(t, db, servicetest.NewIssuer(t).Auth)
		before := pending(t, "alice", "used", buyRequest())
		s.writeGroup([]*pendingDeal{before})
		if r := <-before.done; r.err != nil || !r.inserted {
			t.Fatalf("first deal: %+v, want inserted", r)
		}
		servicetest.Flush(t, p)

		group := []*pendingDeal{
			pending(t, "alice", "", buyRequest()),
			pending(t, "alice", "", buyRequest()),
			pending(t, "alice", "k1", buyRequest()),
			pending(t, "alice", "k1", buyRequest()), // the same key earlier in the group
			pending(t, "alice", "used", buyRequest()),
			pending(t, "bob", "k1", buyRequest()), // another user's key
		}
		s.writeGroup(group)
		want := []bool{true, true, true, false, false, true}
		var written []string
		for i, pd := range group {
			r := <-pd.done
			if r.err != nil || r.inserted != want[i] {
				t.Errorf("deal %d: inserted %v err %v, want inserted %v", i, r.inserted, r.err, want[i])
			}
			if want[i] {
				written = append(written, pd.d.ID)
			}
		}
		var stored []string
		if err := db.Select(&stored, `SELECT id FROM deals WHERE id <> `+placeholder(db)+` ORDER BY seq`, before.d.ID); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(stored, written) {
			t.Errorf("stored deals = %v, want %v (in group order)", stored, written)
		}
		starts := map[string]string{} // saga id -> deal id
		for _, m := range servicetest.Flush(t, p) {
			var env dealctx.Envelope
			if err := json.Unmarshal(m.Payload, &env); err != nil || env.DealContext == nil {
				t.Fatalf("saga start %s: payload %s: %v", m.SagaID, m.Payload, err)
			}
			if m.Saga != SagaName || m.Name != StartEvent {
				t.Errorf("saga start %s: %s %s, want %s %s", m.SagaID, m.Saga, m.Name, SagaName, StartEvent)
			}
			if prev, dup := starts[m.SagaID]; dup {
				t.Errorf("saga %s started twice (deals %s, %s)", m.SagaID, prev, env.DealContext.DealID)
			}
			starts[m.SagaID] = env.DealContext.DealID
		}
		if len(starts) != len(written) {
			t.Errorf("saga starts = %d, want %d", len(starts), len(written))
		}
		for i, pd := range group {
			if got, ok := starts[pd.d.SagaID]; want[i] && (!ok || got != pd.d.ID) {
				t.Errorf("deal %d (%s): saga start carries deal %q (found %v)", i, pd.d.ID, got, ok)
			} else if !want[i] && ok {
				t.Errorf("deal %d (%s) was not written but its saga %s started", i, pd.d.ID, pd.d.SagaID)
			}
		}
	})
}

// TestWriteGroupFallsBackDealByDeal: a deal the database refuses fails
// its group's transaction; the group is written again deal by deal, so
// only that deal's request fails and nothing of it is stored.
func TestWriteGroupFallsBackDealByDeal(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newService(t, db, servicetest.NewIssuer(t).Auth)
		bad := pending(t, "alice", "", buyRequest())
		bad.d.Side = "hold" // past validation: the table's CHECK refuses it
		group := []*pendingDeal{pending(t, "alice", "", buyRequest()), bad, pending(t, "alice", "k", buyRequest())}
		s.writeGroup(group)
		for i, pd := range group {
			r := <-pd.done
			if i == 1 {
				if r.err == nil {
					t.Errorf("the refused deal: no error")
				}
				continue
			}
			if r.err != nil || !r.inserted {
				t.Errorf("deal %d: %+v, want inserted", i, r)
			}
		}
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM deals WHERE id = `+placeholder(db), bad.d.ID); err != nil || n != 0 {
			t.Errorf("refused deal stored: %d rows (%v)", n, err)
		}
		msgs := servicetest.Flush(t, p)
		if len(msgs) != 2 {
			t.Errorf("saga starts = %d, want 2", len(msgs))
		}
		for _, m := range msgs {
			if m.SagaID == bad.d.SagaID {
				t.Errorf("the refused deal's saga %s started", m.SagaID)
			}
		}
	})
}

// TestGroupsGrowWhileOneIsWritten: while a group is being written, the
// deals that arrive wait in the queue for the next group instead of
// starting transactions of their own (with several flushers each took what
// was queued at its moment: groups of one or two at moderate load); when the
// first group commits, they are written together, and every one of them
// is stored with its saga start.
func TestGroupsGrowWhileOneIsWritten(t *testing.T) {
	servicetest.EachDB(t, Migrate, func(t *testing.T, db *sqlx.DB) {
		s, p := newService(t, db, servicetest.NewIssuer(t).Auth)
		// Hold the deals table: the first group's INSERT waits for it.
		hold, err := db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Rollback()                         //nolint:errcheck // released below; a no-op then
		lock := `DELETE FROM deals WHERE id = 'none'` // SQLite: takes the one write lock
		if s.dialect == service.Postgres {
			lock = `LOCK TABLE deals IN EXCLUSIVE MODE`
		}
		if _, err := hold.Exec(lock); err != nil {
			t.Fatal(err)
		}
		const n = 8
		deals := make([]*pendingDeal, n)
		results := make(chan error, n)
		insert := func(pd *pendingDeal) {
			inserted, err := s.insertDeal(trace.SpanContext{}, pd.d, pd.dc)
			if err == nil && !inserted {
				err = fmt.Errorf("deal %s not inserted", pd.d.ID)
			}
			results <- err
		}
		queued := func() (int, bool) {
			s.groupMu.Lock()
			defer s.groupMu.Unlock()
			return len(s.queue), s.flushing
		}
		// waitQueued waits (at most 2 s: SQLite's busy timeout is 5 s) until
		// want deals are queued behind a running flusher.
		waitQueued := func(want int) {
			t.Helper()
			var got int
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				var running bool
				if got, running = queued(); got == want && running {
					return
				}
			}
			t.Fatalf("queued deals = %d, want %d behind the group being written", got, want)
		}
		for i := range deals {
			deals[i] = pending(t, "alice", "", buyRequest())
		}
		go insert(deals[0])
		waitQueued(0) // the first group (one deal) is being written
		for _, pd := range deals[1:] {
			go insert(pd)
		}
		waitQueued(n - 1)
		time.Sleep(20 * time.Millisecond) // a second flusher, if there were one, would take them now
		if got, _ := queued(); got != n-1 {
			t.Fatalf("queued deals = %d after 20 ms, want %d: another group was started while the first was written", got, n-1)
		}
		if err := hold.Rollback(); err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := <-results; err != nil {
				t.Error(err)
			}
		}
		var stored int
		if err := db.Get(&stored, `SELECT COUNT(*) FROM deals`); err != nil || stored != n {
			t.Errorf("deals stored = %d (%v), want %d", stored, err, n)
		}
		if msgs := servicetest.Flush(t, p); len(msgs) != n {
			t.Errorf("saga starts = %d, want %d", len(msgs), n)
		}
	})
}

// placeholder is the first bind parameter of db's driver.
func placeholder(db *sqlx.DB) string { return db.Rebind("?") }
