#!/usr/bin/env bash
# Throughput and connections per second through kproxy's userspace proxy, side by side
# with HAProxy, nginx stream, socat, the kernel path (iptables DNAT) and no proxy.
#
# Runs as root, only inside three network namespaces it creates and deletes:
#
#   client 10.243.1.2 --veth-- 10.243.1.1 node 10.243.2.1 --veth-- 10.243.2.2 backend
#
# The proxies all run in the node namespace with one worker (HAProxy nbthread 1, nginx
# worker_processes 1, kproxy on a single-threaded tokio runtime; socat forks per
# connection). The client and the backend are `bench_tool` (examples/bench_tool.rs).
#
# Usage: bench/bench.sh [BYTES] [CONNS] [ROUNDS]   (defaults: 1 GB, 4000 connections, 3)
# Each figure is the median of ROUNDS runs; rounds go over all targets in turn, so a
# burst of load from elsewhere on the machine hits every target alike.
# Missing proxies are installed with `apt-get install -y haproxy nginx
# libnginx-mod-stream socat`, or skipped.
set -euo pipefail

BYTES=${1:-1000000000}
CONNS=${2:-4000}
ROUNDS=${3:-3}
PARALLEL=8
HERE=$(cd "$(dirname "$0")/.." && pwd)
WS=$(cd "$HERE/.." && pwd)

[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { echo "bench.sh: needs iproute2"; exit 1; }
for t in haproxy nginx socat; do
  command -v $t >/dev/null || apt-get install -y haproxy nginx libnginx-mod-stream socat >/dev/null 2>&1 || true
done

(cd "$WS" && cargo build --release -q -p kproxy-userspace --example bench_tool)
TOOL="$WS/target/release/examples/bench_tool"

TAG=$(printf '%x' $$)
C=ku-bench-$TAG-c N=ku-bench-$TAG-n B=ku-bench-$TAG-b
TMP=$(mktemp -d /tmp/ku-bench.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  if [ $rc != 0 ]; then for f in "$TMP"/log.*; do echo "== $f"; tail -5 "$f"; done; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in $C $N $B; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

for ns in $C $N $B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n $N link add vnc type veth peer name vcn netns $C
ip -n $N link add vnb type veth peer name vbn netns $B
ip -n $N addr add 10.243.1.1/24 dev vnc; ip -n $N link set vnc up
ip -n $N addr add 10.243.2.1/24 dev vnb; ip -n $N link set vnb up
ip -n $C addr add 10.243.1.2/24 dev vcn; ip -n $C link set vcn up
ip -n $B addr add 10.243.2.2/24 dev vbn; ip -n $B link set vbn up
ip -n $C route add 10.243.100.0/24 via 10.243.1.1
ip -n $C route add 10.243.2.0/24 via 10.243.1.1
ip -n $B route add 10.243.1.0/24 via 10.243.2.1
ip netns exec $N sysctl -qw net.ipv4.ip_forward=1
# Kernel path: plain DNAT of a second virtual IP.
ip netns exec $N iptables -w 5 -t nat -A PREROUTING -d 10.243.100.11/32 -p tcp --dport 80 \
  -j DNAT --to-destination 10.243.2.2:9000

bg() { local ns=$1; shift; ip netns exec "$ns" "$@" >"$TMP/log.$(basename "$1")" 2>&1 & PIDS+=($!); }

bg $B "$TOOL" server 10.243.2.2:9000
bg $N "$TOOL" proxy 10.243.100.10:80 10.243.2.2:9000

TARGETS=("kproxy-userspace 10.243.100.10:80" "kernel-dnat 10.243.100.11:80" "direct 10.243.2.2:9000")

if command -v haproxy >/dev/null; then
  cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bench
  bind 10.243.1.1:8001
  server s1 10.243.2.2:9000
EOF
  bg $N haproxy -db -f "$TMP/haproxy.cfg"
  TARGETS+=("haproxy 10.243.1.1:8001")
fi
if command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  cat >"$TMP/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 8000; }
stream { server { listen 10.243.1.1:8002; proxy_pass 10.243.2.2:9000; } }
EOF
  bg $N nginx -c "$TMP/nginx.conf" -e "$TMP/nginx.err"
  TARGETS+=("nginx-stream 10.243.1.1:8002")
fi
if command -v socat >/dev/null; then
  bg $N socat TCP-LISTEN:8003,bind=10.243.1.1,fork,reuseaddr TCP:10.243.2.2:9000
  TARGETS+=("socat 10.243.1.1:8003")
fi
sleep 1

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A TP CPS
for _ in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    name=${t%% *}; addr=${t##* }
    TP[$name]+=" $(ip netns exec $C "$TOOL" send "$addr" "$BYTES")"
    CPS[$name]+=" $(ip netns exec $C "$TOOL" cps "$addr" "$CONNS" "$PARALLEL")"
  done
done

printf '%-18s %12s %10s %12s %10s\n' target "MB/s" "x kproxy" "conn/s" "x kproxy"
base_tp=""; base_cps=""
for t in "${TARGETS[@]}"; do
  name=${t%% *}
  tp=$(echo "${TP[$name]}" | median)
  cps=$(echo "${CPS[$name]}" | median)
  [ -z "$base_tp" ] && base_tp=$tp && base_cps=$cps
  printf '%-18s %12s %10s %12s %10s\n' "$name" "$tp" \
    "$(awk -v a="$tp" -v b="$base_tp" 'BEGIN{printf "%.2f", a/b}')" "$cps" \
    "$(awk -v a="$cps" -v b="$base_cps" 'BEGIN{printf "%.2f", a/b}')"
done
