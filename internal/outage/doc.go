// Package outage holds the regression test of the outage of issue 9: the
// four services ran as separate processes on PostgreSQL and Kafka, profile
// was down longer than APPROVE_ORDER's retry budget while deals kept
// arriving, and when it came back it debited portfolios for deals that
// never executed (their ORDER_APPROVED replies dead-lettered as finished,
// the deals draft forever, the clients never told).
//
// TestParticipantOutageLongerThanRetryBudget replays it with
// internal/procstack on real PostgreSQL and authenticated Apache Kafka,
// with the retry budgets shortened so that it runs in CI's time: funded
// users post a steady stream of buys (some unaffordable) while profile is
// killed with SIGKILL and kept down longer than the budget, saga-machine
// and deals are killed and restarted, and deals is paused past
// APPROVE_DEAL's budget with an approved deal in flight. Once the stack is
// quiet it checks from the four databases that every deal is final,
// executed exactly when its cash moved, notified once, its saga terminal,
// nothing dead-lettered, and that sagas really failed and were compensated.
// It logs the recovery times it measured (no timed assertion).
//
// The default run takes about a minute; SAGA_OUTAGE_LONG=1 runs a longer
// one (more users, longer outages, two profile outages). Under CI=true a
// missing PostgreSQL or Kafka fails the test.
package outage
