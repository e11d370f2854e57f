package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// DefaultSaga is the saga name Send puts on commands.
const DefaultSaga = "SDKTEST_SAGA"

// Kit is a participant on a temporary SQLite database, driven by hand.
type Kit struct {
	p    *sdk.Participant
	db   *sqlx.DB
	saga string

	mu     sync.Mutex
	offset int64
	last   *sdk.Record
}

// New builds a Kit: a temporary SQLite database (removed after the test)
// with the SDK tables migrated, then setup(db) for the service's own
// migrations and fixtures (nil for none), then sdk.New(cfg) with cfg.DB
// set, then register(p) to register the handlers. cfg.Name is required;
// zero Backoff and MaxBackoff become 1ms and 10ms so retry tests are fast;
// a nil Logger logs through tb.Log. New fails the test on any error.
func New(tb testing.TB, cfg sdk.Config, register func(*sdk.Participant), setup func(db *sqlx.DB) error) *Kit {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "participant.db")
	db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(path, sqldb.SQLiteOptions{}))
	if err != nil {
		tb.Fatalf("sdktest: open sqlite %s: %v", path, err)
	}
	tb.Cleanup(func() { db.Close() })
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		tb.Fatalf("sdktest: %v", err)
	}
	if setup != nil {
		if err := setup(db); err != nil {
			tb.Fatalf("sdktest: setup: %v", err)
		}
	}
	cfg.DB = db
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	p, err := sdk.New(cfg)
	if err != nil {
		tb.Fatalf("sdktest: %v", err)
	}
	if register != nil {
		register(p)
	}
	return &Kit{p: p, db: db, saga: DefaultSaga}
}

// DB returns the kit's database, for fixtures and assertions.
func (k *Kit) DB() *sqlx.DB { return k.db }

// Participant returns the participant under test (e.g. to call StartSaga,
// DeadLetters or Replay).
func (k *Kit) Participant() *sdk.Participant { return k.p }

// SetSaga sets the saga name Send puts on commands (default DefaultSaga).
func (k *Kit) SetSaga(name string) { k.saga = name }

// Result is what one dispatched command produced.
type Result struct {
	// Event, Reason and Payload are those of the reply emitted for the
	// command ("", "" and nil if none was emitted).
	Event   string
	Reason  string
	Payload json.RawMessage
	// Reply is the whole reply envelope, nil if none was emitted.
	Reply *envelope.Message
	// Emitted is everything the relay published after the command (the
	// reply, and saga starts written by the handler).
	Emitted []envelope.Message
	// Err is the last handler error (set when the command was retried into
	// a dead letter) or an error dispatching it.
	Err error
	// DeadLettered is true if the command was parked; DeadLetter is the row.
	DeadLettered bool
	DeadLetter   *sdk.DeadLetter
	// Duplicate is true if the command id had been handled before.
	Duplicate bool
	// Expired is true if the SDK refused the command without running the
	// handler (now or at an earlier delivery): its deadline had passed, or
	// a compensation command had undone it before it arrived. Event is then
	// envelope.CommandExpired and Reason says which. A redelivery of it
	// is a Duplicate, still Expired, with the same reply.
	Expired bool
	// Attempts counts handler runs for this delivery.
	Attempts int
	// Command is the envelope that was sent.
	Command envelope.Message
}

// Decode unmarshals the reply payload into v, failing the test on error.
func (r Result) Decode(tb testing.TB, v any) {
	tb.Helper()
	if len(r.Payload) == 0 {
		tb.Fatalf("sdktest: decode payload: no payload (event %q, err %v)", r.Event, r.Err)
	}
	if err := json.Unmarshal(r.Payload, v); err != nil {
		tb.Fatalf("sdktest: decode payload of %s into %T: %v", r.Event, v, err)
	}
}

// Send dispatches a new command (fresh message id and saga id) with the
// given payload, relays the outbox and returns what was emitted.
func (k *Kit) Send(tb testing.TB, command string, payload any) Result {
	tb.Helper()
	return k.SendMessage(tb, k.Command(tb, command, payload))
}

// SendWithDeadline is Send with the command's deadline set: a deadline
// not after the participant's clock (Config.Now, plus
// Config.DeadlineMargin) is refused without running the handler, and the
// Result is Expired with the COMMAND_EXPIRED reply.
func (k *Kit) SendWithDeadline(tb testing.TB, command string, deadline time.Time, payload any) Result {
	tb.Helper()
	msg := k.Command(tb, command, payload)
	msg.Deadline = deadline
	return k.SendMessage(tb, msg)
}

// Compensate dispatches the compensation command `command` (e.g.
// REVERT_ORDER) of forward: a new command of forward's saga whose
// Compensates is forward's id. forward is the Command of an earlier
// Result, or a message from Command not sent yet: the SDK then refuses
// it when it is sent after its compensation (Result.Expired).
func (k *Kit) Compensate(tb testing.TB, command string, forward envelope.Message, payload any) Result {
	tb.Helper()
	if forward.ID == "" {
		tb.Fatalf("sdktest: compensate with %s: the forward command has no id (use Kit.Command)", command)
	}
	msg := k.Command(tb, command, payload)
	msg.SagaID, msg.Compensates = forward.SagaID, forward.ID
	if forward.Saga != "" {
		msg.Saga, msg.SagaVersion = forward.Saga, forward.SagaVersion
	}
	return k.SendMessage(tb, msg)
}

