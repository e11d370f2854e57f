// Package chaos is the chaos run of saga-machine: the whole system as
// separate processes (internal/procstack: saga-machine, deals, profile with
// two replicas, notification) on a private PostgreSQL server and Apache
// Kafka broker (SASL/SCRAM, ACLs) that it starts with scripts/up.sh on
// ports and a data directory of its own, so that it may crash them without
// touching make up's services.
//
// Run offers MANUAL_CREATE_ORDER sagas (POST /deals with an
// Idempotency-Key, retried with the same key until accepted) at a steady
// rate from many funded users, an open loop. Some of the accepted deals (3
// per cent each by default) are aborted by an operator (POST
// /api/v1/sagas/{id}/abort) or cancelled by their client (POST
// /deals/{id}/cancel), at once or within a second, racing the saga and the
// faults; one abort in four is raced by the client's cancel of the same
// deal, sent at the same moment. 5 per cent of the offers are baskets of
// two or three buys (BASKET_ORDER: a check, then a parallel step, reverted
// together when a line fails), 3 per cent of them aborted and 3 per cent
// cancelled (POST /baskets/{id}/cancel). Those are offers of a fifth of the users, who only buy,
// because a reversal that would take cash or a position below zero (a
// sell's proceeds spent since) waits for an operator by design. Meanwhile
// Run injects the faults of a seeded plan:
//
//   - kill -9 of saga-machine and of each participant at random moments,
//     each restarted after a random moment down (KindKill);
//   - one restart of the broker (SIGKILL, then started again on its data)
//     and one of PostgreSQL (pg_ctl stop -m immediate: crash recovery at
//     the next start) (KindKafka, KindPostgres);
//   - one SIGSTOP of a profile replica past the consumer group session
//     timeout, so that its partitions move to the other replica, then
//     SIGCONT (KindPause).
//
// A supervisor restarts any process that exits on its own (as Kubernetes
// would) and the report lists such exits as problems. When the traffic
// and the faults are over, Run waits until the system is at rest and reads
// the four databases (procstack.Stack.Check and its own queries): every
// deal and saga final, a deal (or basket) whose abort was answered 200
// failed and one whose cancel was answered 202 cancelled (of a raced pair,
// the abort answered 200 decides; both accepted, the cancel must be a late
// entry of the saga's timeline, not a dead letter); each portfolio's cash equal to
// its deposits minus its executed buys plus its executed sells (an
// approved buy moved cash exactly once, a compensated one was reverted);
// exactly one notification per deal (per basket for a basket's deals)
// with its outcome; no dead letter (the scenario sends nothing malformed);
// every outbox empty and every consumer group's lag zero; one deal or
// basket per Idempotency-Key and every accepted deal, basket and deposit
// stored.
//
// The Report counts the sagas, the faults injected by kind, the lost and
// doubled effects, the recovery time after each fault (from the fault to
// the first offset commit, past where it stood, of every consumer group it
// hit, read from the broker every 250 ms; p50/p99 by kind) and the
// throughput per 5 s. Report.Err is nil only when nothing was found wrong.
//
// Short is the run of the package's test (part of go test ./..., so of
// make test): 1,000 sagas, each kind of fault once. Long is cmd/chaos's
// default (make chaos-long): 10,000 sagas, a kill about every 10 s.
package chaos
