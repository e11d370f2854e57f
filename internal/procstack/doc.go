// Package procstack runs saga-machine and the participant services (deals,
// profile, notification) as separate operating-system processes, the way
// they run in a deployment, so that a test can kill -9, pause and restart
// them and then check from their databases that nobody disagrees about
// money. It is test support: nothing in a deployment imports it.
//
// Three layers, each usable alone:
//
//   - Build compiles cmd/saga-machine, cmd/deals, cmd/profile and
//     cmd/notification once per test binary into a temporary directory
//     (removed by Main, which a TestMain calls).
//   - Proc is one process started from a Spec (binary, flags, environment,
//     health URL): Kill (SIGKILL), Stop (SIGTERM), Pause (SIGSTOP), Resume
//     (SIGCONT), Restart, WaitHealthy; its output is kept (the tail) and
//     written to the test log when the test fails; an exit nobody asked for
//     is reported by Exited. StartProc and NewProc register a cleanup that
//     kills it.
//   - New starts a whole Stack on the test services of internal/testenv
//     (real PostgreSQL and Apache Kafka with SASL/SCRAM and ACLs), isolated
//     from every other test that shares them: its own PostgreSQL database per
//     service (testenv.Postgres), its own topics (command topics and
//     per-participant event topics with a unique suffix), consumer groups and
//     Kafka principals (one SCRAM user per process kind, created with
//     kafka.ApplySetup and the super user from testenv, removed afterwards),
//     and a copy of the saga definitions rewritten to those topics, with
//     retry policies shortened by Config.Retries so that a retry budget runs
//     out in a test's time. Every process has its own static group member id
//     (--kafka-instance-id), kept across restarts, so a process restarted
//     after kill -9 gets its partitions back at once. The services run with
//     --dev-header on loopback: a test calls them as any user with any role
//     (Service.Call, OpenPortfolio, PostDeal).
//
// After the faults, Stack.WaitQuiescent waits (bounded) until every saga is
// at rest, every outbox is empty and every consumer group has consumed its
// topics, and Stack.Check reads the four databases and lists every broken
// invariant of MANUAL_CREATE_ORDER: a deal executed exactly when its cash
// moved (each portfolio's cash = deposits − executed buys + executed sells,
// positions likewise), every deal final, one notification per deal outcome,
// every saga terminal and agreeing with its deal, no dead letter anywhere.
//
// Under CI=true a missing PostgreSQL or Kafka fails the test (testenv); a
// broker without authentication is missing too (testenv.KafkaSecured),
// because the stack's principals and ACLs are part of what is tested.
//
// Processes are started with Pdeathsig (Linux): if the test binary dies
// without running its cleanups (a panic, a timeout), they die with it.
package procstack
