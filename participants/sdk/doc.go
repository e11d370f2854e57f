// Package sdk is the participant SDK of saga-machine: a participant service
// registers one handler per command and gets idempotency, retries, dead
// letters and reliable publishing for free.
//
//	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Brokers: brokers})
//	sdk.Handle(p, "APPROVE_ORDER", approveOrder)
//	err = p.Run(ctx)
//
// A handler receives the command with its payload decoded into the type it
// asks for, and a database transaction. It answers with Reply (success
// event), Reject (business rejection event with a reason) or NoReply.
// HandleBatch registers a handler that takes a run of consecutive commands
// of one name at once (one Result each), for set-based SQL.
//
// # Guarantees
//
// Kafka delivers at least once; the SDK makes every command's effects
// happen exactly once. For each command, one transaction in the
// participant's own database holds: the command id in the inbox table
// (INSERT ... ON CONFLICT DO NOTHING), the handler's business changes and
// the reply in the outbox table (consecutive commands of a partition share
// a transaction; if one fails, the transaction rolls back and the commands
// before it run again without it, so a handler may run more than once but
// its changes commit once). The Kafka offset is committed only after that
// transaction commits. A redelivered command finds its id in the inbox:
// the handler does not run again and the stored reply (same message id) is
// enqueued again, so a reply lost on the way is re-sent. A relay publishes
// the outbox in batches to the event topic (key = saga id) and deletes what
// was published. Nothing is published from inside a transaction.
//
// A failing (or panicking) handler is rolled back and retried with backoff
// (Config.MaxAttempts, Backoff, MaxBackoff); then the command is parked as a
// dead letter in the same database, with the reason, and consumption moves
// on. Malformed envelopes and unknown commands are parked at once. See
// Participant.DeadLetters and Participant.Replay.
//
// # Deadlines and compensation
//
// A forward command whose Deadline has passed (Config.Now,
// Config.DeadlineMargin) is refused before its handler runs: the SDK
// answers envelope.CommandExpired (COMMAND_EXPIRED) and records the
// command id in the inbox with that reply, so every later delivery of it
// gets the same answer and nothing applies. A compensation command
// (Command.Compensates) ignores deadlines and always runs; in its
// transaction the SDK records what it compensates (table sdk_compensated)
// and, if that forward command was never handled, puts its id in the inbox
// with the refusal "compensated before it arrived", so that the forward
// command never applies if it arrives late. Compensation handlers must be
// idempotent and null-safe (nothing to undo: still answer).
//
// StartSaga starts a saga atomically with the caller's business change
// (StartSagas: several in one statement).
//
// Tracing (on when the process set up internal/tracing, e.g. a service
// run with --otlp-endpoint): each command gets a "handle <COMMAND>" span,
// a child of its traceparent header, carried by the handler's ctx; the
// reply and StartSaga's event continue the trace. Off, a command's
// traceparent is copied onto its reply.
//
// The SDK works on PostgreSQL (pgx or lib/pq) and SQLite (modernc.org/sqlite), on
// Apache Kafka and the embedded broker. Its tables are created by Migrate.
// Package sdktest runs handlers in unit tests without Kafka or a database
// server. docs/participant-sdk.md is the guide.
package sdk
