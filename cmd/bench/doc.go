// Command bench measures the whole system end to end: it drives
// MANUAL_CREATE_ORDER sagas through the deals API (POST /deals) with a mix
// of approved and rejected orders and reports completed sagas per second,
// the latency from a saga's start to its final state (p50, p90, p95, p99,
// p99.9, max, from an HDR histogram) and the CPU each process of the system
// spent per saga.
//
//	bench [-n 5000] [-c 200] [--warmup 2s]           closed loop on a system it starts itself: SQLite + embedded broker (temporary)
//	bench --rate 500 [--duration 30s] [--warmup 5s]  open loop: 500 sagas/s offered whatever the system does
//	bench --postgres URL --brokers HOST:PORT         ... on PostgreSQL (fresh databases, dropped after) and Kafka (fresh topics and groups, deleted after)
//	bench --remote [--saga-machine-url U] [...]      a running system (make run): its issuer hands out tokens
//	bench kafka-roundtrip --brokers HOST:PORT [-c 32] plain Kafka produce→consume round trips (a floor)
//	bench compare [-c 32] [-n 5000] [--rounds 2]     the saga bench beside pgbench -N and Kafka round trips, with ratios
//
// Kafka credentials come from --kafka-user and --kafka-password-file or
// the environment (SAGA_KAFKA_USER, SAGA_KAFKA_PASSWORD), and TLS (a
// SASL_SSL listener such as make up's 127.0.0.1:59094) from --kafka-tls
// and --kafka-tls-ca-file or SAGA_KAFKA_TLS and SAGA_KAFKA_TLS_CA_FILE,
// as for the services (internal/program.KafkaFlags). Every mode takes
// them: the system bench starts, its notification tap, the round trips,
// and compare, which gives its saga run the settings of its round trips
// so that the two use one transport. The result names the transport by
// Kafka's security.protocol names (kafka_transport in --json: PLAINTEXT,
// SASL_PLAINTEXT, SSL, SASL_SSL); a CA file that is missing or holds no
// PEM certificate stops a run before it connects to anything.
//
// The PostgreSQL driver of the system bench starts (and of its own
// connections) is the one $SAGA_PG_DRIVER selects, pgx or pq (lib/pq),
// read by internal/sqldb like every other component; the result names it
// (pg_driver in --json).
//
// # Closed and open loop
//
// The closed loop (-c) keeps C sagas in flight: each client posts a deal,
// waits until its saga is final, then posts the next. Its latency runs from
// the POST. A closed loop slows down with the system, so a stall delays
// the sagas that would have been started meanwhile instead of showing in
// the latency ("coordinated omission").
//
// The open loop (--rate R) starts saga i at start + i/R whatever happened
// to the sagas before it, each in its own goroutine, and measures its
// latency from that scheduled start: a slow system shows its queue. At
// most --max-in-flight sagas are under way; past that the generator waits,
// and the wait counts in the latency of the sagas it delays. The result
// tells how far behind schedule the generator fell (p50/p99/max, sagas
// started more than 10 ms late) and the rate it really sent at; if that is
// well below --rate, the bench machine was the limit. --warmup leaves the
// sagas scheduled in the first stretch out of the latency (not out of the
// rates or the CPU); in the closed loop it leaves out the sagas posted in
// the first stretch, such as the first c, which wait for the consumer groups
// to form. Users default to one second of arrivals (R), so a
// portfolio gets about one deal a second.
//
// # CPU per saga
//
// Over the sagas' phase (after users and portfolios are set up) bench reads
// user + system time from /proc/<pid>/stat before and after, per process:
// its own process (with the system in it when bench started it: saga-
// machine, deals, profile, notification and the issuer run in one process,
// internal/system, and are reported together as bench+system, with the
// load generator), PostgreSQL's postmaster with all its children, live and
// reaped (backends, WAL writer, checkpointer, autovacuum; the backends of
// the bench's own databases are also reported apart), and the Kafka
// broker's JVM. The servers are found by the process holding the listening
// socket of the --postgres / --brokers port (needs root or the same user),
// else by make up's pid files in $SAGA_RUN_DIR. With --remote the processes
// behind the URLs' ports are reported; --cpu-pid NAME=PID adds any process.
// The machine's busy share over the window is reported too: on a shared
// machine, compare it with the sum of the processes.
//
// # Stages
//
// Over the same window, when bench started the system, it reports each
// stage's batches (stages in --json): saga-machine's intake (from its
// saga_machine_intake_batch_seconds and _records histograms) and each
// participant's committed batches (sdk.Stats). For each: how many batches,
// records per batch, milliseconds per batch and the share of the window it
// was busy. The intake handles one batch at a time, so a busy share near
// 100 % names the stage that limits throughput; below that, more load
// only makes the batches bigger. With --remote the stages are not seen.
//
// How finality is detected. When bench starts the system it reads the
// notification topic with a plain Kafka client (a "tap", no consumer group):
// MANUAL_CREATE_ORDER sends NOTIFY exactly when a saga enters its final
// state, so a NOTIFY releases the client that posted the deal, with no
// database query at all; failed sagas (which notify nobody) are found by
// listing status=failed once a second. With --remote (or --list) one
// watcher lists the sagas in a terminal state created since the oldest saga
// still in flight, every --poll, page by page (GET /api/v1/sagas or the
// store): two indexed queries per poll whatever C is, instead of one request
// per saga. Either way the latency is not the detection time: after the run
// each saga is read once from saga-machine's store (or taken from the
// listing) and its updated_at — the commit of its final transition — minus
// its start is the latency; the rate is the sagas completed over the time
// from the first start to the last final commit.
//
// # The floors (compare)
//
// compare runs, one after the other on the same machine and at the same
// client count: pgbench's built-in write-only transaction (-b simple-update,
// i.e. pgbench -N: one UPDATE, one SELECT, one INSERT, one commit) in a
// fresh database on the same PostgreSQL (dropped afterwards; fewer clients
// if the server has fewer free connections, which the result says), plain
// produce→consume round trips on the same broker (kafka-roundtrip: each
// client produces a record with acks=all and no linger and waits until a
// consumer of the topic receives it; a fresh topic, deleted afterwards),
// and the saga bench on PostgreSQL + Kafka. It prints sagas/s beside each
// floor and their ratios; a MANUAL_CREATE_ORDER saga is 8 Kafka hops in a
// row, each with a database transaction at its ends.
package main
