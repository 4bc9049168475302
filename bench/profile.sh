#!/usr/bin/env bash
# Where the unshaped shaper spends its time: one iperf3 TCP upload through tollgate-shaper
# (netdev redirect, tenant at 40 Gbit/s so the bucket never limits), with `perf stat` and
# `perf record -g` on the daemon and the machine's idle share from /proc/stat.
#   bash bench/profile.sh [SECONDS]      (default 8; needs root, perf, iperf3, nftables)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
cargo build --release -q -p tollgate-shaper
SH=$PWD/target/release/tollgate-shaper
source bench/lib.sh
pair prof
cat > "$WORK/t.toml" <<EOT
[shaper]
interface = "veth-srv"
tap = "tg0"
state_dir = "$WORK/state"
[[tenant]]
name = "bulk"
sources = ["198.51.100.10/32"]
upload = "40gbit"
EOT
start_shaper "$SH" "$WORK/t.toml"
ip netns exec "$SRV" iperf3 -s -1 -p 5201 > /dev/null 2>&1 &
sleep 0.5
ip netns exec "$CL" iperf3 -c 198.51.100.2 -B 198.51.100.10 -t "$SECS" -J > "$WORK/up.json" &
up=$!
sleep 1
read -r _ u n s i w q sq _ < /proc/stat
perf stat -e task-clock,context-switches,cpu-migrations -p "$pid" -- sleep $((SECS - 3)) 2> "$WORK/stat.txt" &
perf record -q -g -o "$WORK/perf.data" -p "$pid" -- sleep $((SECS - 3)) 2>/dev/null
wait %3 2>/dev/null || true
read -r _ u2 n2 s2 i2 w2 q2 sq2 _ < /proc/stat
wait "$up"
total=$(( (u2-u)+(n2-n)+(s2-s)+(i2-i)+(w2-w)+(q2-q)+(sq2-sq) ))
echo "receiver: $(python3 -c 'import json,sys; print("%.0f Mbit/s" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$WORK/up.json")"
echo "machine idle: $(( 100 * (i2-i) / total )) %, softirq: $(( 100 * (sq2-sq) / total )) %"
grep -E "task-clock|context-switches|cpu-migrations|seconds time" "$WORK/stat.txt" | sed 's/^ *//'
echo "top symbols of the daemon (self time):"
perf report -q -i "$WORK/perf.data" --no-children --sort symbol --percent-limit 2 2>/dev/null \
  | grep -v '^$' | grep -v '^#' | grep '%' | head -15
