#!/usr/bin/env bash
# What a tenant count costs per packet in the parts of the VRF path this kernel has: forwarding
# through a router namespace with N routing tables (VRF tables are found through the kernel's
# 256-bucket table hash) or with N macvlans on the ingress device, frames entering through one
# of them as they enter a tenant's `tgp` device (the nft netdev stamp rewrites the destination
# MAC by destination address; the driver then finds the macvlan in its 256-bucket MAC hash).
# Two topologies (client -> router -> server) are built side by side, one with a single table
# or macvlan and one with N, and measured alternately once the machine is idle again after
# the devices were made: one TCP stream (Gbit/s) and 64-byte UDP (kpps received), medians and
# ranges of REPS rounds.
#
#   bash bench/entry_cost.sh tables|macvlans     knobs: N (10000), REPS (5), SECS (3)
#   bash bench/entry_cost.sh devices|devices-spread [vm]
#                         N devices that carry no traffic (macvlans on a spare veth): only
#                         their number, which the kernel pays for in every lookup of a
#                         device by index (a 256-bucket hash); "spread" gives them indexes
#                         outside the buckets of index 0 and the router's own devices, as
#                         tollgate does for its per-tenant devices. "vm" runs it in the VM
#                         (Debian's kernel under emulation; tests/vm/setup.sh), where
#                         N=30000 (three devices per tenant at 10,000 tenants) is the
#                         interesting count.
#
# Writes bench/results/entry-cost-<what>-<UTC timestamp>.txt. Everything lives in namespaces
# this script makes and removes (10.1.0.0/24, 10.2.0.0/24 and 10.100.0.0/14 inside them).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-}
case "$WHAT" in tables | macvlans | devices | devices-spread) ;; *) echo "usage: $0 tables|macvlans|devices|devices-spread" >&2; exit 2 ;; esac
N=${N:-10000} REPS=${REPS:-5} SECS=${SECS:-3}
if [ "${2:-}" = vm ]; then
  bash scripts/deps.sh
  bash tests/vm/setup.sh > /dev/null
  OUT=bench/results/entry-cost-$WHAT-vm-$(date -u +%Y%m%dT%H%M%SZ).txt
  mkdir -p bench/results
  # the guest sees this filesystem read-only and none of this environment: the figures come
  # back on stdout
  VM_MEM=${VM_MEM:-6G} VM_TIMEOUT=${VM_TIMEOUT:-5400} bash tests/vm/run.sh \
    env PATH="$PATH" N="$N" REPS="$REPS" SECS="$SECS" TOLLGATE_NO_RESULTS=1 \
    bash bench/entry_cost.sh "$WHAT" | grep -E '^(#|[0-9]+-)' | tee "$OUT"
  grep -q '^[0-9]' "$OUT" || { echo "no figures came back from the VM" >&2; exit 1; }
  echo "figures: $OUT"
  exit 0
fi
bash scripts/deps.sh
P=tgec$$
WORK=$(mktemp -d)
cleanup() {
  for t in a b; do
    for n in c r s; do
      ip netns pids "$P$t$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$P$t$n" 2>/dev/null || true
    done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
for t in a b; do
  C=$P${t}c R=$P${t}r S=$P${t}s
  for n in $C $R $S; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip link add eth0 netns "$C" type veth peer name in0 netns "$R"
  ip link add out0 netns "$R" type veth peer name eth0 netns "$S"
  ip -n "$C" addr add 10.1.0.2/24 dev eth0
  ip -n "$C" link set eth0 up
  ip -n "$C" route add default via 10.1.0.1
  ip -n "$R" addr add 10.1.0.1/24 dev in0
  ip -n "$R" link set in0 up
  ip -n "$R" addr add 10.2.0.1/24 dev out0
  ip -n "$R" link set out0 up
  ip -n "$S" addr add 10.2.0.2/24 dev eth0
  ip -n "$S" link set eth0 up
  ip -n "$S" route add default via 10.2.0.1
  ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
  # a rule that never matches: lookups take the policy-rule path, as with VRF's l3mdev rule
  ip -n "$R" rule add pref 1000 fwmark 0x7777 lookup 7777
  ip netns exec "$S" iperf3 -s -D -p 5201 > /dev/null
  n=1
  [ "$t" = b ] && n=$N
  case $WHAT in
    tables)
      for i in $(seq 3000 $((3000 + n - 1))); do
        echo "route add blackhole 10.250.0.1/32 table $i"
      done > "$WORK/add$t"
      ;;
    devices | devices-spread)
      # devices no frame passes through (macvlans on a spare veth): only their number; spread
      # gives them interface indexes outside the hash buckets of index 0 and the router's own
      ip -n "$R" link add sp0 type veth peer name sp1
      taken=" 0 $(ip -n "$R" -o link show | awk -F': ' '{ print $1 % 256 }' | tr '\n' ' ') "
      idx=1000
      for i in $(seq 1 "$n"); do
        index=""
        if [ "$WHAT" = devices-spread ]; then
          while [[ $taken == *" $((idx % 256)) "* ]]; do idx=$((idx + 1)); done
          index="index $idx"
          idx=$((idx + 1))
        fi
        printf 'link add tgp%d %s link sp0 type macvlan mode private\n' "$i" "$index"
      done > "$WORK/add$t"
      ;;
    macvlans)
      for i in $(seq 1 "$n"); do
        printf 'link add tgp%d link in0 address 02:70:00:%02x:%02x:%02x type macvlan mode private\nlink set tgp%d up\n' \
          "$i" $((i >> 16)) $(((i >> 8) & 255)) $((i & 255)) "$i"
      done > "$WORK/add$t"
      # the server's address enters through the last macvlan, the others' through theirs
      python3 - "$n" > "$WORK/stamp$t" << 'PY'
