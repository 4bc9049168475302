#!/usr/bin/env bash
# Forwarding through the gateway as tenants grow: a tenant's EIP and the operator's own traffic
# (one TCP stream, 64-byte UDP, ping) with TENANTS configured tenants, in network namespaces
# (lab/src/bench/gateway.rs says what each figure is).
#
#   bash bench/gateway.sh host    table isolation on this kernel (vxlan, external tunnel mode,
#                                 offload off: this kernel has no flowtable)
#   bash bench/gateway.sh vm      VRF isolation in the VM (Debian's kernel under qemu/TCG;
#                                 gretap, external tunnel mode, offload off and on)
#
# Knobs: TENANTS (default 1,1000,10000), SECS per iperf3 run (5), OFFLOADS (vm: off,on),
# VM_MEM (6G), REPS measurements per point (1; the point reports their median), GROW=1 to grow
# one lab through the counts after a discarded warm-up measurement (the comparison that
# emulation needs: `TENANTS=1,10000 OFFLOADS=off REPS=5 GROW=1 bash bench/gateway.sh vm`), or
# SIDE=1 with two counts for two labs side by side, measured alternately (a, b, a, b, ...), so
# that the machine's drift between a quarter of an hour and the next touches both. With SIDE=1,
# BALLAST=bench/ballast/<what>.sh runs that script in the second lab's gateway after its apply:
# one kind of kernel object that 10,000 tenants make, alone (`TENANTS=1,1 SIDE=1
# BALLAST=bench/ballast/macvlans.sh bash bench/gateway.sh vm`). SHARDS=N (vm) spreads the
# tenants over N shards (`TENANTS=1,10000 OFFLOADS=off REPS=7 SIDE=1 SHARDS=40 bash
# bench/gateway.sh vm`: 250 tenants a shard at 10,000). In the VM
# the gateway is left to the namespace's deletion (tollgate destroy of 30,000 devices under
# emulation takes long; destroy is shown by the tests).
# Every point first waits until the CPU is quiet after its apply (under 5 % busy for 5 s; the
# JSON records the wait and the busiest threads meanwhile).
# Writes bench/results/gateway-<where>-<UTC timestamp>.json and prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
WHERE=${1:-host}
TENANTS=${TENANTS:-1,1000,10000}
SECS=${SECS:-5}
OFFLOADS=${OFFLOADS:-off,on}
REPS=${REPS:-1}
# a grown lab is never destroyed point by point (the VM run never destroys)
GROW_ARG=() HOST_DESTROY_ARG=()
if [ "${GROW:-0}" = 1 ]; then GROW_ARG=(--grow) HOST_DESTROY_ARG=(--no-destroy); fi
# two counts in two labs side by side, measured alternately
if [ "${SIDE:-0}" = 1 ]; then GROW_ARG=(--side-by-side); fi
if [ -n "${BALLAST:-}" ]; then GROW_ARG+=(--ballast "$PWD/$BALLAST"); fi
bash scripts/deps.sh
cargo build --release --quiet -p tollgate -p tollgate-lab
BIN=$PWD/target/release/tollgate-gateway-bench
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$PWD/bench/results/gateway-$WHERE-$TS.json
mkdir -p bench/results
case "$WHERE" in
  host)
    "$BIN" --tunnel vxlan --tunnel-mode external --isolation table --offload off \
      --tenants "$TENANTS" --secs "$SECS" --reps "$REPS" \
      "${GROW_ARG[@]}" "${HOST_DESTROY_ARG[@]}" --out "$OUT" |
      grep -v '^POINT '
    ;;
  vm)
    bash tests/vm/setup.sh >/dev/null
    # the guest's root filesystem is this one, read-only: the figures come back on stdout,
    # one `POINT <json>` line per point as it is measured
    VM_MEM=${VM_MEM:-6G} VM_TIMEOUT=${VM_TIMEOUT:-14400} bash tests/vm/run.sh \
      "$BIN" --tunnel gretap --tunnel-mode external --isolation vrf --offload "$OFFLOADS" \
      --tenants "$TENANTS" --secs "$SECS" --reps "$REPS" "${GROW_ARG[@]}" \
      --shards "${SHARDS:-0}" --no-destroy --out /tmp/g.json | tee "$OUT.log" || true
    grep -q '^POINT ' "$OUT.log" || { echo "no figures came back from the VM" >&2; exit 1; }
    sed -n 's/^POINT //p' "$OUT.log" |
      awk 'BEGIN { print "[" } NR > 1 { print "," } { print } END { print "]" }' > "$OUT"
    rm -f "$OUT.log"
    ;;
  *)
    echo "usage: $0 host|vm" >&2
    exit 2
    ;;
esac
echo "figures: $OUT"
