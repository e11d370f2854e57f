package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// Outcome tells what Dispatch did with one command record.
type Outcome struct {
	// Command is the decoded envelope (zero if it could not be decoded).
	Command envelope.Message
	// Reply is the message written to the outbox, if any. For a duplicate
	// it is the stored reply of the first delivery (same message id).
	Reply *envelope.Message
	// Duplicate is true if the command id was already in the inbox: the
	// handler did not run and the stored reply was re-enqueued.
	Duplicate bool
	// Expired is true if Reply is the SDK's COMMAND_EXPIRED refusal: the
	// handler did not run for this command id, now or at an earlier
	// delivery, because its deadline had passed or a compensation command
	// had undone it before it arrived. The refusal is stored like any
	// reply: a redelivery is a Duplicate (and Expired) with the same reply,
	// and so is a command whose compensation came first (the compensation
	// put its id in the inbox).
	Expired bool
	// Attempts counts handler runs for this delivery.
	Attempts int
	// DeadLetter is set if the command was parked.
	DeadLetter *DeadLetter
	// Err is the last handler (or validation) error, if any.
	Err error
}

// errStopped is returned when Run is stopping while a command still waits
// for a retry; the record is not committed and will be redelivered.
var errStopped = errors.New("participant is stopping")

// Dispatch handles one raw command record exactly as Run does for a record
// fetched from Kafka: decode and validate the envelope, then, per attempt,
// one transaction with the inbox record, the handler and the reply in the
// outbox; retries with backoff; dead letter after Config.MaxAttempts (or at
// once for a malformed envelope, an unknown command or a Permanent error).
//
// A nil error means the record is done with (handled, a duplicate,
// refused as expired, or parked) and its offset may be committed. A non-nil error means it could
// not be made durable (database unreachable, ctx ended) and must be
// delivered again. Replies are published later by the relay (Run or Flush).
func (p *Participant) Dispatch(ctx context.Context, rec Record) (Outcome, error) {
	krec := kafka.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Partition: rec.Partition, Offset: rec.Offset}
	outs, err := p.process(ctx, ctx.Done(), []kafka.Record{krec})
	if len(outs) == 1 {
		return outs[0], nil
	}
	return Outcome{Err: err}, err
}

// dispatch handles one record on its own (the slow path: retries, dead
// letters) with a separate stop signal: when stop closes, no further
// attempt starts, but an attempt under way finishes with ctx. prior is the
// error of a run of the handler that already failed in a batch (nil if
// none); it counts as the first attempt.
func (p *Participant) dispatch(ctx context.Context, stop <-chan struct{}, rec kafka.Record, prior error) (Outcome, error) {
	msg, err := p.decode(rec)
	if err != nil {
		return p.parkRecord(ctx, rec, msg, err, 0, false) // a malformed envelope's fields are not trusted
	}
	out := Outcome{Command: msg}
	log := p.log.With("saga_id", msg.SagaID, "command_id", msg.ID, "command", msg.Name)
	h, ok := p.handler(msg.Name)
	if !ok {
		return p.parkRecord(ctx, rec, msg, errs.Errorf(errs.CodeInvalid, "dispatch", "participant %s has no handler for command %s (handlers: %s)", p.cfg.Name, msg.Name, strings.Join(p.Commands(), ", ")), 0, true)
	}
	infraFailures := 0
	if prior != nil {
		out.Attempts, out.Err = 1, prior
		if IsPermanent(prior) || p.cfg.MaxAttempts <= 1 {
			log.Warn("command failed, parking it as a dead letter", "attempts", 1, "err", prior)
			parked, perr := p.parkRecord(ctx, rec, msg, prior, 1, true)
			parked.Attempts = 1
			return parked, perr
		}
		log.Info("command failed, will retry", "attempt", 1, "err", prior)
		if !sleep(stop, p.backoff(1)) {
			return out, fmt.Errorf("handle %s %s: %w (last error: %w)", msg.Name, msg.ID, errStopped, prior)
		}
	}
	for {
		res, counted, err := p.attempt(ctx, msg, rec.Headers, h, nil)
		if counted {
			out.Attempts++
		}
		if err == nil {
			out.Reply, out.Duplicate, out.Expired, out.Err = res.reply, res.duplicate, res.expired, nil
			if res.expired {
				log.Info("command refused", "reason", res.reply.Reason, "reply_id", res.reply.ID, "duplicate", res.duplicate)
			} else if res.duplicate {
				log.Debug("duplicate command: re-sent the stored reply", "reply_id", replyID(res.reply))
			} else {
				log.Debug("command handled", "reply", replyName(res.reply), "attempts", out.Attempts)
			}
			if res.reply != nil {
				p.wake()
			}
			return out, nil
		}
		out.Err = err
		if ctx.Err() != nil {
			return out, fmt.Errorf("handle %s %s: %w", msg.Name, msg.ID, ctx.Err())
		}
		var wait time.Duration
		if counted {
			if IsPermanent(err) || out.Attempts >= p.cfg.MaxAttempts {
				log.Warn("command failed, parking it as a dead letter", "attempts", out.Attempts, "err", err)
				parked, perr := p.parkRecord(ctx, rec, msg, err, out.Attempts, true)
				parked.Attempts = out.Attempts
				return parked, perr
			}
			log.Info("command failed, will retry", "attempt", out.Attempts, "err", err)
			wait = p.backoff(out.Attempts)
		} else {
			infraFailures++
			log.Warn("database unavailable, will retry the command", "err", err)
			wait = p.backoff(infraFailures)
		}
		if !sleep(stop, wait) {
			return out, fmt.Errorf("handle %s %s: %w (last error: %w)", msg.Name, msg.ID, errStopped, err)
		}
	}
}

