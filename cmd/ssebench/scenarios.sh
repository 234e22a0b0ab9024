#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/benchmarks.md: each through the
# gateway (a fresh redis-server and gateway per run) and through ssebench's
# floor server, appending one CSV row per run.
#
#   cmd/ssebench/scenarios.sh OUT_DIR [SCENARIO...]
#
# SCENARIO is any of: broadcast broadcast-pinned many-jobs idle storm
# storm-one two cluster fleet (default: all but cluster and fleet). SCALE=0.1 divides client counts and
# durations for a smoke run. Needs redis-server, taskset (util-linux) for
# broadcast-pinned, and RLIMIT_NOFILE room for about 2 × clients descriptors.
#
# cluster: two gateways on a 3-master Redis Cluster (cluster.sh) against two
# gateways on one redis-server, many jobs and broadcast, ROUNDS rounds
# (default 2) in alternating order, no floor runs. Each run also writes, from
# the middle of its load window, every master's pub/sub connections by
# gateway and its live channels to OUT_DIR/LABEL.pubsub, and each run's
# result as one JSON line (with Redis per shard) to OUT_DIR/runs.jsonl.
set -euo pipefail
out=${1:?usage: scenarios.sh OUT_DIR [SCENARIO...]}
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(broadcast broadcast-pinned many-jobs idle storm storm-one two)
here=$(cd "$(dirname "$0")" && pwd)
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

# start_stack GATEWAYS [TASKSET_CPU]: a redis-server (with STACK=cluster, a
# 3-master Redis Cluster) and gateways; sets REDIS_URL, MASTERS (the
# servers' addresses), GW (comma list of addresses) and GWPIDS (comma list).
# Gateway i names its Redis connections gw-i (CLIENT LIST shows it) and
# logs to $out/${GWLOG:-gateway}-i.log.
start_stack() {
	local gateways=$1 cpu=${2:-}
	if [ "${STACK:-single}" = cluster ]; then
		rm -f "$out/cluster/url"
		"$here/cluster.sh" "$out/cluster" >/dev/null &
		pids+=($!)
		for _ in $(seq 300); do [ -s "$out/cluster/url" ] && break; sleep 0.1; done
		REDIS_URL=$(cat "$out/cluster/url")
		mapfile -t MASTERS <"$out/cluster/masters"
	else
		local rport; rport=$(port)
		redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --logfile "$out/redis.log" &
		pids+=($!)
		REDIS_URL="redis://127.0.0.1:$rport/0"
		MASTERS=("127.0.0.1:$rport")
		sleep 0.3
	fi
	GW="" GWPIDS=""
	local sep="?"
	case $REDIS_URL in *\?*) sep="&" ;; esac
	for i in $(seq "$gateways"); do
		local gport; gport=$(port)
		local pin=()
		[ -n "$cpu" ] && pin=(taskset -c "$cpu")
		"${pin[@]}" "$bin/gateway" --addr "127.0.0.1:$gport" --redis-url "$REDIS_URL${sep}client_name=gw-$i" \
			--max-connections 0 --max-connections-per-job 0 --log-level warn >"$out/${GWLOG:-gateway}-$i.log" 2>&1 &
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

