package sdk

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
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
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, 0, nil, false
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	kept, err := p.keptReplies(ctx, tx, msgs)
	if err != nil {
		p.log.Debug("batch: read inbox", "err", err)
		return nil, 0, nil, false
	}
	outs = make([]Outcome, 0, len(msgs))
	// The inbox and outbox rows are written together after the handlers:
	// one statement for the whole batch on PostgreSQL.
	var rec batchRecord
	for j, m := range msgs {
		headers := recs[j].Headers
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
	body, err := json.Marshal(reply)
	if err != nil {
		return nil, nil, Permanent(fmt.Errorf("encode reply %s: %w", reply.Name, err))
	}
	return reply, body, nil
}

// keptReplies reads the inbox rows of msgs: the ids found are duplicates
// (or were compensated before they arrived: their stored reply is the
// refusal).
func (p *Participant) keptReplies(ctx context.Context, tx *sqlx.Tx, msgs []envelope.Message) (map[string]keptReply, error) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	var rows *sqlx.Rows
	var err error
	if p.dialect == dialectPostgres {
		// One statement text whatever the number of ids: prepared once.
		rows, err = p.sql.Query(ctx, tx, `SELECT message_id, reply_id, reply FROM sdk_inbox WHERE message_id = ANY($1)`, pq.Array(ids))
	} else {
		// One statement text per number of ids (at most maxTxBatch).
		q, args, qerr := sqlx.In(`SELECT message_id, reply_id, reply FROM sdk_inbox WHERE message_id IN (?)`, ids)
		if qerr != nil {
			return nil, fmt.Errorf("look up %d commands in the inbox: %w", len(ids), qerr)
		}
		rows, err = p.sql.Query(ctx, tx, q, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("look up %d commands in the inbox: %w", len(ids), err)
	}
	defer rows.Close()
	kept := make(map[string]keptReply, len(msgs))
	for rows.Next() {
		var id string
		var rid sql.NullString
		var body []byte
		if err := rows.Scan(&id, &rid, &body); err != nil {
			return nil, fmt.Errorf("look up commands in the inbox: %w", err)
		}
		k := keptReply{}
		if rid.Valid && len(body) > 0 {
			var m envelope.Message
			if err := json.Unmarshal(body, &m); err != nil {
				return nil, fmt.Errorf("decode the stored reply %s of command %s: %w", rid.String, id, err)
			}
			k = keptReply{reply: &m, body: body}
		}
		kept[id] = k
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up commands in the inbox: %w", err)
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
	outbox  []outRow
	barrier []barrierRow
}

// recordBatch writes the inbox and outbox rows of a batch: one statement
// on PostgreSQL (arrays expanded by unnest), one per row on SQLite; then
// the barrier rows, if the batch handled compensation commands. It
// returns the batch index of the first command whose id was in the inbox
// already (recorded meanwhile by another consumer; the caller rolls back),
// or -1 if every inbox row was written.
func (p *Participant) recordBatch(ctx context.Context, tx *sqlx.Tx, rec batchRecord) (int, error) {
	if len(rec.inbox) == 0 && len(rec.outbox) == 0 {
		return -1, nil
	}
	if p.dialect != dialectPostgres {
		for _, r := range rec.inbox {
			claimed, err := p.recordHandled(ctx, tx, r)
			if err != nil {
				return 0, err
			}
			if !claimed {
				return r.at, nil
			}
		}
		for _, o := range rec.outbox {
			if err := p.insertOutbox(ctx, tx, o); err != nil {
				return 0, err
			}
		}
		return -1, p.recordBarrier(ctx, tx, rec.barrier)
	}
	n := len(rec.inbox)
	ids, sagas, cmds, rids := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	bodies := make(pq.ByteaArray, n)
	for i, r := range rec.inbox {
		ids[i], sagas[i], cmds[i], rids[i], bodies[i] = r.cmd.ID, r.cmd.SagaID, r.cmd.Name, r.replyID, r.reply
	}
	m := len(rec.outbox)
	oids, topics, keys, names, headers := make([]string, m), make([]string, m), make([]string, m), make([]string, m), make([]string, m)
	obodies := make(pq.ByteaArray, m)
	for i, o := range rec.outbox {
		oids[i], topics[i], keys[i], names[i], headers[i], obodies[i] = o.id, o.topic, o.key, o.name, encodeHeaders(o.headers), o.body
	}
	// One statement text whatever the batch size: prepared once. Reply ids
	// are never empty: '' stands for no reply. The outbox rows take their
	// seq in command order.
	const q = `WITH i AS (
			INSERT INTO sdk_inbox (message_id, saga_id, command, reply_id, reply, processed_at)
			SELECT r.id, r.saga, r.cmd, NULLIF(r.rid, ''), CASE WHEN r.rid = '' THEN NULL ELSE r.body END, $6
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) AS r(id, saga, cmd, rid, body)
			ON CONFLICT (message_id) DO NOTHING RETURNING message_id),
		o AS (
			INSERT INTO sdk_outbox (message_id, topic, msg_key, name, headers, body, created_at)
			SELECT r.id, r.topic, r.k, r.name, r.headers, r.body, $6
			FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bytea[]) WITH ORDINALITY AS r(id, topic, k, name, headers, body, n)
			ORDER BY r.n)
		SELECT message_id FROM i`
	rows, err := p.sql.Query(ctx, tx, q, pq.Array(ids), pq.Array(sagas), pq.Array(cmds), pq.Array(rids), bodies, time.Now().UTC(),
		pq.Array(oids), pq.Array(topics), pq.Array(keys), pq.Array(names), pq.Array(headers), obodies)
	if err != nil {
		return 0, fmt.Errorf("record %d commands and %d replies: %w", n, m, err)
	}
	defer rows.Close()
	claimed := make(map[string]bool, n)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return 0, fmt.Errorf("record %d commands: %w", n, err)
		}
		claimed[id] = true
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("record %d commands: %w", n, err)
	}
	for _, r := range rec.inbox {
		if !claimed[r.cmd.ID] {
			return r.at, nil
		}
	}
	return -1, p.recordBarrier(ctx, tx, rec.barrier)
}

// recordHandled writes the inbox row of a handled command with its reply
// (SQLite). It reports false, writing nothing, if the command id is in the
// inbox already.
func (p *Participant) recordHandled(ctx context.Context, tx *sqlx.Tx, r inboxRow) (bool, error) {
	var rid, body any
	if r.replyID != "" {
		rid, body = r.replyID, r.reply
	}
	const q = `INSERT INTO sdk_inbox (message_id, saga_id, command, reply_id, reply, processed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`
	res, err := p.sql.Exec(ctx, tx, q, r.cmd.ID, r.cmd.SagaID, r.cmd.Name, rid, body, time.Now().UTC())
	if err != nil {
		return false, fmt.Errorf("record command %s in the inbox: %w", r.cmd.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record command %s in the inbox: %w", r.cmd.ID, err)
	}
	return n == 1, nil
}
