package engine

import (
	"context"
	"time"
)

// Store is what the orchestrator needs of the durable state, and no more:
// transactions (Tx), the outbox relay, inbox pruning, due timers and the
// dead letter an operator replays. engine/sqlstore implements it for
// PostgreSQL and SQLite; both pass one conformance suite
// (engine/sqlstore/storetest), and its inbox and outbox are the delivery
// core's (internal/delivery), which has its own suite.
//
// Write methods that change sagas live on Tx so that an event's transition,
// its history, its commands (outbox) and its inbox record commit together.
// Every method takes and returns whole batches: the orchestrator applies many
// events per transaction and the store should use few statements per batch.
// What operators and the HTTP API read is Queries.
type Store interface {
	// InTx runs fn in one database transaction and commits if fn returns nil;
	// otherwise it rolls back and returns fn's error unchanged.
	InTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error

	// PublishOutbox takes up to limit unpublished records (oldest first)
	// that no other relay holds, calls publish with them and removes them
	// if publish returns nil; it returns how many it published. While
	// publish runs no other relay gets these records; if publish fails they
	// are released at once, and if the relay dies they become available
	// again within lease. The store may hold a transaction open across
	// publish (PostgreSQL locks the rows, which dies with the connection)
	// or lease the records to owner for lease (SQLite), so publish must
	// return within lease. Owners must be unique per relay.
	PublishOutbox(ctx context.Context, owner string, limit int, lease time.Duration,
		publish func(ctx context.Context, recs []OutboxRecord) error) (int, error)

	// PurgeInbox forgets the inbox records of messages processed before
	// olderThan and returns how many it removed. A message redelivered after
	// its record is purged is processed again, so the retention must exceed
	// how long the bus may redeliver (Config.InboxRetention).
	PurgeInbox(ctx context.Context, olderThan time.Time) (int64, error)

	// DueTimers returns the ids of up to limit sagas whose TimerAt <= now,
	// earliest first.
	DueTimers(ctx context.Context, now time.Time, limit int) ([]string, error)

	// GetDeadLetter returns one dead letter; *Error CodeNotFound if there is none.
	GetDeadLetter(ctx context.Context, id int64) (DeadLetter, error)
}

// Queries is what operators and saga-machine's HTTP API read from the
// store; the orchestrator never needs it. engine/sqlstore implements it
// beside Store.
type Queries interface {
	// GetInstance returns one saga; *Error CodeNotFound if there is none.
	GetInstance(ctx context.Context, id string) (Instance, error)
	// History returns a saga's timeline in order.
	History(ctx context.Context, sagaID string) ([]HistoryEntry, error)
	// ListInstances returns one page of sagas matching f, newest first.
	ListInstances(ctx context.Context, f SagaFilter) (SagaPage, error)
	// CountByState counts instances per definition, version, state and
	// status.
	CountByState(ctx context.Context) ([]StateCount, error)
	// DeadLetters returns dead letters, newest first; replayed ones only if
	// includeReplayed.
	DeadLetters(ctx context.Context, limit int, includeReplayed bool) ([]DeadLetter, error)
	// GetDeadLetter returns one dead letter; *Error CodeNotFound if there is none.
	GetDeadLetter(ctx context.Context, id int64) (DeadLetter, error)
	// OutboxBacklog counts unpublished records.
	OutboxBacklog(ctx context.Context) (int64, error)
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
}

// Tx is the write side of one store transaction.
type Tx interface {
	// Claim records message ids in the inbox and returns the ids that were
	// NOT there before (the fresh ones); the others are duplicates.
	Claim(ctx context.Context, ids []string) (fresh map[string]bool, err error)
	// Unclaim forgets a message id, so a replayed dead letter is processed.
	Unclaim(ctx context.Context, id string) error
	// Load returns those of ids that exist, by id.
	Load(ctx context.Context, ids []string) (map[string]*Instance, error)
	// Insert stores new instances with Rev 1. An id that already exists is an
	// *Error CodeConflict.
	Insert(ctx context.Context, insts []*Instance) error
	// Update stores changed instances where the stored Rev equals inst.Rev,
	// and sets inst.Rev to Rev+1. If any instance's Rev no longer matches,
	// it returns *Error CodeConflict (the caller rolls back and retries).
	// Keys are replaced by inst.Keys.
	Update(ctx context.Context, insts []*Instance) error
	// AppendHistory appends timeline entries.
	AppendHistory(ctx context.Context, entries []HistoryEntry) error
	// WriteBatch writes what one intake batch changed, with the checks,
	// effects and errors of Insert(ins), Update(upd),
	// AppendHistory(entries) and Enqueue(outbox) called in this order
	// (sqlstore: one statement on PostgreSQL).
	WriteBatch(ctx context.Context, ins, upd []*Instance, entries []HistoryEntry, outbox []OutboxRecord) error
	// SentCommand looks for the command commandID in the Commands of
	// sagaID's timeline entries: whether the saga sent it, and to whom
	// (the last reference to it, with its latest attempt).
	SentCommand(ctx context.Context, sagaID, commandID string) (CommandRef, bool, error)
	// Enqueue adds records to the outbox.
	Enqueue(ctx context.Context, recs []OutboxRecord) error
	// AddDeadLetters stores dead letters; one whose MessageID is already
	// parked (and not replayed) is skipped.
	AddDeadLetters(ctx context.Context, dls []DeadLetter) error
	// MarkReplayed records that an operator replayed a dead letter.
	MarkReplayed(ctx context.Context, id int64, actor string, at time.Time) error
	// ClaimIdempotencyKey stores k if no key with its Caller, Saga and Key
	// is stored yet, and returns (k, true). Otherwise it stores nothing and
	// returns the stored key (with its RequestHash and SagaID) and false.
	ClaimIdempotencyKey(ctx context.Context, k IdempotencyKey) (IdempotencyKey, bool, error)
}

// IdempotencyKey binds one caller's Idempotency-Key, for one saga
// definition, to the saga it started and to a hash of the request that
// started it, so that a retry gets the same saga and a different request
// under the same key is refused. Keys are kept as long as the store.
type IdempotencyKey struct {
	Caller      string    // who started the saga: the API caller's subject, "" for in-process starts
	Saga        string    // definition name
	Key         string    // the Idempotency-Key as sent
	RequestHash string    // hex SHA-256 of the canonical request
	SagaID      string    // the saga the key started
	CreatedAt   time.Time // when the key was first used
}
