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
#   BENCH_KAFKA_TLS=1  everything over make up's SASL_SSL listener (127.0.0.1:59094)
#
# Kafka over TLS: BENCH_KAFKA_TLS=1, or SAGA_KAFKA_TLS=true or
# SAGA_KAFKA_TLS_CA_FILE in the environment (the services' variables, which
# bench reads too), takes the saga run and the round trips both to the TLS
# listener, trusting SAGA_KAFKA_TLS_CA_FILE (default: make up's test CA,
# $SAGA_RUN_DIR/kafka/tls/ca.pem). The result names the transport.
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

case "${BENCH_KAFKA_TLS:-}" in
"" | 0 | f | F | false | FALSE | False) kafka_tls=0 ;;
1 | t | T | true | TRUE | True) kafka_tls=1 ;;
*) die "BENCH_KAFKA_TLS=$BENCH_KAFKA_TLS: want 1 (TLS) or 0" ;;
esac
if [[ -n "${SAGA_KAFKA_TLS_CA_FILE:-}" || "${SAGA_KAFKA_TLS:-}" =~ ^(1|t|T|true|TRUE|True)$ ]]; then
	kafka_tls=1
fi
brokers="$KAFKA_BROKERS"
if ((kafka_tls)); then
	brokers="$KAFKA_TLS_BROKERS"
	export SAGA_KAFKA_TLS=true SAGA_KAFKA_TLS_CA_FILE="${SAGA_KAFKA_TLS_CA_FILE:-$KAFKA_TLS_DIR/ca.pem}"
fi

mkdir -p "$REPO_ROOT/.saga-machine"
(cd "$REPO_ROOT" && "$GO" build -o .saga-machine/bench ./cmd/bench)

log "bench compare: $BENCH_C clients, $BENCH_N sagas, $BENCH_ROUNDS round(s), Kafka $brokers$( ((kafka_tls)) && echo " over TLS (CA $SAGA_KAFKA_TLS_CA_FILE)"); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The Kafka credentials (and TLS settings) go through the environment, not
# the command line; bench gives the saga run and the round trips the same.
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
cd "$REPO_ROOT" && SAGA_KAFKA_USER="$KAFKA_ADMIN_USER" SAGA_KAFKA_PASSWORD="$KAFKA_ADMIN_PASSWORD" \
	.saga-machine/bench compare --postgres "$POSTGRES_URL" --brokers "$brokers" \
	-c "$BENCH_C" -n "$BENCH_N" --rounds "$BENCH_ROUNDS" $BENCH_ARGS
