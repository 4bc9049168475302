#!/usr/bin/env bash
# The sharded design at scale, before tollgate builds it: tenants' VRFs and entry devices in
# namespaces of SHARD_SIZE tenants each, each shard with a lower of its own that the gateway's
# netdev rules forward a tenant's frames to (bench/probes/shard-scale-gen.py), so that no list
# the kernel walks per packet grows with the number of tenants. Three labs side by side in the
# VM (Debian's kernel under qemu/TCG): a, the sharded design with one tenant; b, with TENANTS;
# f, today's one-namespace path with one tenant (what the extra hop costs), measured in turn,
# the order rotating each round, through tenant 1's EIP (one TCP stream, 64-byte UDP, ping;
# offload off).
#   bash bench/shard_scale.sh        knobs: TENANTS (10000), SHARD_SIZE (250), REPS (5), SECS (5)
#   bash bench/shard_scale.sh offload   the same with a flowtable in every shard (TENANTS 200,
#                                       SHARD_SIZE 100: a flowtable holds 256 devices); prints
#                                       whether tenant 1's flow is offloaded
#   bash bench/shard_scale.sh symmetric   each side in and out by one device, as a flowtable
#                                       needs (the public side back through the shard lower,
#                                       the tunnel side in by its macvlan on tgtun)
#   bash bench/shard_scale.sh offload-symmetric   that, with the flowtable check
# Writes bench/results/shard-scale-vm-<UTC timestamp>.txt: the VM's output, then medians and
# ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=()
if [ "${1:-}" = symmetric ]; then
  MODE=(symmetric)
elif [ "${1:-}" = offload ] || [ "${1:-}" = offload-symmetric ]; then
  MODE=("$1")
  TENANTS=${TENANTS:-200} SHARD_SIZE=${SHARD_SIZE:-100}
fi
TENANTS=${TENANTS:-10000} SHARD_SIZE=${SHARD_SIZE:-250} REPS=${REPS:-5} SECS=${SECS:-5}
bash scripts/deps.sh
bash tests/vm/setup.sh > /dev/null
TS=$(date -u +%Y%m%dT%H%M%SZ)
DIR=$PWD/target/shard-scale-$TS
trap 'rm -rf "$DIR"' EXIT
python3 bench/probes/shard-scale-gen.py "$DIR" a 1 "$SHARD_SIZE" "${MODE[@]}"
python3 bench/probes/shard-scale-gen.py "$DIR" b "$TENANTS" "$SHARD_SIZE" "${MODE[@]}"
python3 bench/probes/shard-scale-gen.py "$DIR" f 1 "$SHARD_SIZE" flat
OUT=bench/results/shard-scale-vm-$TS.txt
mkdir -p bench/results
echo "TENANTS=$TENANTS SHARD_SIZE=$SHARD_SIZE REPS=$REPS SECS=$SECS bash bench/shard_scale.sh ${MODE[*]}" > "$OUT"
VM_MEM=${VM_MEM:-6G} VM_TIMEOUT=${VM_TIMEOUT:-5400} bash tests/vm/run.sh \
  bash "$PWD/bench/probes/shard-scale.sh" "$DIR" "$TENANTS" "$REPS" "$SECS" f a b | tee -a "$OUT"
grep -q '^ROUND ' "$OUT" || { echo "no figures came back from the VM" >&2; exit 1; }
python3 bench/probes/shard-scale-summary.py "$OUT" | tee -a "$OUT"
echo "figures: $OUT"
