#!/usr/bin/env bash
# Installs PyPI's kubernetes-validate, which ships the OpenAPI schemas of the
# Kubernetes releases up to its own version and validates manifests against
# them offline, into a virtualenv under $SAGA_RUN_DIR (outside the
# repository). Idempotent: an installed venv of the pinned version is left
# alone. `make test` runs it; go test ./k8s (TestSchemas) uses the venv's
# program, or $SAGA_KUBERNETES_VALIDATE.
#
#   scripts/kubernetes-validate.sh                 install (or check) only
#   scripts/kubernetes-validate.sh [ARGS...]       install, then run it with ARGS
#   e.g. scripts/kubernetes-validate.sh --strict -k 1.37 k8s/apps/deals.yaml
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The version decides the newest schemas (its major.minor); k8s/validate_test.go
# reads this line and validates against that release.
KUBERNETES_VALIDATE_VERSION=1.37.0

KV_VENV="$SAGA_RUN_DIR/kubernetes-validate"
KV_BIN="$KV_VENV/bin/kubernetes-validate"

kv_installed() {
	[[ -x "$KV_BIN" && "$("$KV_BIN" --version 2>/dev/null)" == "$KUBERNETES_VALIDATE_VERSION" ]]
}

install_kubernetes_validate() {
	kv_installed && return 0
	local py
	py="$(command -v python3 || true)"
	if [[ -z "$py" ]]; then
		[[ "$(id -u)" == 0 ]] || die "python3 is needed for kubernetes-validate: apt-get install -y python3 python3-venv"
		log "python3 not found: installing it with apt"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
		py="$(command -v python3)"
	fi
	log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes OpenAPI schemas, offline) into $KV_VENV"
	mkdir -p "$SAGA_RUN_DIR"
	rm -rf "$KV_VENV"
	if ! "$py" -m venv "$KV_VENV" >/dev/null 2>&1; then
		# Debian's python3 keeps venv (ensurepip) in a separate package.
		[[ "$(id -u)" == 0 ]] || die "$py -m venv failed: apt-get install -y python3-venv"
		log "$py -m venv failed: installing python3-venv with apt"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
		rm -rf "$KV_VENV"
		"$py" -m venv "$KV_VENV" || die "$py -m venv $KV_VENV failed"
	fi
	"$KV_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
		"kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >"$KV_VENV.log" 2>&1 ||
		{ tail -n 30 "$KV_VENV.log" >&2; die "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed (log: $KV_VENV.log)"; }
	kv_installed || die "$KV_BIN --version does not print $KUBERNETES_VALIDATE_VERSION after the install"
}

install_kubernetes_validate
if (($# > 0)); then
	exec "$KV_BIN" "$@"
fi
log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: $KV_BIN"
