#!/bin/sh
# Full vs partial sync timing of kproxy's iptables mode inside throw-away network
# namespaces (see examples/netns_bench.rs). Run as root:
#   kproxy-iptables/bench/iptables.sh [SERVICES] [ENDPOINTS]
# Prints one block per iptables flavour; the namespaces are deleted on exit.
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -q -p kproxy-iptables --example netns_bench
# The namespaces' prefix: deleted on exit, even when `timeout` kills the benchmark.
ns="kp-bench-$$"
cleanup() {
    for n in $(ip netns list | awk '{print $1}' | grep "^$ns-" || true); do
        ip netns del "$n"
    done
}
trap cleanup EXIT INT TERM
for backend in legacy nft; do
    if command -v "iptables-$backend-restore" >/dev/null 2>&1; then
        KPROXY_BENCH_NS="$ns-$backend" KPROXY_BENCH_BACKEND=$backend \
            timeout "${KPROXY_BENCH_TIMEOUT:-1800}" ./target/release/examples/netns_bench "${1:-10000}" "${2:-10}" || \
            echo "$backend: failed or timed out"
        cleanup
        echo
    fi
done
