package engine

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"
)

// memStore is an in-memory Store for unit tests of the orchestrator's logic.
// Transactions are serialized and work on a copy that replaces the state on
// commit. Persistence itself is tested on real databases (engine/sqlstore).
type memStore struct {
	mu      sync.Mutex
	s       memState
	failTx  error // if set, InTx fails with it (and clears it)
	txCount int
	purges  int              // PurgeInbox calls
	now     func() time.Time // inbox claim times; default time.Now
}

type memState struct {
	insts   map[string]*Instance
	history []HistoryEntry
	inbox   map[string]time.Time // message id → when claimed
	outbox  []OutboxRecord
	leases  map[int64]memLease
	dls     []DeadLetter
	seq     int64
	idem    map[string]IdempotencyKey // caller NUL saga NUL key → stored key
}

func newMemStore() *memStore {
	return &memStore{s: memState{insts: map[string]*Instance{}, inbox: map[string]time.Time{}, leases: map[int64]memLease{}}}
}

func cloneInst(in *Instance) *Instance {
	c := *in
	c.Keys = nil
	if in.Keys != nil {
		c.Keys = make(map[string]string, len(in.Keys))
		for k, v := range in.Keys {
			c.Keys[k] = v
		}
	}
	if in.Pending != nil {
		p := *in.Pending
		c.Pending = &p
	}
	if in.TimerAt != nil {
		t := *in.TimerAt
		c.TimerAt = &t
	}
	if in.Deferred != nil {
		d := *in.Deferred
		c.Deferred = &d
	}
	c.Undo = slices.Clone(in.Undo)
	c.Context = slices.Clone(in.Context)
	return &c
}

func (s memState) clone() memState {
	c := memState{insts: map[string]*Instance{}, inbox: map[string]time.Time{}, leases: map[int64]memLease{}, seq: s.seq}
	for k, v := range s.insts {
		c.insts[k] = cloneInst(v)
	}
	for k, v := range s.inbox {
		c.inbox[k] = v
	}
	for k, v := range s.leases {
		c.leases[k] = v
	}
	c.history = slices.Clone(s.history)
	c.outbox = slices.Clone(s.outbox)
	c.dls = slices.Clone(s.dls)
	c.idem = maps.Clone(s.idem)
	return c
}

type memLease struct {
	owner string
	until time.Time
}

type memTx struct {
	s   *memState
	now func() time.Time
}

func (m *memStore) InTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.txCount++
	now := time.Now
	if m.now != nil {
		now = m.now
	}
	if m.failTx != nil {
		err := m.failTx
		m.failTx = nil
		return err
	}
	work := m.s.clone()
	if err := fn(ctx, &memTx{s: &work, now: now}); err != nil {
		return err
	}
	m.s = work
	return nil
}

func (t *memTx) Claim(_ context.Context, ids []string) (map[string]bool, error) {
	fresh := map[string]bool{}
	now := t.now()
	for _, id := range ids {
		if _, ok := t.s.inbox[id]; !ok {
			t.s.inbox[id] = now
			fresh[id] = true
		}
	}
	return fresh, nil
}

func (t *memTx) ClaimIdempotencyKey(_ context.Context, k IdempotencyKey) (IdempotencyKey, bool, error) {
	id := k.Caller + "\x00" + k.Saga + "\x00" + k.Key
	if got, ok := t.s.idem[id]; ok {
		return got, false, nil
	}
	if t.s.idem == nil {
		t.s.idem = map[string]IdempotencyKey{}
	}
	t.s.idem[id] = k
	return k, true, nil
}

func (t *memTx) SentCommand(_ context.Context, sagaID, commandID string) (CommandRef, bool, error) {
	var ref CommandRef
	found := false
	for _, h := range t.s.history {
		if h.SagaID != sagaID {
			continue
		}
		for _, c := range h.Commands {
			if c.ID == commandID {
				ref, found = c, true
			}
		}
	}
	return ref, found, nil
}

func (t *memTx) Unclaim(_ context.Context, id string) error { delete(t.s.inbox, id); return nil }

func (t *memTx) Load(_ context.Context, ids []string) (map[string]*Instance, error) {
	out := map[string]*Instance{}
	for _, id := range ids {
		if in, ok := t.s.insts[id]; ok {
			out[id] = cloneInst(in)
		}
	}
	return out, nil
}

func (t *memTx) Insert(_ context.Context, insts []*Instance) error {
	for _, in := range insts {
		if _, ok := t.s.insts[in.ID]; ok {
			return Errorf(CodeConflict, "insert", "saga %s exists", in.ID)
		}
		in.Rev = 1
		t.s.insts[in.ID] = cloneInst(in)
	}
	return nil
}

func (t *memTx) Update(_ context.Context, insts []*Instance) error {
	for _, in := range insts {
		cur, ok := t.s.insts[in.ID]
		if !ok || cur.Rev != in.Rev {
			return Errorf(CodeConflict, "update", "saga %s changed", in.ID)
		}
		in.Rev++
		t.s.insts[in.ID] = cloneInst(in)
	}
	return nil
}

