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
# Knobs: TENANTS (default 1,1000,10000), SECS per iperf3 run (5), VM_MEM (4G).
# Writes bench/results/gateway-<where>-<UTC timestamp>.json and prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
WHERE=${1:-host}
TENANTS=${TENANTS:-1,1000,10000}
SECS=${SECS:-5}
bash scripts/deps.sh
cargo build --release --quiet -p tollgate -p tollgate-lab
BIN=$PWD/target/release/tollgate-gateway-bench
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$PWD/bench/results/gateway-$WHERE-$TS.json
mkdir -p bench/results
case "$WHERE" in
  host)
    "$BIN" --tunnel vxlan --tunnel-mode external --isolation table --offload off \
      --tenants "$TENANTS" --secs "$SECS" --out "$OUT"
    ;;
  vm)
    bash tests/vm/setup.sh >/dev/null
    # the guest's root filesystem is this one, read-only: the figures come back on stdout,
    # between markers
    VM_MEM=${VM_MEM:-4G} VM_TIMEOUT=${VM_TIMEOUT:-14400} bash tests/vm/run.sh sh -c \
      "mknod /dev/net/tun c 10 200 2>/dev/null; $BIN --tunnel gretap --tunnel-mode external \
       --isolation vrf --offload off,on --tenants $TENANTS --secs $SECS --out /tmp/g.json \
       && echo '--- json' && cat /tmp/g.json && echo '--- end'" | tee "$OUT.log"
    sed -n '/^--- json$/,/^--- end$/p' "$OUT.log" | sed '1d;$d' > "$OUT"
    rm -f "$OUT.log"
    [ -s "$OUT" ] || { echo "no figures came back from the VM" >&2; exit 1; }
    ;;
  *)
    echo "usage: $0 host|vm" >&2
    exit 2
    ;;
esac
echo "figures: $OUT"
