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
// How finality is detected: one watcher lists the sagas in a terminal
// state (status completed, then failed) created since the oldest saga still
// in flight, every --poll, page by page (engine.SagaFilter through the
// store when bench started the system, GET /api/v1/sagas otherwise). That
// is two indexed queries per poll whatever C is, instead of one request
// per saga. The latency is not the detection time: it is the saga's
// updated_at (the commit of its final transition) minus the time the POST
// was sent, so the poll interval only delays the next POST, not the
// measurement.
package main
