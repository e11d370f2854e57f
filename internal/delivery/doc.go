// Package delivery is the one delivery core of saga-machine and of the
// participant SDK: how a consumer records what it processed (the inbox), how
// a producer writes what it will send in the same transaction (the outbox),
// how the outbox is relayed to the bus, and how old inbox records are
// pruned, on PostgreSQL and on SQLite.
//
// Both users keep their own tables (EngineTables: inbox and outbox in the
// saga database; ParticipantTables: sdk_inbox and sdk_outbox in a
// participant's database); a Layout names the few ways they differ, and
// Tables runs every statement for one layout on one database:
//
//   - Claim records message ids in the inbox in the caller's transaction
//     and says which are fresh (the others are duplicates). The SDK's inbox
//     also keeps each command's reply (Replies, SetReply), so that a
//     duplicate gets the same answer; ClaimAndWrite records a batch of
//     commands and writes their replies with one statement on PostgreSQL.
//   - Write adds rows to the outbox in the caller's transaction, in order.
//   - Publish takes the oldest rows no other relay holds, hands them to a
//     publish function and deletes them once it returns nil. On PostgreSQL
//     it locks them (SELECT … FOR UPDATE SKIP LOCKED) in a transaction
//     bounded by idle_in_transaction_session_timeout = the lease, so a
//     relay that hangs loses them; on SQLite, which has one writer, it
//     leases them (claimed_by, claimed_until) and publishes outside any
//     transaction. A failed publish gives them back at once.
//   - Purge deletes inbox records older than a cut-off, in chunks.
//
// Package delivery/relay is the loop around Publish (woken after a commit,
// polling when idle, backing off on failures, draining at shutdown), the
// retry of a publish within the lease, the loop of a periodic job
// (pruning) and the one backoff of both; it imports no database, so that
// saga-machine's domain package runs it too.
//
// The conformance suite (delivery_test.go) runs every operation on
// PostgreSQL and SQLite for both layouts, on the tables the real
// migrations create.
package delivery
