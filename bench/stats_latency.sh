#!/usr/bin/env bash
# Does the shaper's bookkeeping delay frames at scale? With 1 and with N configured tenants
# (default 10,000; one of them, alpha, at 100 Mbit/s), pings from alpha through the shaper
# (1,000 at 10 ms) measure the RTT added while the stats thread writes the counters file every
# second. Prints one JSON line per run. Needs root, iproute2, nftables; builds the release binary.
#   bash bench/stats_latency.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release -q -p tollgate-shaper
SH=$PWD/target/release/tollgate-shaper
CL=tgbench-cl-$$ SRV=tgbench-srv-$$
WORK=$(mktemp -d)
cleanup() {
  [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del "$CL" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$CL"; ip netns add "$SRV"
ip -n "$CL" link add eth0 type veth peer name veth-srv netns "$SRV"
ip -n "$CL" addr add 198.51.100.10/24 dev eth0
ip -n "$SRV" addr add 198.51.100.2/24 dev veth-srv
ip -n "$CL" link set eth0 up; ip -n "$SRV" link set veth-srv up
ip -n "$CL" link set lo up; ip -n "$SRV" link set lo up
for n in 1 "$N"; do
  cfg=$WORK/t$n.toml
  {
    printf '[shaper]\ninterface = "veth-srv"\ntap = "tg0"\nstate_dir = "%s/state"\n' "$WORK"
    printf '\n[[tenant]]\nname = "alpha"\nsources = ["198.51.100.10/32"]\nupload = "100mbit"\n'
    for ((i = 1; i < n; i++)); do
      printf '\n[[tenant]]\nname = "t%d"\nsources = ["10.%d.%d.0/24"]\nupload = "10mbit"\n' \
        "$i" $((i / 256)) $((i % 256))
    done
  } > "$cfg"
  ip netns exec "$SRV" "$SH" -c "$cfg" > "$WORK/shaper.log" 2>&1 &
  pid=$!
  until grep -q shaping "$WORK/shaper.log"; do
    kill -0 $pid 2>/dev/null || { cat "$WORK/shaper.log"; exit 1; }
    sleep 0.1
  done
  out=$(ip netns exec "$CL" ping -q -c 1000 -i 0.01 198.51.100.2)
  stats=$(ls "$WORK"/state/*.stats.json)
  size=$(stat -c %s "$stats")
  rtt=$(grep -o 'rtt.*' <<<"$out" | cut -d= -f2 | tr -d ' ms')
  IFS=/ read -r min avg max mdev <<<"$rtt"
  loss=$(grep -o '[0-9.]*% packet loss' <<<"$out" | cut -d% -f1)
  echo "{\"tenants\":$n,\"stats_file_bytes\":$size,\"ping_min_ms\":$min,\"ping_avg_ms\":$avg,\"ping_max_ms\":$max,\"loss_pct\":$loss,\"command\":\"bash bench/stats_latency.sh $N\"}"
  kill "$pid"; wait "$pid" || true; pid=
done
