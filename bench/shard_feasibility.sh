#!/usr/bin/env bash
# Whether a tenant's VRF and entry devices can live in a namespace of their own while the
# public and tunnel devices stay in the gateway's (macvlans moved across namespaces keep their
# lowers): bench/probes/shard-feasibility.sh, run in the VM (Debian's stock kernel; VRF,
# gretap and the flowtable are not on every host kernel). Prints PASS/FAIL per step.
#   bash bench/shard_feasibility.sh          (needs tests/vm/setup.sh; about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash tests/vm/setup.sh > /dev/null
VM_MEM=${VM_MEM:-1G} VM_TIMEOUT=${VM_TIMEOUT:-900} bash tests/vm/run.sh \
  bash "$PWD/bench/probes/shard-feasibility.sh"
