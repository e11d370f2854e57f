package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// maxTxBatch bounds the commands handled in one transaction.
const maxTxBatch = 32

// process handles recs in order: runs of well-formed commands in one
// transaction each (batch), anything else (malformed, unknown, failing
// handler, database trouble) one by one with retries (dispatch). It returns
// the outcomes of the records done with, a prefix of recs; the error says
// why it stopped early (stopping, or a record that could not be stored).
func (p *Participant) process(ctx context.Context, stop <-chan struct{}, recs []kafka.Record) ([]Outcome, error) {
	outs := make([]Outcome, 0, len(recs))
	for len(outs) < len(recs) {
		select {
		case <-stop:
			return outs, errStopped
		default:
		}
		rest := recs[len(outs):]
		chunk := rest[:min(maxTxBatch, len(rest))]
		done, failure := p.batch(ctx, chunk)
		outs = append(outs, done...)
		if len(done) == len(chunk) {
			continue
		}
		var g *groupError
		if errors.As(failure, &g) {
			// A batch handler failed for a group: each of its commands
			// alone (batchhandler.go).
			more, err := p.alone(ctx, stop, recs[len(outs):len(outs)+g.n])
			outs = append(outs, more...)
			if err != nil {
				return outs, err
			}
			continue
		}
		out, err := p.dispatch(ctx, stop, recs[len(outs)], failure)
		if err != nil {
			return outs, err
		}
		outs = append(outs, out)
	}
	return outs, nil
}

// keptReply is the reply stored for a handled command (nil reply: none).
type keptReply struct {
	reply *envelope.Message
	body  []byte
}

// batch handles a prefix of recs in one transaction: duplicates re-enqueue
// their stored reply; others run the handler; then the inbox rows (with the
// replies) and the outbox rows of the whole batch are written (one
// statement on PostgreSQL, see recordBatch). It stops before the first record
// that is malformed or has no handler. Commands share the transaction
// without savepoints (a round trip and a subtransaction each): when one
// fails (its handler, or another consumer recorded it meanwhile), the whole
// transaction rolls back and the commands before it run again in a new one,
// so a handler may run again after a rollback it did not cause; its
// effects still commit once. The failure is returned to count as an
// attempt of the record after the outcomes. Database errors make it return
// nothing: the slow path then deals with the first record.
func (p *Participant) batch(ctx context.Context, recs []kafka.Record) (outs []Outcome, failure error) {
	msgs := make([]envelope.Message, 0, len(recs))
	hs := make([]handlerFunc, 0, len(recs))
	for _, r := range recs {
		m, err := p.decode(r)
		if err != nil {
			break
		}
		h, ok := p.handler(m.Name)
		if !ok {
			break
		}
		msgs, hs = append(msgs, m), append(hs, h)
	}
	for len(msgs) > 0 {
		outs, failedAt, herr, ok := p.runBatch(ctx, recs, msgs, hs)
		switch {
		case !ok:
			return nil, nil
		case failedAt < 0:
			return outs, failure
		}
		// Command failedAt failed: commit the ones before it alone.
		failure = herr
		msgs, hs = msgs[:failedAt], hs[:failedAt]
	}
	return nil, failure
}

