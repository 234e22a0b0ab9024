#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/benchmarks.md: each through the
# gateway (a fresh redis-server and gateway per run) and through ssebench's
# floor server, appending one CSV row per run.
#
#   cmd/ssebench/scenarios.sh OUT_DIR [SCENARIO...]
#
# SCENARIO is any of: broadcast broadcast-pinned many-jobs idle storm two
# (default: all). SCALE=0.1 divides client counts and durations for a smoke
# run. Needs redis-server, taskset (util-linux) for broadcast-pinned, and
# RLIMIT_NOFILE room for about 2 × clients descriptors.
set -euo pipefail
out=${1:?usage: scenarios.sh OUT_DIR [SCENARIO...]}
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(broadcast broadcast-pinned many-jobs idle storm two)
scale=${SCALE:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
csv="$out/runs.csv"
bin="$out/bin"
(cd "$root" && go build -o "$bin/" ./cmd/gateway ./cmd/ssebench)
ulimit -n "$(ulimit -Hn)"

n() { python3 -c "import math; print(max(1, math.ceil($1 * $scale)))"; }
d() { echo "$(n "$1")s"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap cleanup EXIT

# start_stack GATEWAYS [TASKSET_CPU]: a redis-server and gateways; sets
# REDIS_URL, GW (comma list of addresses) and GWPIDS (comma list).
start_stack() {
	local gateways=$1 cpu=${2:-}
	local rport; rport=$(port)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --logfile "$out/redis.log" &
	pids+=($!)
	REDIS_URL="redis://127.0.0.1:$rport/0"
	GW="" GWPIDS=""
	sleep 0.3
	for i in $(seq "$gateways"); do
		local gport; gport=$(port)
		local pin=()
		[ -n "$cpu" ] && pin=(taskset -c "$cpu")
		"${pin[@]}" "$bin/gateway" --addr "127.0.0.1:$gport" --redis-url "$REDIS_URL" \
			--max-connections 0 --max-connections-per-job 0 --log-level warn >"$out/gateway-$i.log" 2>&1 &
		local pid=$!
		pids+=("$pid")
		GW="${GW:+$GW,}127.0.0.1:$gport"
		GWPIDS="${GWPIDS:+$GWPIDS,}$pid"
		for _ in $(seq 100); do curl -sf "127.0.0.1:$gport/readyz" >/dev/null && break; sleep 0.1; done
	done
}

# bench LABEL [TASKSET_CPU] -- ssebench flags: one gateway run and one floor run.
run_pair() {
	local label=$1 gateways=$2 cpu=$3 bcpu=$4
	shift 4
	local pin=()
	[ -n "$bcpu" ] && pin=(taskset -c "$bcpu")
	echo "=== $label (gateway) ==="
	start_stack "$gateways" "$cpu"
	"${pin[@]}" "$bin/ssebench" run --gateway "$GW" --gateway-pid "$GWPIDS" --redis-url "$REDIS_URL" \
		--label "$label" --csv "$csv" --progress 5s "$@" 2>&1 | tee "$out/$label.txt"
	cleanup
	echo "=== $label (floor) ==="
	"${pin[@]}" "$bin/ssebench" floor --label "$label" --csv "$csv" --progress 5s "$@" 2>&1 | tee "$out/$label-floor.txt" &
	local run=$!
	if [ -n "$cpu" ]; then
		# The floor server is ssebench's child and inherited its CPU: move
		# it (every thread) to the server's CPU, as the gateway was.
		local fpid=""
		for _ in $(seq 200); do
			fpid=$(pgrep -f "ssebench floor-server" | head -1 || true)
			[ -n "$fpid" ] && break
			sleep 0.05
		done
		[ -n "$fpid" ] && taskset -a -cp "$cpu" "$fpid" >/dev/null
	fi
	wait "$run"
}

for s in "${scenarios[@]}"; do
	case $s in
	broadcast)
		for c in 1000 2500 5000; do
			run_pair "broadcast-$(n $c)" 1 "" "" --clients "$(n $c)" --jobs 1 --rate 20 --duration "$(d 30)"
		done ;;
	broadcast-pinned)
		run_pair broadcast-pinned 1 0 1 --clients "$(n 5000)" --jobs 1 --rate 20 --duration "$(d 30)" ;;
	many-jobs)
		run_pair many-jobs 1 "" "" --clients "$(n 10000)" --jobs "$(n 1000)" --rate 500 --duration "$(d 30)" ;;
	idle)
		run_pair idle 1 "" "" --clients "$(n 10000)" --jobs "$(n 1000)" --idle --duration "$(d 60)" ;;
	storm)
		run_pair storm 1 "" "" --clients "$(n 10000)" --jobs "$(n 1000)" --resume-from-middle 100 --rate 0 \
			--duration 0s --connect-timeout 2m ;;
	two)
		echo "=== two gateways ==="
		start_stack 2
		"$bin/ssebench" run --gateway "$GW" --gateway-pid "$GWPIDS" --redis-url "$REDIS_URL" --label two-gateways \
			--csv "$csv" --progress 5s --clients "$(n 10000)" --jobs "$(n 1000)" --rate 500 --duration "$(d 30)" \
			2>&1 | tee "$out/two-gateways.txt"
		cleanup ;;
	*) echo "unknown scenario $s" >&2; exit 2 ;;
	esac
done
echo "results: $csv"
