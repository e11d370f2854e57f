package engine

import (
	"sync"
	"time"
)

// Re-sends while a participant is behind.
//
// Commands travel over a durable log: a command that is not answered yet is,
// in the common case, still queued ahead of a participant that is busy
// with older ones, not lost. Re-sending it then only adds work (a second
// record the participant must read, look up in its inbox and answer again,
// a second answer saga-machine must deduplicate) at the moment the
// participant has least to spare, which is how an overloaded system
// collapses instead of holding its rate: measured on the 2-core development
// box, 300 sagas/s offered on PostgreSQL + Kafka completed 102-106 sagas/s
// at 18.8-19.5 ms of CPU per saga with the re-sends, 230-251 sagas/s at
// 8.0-8.7 ms without them (docs/operations.md, "Re-sends under overload").
//
// So a retry timer re-sends a command only when the participant is not
// merely behind. This replica remembers, per participant, the newest
// command (by the time it was sent) it has seen answered, and when that
// answer came. A command sent at T is held back when the participant
// answered something during the wait that just ended (it is alive and
// consuming) but nothing sent at or after T (it has not got that far).
// Everything else is re-sent as before: a participant that answered
// nothing during the wait (down, or the command parked on its side while
// it is idle), one that answered a later
// command (it passed ours: ours was lost or parked), and every command
// after a restart (nothing is known yet). A held-back attempt counts as an
// attempt: the retry budget, the command's deadline and the exhausted event
// come at the same time as with the re-sends. The knowledge is per
// replica and approximate (partitions progress unevenly); it only ever
// skips re-sends that would have landed behind the original.
type progress struct {
	mu sync.Mutex
	by map[string]answerMark
}

// answerMark is the newest command of a participant seen answered.
type answerMark struct {
	sent time.Time // when that command was (last) sent
	at   time.Time // when its answer was applied
}

// answered records that participant answered a command sent at sent; at is
// when the answer was applied.
func (p *progress) answered(participant string, sent, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.by == nil {
		p.by = map[string]answerMark{}
	}
	mark := p.by[participant]
	if sent.After(mark.sent) {
		mark.sent = sent
	}
	if at.After(mark.at) {
		mark.at = at
	}
	p.by[participant] = mark
}

// behind reports whether a command sent to participant at sent is most
// likely still queued ahead of it: it answered something after since (it
// is alive: since is no earlier than sent), but nothing sent at or after
// sent. It also returns what is known.
func (p *progress) behind(participant string, sent, since time.Time) (bool, answerMark) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mark, ok := p.by[participant]
	if !ok || sent.IsZero() {
		return false, mark
	}
	if since.Before(sent) {
		since = sent
	}
	return mark.at.After(since) && mark.sent.Before(sent), mark
}
