#!/usr/bin/env bash
# make stack-down: stops the processes of make stack (nginx, oauth2-proxy,
# the four services, Keycloak). Keeps the data (database keycloak, the
# services' databases), the downloads and builds in $SAGA_RUN_DIR/stack/cache
# and the secrets; make up's PostgreSQL and Kafka keep running (make down).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/stack-lib.sh"
stack_lock
for p in "${STACK_PROCS[@]}"; do
	proc_stop "$p"
done
rm -f "$STACK_DIR/stack.env"
log "stack stopped (data and downloads kept in $STACK_DIR)"
