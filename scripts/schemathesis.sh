#!/usr/bin/env bash
# Installs PyPI's schemathesis (property-based API testing from OpenAPI
# documents) into a virtualenv under $SAGA_RUN_DIR (outside the repository).
# Idempotent: an installed venv of the pinned version is left alone.
# `make test` runs it; go test ./internal/contractfuzz uses the venv's
# program, or $SAGA_SCHEMATHESIS.
#
#   scripts/schemathesis.sh                 install (or check) only
#   scripts/schemathesis.sh [ARGS...]       install, then run it with ARGS
#   e.g. scripts/schemathesis.sh run --help
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# internal/contractfuzz reads this line and refuses another version.
SCHEMATHESIS_VERSION=4.32.5

ST_VENV="$SAGA_RUN_DIR/schemathesis"
ST_BIN="$ST_VENV/bin/schemathesis"

st_installed() {
	[[ -x "$ST_BIN" && "$("$ST_BIN" --version 2>/dev/null)" == *" $SCHEMATHESIS_VERSION" ]]
}

install_schemathesis() {
	st_installed && return 0
	local py
	py="$(command -v python3 || true)"
	if [[ -z "$py" ]]; then
		[[ "$(id -u)" == 0 ]] || die "python3 is needed for schemathesis: apt-get install -y python3 python3-venv"
		log "python3 not found: installing it with apt"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
		py="$(command -v python3)"
	fi
	log "installing schemathesis $SCHEMATHESIS_VERSION (API contract fuzzing) into $ST_VENV"
	mkdir -p "$SAGA_RUN_DIR"
	rm -rf "$ST_VENV"
	if ! "$py" -m venv "$ST_VENV" >/dev/null 2>&1; then
		# Debian's python3 keeps venv (ensurepip) in a separate package.
		[[ "$(id -u)" == 0 ]] || die "$py -m venv failed: apt-get install -y python3-venv"
		log "$py -m venv failed: installing python3-venv with apt"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
		rm -rf "$ST_VENV"
		"$py" -m venv "$ST_VENV" || die "$py -m venv $ST_VENV failed"
	fi
	"$ST_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
		"schemathesis==$SCHEMATHESIS_VERSION" >"$ST_VENV.log" 2>&1 ||
		{ tail -n 30 "$ST_VENV.log" >&2; die "pip install schemathesis==$SCHEMATHESIS_VERSION failed (log: $ST_VENV.log)"; }
	st_installed || die "$ST_BIN --version does not print $SCHEMATHESIS_VERSION after the install"
}

install_schemathesis
if (($# > 0)); then
	exec "$ST_BIN" "$@"
fi
log "schemathesis $SCHEMATHESIS_VERSION: $ST_BIN"
