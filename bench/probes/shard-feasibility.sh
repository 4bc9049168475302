#!/usr/bin/env bash
# Runs inside the VM (bench/shard_feasibility.sh boots it): can a tenant's VRF and entry
# devices live in a namespace of their own ("shard") while the public device and the external
# tunnel device stay in the gateway's? The entry macvlans are made on their lowers in the
# gateway's namespace and then moved to the shard, where they are enslaved to the tenant's VRF.
# Checked, each printed as PASS or FAIL:
#   1. a client reaches an address of the tenant's VRF on its public macvlan (stamped by an nft
#      netdev rule on the public device, as tollgate stamps an EIP);
#   2. the tenant's VRF reaches a host behind the tunnel: an lwtunnel route in the shard's VRF
#      table, out of the tunnel-side macvlan, whose lower is the external device of the
#      gateway's namespace;
#   3. forwarding between the two through the shard's VRF (TCP);
#   4. a flowtable in the shard over the two macvlans offloads that flow ([OFFLOAD]).
set -u
ns="shp$$"
GW=${ns}g SH=${ns}s CL=${ns}c PE=${ns}p
cleanup() { for n in $GW $SH $CL $PE; do ip netns del "$n" 2>/dev/null; done; }
trap cleanup EXIT
[ -e /dev/net/tun ] || { mkdir -p /dev/net; mknod /dev/net/tun c 10 200; }
check() { # name, command...
  local name=$1; shift
  if "$@" >/tmp/shard-probe.out 2>&1; then echo "PASS $name"; else
    echo "FAIL $name"; sed 's/^/    /' /tmp/shard-probe.out | tail -5; fi
}
set -e
for n in $GW $SH $CL $PE; do ip netns add "$n"; ip -n "$n" link set lo up; done
# client <-> gateway public side, peer <-> gateway underlay
ip -n $GW link add eth-pub type veth peer name eth0 netns $CL
ip -n $GW link add eth-ul type veth peer name eth0 netns $PE
ip -n $GW addr add 198.51.100.1/24 dev eth-pub
ip -n $GW addr add 172.31.0.1/24 dev eth-ul
ip -n $CL addr add 198.51.100.2/24 dev eth0
ip -n $PE addr add 172.31.0.2/24 dev eth0
for n in $GW $CL $PE; do
  ip -n "$n" link set eth-pub up 2>/dev/null || true
  ip -n "$n" link set eth-ul up 2>/dev/null || true
  ip -n "$n" link set eth0 up 2>/dev/null || true
done
ip -n $CL route add 10.0.0.0/24 via 198.51.100.1
ip -n $CL route add 203.0.113.0/24 via 198.51.100.1
ip netns exec $GW sysctl -qw net.ipv4.ip_forward=1
# the gateway's external tunnel device; the peer's keyed one, with the tenant's host behind it
ip -n $GW link add tgtun type gretap external
ip -n $GW link set tgtun up
ip -n $PE link add gt1 type gretap key 1 local 172.31.0.2 remote 172.31.0.1
ip -n $PE addr add 10.0.0.7/24 dev gt1
ip -n $PE link set gt1 up
ip -n $PE route add default via 10.0.0.1
# the shard: the tenant's VRF, and its two entry macvlans made in the gateway and moved here
ip netns exec $SH sysctl -qw net.ipv4.ip_forward=1
ip -n $SH link add tgv1 type vrf table 1
ip -n $SH link set tgv1 up
ip -n $GW link add tgp1 link eth-pub address 02:70:00:00:00:01 type macvlan mode private
ip -n $GW link add tge1 link tgtun address 02:67:00:00:00:01 type macvlan mode private
ip -n $GW link set tgp1 netns $SH
ip -n $GW link set tge1 netns $SH
for d in tgp1 tge1; do
  ip -n $SH link set $d master tgv1
  ip -n $SH link set $d up
done
ip -n $SH addr add 203.0.113.11/32 dev tgp1
ip -n $SH addr add 10.0.0.1/24 dev tge1
ip -n $SH route add default via 198.51.100.2 dev tgp1 onlink table 1
ip -n $SH route replace 10.0.0.0/24 dev tge1 encap ip id 1 dst 172.31.0.2 key table 1
ip -n $PE neigh replace 10.0.0.1 lladdr 02:67:00:00:00:01 dev gt1
# the public side's stamp: the tenant's addresses go to its macvlan
ip netns exec $GW nft -f - <<'EOF'
table netdev probe {
  chain pub {
    type filter hook ingress device "eth-pub" priority 0;
    ip daddr { 203.0.113.11, 10.0.0.0/24 } ether daddr set 02:70:00:00:00:01
  }
}
EOF
set +e
echo "kernel $(uname -r)"
ip -n $GW -br link; ip -n $SH -br link
check "1 client -> address in the shard's VRF (public macvlan)" \
  ip netns exec $CL ping -c 2 -W 2 203.0.113.11
check "2 shard VRF -> host behind the tunnel (lwtunnel via macvlan on tgtun)" \
  ip netns exec $SH ip vrf exec tgv1 ping -c 2 -W 2 10.0.0.7
ip netns exec $PE iperf3 -s -1 -D -p 5301
sleep 1
check "3 client -> tenant host, forwarded by the shard's VRF (TCP)" \
  ip netns exec $CL iperf3 -c 10.0.0.7 -p 5301 -t 3
ip netns exec $SH nft -f - <<'EOF'
table inet probe {
  flowtable ft { hook ingress priority 0; devices = { tgp1, tge1 }; }
  chain pass { type filter hook forward priority 0; ip protocol tcp flow add @ft; }
}
EOF
echo "flowtable: rc=$?"
ip netns exec $SH sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=1 2>/dev/null
ip netns exec $PE iperf3 -s -1 -D -p 5302
sleep 1
ip netns exec $CL iperf3 -c 10.0.0.7 -p 5302 -t 8 >/tmp/shard-probe.iperf 2>&1 &
sleep 4
ip netns exec $SH sh -c 'conntrack -L 2>/dev/null || cat /proc/net/nf_conntrack' | grep 5302 > /tmp/shard-probe.ct
wait
# delivered, not only connected: the receiver's count in the offloaded seconds too
check "3b the same with the flowtable loaded" grep -q receiver /tmp/shard-probe.iperf
grep -E "^\[ *[0-9]+\] +[0-9]" /tmp/shard-probe.iperf | sed 's/^/    iperf3: /' 
check "4 the flow is offloaded in the shard" grep -q OFFLOAD /tmp/shard-probe.ct
sed 's/^/    ct: /' /tmp/shard-probe.ct