// decode parses and validates a command envelope. On error it returns what
// it could read, for the dead letter.
func (p *Participant) decode(rec kafka.Record) (envelope.Message, error) {
	var msg envelope.Message
	if err := envelope.UnmarshalMessage(rec.Value, &msg); err != nil {
		return envelope.Message{SagaID: rec.Key}, errs.Errorf(errs.CodeInvalid, "decode command", "malformed envelope: %v", err)
	}
	var problems []string
	if msg.V != envelope.Version {
		problems = append(problems, fmt.Sprintf("envelope version %d, want %d", msg.V, envelope.Version))
	}
	if msg.ID == "" {
		problems = append(problems, "no id")
	}
	if msg.SagaID == "" {
		problems = append(problems, "no saga_id")
	}
	if msg.Kind != envelope.KindCommand {
		problems = append(problems, fmt.Sprintf("kind %q, want %q", msg.Kind, envelope.KindCommand))
	}
	if !validName(msg.Name) {
		problems = append(problems, fmt.Sprintf("command name %q is not like APPROVE_ORDER", msg.Name))
	}
	if msg.Participant != "" && msg.Participant != p.cfg.Name {
		problems = append(problems, fmt.Sprintf("addressed to participant %q, this is %q", msg.Participant, p.cfg.Name))
	}
	if msg.Compensates != "" && msg.Compensates == msg.ID {
		problems = append(problems, "compensates its own id")
	}
	if len(problems) > 0 {
		if msg.SagaID == "" {
			msg.SagaID = rec.Key
		}
		return msg, errs.Errorf(errs.CodeInvalid, "decode command", "invalid envelope: %s", strings.Join(problems, "; "))
	}
	return msg, nil
}

// attemptResult is what one committed attempt produced.
type attemptResult struct {
	reply     *envelope.Message
	duplicate bool
	expired   bool // refused with COMMAND_EXPIRED, handler not run
}

