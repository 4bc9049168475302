#!/usr/bin/env bash
# How the shaper scales with shaped gateway tenants: in one network namespace this script makes
# and removes, `tollgate apply` builds a gateway of N tenants (vxlan, external tunnel mode, table
# isolation: what this kernel has), then tollgate-shaper starts on the same file (one macvlan
# and one map entry per tenant). Reports the shaper's start time (until "shaping"), its
# resident memory, and its stop time (SIGTERM until exit).
#
#   bash bench/gateway_shaper_scale.sh [N ...]        (default: 1 100 1000)
#
# Prints one line per N and writes bench/results/gateway-shaper-scale-<UTC timestamp>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("${@:-1 100 1000}")
# shellcheck disable=SC2206
COUNTS=(${COUNTS[*]})
bash scripts/deps.sh
cargo build --release --workspace --quiet
TG=$PWD/target/release/tollgate
SH=$PWD/target/release/tollgate-shaper
NS=tgbscale$$
WORK=$(mktemp -d)
cleanup() {
  for p in $(ip netns pids $NS 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del $NS 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
results=()
printf '%-8s %10s %10s %10s %10s\n' tenants apply_s start_s rss_MiB stop_s
for n in "${COUNTS[@]}"; do
  ip netns add $NS
  ip -n $NS link set lo up
  ip -n $NS link add eth-pub type veth peer name eth-pub-p
  ip -n $NS link add eth-ul type veth peer name eth-ul-p
  ip -n $NS addr add 198.51.100.1/24 dev eth-pub
  ip -n $NS addr add 172.31.0.1/16 dev eth-ul
  ip -n $NS link set eth-pub up
  ip -n $NS link set eth-ul up
  cfg=$WORK/scale-$n.toml
  {
    printf '[gateway]\npublic = "eth-pub"\nunderlay = "eth-ul"\nunderlay_address = "172.31.0.1"\n'
    printf 'tunnel = "vxlan"\ntunnel_mode = "external"\nisolation = "table"\noffload = "off"\n'
    printf 'state_dir = "%s/state"\n\n[shaper]\ntap = "tg0"\nstate_dir = "%s/state"\n' "$WORK" "$WORK"
    for ((i = 0; i < n; i++)); do
      id=$((1000 + i))
      printf '\n[[tenant]]\nname = "t%d"\nid = %d\npeer = "172.31.%d.%d"\n' $i $id $(((i / 250) + 1)) $(((i % 250) + 2))
      printf 'peer_mac = "02:00:00:%02x:%02x:07"\nnetworks = ["10.0.0.0/24"]\ngateway_ip = "10.0.0.1/24"\nupload = "10mbit"\n' $(((i >> 8) & 255)) $((i & 255))
    done
  } > "$cfg"
  t0=$(now)
  ip netns exec $NS "$TG" apply -c "$cfg" > "$WORK/apply.log"
  t1=$(now)
  ip netns exec $NS env RUST_LOG=info "$SH" -c "$cfg" > "$WORK/shaper.log" 2>&1 &
  pid=$!
  until grep -q shaping "$WORK/shaper.log"; do
    kill -0 $pid 2>/dev/null || { cat "$WORK/shaper.log"; exit 1; }
    sleep 0.02
  done
  t2=$(now)
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$pid/status)
  macvlans=$(ip -n $NS -br link show type macvlan | wc -l)
  t3=$(now)
  kill -TERM $pid
  wait $pid
  t4=$(now)
  ip netns exec $NS "$TG" destroy -c "$cfg" > /dev/null
  ip netns del $NS
  apply_s=$(awk "BEGIN {print $t1 - $t0}")
  start_s=$(awk "BEGIN {print $t2 - $t1}")
  stop_s=$(awk "BEGIN {print $t4 - $t3}")
  printf '%-8s %10.2f %10.2f %10s %10.2f   (%s macvlans)\n' "$n" "$apply_s" "$start_s" "$rss" "$stop_s" "$macvlans"
  results+=("{\"tenants\":$n,\"apply_s\":$apply_s,\"shaper_start_s\":$start_s,\"shaper_rss_mib\":$rss,\"shaper_stop_s\":$stop_s,\"macvlans\":$macvlans}")
done
mkdir -p bench/results
out=bench/results/gateway-shaper-scale-$(date -u +%Y%m%dT%H%M%SZ).json
{
  printf '{"command":"bash bench/gateway_shaper_scale.sh %s","kernel":"%s","cpus":%s,"runs":[' "${COUNTS[*]}" "$(uname -r)" "$(nproc)"
  (IFS=,; printf '%s' "${results[*]}")
  printf ']}\n'
} > "$out"
echo "wrote $out"
