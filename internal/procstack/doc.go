// Package procstack runs saga-machine and the participant services (deals,
// profile, notification) as separate operating-system processes, the way
// they run in a deployment, so that a test can kill -9, pause and restart
// them and then check from their databases that nobody disagrees about
// money. It is test support (tests and cmd/chaos): nothing in a deployment
// imports it.
//
// Three layers, each usable alone, each with a plain API for a program
// (BuildTo, NewProcess, Start and Stack.Close) and thin wrappers for tests
// (Build, NewProc and StartProc, New) that fail the test and register the
// cleanups:
//
//   - BuildTo compiles cmd/saga-machine, cmd/deals, cmd/profile and
//     cmd/notification into a directory; Build does it once per test binary
//     into a temporary directory (removed by Main, which a TestMain calls).
//   - Proc is one process started from a Spec (binary, flags, environment,
//     health URL): Kill (SIGKILL), Stop (SIGTERM), Pause (SIGSTOP), Resume
//     (SIGCONT), Restart, WaitHealthy; its output is kept (the tail; a copy
//     may go to Spec.Log) and written to the test log when the test fails;
//     an exit nobody asked for is reported by Exited. StartProc and NewProc
//     register a cleanup that kills it.
//   - Start starts a whole Stack on the PostgreSQL server and Kafka cluster
//     of an Env; New does it on the test services of internal/testenv
//     (real PostgreSQL and Apache Kafka with SASL/SCRAM and ACLs). A stack
//     is isolated from every other one that shares them: its own PostgreSQL
//     database per service, its own topics (command topics and
//     per-participant event topics with a unique suffix), consumer groups and
//     Kafka principals (one SCRAM user per process kind, created with
//     kafka.ApplySetup and the super user from testenv, removed afterwards),
//     and a copy of the saga definitions rewritten to those topics, with
//     retry policies shortened by Config.Retries so that a retry budget runs
//     out in a test's time. Every process has its own static group member id
//     (--kafka-instance-id), kept across restarts, so a process restarted
//     after kill -9 gets its partitions back at once. Config.Replicas runs
//     several processes of a service (same database, topics, group and
//     principal): one paused past the session timeout loses its partitions
//     to the others. The services run with --dev-header on loopback: a test
//     calls them as any user with any role (Service.Call, Replica.Call,
//     OpenPortfolio, Deposit, PostDeal, PostDealKey, PostBasketKey, CancelDeal,
//     AbortSaga).
//
// After the faults, Stack.WaitQuiescent waits (bounded) until every saga is
// at rest, every outbox is empty and every consumer group has consumed its
// topics, and Stack.Check reads the four databases and lists every broken
// invariant of MANUAL_CREATE_ORDER: a deal executed exactly when its cash
// moved (each portfolio's cash = deposits − executed buys + executed sells,
// positions likewise), every deal final, one notification per deal outcome
// (per basket for the deals of a BASKET_ORDER basket),
// every saga terminal and agreeing with its deal (completed for an
// executed or rejected deal, failed for a failed or cancelled one), no dead
// letter anywhere;
// Report.Broken counts what it found by kind.
//
// Under CI=true a missing PostgreSQL or Kafka fails the test (testenv); a
// broker without authentication is missing too (testenv.KafkaSecured),
// because the stack's principals and ACLs are part of what is tested.
//
// Processes are started with Pdeathsig (Linux): if the test binary (or the
// program) dies without running its cleanups (a panic, a timeout), they die
// with it.
package procstack
