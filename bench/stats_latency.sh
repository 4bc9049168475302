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
source bench/lib.sh
pair bench
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
  start_shaper "$SH" "$cfg"
  out=$(ip netns exec "$CL" ping -q -c 1000 -i 0.01 198.51.100.2)
  stats=$(ls "$WORK"/state/*.stats.json)
  size=$(stat -c %s "$stats")
  rtt=$(grep -o 'rtt.*' <<<"$out" | cut -d= -f2 | tr -d ' ms')
  IFS=/ read -r min avg max mdev <<<"$rtt"
  loss=$(grep -o '[0-9.]*% packet loss' <<<"$out" | cut -d% -f1)
  echo "{\"tenants\":$n,\"stats_file_bytes\":$size,\"ping_min_ms\":$min,\"ping_avg_ms\":$avg,\"ping_max_ms\":$max,\"loss_pct\":$loss,\"command\":\"bash bench/stats_latency.sh $N\"}"
  kill "$pid"; wait "$pid" || true; pid=
done