// Command builds, without sending it, the command envelope Send would
// send: a fresh id and saga id and every default of SendMessage. Change
// its fields, then send it with SendMessage (as often as you like: the
// same id each time).
func (k *Kit) Command(tb testing.TB, command string, payload any) envelope.Message {
	tb.Helper()
	var raw json.RawMessage
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			tb.Fatalf("sdktest: encode %s payload: %v", command, err)
		}
		raw = b
	}
	return k.withDefaults(envelope.Message{Name: command, Payload: raw})
}

// SendMessage dispatches msg; empty fields get defaults (version, a fresh
// id and saga id, the kit's saga name, kind command, this participant,
// now, attempt 1).
func (k *Kit) SendMessage(tb testing.TB, msg envelope.Message) Result {
	tb.Helper()
	msg = k.withDefaults(msg)
	body, err := json.Marshal(msg)
	if err != nil {
		tb.Fatalf("sdktest: encode %s: %v", msg.Name, err)
	}
	return k.SendRaw(tb, msg.SagaID, body)
}

func (k *Kit) withDefaults(msg envelope.Message) envelope.Message {
	if msg.V == 0 {
		msg.V = envelope.Version
	}
	if msg.ID == "" {
		msg.ID = uuid.NewString()
	}
	if msg.SagaID == "" {
		msg.SagaID = uuid.NewString()
	}
	if msg.Saga == "" {
		msg.Saga = k.saga
	}
	if msg.SagaVersion == 0 {
		msg.SagaVersion = 1
	}
	if msg.Kind == "" {
		msg.Kind = envelope.KindCommand
	}
	if msg.Participant == "" {
		msg.Participant = k.p.Name()
	}
	if msg.OccurredAt.IsZero() {
		msg.OccurredAt = time.Now().UTC()
	}
	if msg.Attempt == 0 {
		msg.Attempt = 1
	}
	return msg
}

// SendRaw dispatches a record with any bytes as its value (e.g. a
// malformed envelope) and key.
func (k *Kit) SendRaw(tb testing.TB, key string, value []byte) Result {
	tb.Helper()
	k.mu.Lock()
	rec := sdk.Record{
		Topic: k.p.Config().CommandTopic, Key: key, Value: value, Offset: k.offset,
		Headers: map[string]string{envelope.HeaderKind: string(envelope.KindCommand)},
	}
	k.offset++
	k.last = &rec
	k.mu.Unlock()
	return k.dispatch(tb, rec)
}

// Redeliver sends the last record again, byte for byte, as Kafka does after
// a crash before the offset commit. For a handled command the handler does
// not run again and the same reply (same message id) is emitted again.
func (k *Kit) Redeliver(tb testing.TB) Result {
	tb.Helper()
	k.mu.Lock()
	last := k.last
	k.mu.Unlock()
	if last == nil {
		tb.Fatal("sdktest: Redeliver before any Send")
	}
	return k.dispatch(tb, *last)
}

func (k *Kit) dispatch(tb testing.TB, rec sdk.Record) Result {
	tb.Helper()
	out, err := k.p.Dispatch(context.Background(), rec)
	res := Result{Command: out.Command, Err: out.Err, Duplicate: out.Duplicate, Expired: out.Expired, Attempts: out.Attempts, DeadLetter: out.DeadLetter}
	if err != nil {
		res.Err = err
	}
	res.DeadLettered = out.DeadLetter != nil
	res.Emitted = k.Flush(tb)
	for i := range res.Emitted {
		m := res.Emitted[i]
		if out.Command.ID != "" && m.CausationID == out.Command.ID {
			res.Reply = &m
			res.Event, res.Reason, res.Payload = m.Name, m.Reason, m.Payload
			break
		}
	}
	return res
}

// Flush relays the outbox and returns the messages published, in order
// (e.g. after calling StartSaga in a transaction that committed).
func (k *Kit) Flush(tb testing.TB) []envelope.Message {
	tb.Helper()
	var out []envelope.Message
	var failed error
	publish := func(_ context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			var m envelope.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				failed = fmt.Errorf("relayed record on %s is not an envelope: %w", r.Topic, err)
				return failed
			}
			if r.Key != m.SagaID {
				failed = fmt.Errorf("relayed %s has key %q, want its saga id %q", m.Name, r.Key, m.SagaID)
				return failed
			}
			out = append(out, m)
		}
		return nil
	}
	for {
		n, err := k.p.Flush(context.Background(), publish)
		if err != nil {
			tb.Fatalf("sdktest: relay the outbox: %v", err)
		}
		if n < k.p.Config().RelayBatch {
			break
		}
	}
	return out
}

// tbWriter sends log lines to tb.Log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