import sys
n = int(sys.argv[1])
mac = lambda i: f"02:70:00:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
els = [f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255} : {mac(i)}" for i in range(1, n)]
els.append(f"10.2.0.2 : {mac(n)}")
print("table netdev entry {")
print('  chain stamp { type filter hook ingress device "in0" priority -10; policy accept;')
print("    meta pkttype host meta protocol ip ether daddr set ip daddr map { " + ", ".join(els) + " }")
print("  }")
print("}")
PY
      ;;
  esac
  ip -n "$R" -batch "$WORK/add$t"
  if [ "$WHAT" = macvlans ]; then
    # the macvlan's route back is another device, as for tollgate's entry devices
    for k in all default in0 "tgp$n"; do
      ip netns exec "$R" sysctl -qw "net.ipv4.conf.$k.rp_filter=0"
    done
    ip netns exec "$R" nft -f "$WORK/stamp$t"
  fi
done
# making thousands of devices leaves kernel workers busy after `ip` returns: wait until the
# CPUs have been idle (under 5 %) for 2 s, at most 10 minutes
for _ in $(seq 1 300); do
  read -r _ u1 n1 s1 i1 w1 q1 f1 t1 _ < /proc/stat
  sleep 2
  read -r _ u2 n2 s2 i2 w2 q2 f2 t2 _ < /proc/stat
  busy=$(((u2 + n2 + s2 + q2 + f2 + t2) - (u1 + n1 + s1 + q1 + f1 + t1)))
  idle=$(((i2 + w2) - (i1 + w1)))
  [ $((busy * 100)) -lt $(((busy + idle) * 5)) ] && break
done
# the path really is the one measured: the server's traffic enters through the entry macvlan
if [ "$WHAT" = macvlans ]; then
  ip netns exec "${P}bc" ping -c 3 -i 0.2 -q 10.2.0.2 > /dev/null
  rx=$(ip -n "${P}br" -s -j link show "tgp$N" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
  [ "$rx" -ge 3 ] || { echo "traffic did not enter through tgp$N" >&2; exit 1; }
fi
one() {
  local c=$P${1}c tcp udp
  tcp=$(ip netns exec "$c" iperf3 -c 10.2.0.2 -t "$SECS" -J |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
  sleep 0.2
  udp=$(ip netns exec "$c" iperf3 -c 10.2.0.2 -t "$SECS" -u -l 64 -b 0 -J |
    python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print((s["packets"]-s["lost_packets"])/s["seconds"]/1e3)')
  sleep 0.2
  echo "$2 $tcp $udp"
}
for _ in $(seq 1 "$REPS"); do
  one a "1-$WHAT"
  one b "$N-$WHAT"
done > "$WORK/runs"
OUT=bench/results/entry-cost-$WHAT-$(date -u +%Y%m%dT%H%M%SZ).txt
[ -n "${TOLLGATE_NO_RESULTS:-}" ] && OUT=/dev/null || mkdir -p bench/results
{
  echo "# N=$N REPS=$REPS SECS=$SECS bash bench/entry_cost.sh $WHAT ($(uname -r), $(nproc) CPUs)"
  python3 - "$WORK/runs" << 'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
for k in dict.fromkeys(r[0] for r in rows):
    t = [float(r[1]) for r in rows if r[0] == k]
    u = [float(r[2]) for r in rows if r[0] == k]
    print(f"{k}: TCP median {st.median(t):.2f} Gbit/s ({min(t):.2f}-{max(t):.2f}), "
          f"64-byte UDP median {st.median(u):.1f} kpps ({min(u):.1f}-{max(u):.1f})")
PY
} | tee "$OUT"
[ "$OUT" = /dev/null ] || echo "figures: $OUT"
