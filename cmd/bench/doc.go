// Command bench measures the whole system end to end: it drives N
// MANUAL_CREATE_ORDER sagas through the deals API (POST /deals) with C
// concurrent clients — each posts a deal, waits until its saga is final,
// then posts the next — with a mix of approved and rejected orders, and
// reports completed sagas per second and the latency from the POST /deals
// request to the saga's final state (p50, p95, p99, max).
//
//	bench [-n 5000] [-c 200]                         a system it starts itself: SQLite + embedded broker (temporary)
//	bench --postgres URL --brokers HOST:PORT         ... on PostgreSQL (fresh databases, dropped after) and Kafka (fresh topics)
//	bench --remote [--saga-machine-url U] [...]      a running system (make run): its issuer hands out tokens
//
// While it runs, a progress line on stderr is rewritten in place (done/N,
// rate, in flight). --json prints the result as one JSON object on stdout.
// --cpuprofile FILE writes a CPU profile of the whole process (the system
// included when bench started it).
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
// the time its POST was sent is the latency; the rate is the sagas
// completed over the time from the first POST to the last final commit.
package main
