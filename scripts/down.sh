#!/usr/bin/env bash
# Stops the test services started by scripts/up.sh; keeps their data.
# Idempotent: stopping what is not running is not an error.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_kafka() {
	local pid i
	if ! pid="$(kafka_pid)"; then
		log "Kafka is not running"
		rm -f "$KAFKA_PID"
		return 0
	fi
	log "stopping Kafka (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	# A controlled shutdown of a single node takes a few seconds.
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "Kafka did not stop within 30s: killing pid $pid"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$KAFKA_PID"
}

stop_postgres() {
	local bin
	bin="$(pg_bin_dir)"
	if [[ -z "$bin" || ! -f "$PG_DATA/postmaster.pid" ]]; then
		log "PostgreSQL is not running"
		return 0
	fi
	log "stopping PostgreSQL ($PG_DATA)"
	as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
		log "pg_ctl stop failed; see $PG_LOG"
}

stop_kafka
stop_postgres
