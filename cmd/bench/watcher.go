package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// clockSlack widens the created_at window of a listing: a saga is created
// (by saga-machine, on REGISTER) after its POST was sent, on the same clock
// when bench started the system; the slack covers a remote system's clock.
const clockSlack = 2 * time.Second

// failedPoll is how often the notification tap looks for failed sagas
// (they send no NOTIFY).
const failedPoll = time.Second

// lister lists sagas (the store's ListInstances or GET /api/v1/sagas).
type lister func(ctx context.Context, f engine.SagaFilter) (engine.SagaPage, error)

// watcher tells the clients when their sagas are final: add registers a
// saga, run delivers it on its sagaRun.done once final.
type watcher struct {
	list lister
	poll time.Duration

	mu      sync.Mutex
	pending map[string]*sagaRun
}

func newWatcher(list lister, poll time.Duration) *watcher {
	return &watcher{list: list, poll: poll, pending: map[string]*sagaRun{}}
}

// add watches saga id until it is final.
func (w *watcher) add(id string, r *sagaRun) {
	w.mu.Lock()
	w.pending[id] = r
	w.mu.Unlock()
}

// release hands a final saga to its client; it reports whether it was
// pending (duplicates and other runs' sagas are ignored).
func (w *watcher) release(inst engine.Instance) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.pending[inst.ID]
	if ok {
		delete(w.pending, inst.ID)
		r.done <- inst
	}
	return ok
}

// oldest is the send time of the oldest saga in flight (zero if none).
func (w *watcher) oldest() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var t time.Time
	for _, r := range w.pending {
		if t.IsZero() || r.sent.Before(t) {
			t = r.sent
		}
	}
	return t
}

// runList polls the listing of sagas in the given terminal statuses every
// interval until ctx ends.
func (w *watcher) runList(ctx context.Context, every time.Duration, statuses ...engine.Status) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		from := w.oldest()
		if from.IsZero() {
			continue
		}
		for _, st := range statuses {
			if err := w.scan(ctx, engine.SagaFilter{Status: st, From: from.Add(-clockSlack), Limit: 500}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
		}
	}
}

// scan pages through f and releases the pending sagas found.
func (w *watcher) scan(ctx context.Context, f engine.SagaFilter) error {
	for {
		page, err := w.list(ctx, f)
		if err != nil {
			return fmt.Errorf("list %s sagas: %w", f.Status, err)
		}
		for _, inst := range page.Sagas {
			w.release(inst)
		}
		w.mu.Lock()
		left := len(w.pending)
		w.mu.Unlock()
		if page.Next == "" || left == 0 {
			return nil
		}
		f.Cursor = page.Next
	}
}

// tap is a Kafka client reading the notification topic from its current
// end: MANUAL_CREATE_ORDER sends NOTIFY exactly when a saga enters its
// final state, so a NOTIFY for a saga tells it is final, with no database
// query at all.
type tap struct{ cl *kgo.Client }

// newTap starts reading topic at its end (before any deal is posted).
func newTap(ctx context.Context, kcfg kafka.Config, topic string) (*tap, error) {
	opts, err := kcfg.ClientOpts()
	if err != nil {
		return nil, fmt.Errorf("notification tap on %s: %w", topic, err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, fmt.Errorf("notification tap on %s: %w", topic, err)
	}
	// Resolve the end offsets now, so NOTIFYs sent from here on are seen.
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("notification tap on %s: %w", topic, err)
	}
	return &tap{cl: cl}, nil
}

// runTap releases sagas as their NOTIFY arrives (completed, stamped with
// the record's time; drive reads the exact final time from the store
// afterwards) and polls for failed ones every failedPoll.
func (w *watcher) runTap(ctx context.Context, t *tap) error {
	defer t.cl.Close()
	errc := make(chan error, 1)
	go func() { errc <- w.runList(ctx, failedPoll, engine.StatusFailed) }()
	for {
		fs := t.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), <-errc)
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			ferr = fmt.Errorf("notification tap %s[%d]: %w", topic, p, err)
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			var m struct {
				SagaID string `json:"saga_id"`
			}
			if json.Unmarshal(r.Value, &m) == nil && m.SagaID != "" {
				w.release(engine.Instance{ID: m.SagaID, State: "NOTIFICATION", Status: engine.StatusCompleted, UpdatedAt: r.Timestamp})
			}
		})
	}
}
