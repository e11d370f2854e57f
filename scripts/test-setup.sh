#!/usr/bin/env bash
# Everything `make test` needs before `go test`, started as early and as
# much side by side as is safe: make up's PostgreSQL and Kafka first (the
# rest uses them), then two lanes at once: promtool (a Go build only: no apt)
# beside the full stack, the Kubernetes validator and schemathesis (these
# may call apt, so they stay in one lane: apt takes one lock). On a fresh
# machine the two lanes' downloads and compiles overlap instead of adding up.
# Each lane logs to $SAGA_RUN_DIR/test-setup/<lane>.log; a failing lane's log
# is printed and the script fails. Idempotent, like every script it calls.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$SAGA_RUN_DIR/test-setup"
mkdir -p "$dir"
start=$SECONDS

"$REPO_ROOT/scripts/up.sh"

lane() {
	local name=$1
	shift
	(
		set -euo pipefail
		for step in "$@"; do
			echo "==> $step"
			"$REPO_ROOT/scripts/$step"
		done
	) >"$dir/$name.log" 2>&1
}

log "preparing the test tools in two lanes (logs in $dir)"
lane tools promtool.sh &
tools=$!
lane stack stack.sh kubernetes-validate.sh schemathesis.sh &
stack=$!

failed=()
wait "$tools" || failed+=(tools)
wait "$stack" || failed+=(stack)
for name in tools stack; do
	echo "---- $name lane ($dir/$name.log) ----"
	if [[ " ${failed[*]-} " == *" $name "* ]]; then
		cat "$dir/$name.log"
	else
		tail -n 15 "$dir/$name.log"
	fi
done
((${#failed[@]} == 0)) || die "test setup failed in: ${failed[*]}"
log "test setup ready in $((SECONDS - start)) s"