// attempt runs one transaction: inbox claim, handler, reply. counted tells
// whether the handler ran (so a failure counts as an attempt); failures
// before it runs (the database is unreachable) do not count. extra, if set,
// runs in the same transaction after the reply (ReplayAs marks the dead
// letter replayed there).
func (p *Participant) attempt(ctx context.Context, msg envelope.Message, headers map[string]string, h handlerFunc, extra func(*sqlx.Tx) error) (_ attemptResult, _ bool, err error) {
	if tracing.Enabled() {
		var span trace.Span
		ctx, headers, span = p.startHandle(ctx, msg, headers) // tracing.go
		defer func() { tracing.End(span, err) }()
	}
	tx, err := p.beginHandlerTx(ctx)
	if err != nil {
		return attemptResult{}, false, fmt.Errorf("begin transaction for %s %s: %w", msg.Name, msg.ID, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	fresh, err := p.claimInbox(ctx, tx, msg)
	if err != nil {
		return attemptResult{}, false, err
	}
	if !fresh {
		reply, body, err := p.storedReply(ctx, tx, msg.ID)
		if err != nil {
			return attemptResult{}, false, err
		}
		if reply != nil {
			if err := p.insertOutbox(ctx, tx, p.outRowFor(reply, body, headers)); err != nil {
				return attemptResult{}, false, err
			}
		}
		if extra != nil {
			if err := extra(tx); err != nil {
				return attemptResult{}, false, err
			}
		}
		if err := tx.Commit(); err != nil {
			return attemptResult{}, false, fmt.Errorf("commit duplicate %s %s: %w", msg.Name, msg.ID, err)
		}
		// A command compensated before it arrived finds its refusal here.
		return attemptResult{reply: reply, duplicate: true, expired: isExpired(reply)}, false, nil
	}
	if reason := p.refusal(msg); reason != "" {
		// Past its deadline: the handler does not run; the refusal is
		// stored like a reply.
		reply, body, err := p.expiredReply(msg, reason)
		if err != nil {
			return attemptResult{}, false, Permanent(err)
		}
		if err := p.storeReply(ctx, tx, msg.ID, p.outRowFor(reply, body, headers)); err != nil {
			return attemptResult{}, false, err
		}
		if extra != nil {
			if err := extra(tx); err != nil {
				return attemptResult{}, false, err
			}
		}
		if err := tx.Commit(); err != nil {
			return attemptResult{}, false, fmt.Errorf("commit refusal of %s %s: %w", msg.Name, msg.ID, err)
		}
		return attemptResult{reply: reply, expired: true}, false, nil
	}
	res, err := p.callHandler(ctx, tx, msg, h)
	if err != nil {
		return attemptResult{}, true, err
	}
	var reply *envelope.Message
	if res.event != "" || res.reject {
		reply, err = p.replyFor(msg, res)
		if err != nil {
			return attemptResult{}, true, Permanent(err)
		}
		body := encodeMessage(reply)
		if err := p.storeReply(ctx, tx, msg.ID, p.outRowFor(reply, body, headers)); err != nil {
			return attemptResult{}, true, err
		}
	}
	if msg.Compensates != "" {
		b, err := p.barrierFor(msg, nil)
		if err != nil {
			return attemptResult{}, true, Permanent(err)
		}
		if err := p.recordBarrier(ctx, tx, []barrierRow{b}); err != nil {
			return attemptResult{}, true, err
		}
	}
	if extra != nil {
		if err := extra(tx); err != nil {
			return attemptResult{}, true, err
		}
	}
	if err := tx.Commit(); err != nil {
		return attemptResult{}, true, fmt.Errorf("commit %s %s: %w", msg.Name, msg.ID, err)
	}
	return attemptResult{reply: reply}, true, nil
}

// callHandler runs the handler, turning a panic into an error.
func (p *Participant) callHandler(ctx context.Context, tx *sqlx.Tx, msg envelope.Message, h handlerFunc) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("handler panicked", "saga_id", msg.SagaID, "command_id", msg.ID, "command", msg.Name,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler for %s panicked: %v", msg.Name, r)
		}
	}()
	res, err = h(ctx, tx, msg)
	if err != nil {
		return res, fmt.Errorf("handler for %s: %w", msg.Name, err)
	}
	if res.event == envelope.CommandExpired {
		return res, Permanent(fmt.Errorf("handler for %s answered %s: that reply is the SDK's own (a command refused unhandled)", msg.Name, res.event))
	}
	return res, nil
}

// replyFor builds the reply envelope of a handler's Result.
func (p *Participant) replyFor(cmd envelope.Message, res Result) (*envelope.Message, error) {
	if !validName(res.event) {
		return nil, fmt.Errorf("handler for %s answered with event name %q, want a name like ORDER_APPROVED", cmd.Name, res.event)
	}
	if res.reject && strings.TrimSpace(res.reason) == "" {
		return nil, fmt.Errorf("handler for %s rejected with %s but gave no reason", cmd.Name, res.event)
	}
	payload, err := marshalObject(res.event, res.payload)
	if err != nil {
		return nil, fmt.Errorf("handler for %s: %w", cmd.Name, err)
	}
	return &envelope.Message{
		V:           envelope.Version,
		ID:          envelope.NewID(),
		SagaID:      cmd.SagaID,
		Saga:        cmd.Saga,
		SagaVersion: cmd.SagaVersion,
		Kind:        envelope.KindEvent,
		Name:        res.event,
		Participant: p.cfg.Name,
		CausationID: cmd.ID,
		OccurredAt:  time.Now().UTC(),
		Reason:      res.reason,
		Payload:     payload,
	}, nil
}

// outRowFor turns an event into an outbox row for the event topic, passing
// the trace context of the command on.
func (p *Participant) outRowFor(m *envelope.Message, body []byte, in map[string]string) delivery.Row {
	h := map[string]string{envelope.HeaderKind: string(m.Kind), envelope.HeaderName: m.Name}
	if tp := in[envelope.HeaderTraceparent]; tp != "" {
		h[envelope.HeaderTraceparent] = tp
	}
	return delivery.Row{ID: m.ID, Name: m.Name, Topic: p.cfg.EventTopic, Key: m.SagaID, Headers: h, Value: body}
}

