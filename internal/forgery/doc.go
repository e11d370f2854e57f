// Package forgery holds the whole-system attack test of issue 8's Kafka
// hole: a participant's credentials used to speak for another participant
// or to command one.
//
// TestForgedMessagesMoveNoMoney runs the four services as separate
// processes with internal/procstack on real PostgreSQL and Apache Kafka
// with SASL/SCRAM and ACLs, each service its own principal. With the deals
// principal's credentials it tries what a compromised deals (or anyone who
// stole its password) would try against a funded victim:
//
//   - APPROVE_ORDER written straight to profile's command topic, for a saga
//     saga-machine never started, buying with the victim's cash: the broker
//     refuses the write (only saga-machine writes command topics);
//   - ORDER_APPROVED written to profile's event topic: refused likewise;
//   - ORDER_APPROVED claiming participant profile, written to deals' own
//     event topic (the one its ACLs let it write), once for a saga that
//     never existed and once for the victim's genuine saga waiting for
//     profile's decision, with a context that would settle the deal for a
//     cent: saga-machine dead-letters both as wrong-participant.
//
// It then reads the databases: the victim's cash and positions did not
// move, profile decided nothing, no deal changed, the waiting saga's state,
// revision and context are as they were, no saga exists for the forged
// one; the genuine deal then executes once profile decides it, and
// procstack's Check finds every invariant kept (the two forged events
// being the only dead letters). Last, a control: the very same forged
// command written by the broker's super user, who bypasses the ACLs, does
// debit the victim, so what the broker refused was a working attack.
//
// Under CI=true a missing PostgreSQL or an unauthenticated Kafka fails the
// test (testenv).
package forgery
