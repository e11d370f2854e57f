package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// batchFunc is a registered batch handler with the payload type erased.
// bad >= 0 says which command's payload could not be decoded (the handler
// did not run); otherwise err is the handler's, for the whole group.
type batchFunc func(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message) (res []Result, bad int, err error)

// HandleBatch registers a handler that takes several commands of one name
// at once, so that it can do set-based SQL: one statement that reads or
// locks the rows of all of them, one that updates them all, instead of a
// few statements per command. It returns exactly one Result per command,
// in order (a Reply, Reject or NoReply each, as a Handle handler would).
//
// When Run fetches a run of consecutive commands of this name (at most 32,
// in one transaction with their inbox and outbox rows, as for Handle), h
// gets all of them in one call, except those that must be handled on their
// own: duplicates (a redelivery, or an id already earlier in the fetched
// batch: their stored reply is re-sent, h does not see them), commands
// refused for their deadline, and compensation commands (Compensates set):
// the barrier is recorded per command, in order, so a compensation goes
// to h alone, in a one-element slice. Everything else is as for Handle,
// per command: the inbox row, the reply in the outbox, the tracing span
// (h's ctx carries the span of the group's first command), the log lines
// and the Outcome.
//
// A returned error (or a panic, or a result count other than len(cmds))
// fails the whole group: the transaction rolls back (the commands fetched
// before the group commit alone), then every command of the group is
// handled on its own, each in its own transaction, by h with a one-element
// slice, with retries and dead letters exactly as for Handle. So the
// command that caused the error is the one retried and parked, and the
// others are answered. A command whose payload cannot be decoded into T is
// a Permanent error of that command only. With one command, a wrong count
// is a Permanent error. h must therefore handle any subset of commands
// correctly, one alone included, and may run again after a rollback it did
// not cause (its effects still commit once).
//
// Register every handler before Run. HandleBatch panics if command is
// empty, h is nil, or command is registered already (by Handle or
// HandleBatch).
func HandleBatch[T any](p *Participant, command string, h func(ctx context.Context, tx *sqlx.Tx, cmds []Command[T]) ([]Result, error)) {
	if command == "" {
		panic("sdk.HandleBatch: empty command name")
	}
	if h == nil {
		panic("sdk.HandleBatch: nil handler for " + command)
	}
	bf := func(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message) ([]Result, int, error) {
		cmds := make([]Command[T], len(msgs))
		for i, m := range msgs {
			c, err := newCommand[T](m)
			if err != nil {
				return nil, i, err
			}
			cmds[i] = c
		}
		res, err := h(ctx, tx, cmds)
		return res, -1, err
	}
	one := func(ctx context.Context, tx *sqlx.Tx, msg envelope.Message) (Result, error) {
		res, _, err := bf(ctx, tx, []envelope.Message{msg})
		if err != nil {
			return Result{}, err
		}
		if len(res) != 1 {
			return Result{}, Permanent(fmt.Errorf("batch handler returned %d results for 1 command", len(res)))
		}
		return res[0], nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.handlers[command]; dup {
		panic("sdk.HandleBatch: command " + command + " registered twice")
	}
	p.handlers[command] = one
	if p.batches == nil {
		p.batches = map[string]batchFunc{}
	}
	p.batches[command] = bf
}

// newCommand decodes msg for a handler of payload type T.
func newCommand[T any](msg envelope.Message) (Command[T], error) {
	cmd := Command[T]{
		ID: msg.ID, SagaID: msg.SagaID, Saga: msg.Saga, SagaVersion: msg.SagaVersion,
		Name: msg.Name, Attempt: msg.Attempt, Deadline: msg.Deadline, Compensates: msg.Compensates, Message: msg,
	}
	if len(msg.Payload) > 0 {
		if err := json.Unmarshal(msg.Payload, &cmd.Payload); err != nil {
			return cmd, Permanent(fmt.Errorf("decode %s payload into %T: %w", msg.Name, cmd.Payload, err))
		}
	}
	return cmd, nil
}

func (p *Participant) batchHandler(command string) (batchFunc, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	bf, ok := p.batches[command]
	return bf, ok
}

// groupError is the failure of a batch handler for a group of n commands
// (n >= 2): process handles each of them on its own.
type groupError struct {
	n   int
	err error
}

func (e *groupError) Error() string { return e.err.Error() }
func (e *groupError) Unwrap() error { return e.err }

// isGroupError reports whether err is a groupError.
func isGroupError(err error) bool {
	var g *groupError
	return errors.As(err, &g)
}

// groupEnd returns the end (exclusive) of the group of msgs that starts at
// j and goes to one batch handler call, and that handler: msgs[j] (neither
// a duplicate nor refused, checked by the caller) and the following
// commands of the same name registered with HandleBatch that are neither
// duplicates (kept, or earlier in the group), refused, nor compensations.
// end is j+1 (or less than j+2) when there is no group of two or more.
func (p *Participant) groupEnd(msgs []envelope.Message, j int, kept map[string]keptReply) (int, batchFunc) {
	m := msgs[j]
	if m.Compensates != "" || j+1 >= len(msgs) || msgs[j+1].Name != m.Name {
		return j + 1, nil
	}
	bf, ok := p.batchHandler(m.Name)
	if !ok {
		return j + 1, nil
	}
	seen := map[string]bool{m.ID: true}
	end := j + 1
	for ; end < len(msgs); end++ {
		n := msgs[end]
		if n.Name != m.Name || n.Compensates != "" || seen[n.ID] || p.refusal(n) != "" {
			break
		}
		if _, dup := kept[n.ID]; dup {
			break
		}
		seen[n.ID] = true
	}
	return end, bf
}

// runGroup runs the batch handler bf for msgs[j:end] inside runBatch's
// transaction (base is the batch's ctx, ctx carries msgs[j]'s span,
// headers are msgs[j]'s reply headers) and
// appends each command's inbox and outbox rows, kept reply, span and
// outcome. failedAt >= 0 is the index of the command that failed, with
// its error; a failure of the whole group is a *groupError at j.
func (p *Participant) runGroup(base, ctx context.Context, tx *sqlx.Tx, recs []kafka.Record, msgs []envelope.Message, j, end int, bf batchFunc,
	headers map[string]string, rec *batchRecord, kept map[string]keptReply, spans *[]trace.Span, outs *[]Outcome) (failedAt int, failure error) {
	group := msgs[j:end]
	hdrs := make([]map[string]string, len(group))
	hdrs[0] = headers
	for i := 1; i < len(group); i++ {
		hdrs[i] = recs[j+i].Headers
		if tracing.Enabled() {
			var span trace.Span
			_, hdrs[i], span = p.startHandle(base, group[i], hdrs[i])
			*spans = append(*spans, span)
		}
	}
	res, bad, err := p.callBatch(ctx, tx, group, bf)
	switch {
	case bad >= 0:
		return j + bad, err
	case err != nil:
		p.log.Info("batch handler failed; handling its commands one by one", "command", group[0].Name, "commands", len(group), "err", err)
		return j, &groupError{n: len(group), err: err}
	case len(res) != len(group):
		err := fmt.Errorf("batch handler for %s returned %d results for %d commands", group[0].Name, len(res), len(group))
		p.log.Info("batch handler failed; handling its commands one by one", "command", group[0].Name, "commands", len(group), "err", err)
		return j, &groupError{n: len(group), err: Permanent(err)}
	}
	for i, m := range group {
		reply, body, err := p.resultReply(m, res[i])
		if err != nil {
			return j + i, err
		}
		var rid string
		if reply != nil {
			rec.outbox = append(rec.outbox, p.outRowFor(reply, body, hdrs[i]))
			rid = reply.ID
		}
		rec.inbox = append(rec.inbox, inboxRow{at: j + i, cmd: m, replyID: rid, reply: body})
		kept[m.ID] = keptReply{reply: reply, body: body}
		*outs = append(*outs, Outcome{Command: m, Reply: reply, Attempts: 1})
	}
	return -1, nil
}

// callBatch runs a batch handler, turning a panic into an error.
func (p *Participant) callBatch(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message, bf batchFunc) (res []Result, bad int, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("batch handler panicked", "command", msgs[0].Name, "commands", len(msgs),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, bad, err = nil, -1, fmt.Errorf("batch handler for %s panicked: %v", msgs[0].Name, r)
		}
	}()
	res, bad, err = bf(ctx, tx, msgs)
	if err != nil {
		if bad >= 0 {
			return nil, bad, fmt.Errorf("handler for %s: %w", msgs[bad].Name, err)
		}
		return nil, -1, fmt.Errorf("batch handler for %s (%d commands): %w", msgs[0].Name, len(msgs), err)
	}
	return res, -1, nil
}

// resultReply checks one result of a batch handler and builds its reply
// (nil for NoReply), as callHandler and runHandler do for one command.
func (p *Participant) resultReply(m envelope.Message, res Result) (*envelope.Message, []byte, error) {
	if res.event == envelope.CommandExpired {
		return nil, nil, Permanent(fmt.Errorf("handler for %s answered %s: that reply is the SDK's own (a command refused unhandled)", m.Name, res.event))
	}
	if res.event == "" && !res.reject {
		return nil, nil, nil
	}
	reply, err := p.replyFor(m, res)
	if err != nil {
		return nil, nil, Permanent(err)
	}
	return reply, encodeMessage(reply), nil
}

// alone handles recs one by one on the slow path (dispatch), after their
// batch handler failed for them as a group.
func (p *Participant) alone(ctx context.Context, stop <-chan struct{}, recs []kafka.Record) ([]Outcome, error) {
	outs := make([]Outcome, 0, len(recs))
	for i, r := range recs {
		if i > 0 {
			select {
			case <-stop:
				return outs, errStopped
			default:
			}
		}
		out, err := p.dispatch(ctx, stop, r, nil)
		if err != nil {
			return outs, err
		}
		outs = append(outs, out)
	}
	return outs, nil
}
