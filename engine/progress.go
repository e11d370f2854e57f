package engine

import (
	"sync"
	"time"
)

// Re-sends while a participant is behind.
//
// Commands travel over a durable log: a command that is not answered yet is,
// in the common case, still queued behind older ones at a busy
// participant, not lost. Re-sending it then only adds work (a second
// record the participant must read, look up in its inbox and answer again,
// a second answer saga-machine must deduplicate, a timer transaction) at
// the moment the participant has least to spare, which is how an
// overloaded system collapses instead of holding its rate: measured on the
// 2-core development box, 300 sagas/s offered on PostgreSQL + Kafka
// completed 102-106 sagas/s at 18.8-19.5 ms of CPU per saga with re-sends
// every 2 s, 230-251 sagas/s at 8.0-8.7 ms when the first re-send came only
// after 30 s (docs/operations.md, "Re-sends under overload").
//
// So a retry timer does not re-send a command while its participant is
// demonstrably behind it: during the wait that just ended, the participant
// answered commands that had been sent well before this one (a quarter of
// the wait or more), so it is still working through a backlog older than
// this command. The answers are those this replica applied, by the time
// their commands were sent, kept per command topic; a participant reads
// its partitions at different paces, so "behind" is judged on the oldest
// command it answered during the wait, not the newest. That is evidence
// about the topic, not about the partition the command is on: a lost or
// parked command on a fast partition may be held back while a slow one
// lags, so the last attempt of a retry is never held back. Everything else is re-sent as before: a
// participant that answered nothing during the wait (down, or the command
// parked on its side while it is idle), one that answered only commands
// sent about as late as this one or later (it has caught up: this one was
// lost or parked), and every command after a restart (nothing is known
// yet). A held-back attempt counts as an attempt: the retry budget, the
// command's deadline and the exhausted event come at the same time as with
// the re-sends.
//
// The outbox is judged too: the relay publishes it in order, so while the
// newest command this replica's relay published during the wait was
// enqueued well before this one, this one is most likely still in the
// outbox, and re-sending it would only queue it twice.
type progress struct {
	mu sync.Mutex
	by map[string]*answerRing
	// relayNewest is the enqueue time of the newest command the relay
	// published, relayAt when it did.
	relayNewest, relayAt time.Time
}

// ringSeconds is how far back the answers are remembered, in one-second
// buckets: a wait longer than that is judged on its last ringSeconds.
const ringSeconds = 128

// answerRing keeps, per second of apply time, the oldest send time of the
// commands a participant answered in that second.
type answerRing struct {
	buckets [ringSeconds]answerBucket
}

type answerBucket struct {
	sec     int64     // the apply time's Unix second, 0 for empty
	minSent time.Time // the oldest command answered in that second
}

// answered records that the participant reading topic answered, at at, a
// command sent at sent.
func (p *progress) answered(topic string, sent, at time.Time) {
	if sent.IsZero() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.by == nil {
		p.by = map[string]*answerRing{}
	}
	r := p.by[topic]
	if r == nil {
		r = &answerRing{}
		p.by[topic] = r
	}
	sec := at.Unix()
	b := &r.buckets[uint64(sec)%ringSeconds]
	if b.sec != sec {
		*b = answerBucket{sec: sec, minSent: sent}
	} else if sent.Before(b.minSent) {
		b.minSent = sent
	}
}

// behind reports whether the participant reading topic, during the wait
// from since to now, answered a command sent before cutoff; it returns the
// oldest send time it answered then (zero if it answered nothing). Seconds
// are whole: an answer in the second since falls in counts.
func (p *progress) behind(topic string, since, now, cutoff time.Time) (bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.by[topic]
	if r == nil {
		return false, time.Time{}
	}
	first, last := since.Unix(), now.Unix()
	if last-first >= ringSeconds {
		first = last - ringSeconds + 1
	}
	var oldest time.Time
	for sec := first; sec <= last; sec++ {
		b := r.buckets[uint64(sec)%ringSeconds]
		if b.sec == sec && (oldest.IsZero() || b.minSent.Before(oldest)) {
			oldest = b.minSent
		}
	}
	return !oldest.IsZero() && oldest.Before(cutoff), oldest
}

// published records that the relay published, at at, commands enqueued up
// to newest.
func (p *progress) published(newest, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if newest.After(p.relayNewest) {
		p.relayNewest = newest
	}
	if at.After(p.relayAt) {
		p.relayAt = at
	}
}

// outboxBehind reports whether the relay published something after since,
// but nothing enqueued at or after cutoff; it returns the newest enqueue
// time it published.
func (p *progress) outboxBehind(since, cutoff time.Time) (bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayAt.After(since) && p.relayNewest.Before(cutoff), p.relayNewest
}
