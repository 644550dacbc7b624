#!/usr/bin/env bash
# Runs kproxy-ipvs's kernel tests (tests/kernel_ipvs.rs) inside the IPVS QEMU guest:
# cargo builds on the host, and run-in-vm.sh boots a throwaway VM with IPVS, ipset,
# iptables and conntrack for the test binary (the tree is shared read-only).
# Extra arguments go to the test binary, e.g. `-- --nocapture`.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/.." && pwd)
vm="$root/../shared/tools/ipvs-vm/run-in-vm.sh"
[[ -f $vm ]] || { echo "run-kernel-tests.sh: $vm not found" >&2; exit 1; }
cd "$root"
# Through bash: a copied shared/ may have lost its execute bits.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="bash $vm --share $root --timeout ${IPVS_VM_TIMEOUT:-900} --" \
  exec cargo test -p kproxy-ipvs --test kernel_ipvs "$@"
