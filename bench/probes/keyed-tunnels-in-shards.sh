#!/usr/bin/env bash
# keyed-tunnels-in-shards.sh: can a tenant's keyed tunnel device (tunnel_mode "per-tenant") live
# in a shard's namespace while its underlay stays in the gateway's? Run inside the VM (VRF and
# gretap): `tests/vm/run.sh bash bench/probes/keyed-tunnels-in-shards.sh`.
#
# For gretap and for VXLAN: the device is made in the gateway namespace (underlay 172.31.0.1 on
# a veth to the tenant's peer), moved into a shard namespace and enslaved to a VRF there, with the
# tenant's gateway IP 10.0.0.1/24. The peer (10.0.0.7 behind its own keyed device) pings
# 10.0.0.1: the reply proves decapsulation in the gateway namespace delivers into the shard,
# and encapsulation from the shard leaves by the gateway's underlay. Prints one PASS or FAIL
# line per kind, and where the device's packets were counted.
set -u
tag=kt$$
g=${tag}g; s=${tag}s; p=${tag}p
cleanup() { for n in $g $s $p; do ip netns del "$n" 2>/dev/null; done; }
trap cleanup EXIT
fail=0
for kind in gretap vxlan; do
  cleanup
  for n in $g $s $p; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip -n "$g" link add ul type veth peer name ul netns "$p"
  ip -n "$g" addr add 172.31.0.1/24 dev ul
  ip -n "$p" addr add 172.31.0.2/24 dev ul
  ip -n "$g" link set ul up
  ip -n "$p" link set ul up
  if [ "$kind" = gretap ]; then
    ip -n "$g" link add tgt5 type gretap key 5 local 172.31.0.1 remote 172.31.0.2
    ip -n "$p" link add t5 type gretap key 5 local 172.31.0.2 remote 172.31.0.1
  else
    ip -n "$g" link add tgt5 type vxlan id 5 local 172.31.0.1 remote 172.31.0.2 dstport 4789 dev ul
    ip -n "$p" link add t5 type vxlan id 5 local 172.31.0.2 remote 172.31.0.1 dstport 4789 dev ul
  fi
  ip -n "$g" link set tgt5 netns "$s"
  ip -n "$s" link add tgv5 type vrf table 5
  ip -n "$s" link set tgv5 up
  ip -n "$s" link set tgt5 master tgv5
  ip -n "$s" addr add 10.0.0.1/24 dev tgt5
  ip -n "$s" link set tgt5 up
  ip -n "$p" addr add 10.0.0.7/24 dev t5
  ip -n "$p" link set t5 up
  if ip netns exec "$p" ping -c 3 -W 2 -q 10.0.0.1 >/dev/null; then
    echo "PASS $kind: a keyed device moved into a shard's VRF answers through the gateway's underlay"
  else
    echo "FAIL $kind: no answer from 10.0.0.1 in the shard"
    fail=1
  fi
  echo "  shard's $kind device: $(ip -n "$s" -s link show tgt5 | awk '/RX:/{getline; r=$2} /TX:/{getline; t=$2} END{print "received " r ", sent " t " packets"}')"
  echo "  gateway namespace devices: $(ip -n "$g" -br link | awk '{print $1}' | tr '\n' ' ')"
done
exit $fail
