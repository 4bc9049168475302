#!/usr/bin/env bash
# What a tenant count costs per packet in the parts of the VRF path this kernel has: forwarding
# through a router namespace with N extra routing tables (VRF tables are found through the
# kernel's 256-bucket table hash) or N macvlans on the ingress device (the tenants' `tgp`
# entry devices; frames are matched through the driver's 256-bucket MAC hash), against the
# same topology without them. Two identical topologies (client -> router -> server) are built
# side by side and measured alternately: one TCP stream (Gbit/s) and 64-byte UDP (kpps
# received), medians and ranges of REPS rounds.
#
#   bash bench/entry_cost.sh tables|macvlans     knobs: N (10000), REPS (5), SECS (3)
#
# Writes bench/results/entry-cost-<what>-<UTC timestamp>.txt. Everything lives in namespaces
# this script makes and removes (10.1.0.0/24 and 10.2.0.0/24 inside them).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-}
case "$WHAT" in tables | macvlans) ;; *) echo "usage: $0 tables|macvlans" >&2; exit 2 ;; esac
N=${N:-10000} REPS=${REPS:-5} SECS=${SECS:-3}
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
done
case $WHAT in
  tables)
    for i in $(seq 3000 $((3000 + N - 1))); do
      echo "route add blackhole 10.250.0.1/32 table $i"
    done > "$WORK/add"
    ;;
  macvlans)
    for i in $(seq 1 "$N"); do
      printf 'link add tgp%d link in0 address 02:70:00:00:%02x:%02x type macvlan mode private\nlink set tgp%d up\n' \
        "$i" $((i >> 8)) $((i & 255)) "$i"
    done > "$WORK/add"
    ;;
esac
ip -n "${P}br" -batch "$WORK/add"
sleep 2
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
  one a none
  one b "$N-$WHAT"
done > "$WORK/runs"
OUT=bench/results/entry-cost-$WHAT-$(date -u +%Y%m%dT%H%M%SZ).txt
mkdir -p bench/results
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
echo "figures: $OUT"
