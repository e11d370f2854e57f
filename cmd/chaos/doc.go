// Command chaos runs saga-machine, deals, profile (two replicas) and
// notification as separate processes on a private PostgreSQL and Apache
// Kafka (SASL/SCRAM, ACLs) that it starts itself with scripts/up.sh on
// ports of its own, never make up's. It offers MANUAL_CREATE_ORDER sagas at
// a steady rate from many funded users, and some BASKET_ORDER baskets (an
// operator aborts some of their sagas and the clients cancel some deals
// and baskets, racing them and each other) while it kill -9s
// the processes at random moments and restarts them, restarts the broker
// and PostgreSQL once each, and pauses a profile replica (SIGSTOP) past
// the consumer session timeout. Then it waits until the system is at rest, checks it
// from the four databases and prints a report: sagas, faults by kind,
// lost and doubled effects, recovery time after each fault (p50/p99) and
// the throughput per 5 s. It exits 1 when the run found something wrong,
// 2 when it could not run. See internal/chaos and docs/operations.md.
//
//	chaos                       the long run: 10,000 sagas at 40/s, a kill about every 10 s (make chaos)
//	chaos -short                the short run (make chaos-short; make test runs it as internal/chaos's
//	                            TestChaosShort): 1,000 sagas at 8/s, each kind of fault once
//	chaos -sagas N -rate R -users U -kill-every D -aborts P -cancels P -baskets P -seed S -keep -v
//
// Run it from the repository (it runs scripts/up.sh and builds the
// services with go build); -keep keeps the work directory (the services'
// logs, the private servers' data and logs).
package main
