#!/usr/bin/env bash
# make bench-compare: the saga bench (cmd/bench, PostgreSQL + Kafka) beside
# the floors it stands on, in one run on this machine at the same client
# count: pgbench's built-in write-only transaction (-b simple-update, i.e.
# pgbench -N) on make up's PostgreSQL and plain produce->consume round trips
# on make up's (authenticated) Kafka broker. Prints sagas/s beside each
# floor and their ratios (cmd/bench compare; --json with BENCH_ARGS=--json).
#
# Starts the services (scripts/up.sh) and installs pgbench with apt when it
# is missing (Debian ships it in the PostgreSQL server package; the
# postgresql-contrib package depends on that). Idempotent.
#
#   BENCH_C       clients (default 32)      BENCH_N     sagas per saga run (5000)
#   BENCH_ROUNDS  passes over the three (1) BENCH_ARGS  more `bench compare` flags
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GO="${GO:-go}"
BENCH_C="${BENCH_C:-32}"
BENCH_N="${BENCH_N:-5000}"
BENCH_ROUNDS="${BENCH_ROUNDS:-1}"

"$REPO_ROOT/scripts/up.sh" >/dev/null

have_pgbench() {
	command -v pgbench >/dev/null && return 0
	compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null
}
if ! have_pgbench; then
	log "pgbench not found: installing postgresql-contrib with apt"
	[[ "$(id -u)" == 0 ]] || die "pgbench is not installed and we are not root: run 'sudo apt-get install -y postgresql-contrib'"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-contrib >/dev/null
	have_pgbench || die "apt-get install postgresql-contrib did not provide pgbench"
fi

mkdir -p "$REPO_ROOT/.saga-machine"
(cd "$REPO_ROOT" && "$GO" build -o .saga-machine/bench ./cmd/bench)

log "bench compare: $BENCH_C clients, $BENCH_N sagas, $BENCH_ROUNDS round(s); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The Kafka credentials go through the environment, not the command line.
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
cd "$REPO_ROOT" && SAGA_KAFKA_USER="$KAFKA_ADMIN_USER" SAGA_KAFKA_PASSWORD="$KAFKA_ADMIN_PASSWORD" \
	.saga-machine/bench compare --postgres "$POSTGRES_URL" --brokers "$KAFKA_BROKERS" \
	-c "$BENCH_C" -n "$BENCH_N" --rounds "$BENCH_ROUNDS" $BENCH_ARGS
