#!/usr/bin/env bash
# Starts the real services the tests use, on loopback only:
#   PostgreSQL (our own cluster) on 127.0.0.1:55432, user postgres, trust auth
#   Apache Kafka 4.x (KRaft, broker+controller) on 127.0.0.1:59092 with
#   SASL_PLAINTEXT + SCRAM-SHA-512, ACLs (StandardAuthorizer, deny by
#   default), super user admin, and the saga bus's topics, principals and
#   ACLs made by `saga-machine kafka-setup` (the same step as the k8s Job)
# Installs PostgreSQL with apt when it is missing and fetches the Kafka jars
# from Maven Central. Idempotent: what already runs is left alone; a broker
# started by an older checkout without authentication is stopped, its test
# data wiped, and started again with authentication.
# Data lives in $SAGA_RUN_DIR (see scripts/lib.sh), never in the repository.
# SAGA_UP_SERVICES (default "postgres chromium kafka") picks what to start,
# e.g. SAGA_UP_SERVICES=kafka SAGA_RUN_DIR=/var/tmp/other SAGA_KAFKA_PORT=59192
# SAGA_KAFKA_CONTROLLER_PORT=59193 SAGA_KAFKA_TLS_PORT=59194 scripts/up.sh runs a
# second broker.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$SAGA_RUN_DIR"

# ---------------------------------------------------------------- PostgreSQL