# pubsub_probe FILE: every master's pub/sub connections, counted by client
# name, and its live channels (sharded ones on a cluster).
pubsub_probe() {
	local m
	for m in "${MASTERS[@]}"; do
		local h=${m%:*} p=${m#*:} chans=CHANNELS
		[ "${STACK:-single}" = cluster ] && chans=SHARDCHANNELS
		printf '%s pubsub_conns_by_name: %s channels: %s keys: %s\n' "$m" \
			"$(redis-cli -h "$h" -p "$p" CLIENT LIST TYPE pubsub | grep -o 'name=[^ ]*' | sort | uniq -c | awk '{print substr($2, 6) "=" $1}' | paste -sd' ')" \
			"$(redis-cli -h "$h" -p "$p" PUBSUB "$chans" | wc -l)" \
			"$(redis-cli -h "$h" -p "$p" DBSIZE)"
	done >"$1"
}

# cluster_run STACK LABEL SSEBENCH_FLAGS...: two gateways on STACK (single or
# cluster), one ssebench run, the pub/sub probe at PROBE_AT seconds.
cluster_run() {
	local stack=$1 label=$2
	shift 2
	echo "=== $label ($(cut -d' ' -f1-3 /proc/loadavg)) ==="
	STACK=$stack GWLOG="$label-gateway" start_stack 2
	(sleep "${PROBE_AT:-20}" && STACK=$stack pubsub_probe "$out/$label.pubsub") &
	local probe=$!
	"$bin/ssebench" run --gateway "$GW" --gateway-pid "$GWPIDS" --redis-url "$REDIS_URL" --label "$label" \
		--csv "$csv" --json --progress 0 --spread-jobs "$@" 2>"$out/$label.txt" >>"$out/runs.jsonl" || echo "ssebench $label: exit $?" >&2
	wait "$probe" || true
	cat "$out/$label.txt" "$out/$label.pubsub" 2>/dev/null || true
	cleanup
	grep -hv '^$' "$out/$label"-gateway-*.log 2>/dev/null | sed "s/^/$label gateway log: /" || true
}

# fleet_run LABEL GATEWAYS SSEBENCH_FLAGS...: GATEWAYS gateways on one
# redis-server, each job's clients spread over all of them, one JSON line
# to OUT_DIR/runs.jsonl.
fleet_run() {
	local label=$1 gateways=$2
	shift 2
	echo "=== $label ($(cut -d' ' -f1-3 /proc/loadavg)) ==="
	GWLOG="$label-gateway" start_stack "$gateways"
	"$bin/ssebench" run --gateway "$GW" --gateway-pid "$GWPIDS" --redis-url "$REDIS_URL" --label "$label" \
		--csv "$csv" --json --progress 0 --spread-jobs "$@" 2>"$out/$label.txt" >>"$out/runs.jsonl" || echo "ssebench $label: exit $?" >&2
	cat "$out/$label.txt"
	cleanup
}

# fleet_table RUNS_JSONL: the fleet runs as a markdown table.
fleet_table() {
	python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("label", "").startswith("fleet-")]
print("| scenario | gateways | clients | deliveries/s | p99 ms | gateway CPU-s per 100k deliveries | gateways' CPU (100 = a core) | Redis CPU µs per event | machine busy | lost, duplicated |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    red = r.get("redis") or {}
    ev = r["publish"]["events"] or 1
    c = r["correctness"]
    print(f'| {r["label"].rsplit("-", 1)[0][6:]} | {r["gateways"]} | {r["clients"]:,} | {r["delivery"]["per_sec"]:,.0f} | '
          f'{r["latency"]["p99_ms"]:.2f} | {r["server"]["cpu_per_100k_deliveries_s"]:.2f} | {r["server"]["load_cpu_pct"]:.0f} | '
          f'{red.get("load_cpu_s", 0) / ev * 1e6:.0f} | {r["machine"]["load_busy_pct"]:.0f} % | {c["lost"]}, {c["duplicated"]} |')
PY
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
	storm-one)
		run_pair storm-one 1 "" "" --clients "$(n 10000)" --jobs 1 --resume-from-middle 100 --rate 0 \
			--duration 0s --connect-timeout 2m ;;
	two)
		echo "=== two gateways ==="
		start_stack 2
		"$bin/ssebench" run --gateway "$GW" --gateway-pid "$GWPIDS" --redis-url "$REDIS_URL" --label two-gateways \
			--csv "$csv" --progress 5s --clients "$(n 10000)" --jobs "$(n 1000)" --rate 500 --duration "$(d 30)" \
			2>&1 | tee "$out/two-gateways.txt"
		cleanup ;;
	cluster)
		for r in $(seq "${ROUNDS:-2}"); do
			order=(single cluster)
			[ $((r % 2)) -eq 0 ] && order=(cluster single)
			for st in "${order[@]}"; do
				cluster_run "$st" "cl-$st-many-r$r" --clients "$(n 10000)" --jobs "$(n 1000)" --rate 500 --duration "$(d 30)"
			done
			for st in "${order[@]}"; do
				cluster_run "$st" "cl-$st-broadcast-r$r" --clients "$(n 2000)" --jobs 1 --rate 20 --duration "$(d 30)"
			done
		done ;;
	fleet)
		# FLEET_CLIENTS (default 6000) clients per gateway, 1 to FLEET_MAX
		# (default 3) gateways on one Redis.
		per=${FLEET_CLIENTS:-6000}
		for kind in broadcast many-jobs; do
			for g in $(seq "${FLEET_MAX:-3}"); do
				flags=(--jobs 1 --rate 20)
				[ "$kind" = many-jobs ] && flags=(--jobs "$(n 1000)" --rate 500)
				fleet_run "fleet-$kind-$g" "$g" --clients "$(n $((per * g)))" "${flags[@]}" --duration "$(d 20)"
			done
		done
		fleet_table "$out/runs.jsonl" | tee "$out/fleet.md" ;;
	*) echo "unknown scenario $s" >&2; exit 2 ;;
	esac
done
echo "results: $csv"