// runBatch handles msgs in one transaction and commits them all
// (failedAt -1), or rolls back at the first command that cannot commit:
// failedAt is its index and failure its handler error (nil if another
// consumer recorded it meanwhile). ok is false on database trouble.
func (p *Participant) runBatch(ctx context.Context, recs []kafka.Record, msgs []envelope.Message, hs []handlerFunc) (outs []Outcome, failedAt int, failure error, ok bool) {
	start := time.Now()
	tx, err := p.beginBatchTx(ctx)
	if err != nil {
		return nil, 0, nil, false
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// The first statement: it also bounds the transaction (txbound.go).
	kept, err := p.keptRepliesBound(ctx, tx, msgs)
	if err != nil {
		p.log.Debug("batch: read inbox", "err", err)
		return nil, 0, nil, false
	}
	outs = make([]Outcome, 0, len(msgs))
	outer := ctx
	// The inbox and outbox rows are written together after the handlers:
	// one statement for the whole batch on PostgreSQL.
	var rec batchRecord
	var spans []trace.Span // tracing.go: one per command when tracing is on
	defer func() {
		for j, s := range spans {
			switch {
			case j == failedAt && failure != nil && !isGroupError(failure):
				tracing.End(s, failure)
			case !ok || failedAt >= 0:
				// Rolled back with the batch: handled again in a new one.
				s.SetAttributes(tracing.AttrRolledBack.Bool(true))
				s.End()
			default:
				s.End()
			}
		}
	}()
	for j := 0; j < len(msgs); j++ {
		m := msgs[j]
		headers := recs[j].Headers
		ctx := ctx
		if tracing.Enabled() {
			var span trace.Span
			ctx, headers, span = p.startHandle(ctx, m, headers)
			spans = append(spans, span)
		}
		if k, dup := kept[m.ID]; dup {
			// In the inbox already, or earlier in this batch.
			if k.reply != nil {
				rec.outbox = append(rec.outbox, p.outRowFor(k.reply, k.body, headers))
			}
			// A barrier row (compensated before it arrived) is found here too.
			outs = append(outs, Outcome{Command: m, Reply: k.reply, Duplicate: true, Expired: isExpired(k.reply)})
			continue
		}
		if reason := p.refusal(m); reason != "" {
			// Past its deadline: the handler does not run; the refusal is
			// stored like a reply.
			reply, body, err := p.expiredReply(m, reason)
			if err != nil {
				return nil, j, Permanent(err), true
			}
			rec.outbox = append(rec.outbox, p.outRowFor(reply, body, headers))
			rec.inbox = append(rec.inbox, inboxRow{at: j, cmd: m, replyID: reply.ID, reply: body})
			kept[m.ID] = keptReply{reply: reply, body: body}
			outs = append(outs, Outcome{Command: m, Reply: reply, Expired: true})
			continue
		}
		if end, bf := p.groupEnd(msgs, j, kept); bf != nil {
			// A run of commands for one batch handler (batchhandler.go).
			if at, err := p.runGroup(outer, ctx, tx, recs, msgs, j, end, bf, headers, &rec, kept, &spans, &outs); at >= 0 {
				return nil, at, err, true
			}
			j = end - 1
			continue
		}
		reply, body, herr := p.runHandler(ctx, tx, m, hs[j])
		if herr != nil {
			return nil, j, herr, true
		}
		var rid string
		if reply != nil {
			rec.outbox = append(rec.outbox, p.outRowFor(reply, body, headers))
			rid = reply.ID
		}
		rec.inbox = append(rec.inbox, inboxRow{at: j, cmd: m, replyID: rid, reply: body})
		kept[m.ID] = keptReply{reply: reply, body: body}
		if m.Compensates != "" {
			// The barrier: unless the compensated command was handled
			// already, its id goes into the inbox with a refusal as its
			// reply, so that it is refused if it comes (later in this batch
			// too: it is a duplicate now).
			b, err := p.barrierFor(m, kept)
			if err != nil {
				return nil, j, Permanent(err), true
			}
			rec.barrier = append(rec.barrier, b)
		}
		outs = append(outs, Outcome{Command: m, Reply: reply, Attempts: 1})
	}
	unclaimed, err := p.recordBatch(ctx, tx, rec)
	if err != nil {
		p.log.Debug("batch: record handled commands", "commands", len(rec.inbox), "err", err)
		return nil, 0, nil, false
	}
	if unclaimed >= 0 {
		// Handled meanwhile by another consumer (a rebalance): its
		// transaction won; the slow path re-sends its reply.
		return nil, unclaimed, nil, true
	}
	woke := len(rec.outbox) > 0
	if err := p.commitBatch(tx, outs, woke); err != nil {
		return nil, 0, nil, false
	}
	p.batchStats.add(len(msgs), time.Since(start))
	return outs, -1, nil, true
}

func (p *Participant) commitBatch(tx *sqlx.Tx, outs []Outcome, woke bool) error {
	if len(outs) == 0 {
		return nil
	}
	if err := tx.Commit(); err != nil {
		p.log.Info("batch commit failed; handling its commands one by one", "commands", len(outs), "err", err)
		return fmt.Errorf("commit %d commands: %w", len(outs), err)
	}
	for _, o := range outs {
		if o.Expired {
			p.log.Info("command refused", "saga_id", o.Command.SagaID, "command_id", o.Command.ID, "command", o.Command.Name,
				"reason", o.Reply.Reason, "reply_id", o.Reply.ID, "duplicate", o.Duplicate)
		} else if o.Duplicate {
			p.log.Debug("duplicate command: re-sent the stored reply", "saga_id", o.Command.SagaID, "command_id", o.Command.ID, "command", o.Command.Name, "reply_id", replyID(o.Reply))
		} else {
			p.log.Debug("command handled", "saga_id", o.Command.SagaID, "command_id", o.Command.ID, "command", o.Command.Name, "reply", replyName(o.Reply))
		}
	}
	if woke {
		p.wake()
	}
	return nil
}

// runHandler runs the handler and builds its reply (nil for NoReply).
func (p *Participant) runHandler(ctx context.Context, tx *sqlx.Tx, m envelope.Message, h handlerFunc) (*envelope.Message, []byte, error) {
	res, err := p.callHandler(ctx, tx, m, h)
	if err != nil {
		return nil, nil, err
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

// keptReplies reads the inbox rows of msgs: the ids found are duplicates
// (or were compensated before they arrived: their stored reply is the
// refusal).
func (p *Participant) keptReplies(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message) (map[string]keptReply, error) {
	return p.readKept(ctx, tx, "", msgs)
}

// keptRepliesBound is keptReplies as the first statement of a batch's
// transaction (beginBatchTx): on PostgreSQL it also applies the
// transaction's settings (txbound.go).
func (p *Participant) keptRepliesBound(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message) (map[string]keptReply, error) {
	settings := ""
	if p.dialect == dialectPostgres {
		settings = p.txSettings
	}
	return p.readKept(ctx, tx, settings, msgs)
}

// readKept is keptReplies with settings for delivery's BoundReplies.
func (p *Participant) readKept(ctx context.Context, tx *sqlx.Tx, settings string, msgs []envelope.Message) (map[string]keptReply, error) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	found, err := p.dt.BoundReplies(ctx, tx, settings, ids)
	if err != nil {
		return nil, err
	}
	kept := make(map[string]keptReply, len(msgs))
	for id, r := range found {
		k := keptReply{}
		if r.ID != "" {
			var m envelope.Message
			if err := envelope.UnmarshalMessage(r.Body, &m); err != nil {
				return nil, fmt.Errorf("decode the stored reply %s of command %s: %w", r.ID, id, err)
			}
			k = keptReply{reply: &m, body: r.Body}
		}
		kept[id] = k
	}
	return kept, nil
}

// inboxRow is the inbox row of a command handled in a batch: at is its
// index in the batch, replyID and reply are empty without a reply.
type inboxRow struct {
	at      int
	cmd     envelope.Message
	replyID string
	reply   []byte
}

// batchRecord is what a batch writes before committing: the inbox rows of
// the commands it handled and the outbox rows (their replies, and the
// stored replies re-sent for duplicates), in command order, and the
// barrier rows of the compensation commands it handled.
type batchRecord struct {
	inbox   []inboxRow
	outbox  []delivery.Row
	barrier []barrierRow
}

// recordBatch writes the inbox and outbox rows of a batch
// (delivery.Tables.ClaimAndWrite: one statement on PostgreSQL); then the
// barrier rows, if the batch handled compensation commands. It returns the
// batch index of the first command whose id was in the inbox already
// (recorded meanwhile by another consumer; the caller rolls back), or -1
// if every inbox row was written.
func (p *Participant) recordBatch(ctx context.Context, tx *sqlx.Tx, rec batchRecord) (int, error) {
	if len(rec.inbox) == 0 && len(rec.outbox) == 0 {
		return -1, nil
	}
	in := make([]delivery.InboxRow, len(rec.inbox))
	for i, r := range rec.inbox {
		in[i] = delivery.InboxRow{ID: r.cmd.ID, SagaID: r.cmd.SagaID, Command: r.cmd.Name, ReplyID: r.replyID, Reply: r.reply}
	}
	claimed, err := p.dt.ClaimAndWrite(ctx, tx, in, rec.outbox)
	if err != nil {
		return 0, fmt.Errorf("record %d commands and %d replies: %w", len(in), len(rec.outbox), err)
	}
	for _, r := range rec.inbox {
		if !claimed[r.cmd.ID] {
			return r.at, nil
		}
	}
	return -1, p.recordBarrier(ctx, tx, rec.barrier)
}
