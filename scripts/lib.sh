# shellcheck shell=bash
# Common settings and helpers for scripts/up.sh, down.sh and clean-services.sh.
# Sourced, not executed.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Where the services keep their data: outside the repository, so a fresh CI
# clone and `go test ./...` never see it. Root's $HOME is not readable by the
# postgres user, so root uses /var/tmp.
if [[ -z "${SAGA_RUN_DIR:-}" ]]; then
	if [[ "$(id -u)" == 0 || -z "${HOME:-}" ]]; then
		SAGA_RUN_DIR=/var/tmp/saga-machine
	else
		SAGA_RUN_DIR="$HOME/.cache/saga-machine"
	fi
fi
export SAGA_RUN_DIR

PG_HOST=127.0.0.1
PG_PORT="${SAGA_PG_PORT:-55432}"
PG_DIR="$SAGA_RUN_DIR/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/postgres.log"
PG_DATABASES=(saga deals profile notification)

KAFKA_VERSION=4.4.0 # keep in step with scripts/kafka/pom.xml
KAFKA_PORT="${SAGA_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${SAGA_KAFKA_CONTROLLER_PORT:-59093}"
# The SASL_SSL listener (the same SCRAM users over TLS), with a test CA and
# broker certificate made by scripts/devcert in $KAFKA_TLS_DIR (ca.pem is
# what clients trust: --kafka-tls-ca-file).
KAFKA_TLS_PORT="${SAGA_KAFKA_TLS_PORT:-59094}"
KAFKA_DIR="$SAGA_RUN_DIR/kafka"
KAFKA_TLS_DIR="$KAFKA_DIR/tls"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_LOG_DIRS="$KAFKA_DIR/data"
KAFKA_CONF="$KAFKA_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_DIR/log4j2.properties"
KAFKA_LOG="$KAFKA_DIR/server.log"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
# The broker's heap. Every test creates topics of its own (a suffix per
# test), so the test broker holds thousands of partitions after a few runs;
# 512 MB ran out of heap at about 16,000 (OutOfMemoryError, then the broker
# stopped answering).
KAFKA_HEAP="${SAGA_KAFKA_HEAP:-1g}"
# A stopped broker holding more partitions than this is wiped before it
# starts again (test data only: the topics of finished tests), because
# loading them took minutes and answered clients before it was done; the
# setup step then recreates the users, ACLs and shipped topics.
KAFKA_MAX_PARTITIONS="${SAGA_KAFKA_MAX_PARTITIONS:-4000}"
KAFKA_USERS_DIR="$KAFKA_DIR/users" # one file per SCRAM user: its password (mode 600)

# Authentication of the test broker: SASL/SCRAM-SHA-512 on the client
# listener, ACLs (StandardAuthorizer, deny by default), super user admin.
# The passwords are fixed, well-known test values for a broker that listens
# on loopback only (internal/testenv uses the same defaults); override them
# with the variables below. Never reuse them anywhere else.
KAFKA_AUTH_VERSION=scram-acl-tls-v2 # written into server.properties; a broker without it is upgraded
KAFKA_ADMIN_USER="${SAGA_TEST_KAFKA_USER:-admin}"
KAFKA_ADMIN_PASSWORD="${SAGA_TEST_KAFKA_PASSWORD:-saga-test-admin}"
# The principals of the saga bus (cmd/saga-machine kafka-setup creates them
# with these passwords: saga-test-<user> unless SAGA_TEST_KAFKA_PASSWORD_<USER> is set).
KAFKA_PRINCIPALS=(saga-machine deals profile notification)

POSTGRES_URL="postgres://postgres@$PG_HOST:$PG_PORT/postgres?sslmode=disable"
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
KAFKA_TLS_BROKERS="127.0.0.1:$KAFKA_TLS_PORT"

log() { printf "==> %s\n" "$*"; }