// parkRecord stores a dead letter for rec. A nil error means it is durable.
// With barrier (msg is a well-formed envelope: its handler failed, or
// there is none), a compensation command leaves the barrier of the command
// it compensates (park).
func (p *Participant) parkRecord(ctx context.Context, rec kafka.Record, msg envelope.Message, cause error, attempts int, barrier bool) (Outcome, error) {
	offset := rec.Offset
	if rec.Topic == "" {
		offset = -1
	}
	dl := DeadLetter{
		MessageID: msg.ID, SagaID: msg.SagaID, Command: msg.Name, Reason: cause.Error(), Attempts: attempts,
		Topic: rec.Topic, Partition: rec.Partition, Offset: offset, Headers: rec.Headers, Body: rec.Value,
	}
	out := Outcome{Command: msg, Attempts: attempts, Err: cause}
	var comp *envelope.Message
	if barrier && msg.Compensates != "" {
		comp = &msg
	}
	stored, err := p.park(ctx, dl, comp)
	if err != nil {
		return out, err
	}
	out.DeadLetter = &stored
	p.log.Warn("command parked as a dead letter", slog.String("dead_letter_id", stored.ID),
		"saga_id", msg.SagaID, "command_id", msg.ID, "command", msg.Name, "reason", stored.Reason)
	return out, nil
}

// ReplayedByGo is what Replay records as a dead letter's ReplayedBy.
const ReplayedByGo = "sdk.Replay"

// Replay is ReplayAs(ctx, id, ReplayedByGo).
func (p *Participant) Replay(ctx context.Context, id string) (Outcome, error) {
	return p.ReplayAs(ctx, id, ReplayedByGo)
}

// ReplayAs handles a parked command again (one attempt, no retries),
// through the same path as a delivery from Kafka (inbox, handler, reply in
// the outbox, one transaction); by says who asked (an operator, a tool).
// It is the one implementation behind Replay and the admin API's
// POST /admin/dead-letters/{id}/replay.
//
// The dead letter is kept either way. On success it is marked replayed
// (ReplayedAt, ReplayedBy) in the same transaction as the handler's changes
// and the reply; a command handled already (a duplicate) only has its
// stored reply sent again. On failure it keeps the new reason and one more
// attempt (if the handler ran), and the error is returned: an *errs.Error
// with code errs.CodeInvalid for a command that still cannot be decoded
// or has no handler, else the handler's error, wrapped. An unknown id gives
// errs.CodeNotFound. Prune removes replayed dead letters with the inbox
// records of their commands.
func (p *Participant) ReplayAs(ctx context.Context, id, by string) (Outcome, error) {
	dl, err := p.deadLetter(ctx, id)
	if err != nil {
		return Outcome{}, err
	}
	failed := func(out Outcome, cause error, attempts int) (Outcome, error) {
		out.Err = cause
		if err := p.updateDeadLetter(ctx, id, cause.Error(), attempts); err != nil {
			return out, errors.Join(cause, err)
		}
		p.log.Warn("dead letter replay failed", "dead_letter_id", id, "saga_id", dl.SagaID,
			"command_id", dl.MessageID, "command", dl.Command, "replayed_by", by, "err", cause)
		return out, &errReplayFailed{fmt.Errorf("replay dead letter %s: %w", id, cause)}
	}
	rec := kafka.Record{Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset, Key: dl.SagaID, Headers: dl.Headers, Value: dl.Body}
	msg, err := p.decode(rec)
	if err != nil {
		return failed(Outcome{Command: msg}, err, 0)
	}
	h, ok := p.handler(msg.Name)
	if !ok {
		return failed(Outcome{Command: msg}, errs.Errorf(errs.CodeInvalid, "replay dead letter", "participant %s has no handler for command %s", p.cfg.Name, msg.Name), 0)
	}
	res, counted, err := p.attempt(ctx, msg, dl.Headers, h, func(tx *sqlx.Tx) error { return markReplayed(ctx, tx, id, by) })
	out := Outcome{Command: msg, Reply: res.reply, Duplicate: res.duplicate, Expired: res.expired}
	if counted {
		out.Attempts = 1
	}
	if err != nil {
		if !counted {
			out.Err = err
			return out, fmt.Errorf("replay dead letter %s: %w", id, err)
		}
		return failed(out, err, 1)
	}
	if res.reply != nil {
		p.wake()
	}
	p.log.Info("dead letter replayed", "dead_letter_id", id, "saga_id", msg.SagaID, "command_id", msg.ID,
		"command", msg.Name, "duplicate", res.duplicate, "reply", replyName(res.reply), "replayed_by", by)
	return out, nil
}

// errReplayFailed marks a replay whose command still cannot be handled (the
// admin API answers 409); it unwraps to the cause.
type errReplayFailed struct{ err error }

func (e *errReplayFailed) Error() string { return e.err.Error() }
func (e *errReplayFailed) Unwrap() error { return e.err }

func replyID(m *envelope.Message) string {
	if m == nil {
		return ""
	}
	return m.ID
}

func replyName(m *envelope.Message) string {
	if m == nil {
		return ""
	}
	return m.Name
}

// sleep waits d or until stop closes; it reports whether it waited fully.
func sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
