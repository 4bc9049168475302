#!/usr/bin/env bash
# Which devices the kernel looks up by index, and how often, while traffic crosses a gateway
# tenant's VRF: two one-tenant labs side by side in the VM (gretap, external mode, offload
# off), kprobes counting every by-index lookup once the second is applied. The device-index
# hash has 256 lists, walked newest first, so each lookup of a per-tenant device costs a walk
# past the devices made after it in its list (docs/gateway.md).
#   bash bench/index_lookups.sh          (needs tests/vm/setup.sh; about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --quiet -p tollgate -p tollgate-lab
bash tests/vm/setup.sh > /dev/null
VM_MEM=${VM_MEM:-2G} VM_TIMEOUT=${VM_TIMEOUT:-1800} bash tests/vm/run.sh \
  "$PWD/bench/probes/index-lookups.sh" "$PWD/target/release/tollgate-gateway-bench" \
  --tunnel gretap --tunnel-mode external --isolation vrf --offload off --tenants 1,1 \
  --secs 3 --reps 1 --side-by-side --ballast "$PWD/bench/probes/index-lookups-on.sh" \
  --no-destroy --out /tmp/g.json | grep -v '^POINT '
