#!/usr/bin/env bash
# Builds Prometheus' promtool and scripts/promql (promql-selectors: PromQL
# parsed by Prometheus' own parser, printing the metric names of each
# query) into $SAGA_RUN_DIR/promtool/<version>/bin, outside the
# repository. Both come from the Go module proxy: promtool with
# `go install github.com/prometheus/prometheus/cmd/promtool@<version>`
# (its own go.mod and go.sum, checked against the checksum database), built
# with the tag remove_all_sd (no cloud service-discovery plugins, which
# `check rules` and `test rules` do not use); promql-selectors from its own
# module (scripts/promql/go.mod pins the same Prometheus version), so that
# the repository's go.mod stays free of the Prometheus server module.
# Idempotent: binaries of the pinned version (and, for promql-selectors, of
# the current sources) are left alone. `make test` runs it; go test
# ./k8s/monitoring uses them, or $SAGA_PROMTOOL and $SAGA_PROMQL_SELECTORS.
#
#   scripts/promtool.sh                  install (or check) only
#   scripts/promtool.sh [ARGS...]        install, then run promtool with ARGS
#   e.g. scripts/promtool.sh check rules k8s/monitoring/alerts.rules.yaml
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# k8s/monitoring's tests read this line; scripts/promql/go.mod requires the
# same version of github.com/prometheus/prometheus.
PROMTOOL_VERSION=v0.316.0

PT_DIR="$SAGA_RUN_DIR/promtool/$PROMTOOL_VERSION"
PT_BIN="$PT_DIR/bin/promtool"
PS_BIN="$PT_DIR/bin/promql-selectors"
PS_SRC="$REPO_ROOT/scripts/promql"
GO="${GO:-go}"

# The sources promql-selectors was built from.
ps_stamp() { cat "$PS_SRC/go.mod" "$PS_SRC/go.sum" "$PS_SRC"/*.go | sha256sum | cut -d' ' -f1; }

promtool_installed() {
	[[ -x "$PT_BIN" ]] || return 1
	local info
	info="$("$GO" version -m "$PT_BIN" 2>/dev/null)" || return 1
	grep -qE "^[[:space:]]+mod[[:space:]]+github.com/prometheus/prometheus[[:space:]]+$PROMTOOL_VERSION[[:space:]]" <<<"$info" &&
		grep -qE "^[[:space:]]+build[[:space:]]+-tags=remove_all_sd$" <<<"$info"
}

selectors_installed() {
	[[ -x "$PS_BIN" && -f "$PS_BIN.sources" && "$(cat "$PS_BIN.sources")" == "$(ps_stamp)" ]]
}

install_promtool() {
	grep -q "^require github.com/prometheus/prometheus $PROMTOOL_VERSION\$" "$PS_SRC/go.mod" ||
		die "scripts/promql/go.mod must require github.com/prometheus/prometheus $PROMTOOL_VERSION (PROMTOOL_VERSION)"
	mkdir -p "$PT_DIR/bin"
	if ! promtool_installed; then
		log "building promtool $PROMTOOL_VERSION into $PT_DIR/bin (go install; the first build takes minutes)"
		local start=$SECONDS
		GOBIN="$PT_DIR/bin" GOFLAGS=-buildvcs=false "$GO" install -tags remove_all_sd \
			"github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" >"$PT_DIR/install.log" 2>&1 ||
			{ tail -n 30 "$PT_DIR/install.log" >&2; die "go install promtool@$PROMTOOL_VERSION failed (log: $PT_DIR/install.log)"; }
		promtool_installed || die "$PT_BIN is not promtool $PROMTOOL_VERSION built with -tags remove_all_sd after the install"
		log "promtool built in $((SECONDS - start)) s"
	fi
	if ! selectors_installed; then
		log "building promql-selectors (scripts/promql) into $PT_DIR/bin"
		(cd "$PS_SRC" && GOFLAGS=-buildvcs=false "$GO" build -o "$PS_BIN" .) >"$PT_DIR/selectors.log" 2>&1 ||
			{ tail -n 30 "$PT_DIR/selectors.log" >&2; die "building scripts/promql failed (log: $PT_DIR/selectors.log)"; }
		ps_stamp >"$PS_BIN.sources"
	fi
}

install_promtool
if (($# > 0)); then
	exec "$PT_BIN" "$@"
fi
log "promtool $PROMTOOL_VERSION: $PT_BIN; promql-selectors: $PS_BIN"
