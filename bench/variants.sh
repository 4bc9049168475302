#!/usr/bin/env bash
# One tenant's TCP upload through tollgate-shaper under config variants, to choose defaults
# from measurements: achieved / configured (receiver goodput) and the ping p99 beside it.
#   bash bench/variants.sh RATE SECONDS 'label|extra config lines' ...
# e.g. bash bench/variants.sh 1mbit 30 'default|' 'burst 8kb|burst = "8kb"' 'no aqm|aqm = "off"'
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=$1 SECS=$2; shift 2
cargo build --release -q -p tollgate-shaper
SH=$PWD/target/release/tollgate-shaper
source bench/lib.sh
pair var
for v in "$@"; do
  label=${v%%|*} extra=${v#*|}
  printf '[shaper]\ninterface = "veth-srv"\ntap = "tg0"\nstate_dir = "%s/state"\n[[tenant]]\nname = "t"\nsources = ["198.51.100.10/32"]\nupload = "%s"\n%s\n' \
    "$WORK" "$RATE" "$extra" > "$WORK/t.toml"
  start_shaper "$SH" "$WORK/t.toml"
  ip netns exec "$SRV" iperf3 -s -1 -p 5201 > /dev/null 2>&1 &
  sleep 0.3
  ip netns exec "$CL" iperf3 -c 198.51.100.2 -B 198.51.100.10 -t "$SECS" -J > "$WORK/up.json" &
  up=$!
  sleep 2
  ip netns exec "$CL" ping -n -q -c $(( (SECS - 4) * 10 )) -i 0.1 -I 198.51.100.10 198.51.100.2 > "$WORK/ping.txt" || true
  wait "$up"
  kill "$pid"; wait "$pid" || true; pid=
  python3 - "$WORK/up.json" "$WORK/ping.txt" "$RATE" "$label" <<'PY'
import json, re, sys
up, ping, rate, label = sys.argv[1:5]
bps = json.load(open(up))["end"]["sum_received"]["bits_per_second"]
units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
m = re.match(r"([0-9.]+)(\w+)", rate)
conf = float(m.group(1)) * units[m.group(2)]
rtt = re.search(r"= [0-9.]+/([0-9.]+)/([0-9.]+)", open(ping).read())
print(f"{label:<24} {bps / conf:.3f} of {rate}   ping avg {rtt.group(1) if rtt else '-'} ms max {rtt.group(2) if rtt else '-'} ms")
PY
done
