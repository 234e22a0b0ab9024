#!/usr/bin/env bash
# Compares a base revision with the work tree: the Go benchmarks, run in
# alternating order COUNT times each, through benchstat; and, with SCENARIO,
# a short ssebench scenario (scenarios.sh at SCALE) once per side per round.
#
#   cmd/ssebench/compare.sh BASE [OUT_DIR]      (make bench-compare BASE=rev)
#
# COUNT (default 6) rounds; BENCH (default .) the -bench pattern; PKGS
# (default ./...) the packages; BENCHTIME (default 1s). SCENARIO is any of
# scenarios.sh's (storm-one is quick); the work tree's scenarios.sh drives
# both sides, so a base without a scenario can still run it. benchstat
# (golang.org/x/perf) is installed into .bin, outside go.mod.
set -euo pipefail
base=${1:?usage: compare.sh BASE [OUT_DIR]}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${2:-$(mktemp -d /tmp/ssegate-compare.XXXXXX)}
count=${COUNT:-6}
mkdir -p "$out"
rev=$(git -C "$root" rev-parse --short "$base")
wt="$out/base-$rev"
rm -rf "$wt"
git -C "$root" worktree add -q --detach "$wt" "$base"
trap 'git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT

benchstat="$root/.bin/benchstat"
[ -x "$benchstat" ] || GOBIN="$root/.bin" go install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

: >"$out/base.txt"
: >"$out/head.txt"
: >"$out/scenario.txt"
[ -n "${SCENARIO:-}" ] && cp "$root/cmd/ssebench/scenarios.sh" "$wt/cmd/ssebench/scenarios.sh"
for i in $(seq "$count"); do
	order=(base head)
	[ $((i % 2)) -eq 0 ] && order=(head base)
	for side in "${order[@]}"; do
		dir=$root
		[ "$side" = base ] && dir=$wt
		echo "round $i/$count: $side" >&2
		(cd "$dir" && go test -run '^$' -bench "${BENCH:-.}" -benchmem -benchtime "${BENCHTIME:-1s}" \
			-count 1 ${PKGS:-./...}) >>"$out/$side.txt"
		if [ -n "${SCENARIO:-}" ]; then
			SCALE=${SCALE:-0.1} bash "$dir/cmd/ssebench/scenarios.sh" "$out/$side-$i" "$SCENARIO" >"$out/$side-$i.log" 2>&1
			grep -E '^=== |connected in|correctness|CPU connecting|connect calls|deliveries|latency' "$out/$side-$i.log" |
				sed "s/^/$side round $i: /" >>"$out/scenario.txt"
		fi
	done
done
"$benchstat" "base=$out/base.txt" "head=$out/head.txt"
if [ -n "${SCENARIO:-}" ]; then
	echo
	echo "ssebench $SCENARIO (SCALE=${SCALE:-0.1}), base $rev against the work tree:"
	cat "$out/scenario.txt"
fi
echo "raw results: $out" >&2
