#!/usr/bin/env bash
# Benchmark in the IPVS VM (release build): 10,000 services x 10 endpoints programmed by
# kproxy versus `ipvsadm -R`, plus a one-service change. Prints BENCH lines with ratios.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/.." && pwd)
vm="$root/../shared/tools/ipvs-vm/run-in-vm.sh"
[[ -x $vm ]] || vm=/work/shared/tools/ipvs-vm/run-in-vm.sh
cd "$root"
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$vm --share $root --env IPVS_BENCH=1 --mem 2048 --timeout ${IPVS_VM_TIMEOUT:-1800} --" \
  cargo test --release -p kproxy-ipvs --test kernel_bench -- --nocapture 2>&1 | grep -E "^BENCH|test result|panicked|FAILED"
