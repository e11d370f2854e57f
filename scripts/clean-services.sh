#!/usr/bin/env bash
# Stops the test services and deletes their data ($SAGA_RUN_DIR). The Kafka
# jars are kept (they are a download cache, not data) unless ALL=1.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$REPO_ROOT/scripts/down.sh"
log "deleting $PG_DIR and $KAFKA_LOG_DIRS"
rm -rf "$PG_DIR" "$KAFKA_LOG_DIRS" "$KAFKA_LOG" "$KAFKA_DIR/format.log"
if [[ "${ALL:-0}" == 1 ]]; then
	log "deleting $SAGA_RUN_DIR (ALL=1)"
	rm -rf "$SAGA_RUN_DIR"
fi