install_postgres() {
	[[ -n "$(pg_bin_dir)" ]] && return 0
	log "PostgreSQL server not found: installing it with apt"
	[[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and we are not root: run 'sudo apt-get install -y postgresql'"
	apt-get update -q
	# Debian's package may create and start its own cluster (15/main on
	# port 5432); we leave it alone and run our own below.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
	[[ -n "$(pg_bin_dir)" ]] || die "apt-get install postgresql did not provide /usr/lib/postgresql/*/bin/postgres"
}

write_pg_conf() {
	# Read by postgresql.conf through an include line; rewritten on every start
	# so a change here takes effect without wiping the cluster.
	as_pg tee "$PG_DATA/saga-machine.conf" >/dev/null <<EOF
# Written by scripts/up.sh: test server for saga-machine, loopback only.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
# Durable commits: benchmarks measure real fsyncs.
fsync = on
synchronous_commit = on
full_page_writes = on
wal_level = replica
max_wal_size = 1GB
effective_cache_size = 1GB
work_mem = 8MB
maintenance_work_mem = 64MB
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
EOF
}

start_postgres() {
	if pg_running; then
		log "PostgreSQL already running on $PG_HOST:$PG_PORT"
		return 0
	fi
	install_postgres
	local bin version
	bin="$(pg_bin_dir)"
	version="$(basename "$(dirname "$bin")")"

	mkdir -p "$PG_DIR"
	[[ "$(id -u)" == 0 ]] && chown postgres:postgres "$PG_DIR"
	chmod 700 "$PG_DIR"

	if [[ -f "$PG_DATA/PG_VERSION" && "$(cat "$PG_DATA/PG_VERSION")" != "$version" ]]; then
		log "cluster in $PG_DATA is PostgreSQL $(cat "$PG_DATA/PG_VERSION"), server is $version: recreating it (test data only)"
		rm -rf "$PG_DATA"
	fi
	if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
		log "initdb PostgreSQL $version cluster in $PG_DATA"
		rm -rf "$PG_DATA"
		as_pg "$bin/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 ||
			{ cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
		echo "include 'saga-machine.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
	fi
	write_pg_conf

	# A server killed without a clean shutdown leaves postmaster.pid behind.
	# Postgres refuses to start while that pid is alive, which includes a
	# killed postmaster not yet reaped (a zombie): wait for it to go or to
	# answer, then drop the stale file.
	if [[ -f "$PG_DATA/postmaster.pid" ]]; then
		local old i state
		old="$(head -1 "$PG_DATA/postmaster.pid")"
		for ((i = 0; i < 40; i++)); do
			if "$bin/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -U postgres; then
				log "PostgreSQL already running on $PG_HOST:$PG_PORT"
				return 0
			fi
			state="$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null || true)"
			if [[ -z "$state" || "$state" == Z ]] || ! grep -qs postgres "/proc/$old/comm"; then
				log "removing stale $PG_DATA/postmaster.pid (pid $old is gone)"
				rm -f "$PG_DATA/postmaster.pid"
				break
			fi
			sleep 0.5
		done
		[[ ! -f "$PG_DATA/postmaster.pid" ]] ||
			die "PostgreSQL pid $old owns $PG_DATA but does not answer on $PG_HOST:$PG_PORT; stop it (make down) and retry"
	fi

	log "starting PostgreSQL $version on $PG_HOST:$PG_PORT"
	as_pg touch "$PG_LOG"
	if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then
		tail -n 30 "$PG_LOG" >&2 || true
		die "PostgreSQL did not start (log: $PG_LOG)"
	fi
	local i
	for ((i = 0; i < 60; i++)); do
		"$bin/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -U postgres && break
		sleep 1
	done
	"$bin/pg_isready" -h "$PG_HOST" -p "$PG_PORT" -U postgres >/dev/null ||
		die "PostgreSQL does not answer pg_isready on $PG_HOST:$PG_PORT (log: $PG_LOG)"
}

create_databases() {
	local bin db
	bin="$(pg_bin_dir)"
	for db in "${PG_DATABASES[@]}"; do
		if [[ "$("$bin/psql" -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc \
			"SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
			"$bin/createdb" -h "$PG_HOST" -p "$PG_PORT" -U postgres "$db"
			log "created database $db"
		fi
	done
}

# --------------------------------------------------------------------- Kafka

# java_major prints the major version of a java binary (8 for 1.8).
java_major() {
	local v
	v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)"
	[[ "$v" == 1.* ]] && v="${v#1.}"
	printf '%s' "${v%%[.+-]*}"
}

# find_java prints a java binary of version 17 or newer: $JAVA_HOME, the one
# on PATH, then any JDK under /usr/lib/jvm.
find_java() {
	local c m
	for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
		[[ -n "$c" && -x "$c" ]] || continue
		m="$(java_major "$c")"
		if [[ -n "$m" ]] && ((m >= 17)); then
			printf '%s' "$c"
			return 0
		fi
	done
	return 1
}

fetch_kafka() {
	if [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" && -f "$KAFKA_LIBS/.complete" ]]; then
		return 0
	fi
	command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars: apt-get install -y maven"
	log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
	rm -rf "$KAFKA_LIBS"
	mkdir -p "$KAFKA_LIBS"
	mvn -B -f "$REPO_ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
		-DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime >"$KAFKA_DIR/mvn.log" 2>&1 ||
		{ tail -n 40 "$KAFKA_DIR/mvn.log" >&2; die "mvn could not fetch the Kafka jars (log: $KAFKA_DIR/mvn.log)"; }
	[[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
	touch "$KAFKA_LIBS/.complete"
}

write_kafka_conf() {
	mkdir -p "$KAFKA_LOG_DIRS"
	local admin="username=\"$KAFKA_ADMIN_USER\" password=\"$KAFKA_ADMIN_PASSWORD\""
	(
		umask 077
		cat >"$KAFKA_CONF" <<EOF
# Written by scripts/up.sh: single-node Kafka (KRaft) for saga-machine tests.
# auth: $KAFKA_AUTH_VERSION
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
# Clients authenticate with SASL/SCRAM-SHA-512 (credentials in the cluster
# metadata, made by kafka-setup); the controller listener with PLAIN and a
# static admin (SCRAM needs the metadata the controller serves).
# The same users over TLS on a SASL_SSL listener (a test CA: $KAFKA_TLS_DIR/ca.pem).
listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_TLS_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_TLS_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required $admin user_$KAFKA_ADMIN_USER="$KAFKA_ADMIN_PASSWORD";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required $admin;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required $admin;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_DIR/broker.pem
listener.name.sasl_ssl.ssl.enabled.protocols=TLSv1.3,TLSv1.2
# ACLs: what no ACL allows is denied; admin (setup, tests) is the super user.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$KAFKA_ADMIN_USER
log.dirs=$KAFKA_LOG_DIRS
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=67108864
EOF
	)
	cat >"$KAFKA_LOG4J" <<EOF
# Written by scripts/up.sh: the broker logs to stdout, which up.sh sends to $KAFKA_LOG.
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.log.name = kafka.log
logger.log.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.partition.name = kafka.cluster.Partition
logger.partition.level = warn
EOF
}

# upgrade_kafka stops a broker of an older checkout (no authentication) and
# wipes its test data, so that start_kafka formats it with the admin's
# SCRAM credentials and starts it with authentication and ACLs.
upgrade_kafka() {
	[[ -f "$KAFKA_CONF" ]] || return 0
	kafka_conf_current && return 0
	local pid i
	if pid="$(kafka_pid)"; then
		log "Kafka (pid $pid) runs an older checkout's configuration (no authentication or no TLS listener): stopping it to restart with SASL/SCRAM, ACLs and TLS"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 60; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$KAFKA_PID"
	fi
	log "wiping the old broker's test data in $KAFKA_LOG_DIRS (formatted by an older checkout)"
	rm -rf "$KAFKA_LOG_DIRS"
}

# wipe_kafka_if_crowded removes the data of a stopped broker that holds
# more than KAFKA_MAX_PARTITIONS partitions (the topics of finished tests):
# start_kafka then formats it afresh and setup_kafka recreates what the
# shipped definitions need.
wipe_kafka_if_crowded() {
	[[ -d "$KAFKA_LOG_DIRS" ]] || return 0
	local n
	n="$(find "$KAFKA_LOG_DIRS" -mindepth 1 -maxdepth 1 -type d -name '*-[0-9]*' | wc -l)"
	if ((n > KAFKA_MAX_PARTITIONS)); then
		log "the stopped broker holds $n partitions (over $KAFKA_MAX_PARTITIONS, mostly finished tests' topics): wiping $KAFKA_LOG_DIRS"
		rm -rf "$KAFKA_LOG_DIRS"
	fi
}

start_kafka() {
	local pid
	upgrade_kafka
	if pid="$(kafka_pid)" && port_open 127.0.0.1 "$KAFKA_PORT"; then
		log "Kafka already running (pid $pid) on $KAFKA_BROKERS (TLS: $KAFKA_TLS_BROKERS)"
		return 0
	fi
	if port_open 127.0.0.1 "$KAFKA_PORT"; then
		die "port $KAFKA_PORT is taken by another process, not our Kafka (pid file $KAFKA_PID): stop it first"
	fi
	local java
	java="$(find_java)" || die "Kafka $KAFKA_VERSION needs Java 17 or newer; found none (java on PATH: $(command -v java || echo none)). apt-get install -y openjdk-17-jre-headless"
	fetch_kafka
	log "writing the test TLS identity of the broker in $KAFKA_TLS_DIR (kept if there)"
	(cd "$REPO_ROOT" && go run ./scripts/devcert -dir "$KAFKA_TLS_DIR" -hosts 127.0.0.1,localhost) ||
		die "scripts/devcert could not write the broker's TLS identity in $KAFKA_TLS_DIR"
	write_kafka_conf
	wipe_kafka_if_crowded
	local cp="$KAFKA_LIBS/*"
	local jvm=("-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$KAFKA_LOG4J")

	if [[ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]]; then
		local id
		id="$("$java" -cp "$cp" "${jvm[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
		[[ -n "$id" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
		log "formatting Kafka storage in $KAFKA_LOG_DIRS (cluster id $id)"
		"$java" -cp "$cp" "${jvm[@]}" kafka.tools.StorageTool format -t "$id" -c "$KAFKA_CONF" \
			--add-scram "SCRAM-SHA-512=[name=$KAFKA_ADMIN_USER,password=$KAFKA_ADMIN_PASSWORD]" \
			>"$KAFKA_DIR/format.log" 2>&1 ||
			{ cat "$KAFKA_DIR/format.log" >&2; die "kafka.tools.StorageTool format failed"; }
	fi

	log "starting Apache Kafka $KAFKA_VERSION with $java ($(java_major "$java")) on $KAFKA_BROKERS"
	: >"$KAFKA_LOG"
	# setsid + nohup: the broker outlives this script, make, and the CI step.
	setsid nohup "$java" -cp "$cp" "${jvm[@]}" kafka.Kafka "$KAFKA_CONF" >>"$KAFKA_LOG" 2>&1 </dev/null &
	echo $! >"$KAFKA_PID"
	pid=$!

	local i
	for ((i = 0; i < 120; i++)); do
		port_open 127.0.0.1 "$KAFKA_PORT" && break
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 40 "$KAFKA_LOG" >&2
			die "Kafka exited during startup (log: $KAFKA_LOG)"
		fi
		sleep 0.5
	done
	port_open 127.0.0.1 "$KAFKA_PORT" || {
		tail -n 40 "$KAFKA_LOG" >&2
		die "Kafka did not open port $KAFKA_PORT within 60s (log: $KAFKA_LOG)"
	}
	for ((i = 0; i < 20; i++)); do
		port_open 127.0.0.1 "$KAFKA_TLS_PORT" && break
		sleep 0.5
	done
	port_open 127.0.0.1 "$KAFKA_TLS_PORT" || {
		tail -n 40 "$KAFKA_LOG" >&2
		die "Kafka did not open its TLS port $KAFKA_TLS_PORT (log: $KAFKA_LOG)"
	}
	KAFKA_STARTED=1
}

probe_kafka() {
	# A metadata request must succeed; after a fresh start also a full
	# produce/consume round trip through a consumer group, which makes the
	# broker create __consumer_offsets before the first test needs it.
	local args=(-brokers "$KAFKA_BROKERS" -timeout 90s -user "$KAFKA_ADMIN_USER")
	[[ "${KAFKA_STARTED:-0}" == 1 ]] && args+=(-roundtrip)
	log "probing Kafka (${args[*]})"
	local out="$KAFKA_DIR/probe.log"
	if ! (cd "$REPO_ROOT" && SAGA_KAFKA_PASSWORD="$KAFKA_ADMIN_PASSWORD" go run ./scripts/kafkaprobe "${args[@]}") >"$out" 2>&1; then
		# The broker's log first, the probe's own words last: a CI log
		# shows its tail, and the cause is in the probe's output.
		tail -n 40 "$KAFKA_LOG" >&2
		printf '\n--- kafkaprobe said:\n' >&2
		cat "$out" >&2
		die "Kafka on $KAFKA_BROKERS does not answer the probe (log: $KAFKA_LOG; probe: $out)"
	fi
	cat "$out"
}

# setup_kafka runs the same setup step as the k8s Job (saga-machine
# kafka-setup) with the admin's credentials: the shipped definitions'
# topics, the principals' SCRAM credentials and exactly their ACLs.
setup_kafka() {
	local u stamp
	# Skip when this broker already got the setup for these definitions and
	# passwords (a fresh broker has no stamp).
	stamp="$( (cat "$REPO_ROOT"/sagas/*.yaml; printf '%s\n' "$KAFKA_PORT" "${KAFKA_PRINCIPALS[@]}"
		for u in "${KAFKA_PRINCIPALS[@]}"; do principal_password "$u"; done) | sha256sum | cut -d' ' -f1)"
	if [[ "${KAFKA_STARTED:-0}" != 1 && -f "$KAFKA_DIR/setup.stamp" && "$(cat "$KAFKA_DIR/setup.stamp")" == "$stamp" ]]; then
		log "Kafka topics, users and ACLs already set up for these definitions"
		return 0
	fi
	mkdir -p "$KAFKA_USERS_DIR"
	chmod 700 "$KAFKA_USERS_DIR"
	for u in "${KAFKA_PRINCIPALS[@]}"; do
		(umask 077 && principal_password "$u" >"$KAFKA_USERS_DIR/$u")
	done
	log "applying the Kafka topics, users and ACLs (saga-machine kafka-setup)"
	(cd "$REPO_ROOT" && SAGA_KAFKA_PASSWORD="$KAFKA_ADMIN_PASSWORD" go run ./cmd/saga-machine kafka-setup \
		--brokers "$KAFKA_BROKERS" --kafka-user "$KAFKA_ADMIN_USER" --users-dir "$KAFKA_USERS_DIR") ||
		die "saga-machine kafka-setup failed against $KAFKA_BROKERS"
	printf '%s\n' "$stamp" >"$KAFKA_DIR/setup.stamp"
}

# ---------------------------------------------------------------- Chromium

install_chromium() {
	# The operator console's browser test drives Debian's headless Chromium.
	command -v chromium >/dev/null && return 0
	[[ -x /usr/bin/chromium ]] && return 0
	log "Chromium not found (needed by the console's browser test): installing it with apt"
	[[ "$(id -u)" == 0 ]] || die "Chromium is not installed and we are not root: run 'sudo apt-get install -y chromium'"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
	command -v chromium >/dev/null || die "apt-get install chromium did not provide a chromium command"
}

reserve_ports "$PG_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_TLS_PORT"
services=" ${SAGA_UP_SERVICES:-postgres chromium kafka} "
if [[ "$services" == *" postgres "* ]]; then
	start_postgres
	create_databases
fi
if [[ "$services" == *" chromium "* ]]; then
	install_chromium
fi
if [[ "$services" == *" kafka "* ]]; then
	start_kafka
	probe_kafka
	setup_kafka
fi
print_info
