#!/usr/bin/env bash
# Benchmarks tollgate-shaper against direct veth and against the kernel's own ingress shaping
# (IFB + TBF / HTB), all in network namespaces this script makes and removes.
#
#   bash bench/run.sh [SECONDS] [RUNS]        (defaults: 10 s, 3 runs each)
#
# Scenarios (iperf3 TCP upload, one stream, client ns -> server ns over veth):
#   direct          no redirect at all
#   shaper-netdev   through the shaper, netdev redirect, tenant rate 100gbit (not limiting)
#   shaper-route    same, route redirect
#   shaped-100m     shaper at 100mbit (netdev)  | ifb-tbf-100m | ifb-htb-100m (kernel)
# For the shaped runs the RTT under load is measured with ping beside the upload.
# Prints a table and writes bench/results/<UTC timestamp>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${2:-3}
bash scripts/deps.sh
cargo build --release --workspace --quiet
BIN=$PWD/target/release/tollgate-shaper
CL=tgbcl$$; SRV=tgbsrv$$
WORK=$(mktemp -d)
cleanup() {
  for n in $CL $SRV; do
    for p in $(ip netns pids $n 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
    ip netns del $n 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

topology() {
  cleanup_ns() { for n in $CL $SRV; do for p in $(ip netns pids $n 2>/dev/null); do kill -9 $p 2>/dev/null || true; done; ip netns del $n 2>/dev/null || true; done; }
  cleanup_ns
  for n in $CL $SRV; do
    ip netns add $n; ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  done
  ip -n $CL link add eth0 type veth peer name veth-srv netns $SRV
  ip -n $CL addr add 198.51.100.10/24 dev eth0; ip -n $CL link set eth0 up
  ip -n $SRV addr add 198.51.100.2/24 dev veth-srv; ip -n $SRV link set veth-srv up
  ip netns exec $SRV iperf3 -s -D -p 5201 --logfile "$WORK/iperf3-server.log"
  for _ in $(seq 50); do ip netns exec $SRV ss -Htln 'sport = :5201' | grep -q . && break; sleep 0.1; done
}

start_shaper() { # mode rate
  cat > "$WORK/t.toml" <<EOT
[shaper]
interface = "veth-srv"
tap = "tg0"
redirect = "$1"
state_dir = "$WORK/state"
[[tenant]]
name = "bench"
sources = ["198.51.100.10/32"]
upload = "$2"
queue = "4mb"
EOT
  ip netns exec $SRV "$BIN" --config "$WORK/t.toml" > "$WORK/shaper.log" 2>&1 &
  for _ in $(seq 100); do grep -q shaping "$WORK/shaper.log" && return 0; sleep 0.1; done
  cat "$WORK/shaper.log"; return 1
}

stop_shaper() {
  pkill -TERM -f "$BIN --config $WORK/t.toml" || true
  for _ in $(seq 100); do pgrep -f "$BIN --config $WORK/t.toml" >/dev/null || return 0; sleep 0.1; done
}

kernel_ifb() { # tbf|htb rate
  ip -n $SRV link add ifb0 type ifb; ip -n $SRV link set ifb0 up
  ip netns exec $SRV tc qdisc add dev veth-srv handle ffff: ingress
  ip netns exec $SRV tc filter add dev veth-srv parent ffff: protocol ip u32 match u32 0 0 \
      action mirred egress redirect dev ifb0
  if [ "$1" = tbf ]; then
    ip netns exec $SRV tc qdisc add dev ifb0 root tbf rate "$2" burst 64kb latency 50ms
  else
    ip netns exec $SRV tc qdisc add dev ifb0 root handle 1: htb default 10
    ip netns exec $SRV tc class add dev ifb0 parent 1: classid 1:10 htb rate "$2"
  fi
}

upload() { # -> receiver Mbit/s
  ip netns exec $CL iperf3 -c 198.51.100.2 -B 198.51.100.10 -t "$SECS" -J > "$WORK/up.json"
  python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$WORK/up.json"
}

rtt_during_upload() { # -> "goodput_mbit avg_rtt_ms"
  ip netns exec $CL ping -i 0.2 -c $((SECS * 5 - 5)) -I 198.51.100.10 198.51.100.2 > "$WORK/ping.txt" &
  local p=$!
  local g; g=$(upload)
  wait $p || true
  local r; r=$(awk -F/ '/^rtt/ {print $5}' "$WORK/ping.txt")
  echo "$g ${r:-nan}"
}

declare -A RES
record() { RES[$1]="${RES[$1]:-} $2"; }

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  topology; record direct "$(upload)"
  start_shaper netdev 100gbit; record shaper-netdev "$(upload)"; stop_shaper
  topology; start_shaper route 100gbit; record shaper-route "$(upload)"; stop_shaper
  topology; start_shaper netdev 100mbit; read -r g r < <(rtt_during_upload); record shaped-100m "$g"; record shaped-100m-rtt "$r"; stop_shaper
  topology; kernel_ifb tbf 100mbit; read -r g r < <(rtt_during_upload); record ifb-tbf-100m "$g"; record ifb-tbf-100m-rtt "$r"
  topology; kernel_ifb htb 100mbit; read -r g r < <(rtt_during_upload); record ifb-htb-100m "$g"; record ifb-htb-100m-rtt "$r"
done

OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ).json
python3 - "$OUT" "$SECS" "$RUNS" "$(uname -r)" "$(nproc)" <<PY
import json, statistics, sys
out, secs, runs, kernel, cpus = sys.argv[1:6]
res = {k: [float(x) for x in v.split()] for k, v in {
$(for k in "${!RES[@]}"; do echo "  \"$k\": \"${RES[$k]}\","; done)
}.items()}
med = {k: statistics.median(v) for k, v in res.items()}
doc = {"command": f"bash bench/run.sh {secs} {runs}", "kernel": kernel, "cpus": int(cpus),
       "seconds": int(secs), "runs": int(runs), "samples": res, "median": med,
       "ratio_shaper_netdev_vs_direct": med["shaper-netdev"] / med["direct"],
       "ratio_shaper_route_vs_direct": med["shaper-route"] / med["direct"]}
json.dump(doc, open(out, "w"), indent=2)
print(f"{'scenario':<16} {'median':>10}  samples")
for k in ["direct", "shaper-netdev", "shaper-route", "shaped-100m", "ifb-tbf-100m", "ifb-htb-100m"]:
    print(f"{k:<16} {med[k]:>8.1f}Mb  {res[k]}")
for k in ["shaped-100m-rtt", "ifb-tbf-100m-rtt", "ifb-htb-100m-rtt"]:
    print(f"{k:<16} {med[k]:>8.2f}ms  {res[k]}")
print(f"shaper/direct throughput: netdev {doc['ratio_shaper_netdev_vs_direct']:.3f}, route {doc['ratio_shaper_route_vs_direct']:.3f}")
print(f"results: {out}")
PY