# reserve_ports PORT... takes the servers' fixed ports out of the ports the
# kernel gives outgoing connections (net.ipv4.ip_local_reserved_ports).
# Every fixed port here (55432, 5808x, 5909x) lies inside Linux's default
# ephemeral range, 32768-60999, so a client's connection (a test's, the
# Kafka probe's) could be given one as its local port, and the server that
# listens on it would then fail with "Address already in use" (seen once,
# Keycloak's management port 58082 during make test). Connections made
# before the reservation keep their ports. Needs root; without it, a note.
reserve_ports() {
	local f=/proc/sys/net/ipv4/ip_local_reserved_ports list
	list="$(IFS=,; echo "$*")"
	local cur
	cur="$(cat "$f" 2>/dev/null || true)"
	if ! { echo "${cur:+$cur,}$list" >"$f"; } 2>/dev/null; then
		log "note: could not reserve ports $list in $f (not root?): a client connection may take one of them"
	fi
}
die() {
	printf '\n!!! %s\n\n' "$*" >&2
	exit 1
}

# pg_bin_dir prints the bin directory of the newest installed PostgreSQL
# server, or nothing.
pg_bin_dir() {
	local best="" v
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/postgres" ]] || continue
		v="$(basename "$(dirname "$d")")"
		if [[ -z "$best" ]] || ((v > $(basename "$(dirname "$best")"))); then
			best="$d"
		fi
	done
	printf '%s' "$best"
}

# as_pg runs a command as the PostgreSQL server owner: user postgres when we
# are root (the server refuses to run as root), ourselves otherwise.
as_pg() {
	if [[ "$(id -u)" == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_running() {
	local bin
	bin="$(pg_bin_dir)"
	[[ -n "$bin" && -f "$PG_DATA/PG_VERSION" ]] || return 1
	"$bin/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -U postgres
}

# kafka_pid prints the pid of our Kafka broker if it is running.
kafka_pid() {
	[[ -f "$KAFKA_PID" ]] || return 1
	local pid
	pid="$(cat "$KAFKA_PID")"
	[[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
	# The pid must still be our broker, not a recycled number.
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $KAFKA_CONF" || return 1
	printf '%s' "$pid"
}

# kafka_conf_current succeeds when the broker's configuration file is the
# one this checkout writes (authentication and ACLs on, the TLS listener).
kafka_conf_current() {
	grep -qs "^# auth: $KAFKA_AUTH_VERSION\$" "$KAFKA_CONF"
}

# principal_password USER prints the test password of a bus principal.
principal_password() {
	local var="SAGA_TEST_KAFKA_PASSWORD_$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')"
	printf '%s' "${!var:-saga-test-$1}"
}

# port_open HOST PORT succeeds when something accepts TCP connections there.
port_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

print_info() {
	cat <<EOF

saga-machine test services (data in $SAGA_RUN_DIR):
  PostgreSQL $PG_HOST:$PG_PORT, user postgres (trust), databases: ${PG_DATABASES[*]}
  Apache Kafka $KAFKA_VERSION (KRaft) $KAFKA_BROKERS, SASL/SCRAM + ACLs

  export SAGA_TEST_POSTGRES_URL='$POSTGRES_URL'
  export SAGA_TEST_KAFKA_BROKERS=$KAFKA_BROKERS
  export SAGA_TEST_KAFKA_TLS_BROKERS=$KAFKA_TLS_BROKERS SAGA_TEST_KAFKA_TLS_CA=$KAFKA_TLS_DIR/ca.pem
  Kafka: SASL_PLAINTEXT + SCRAM-SHA-512, ACLs (deny by default), and the same
  users over TLS (SASL_SSL, test CA $KAFKA_TLS_DIR/ca.pem); super user
  $KAFKA_ADMIN_USER (SAGA_TEST_KAFKA_USER / SAGA_TEST_KAFKA_PASSWORD); the
  principals ${KAFKA_PRINCIPALS[*]} have their passwords in $KAFKA_USERS_DIR

  logs: $PG_LOG
        $KAFKA_LOG
  stop: make down   (keeps data)   wipe: make clean-services
EOF
}