func (t *memTx) AppendHistory(_ context.Context, es []HistoryEntry) error {
	for _, e := range es {
		t.s.seq++
		e.Seq = t.s.seq
		t.s.history = append(t.s.history, e)
	}
	return nil
}

func (t *memTx) Enqueue(_ context.Context, recs []OutboxRecord) error {
	for _, r := range recs {
		t.s.seq++
		r.Seq = t.s.seq
		// Round-trip the message like a database would.
		b, _ := json.Marshal(r.Message)
		r.Message = Message{}
		_ = json.Unmarshal(b, &r.Message)
		t.s.outbox = append(t.s.outbox, r)
	}
	return nil
}

func (t *memTx) AddDeadLetters(_ context.Context, dls []DeadLetter) error {
	for _, d := range dls {
		parked := false
		for _, e := range t.s.dls {
			if d.MessageID != "" && e.MessageID == d.MessageID && e.ReplayedAt == nil {
				parked = true
			}
		}
		if parked {
			continue
		}
		t.s.seq++
		d.ID = t.s.seq
		t.s.dls = append(t.s.dls, d)
	}
	return nil
}

func (t *memTx) MarkReplayed(_ context.Context, id int64, actor string, at time.Time) error {
	for i := range t.s.dls {
		if t.s.dls[i].ID == id {
			t.s.dls[i].ReplayedAt, t.s.dls[i].ReplayedBy = &at, actor
			return nil
		}
	}
	return Errorf(CodeNotFound, "mark replayed", "no dead letter %d", id)
}

func (m *memStore) ClaimOutbox(_ context.Context, owner string, limit int, lease time.Duration) ([]OutboxRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []OutboxRecord
	now := time.Now()
	for _, r := range m.s.outbox {
		if len(out) == limit {
			break
		}
		if l, ok := m.s.leases[r.Seq]; ok && l.owner != owner && l.until.After(now) {
			continue
		}
		m.s.leases[r.Seq] = memLease{owner, now.Add(lease)}
		out = append(out, r)
	}
	return out, nil
}

func (m *memStore) PublishOutbox(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, recs []OutboxRecord) error) (int, error) {
	recs, err := m.ClaimOutbox(ctx, owner, limit, lease)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	if err := publish(ctx, recs); err != nil {
		return 0, err
	}
	seqs := make([]int64, len(recs))
	for i, r := range recs {
		seqs[i] = r.Seq
	}
	return len(recs), m.DeleteOutbox(ctx, seqs)
}

func (m *memStore) DeleteOutbox(_ context.Context, seqs []int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.outbox = slices.DeleteFunc(m.s.outbox, func(r OutboxRecord) bool { return slices.Contains(seqs, r.Seq) })
	return nil
}

func (m *memStore) OutboxBacklog(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.s.outbox)), nil
}

func (m *memStore) PurgeInbox(_ context.Context, olderThan time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for id, at := range m.s.inbox {
		if at.Before(olderThan) {
			delete(m.s.inbox, id)
			n++
		}
	}
	m.purges++
	return n, nil
}

func (m *memStore) DueTimers(_ context.Context, now time.Time, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []*Instance
	for _, in := range m.s.insts {
		if in.TimerAt != nil && !in.TimerAt.After(now) {
			due = append(due, in)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].TimerAt.Before(*due[j].TimerAt) })
	var ids []string
	for i := 0; i < len(due) && i < limit; i++ {
		ids = append(ids, due[i].ID)
	}
	return ids, nil
}

func (m *memStore) GetInstance(_ context.Context, id string) (Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in, ok := m.s.insts[id]; ok {
		return *cloneInst(in), nil
	}
	return Instance{}, Errorf(CodeNotFound, "get saga", "no saga %s", id)
}

func (m *memStore) History(_ context.Context, id string) ([]HistoryEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []HistoryEntry
	for _, e := range m.s.history {
		if e.SagaID == id {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memStore) ListInstances(context.Context, SagaFilter) (SagaPage, error) {
	return SagaPage{}, nil
}
func (m *memStore) CountByState(context.Context) ([]StateCount, error) { return nil, nil }

func (m *memStore) DeadLetters(_ context.Context, limit int, includeReplayed bool) ([]DeadLetter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []DeadLetter
	for i := len(m.s.dls) - 1; i >= 0 && len(out) < limit; i-- {
		if includeReplayed || m.s.dls[i].ReplayedAt == nil {
			out = append(out, m.s.dls[i])
		}
	}
	return out, nil
}

func (m *memStore) GetDeadLetter(_ context.Context, id int64) (DeadLetter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.s.dls {
		if d.ID == id {
			return d, nil
		}
	}
	return DeadLetter{}, Errorf(CodeNotFound, "get dead letter", "no dead letter %d", id)
}

func (m *memStore) Ping(context.Context) error { return nil }
func (m *memStore) Close() error               { return nil }

// memPublisher records published records.
type memPublisher struct {
	mu   sync.Mutex
	recs []Record
	fail error
}

func (p *memPublisher) Publish(_ context.Context, recs []Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.recs = append(p.recs, recs...)
	return nil
}

func (p *memPublisher) messages() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Message, len(p.recs))
	for i, r := range p.recs {
		_ = json.Unmarshal(r.Value, &out[i])
	}
	return out
}
