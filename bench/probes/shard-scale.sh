#!/usr/bin/env bash
# Runs inside the VM (bench/shard_scale.sh generates the labs' files and boots it): the labs
# side by side (bench/probes/shard-scale-gen.py says what each holds: a, the sharded design
# with one tenant; b, with TENANTS_B tenants in shards; f, today's one-namespace path with one
# tenant), then rounds through tenant 1's EIP, the labs' order rotating from round to round:
# one TCP stream, 64-byte UDP, ping.
#   shard-scale.sh DIR TENANTS_B REPS SECS LABS...
# Prints `ROUND <n> <lab> <tenants> <tcp bit/s> <udp pps> <ping ms>` per measurement.
set -u
DIR=$1 NB=$2 REPS=$3 SECS=$4
shift 4
LABS="$*"
all_ns() { for l in $LABS; do echo "ss${l}g ss${l}c ss${l}p $(cat "$DIR/$l-shards")"; done; }
cleanup() {
  for n in $(all_ns); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
}
trap cleanup EXIT
[ -e /dev/net/tun ] || { mkdir -p /dev/net; mknod /dev/net/tun c 10 200; }
echo "kernel $(uname -r)"
# `ip -batch` opens the namespace of every `link add ... netns` line and keeps it open
ulimit -n 1048576
t0=$(date +%s)
build() { # lab
  local l=$1 G=ss$1g C=ss$1c P=ss$1p s
  for n in $G $C $P $(cat "$DIR/$l-shards"); do ip netns add "$n" && ip -n "$n" link set lo up; done
  ip -n $G link add eth-pub type veth peer name eth0 netns $C
  ip -n $G link add eth-ul type veth peer name eth0 netns $P
  ip netns exec $G sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  ip -n $G addr add 198.51.100.1/24 dev eth-pub
  ip -n $G addr add 172.31.0.1/24 dev eth-ul
  ip -n $G link set eth-pub up
  ip -n $G link set eth-ul up
  ip -n $C link set eth0 address 02:75:00:00:00:02
  ip -n $C addr add 198.51.100.2/24 dev eth0
  ip -n $C link set eth0 up
  ip -n $C route add 203.0.113.0/24 via 198.51.100.1
  ip -n $P addr add 172.31.0.2/24 dev eth0
  ip -n $P link set eth0 up
  ip -n $P link add gt1 type gretap key 1 local 172.31.0.2 remote 172.31.0.1
  ip -n $P link set gt1 address 02:74:00:00:00:07
  ip -n $P addr add 10.0.0.7/24 dev gt1
  ip -n $P link set gt1 up
  ip -n $P route add default via 10.0.0.1
  ip -n $P neigh replace 10.0.0.1 lladdr 02:72:00:00:00:01 dev gt1 nud permanent
  ip -n $G link add tgtun type gretap external
  ip -n $G link set tgtun up
  ip -n $G -batch "$DIR/$l-gw.batch" || return 1
  local j=0
  for s in $(cat "$DIR/$l-shards"); do
    ip netns exec "$s" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
      net.ipv4.conf.default.rp_filter=0 || return 1
    ip -n "$s" -batch "$DIR/$l-s$j.batch" || return 1
    ip netns exec "$s" nft -f "$DIR/$l-s$j.nft" || return 1
    j=$((j + 1))
  done
  ip netns exec $G nft -f "$DIR/$l-gw.nft" || return 1
  ip netns exec $P iperf3 -s -D -p 5201
  echo "lab $l built: $(ip -n $G -o link | wc -l) devices in its gateway, $(cat "$DIR/$l-shards" | wc -w) shards, $(( $(date +%s) - t0 )) s"
}
for l in $LABS; do build $l || { echo "FAIL lab $l"; exit 1; }; done
s0=$(cut -d' ' -f1 < "$DIR/b-shards")
echo "lab b: $(ip -n "$s0" -o link | wc -l) devices in shard 0"
for l in $LABS; do
  if ip netns exec ss${l}c ping -c 3 -W 2 -q 203.0.113.11 > /tmp/ss-ping 2>&1; then
    echo "PASS lab $l: client -> tenant 1's EIP -> host behind the tunnel"
  else
    echo "FAIL lab $l: no answer through the EIP"; cat /tmp/ss-ping
    ip netns exec ss${l}g nft list ruleset | head -20
    exit 1
  fi
done
for l in $LABS; do
  grep -q flowtable "$DIR/$l-s0.nft" 2>/dev/null || continue
  s0=$(cut -d' ' -f1 < "$DIR/$l-shards")
  ip netns exec $s0 sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=1
  ip netns exec $s0 nft reset counters table inet ss > /dev/null
  ip netns exec ss${l}c iperf3 -c 203.0.113.11 -p 5201 -t 8 > /tmp/ss-ft 2>&1 &
  sleep 4
  ct=$(ip netns exec $s0 conntrack -L 2>/dev/null | grep 'dport=5201' | head -3)
  wait
  if grep -q OFFLOAD <<< "$ct"; then echo "lab $l: conntrack marks tenant 1's flow [OFFLOAD]"
  else echo "lab $l: conntrack has no [OFFLOAD] flow"; fi
  sed 's/^/    ct: /' <<< "$ct"
  grep receiver /tmp/ss-ft | sed 's/^/    iperf3: /'
  # an offloaded flow's packets skip the forward hook: its counter shows those that did not
  slow=$(ip netns exec $s0 nft list chain inet ss forward | grep -o 'packets [0-9]* bytes [0-9]*')
  echo "    forward hook (slow path) meanwhile: $slow"
  got=$(sed -n 's/.* \([0-9.]*\) MBytes .*receiver.*/\1/p' /tmp/ss-ft)
  if [ -n "$got" ] && [ -n "$slow" ] && [ "${slow##* }" -gt "$(awk -v m="$got" 'BEGIN { printf "%d", m * 1048576 / 2 }')" ]; then
    echo "SLOW PATH lab $l: most of the flow's bytes crossed the forward hook: not offloaded"
  else
    echo "FAST PATH lab $l: most of the flow's bytes skipped the forward hook: offloaded"
  fi
done
sleep 5
measure() { # lab round
  local C=ss$1c tcp udp ping
  sleep 1
  tcp=$(ip netns exec $C iperf3 -c 203.0.113.11 -p 5201 -t "$SECS" -J | jq '.end.sum_received.bits_per_second')
  sleep 1
  ip netns exec $C iperf3 -c 203.0.113.11 -p 5201 -t "$SECS" -u -l 64 -b 0 -J > /tmp/ss-udp.json
  udp=$(jq '(.end.sum.packets - .end.sum.lost_packets) / .end.sum.seconds' /tmp/ss-udp.json)
  ping=$(ip netns exec $C ping -q -c 50 -i 0.02 203.0.113.11 | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
  local n=1; [ "$1" = b ] && n=$NB
  echo "ROUND $2 $1 $n $tcp $udp $ping"
}
read -ra order <<< "$LABS"
for r in $(seq 1 "$REPS"); do
  k=${#order[@]}
  for x in $(seq 0 $((k - 1))); do measure "${order[$(((r - 1 + x) % k))]}" "$r"; done
done
echo "done in $(( $(date +%s) - t0 )) s"
