#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (each func FuzzXxx in a
# tracked *_test.go) for TIME each, one after the other; stops at the first
# failure (go test prints the input and writes it under the package's
# testdata/fuzz, where it becomes a regression case of plain go test).
#
#   scripts/fuzz.sh 5s      the smoke run of make test (FUZZ_SMOKE)
#   scripts/fuzz.sh 2m      make fuzz (FUZZTIME)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

time="${1:?usage: scripts/fuzz.sh TIME (a go test -fuzztime, e.g. 5s or 2m)}"
GO="${GO:-go}"

mapfile -t files < <(git ls-files '*_test.go' | xargs grep -lE '^func Fuzz[A-Za-z0-9_]*\(' || true)
targets=0
start=$SECONDS
for f in "${files[@]}"; do
	dir="./$(dirname "$f")"
	for name in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$f"); do
		targets=$((targets + 1))
		echo "==> $GO test -run='^\$' -fuzz='^$name\$' -fuzztime=$time $dir"
		"$GO" test -run='^$' -fuzz="^$name\$" -fuzztime="$time" "$dir"
	done
done
if ((targets == 0)); then
	echo "scripts/fuzz.sh: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: $targets targets, $time each, in $((SECONDS - start))s"
