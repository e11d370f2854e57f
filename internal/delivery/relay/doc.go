// Package relay is the timing of the delivery core (package delivery)
// without its SQL, so that saga-machine's domain package, which imports no
// database, runs the same loops as the participant SDK: Loop publishes an
// outbox (woken by a Signal after each commit, polling when idle, backing
// off on failures, draining at shutdown), Within retries a publish within
// the outbox lease, Every runs a periodic job (inbox pruning), Backoff and
// Sleep are the one backoff of both, Owner names a relay in leases.
package relay
