#!/usr/bin/env bash
# Starts a throwaway Redis Cluster of three masters (no replicas, no
# persistence) on loopback, for benchmarks:
#
#   cmd/ssebench/cluster.sh DIR             print the URL, hold the cluster until SIGINT/SIGTERM
#   cmd/ssebench/cluster.sh DIR CMD [ARG…]  run CMD with REDIS_URL set, then stop the cluster
#
# The URL (redis+cluster://127.0.0.1:P1?addr=127.0.0.1:P2&addr=127.0.0.1:P3)
# is printed on stdout and written to DIR/url; the masters' addresses, one a
# line, to DIR/masters. Each node keeps its nodes.conf and log in DIR/node-N,
# which is removed on exit. Needs redis-server and redis-cli 7+ (sharded
# pub/sub) and python3 (free ports).
set -euo pipefail
dir=${1:?usage: cluster.sh DIR [CMD [ARG...]]}
shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
stop() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
	rm -rf "$dir"/node-* "$dir/url" "$dir/masters" "$dir/create.log"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

addrs=()
for i in 1 2 3; do
	p=$(port) bus=$(port)
	mkdir -p "$dir/node-$i"
	redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
		--cluster-enabled yes --cluster-config-file "$dir/node-$i/nodes.conf" \
		--cluster-port "$bus" --cluster-node-timeout 1000 \
		--dir "$dir/node-$i" --logfile "$dir/node-$i/redis.log" &
	pids+=($!)
	addrs+=("127.0.0.1:$p")
done
for a in "${addrs[@]}"; do
	for _ in $(seq 100); do redis-cli -h 127.0.0.1 -p "${a#*:}" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$dir/create.log" 2>&1 ||
	{ cat "$dir/create.log" >&2; exit 1; }
for a in "${addrs[@]}"; do
	ok=""
	for _ in $(seq 200); do
		if redis-cli -h 127.0.0.1 -p "${a#*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then ok=1; break; fi
		sleep 0.05
	done
	[ -n "$ok" ] || { echo "cluster.sh: $a never reached cluster_state:ok" >&2; exit 1; }
done

url="redis+cluster://${addrs[0]}?addr=${addrs[1]}&addr=${addrs[2]}"
echo "$url" >"$dir/url"
printf '%s\n' "${addrs[@]}" >"$dir/masters"
if [ $# -gt 0 ]; then
	REDIS_URL=$url "$@"
	exit
fi
echo "$url"
# Hold until signalled; wait returns at once on a trapped signal.
sleep infinity &
pids+=($!)
wait $! || true
