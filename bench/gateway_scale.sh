#!/usr/bin/env bash
# How the control plane and the shaper scale with tenants. In one network namespace this script
# makes and removes, for each N: a config of N tenants (vxlan, external tunnel mode, table
# isolation: what this kernel has; every tenant with `upload`), then the wall time of
# `tollgate check`, `plan` (fresh), `apply`, `apply` again (no changes), `show`, and, for N up
# to SHAPER_MAX (default 1000), tollgate-shaper's start (until "shaping"), resident memory and
# stop (SIGTERM until exit; one macvlan and one map entry per tenant); then `destroy`.
# CHECK_ONLY lists counts for which only `check --offline` is timed, on a file of that many
# source-address tenants (default: 100000; gateway tenants top out at 65,535: one conntrack
# zone each).
#
#   bash bench/gateway_scale.sh [N ...]        (default: 1 100 1000 10000)
#
# Prints one line per N and writes bench/results/gateway-scale-<UTC timestamp>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("${@:-1 100 1000 10000}")
SHAPER_MAX=${SHAPER_MAX:-1000}
CHECK_ONLY=${CHECK_ONLY:-100000}
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
gen_config() {
  local n=$1 out=$2 i id
  {
    printf '[gateway]\npublic = "eth-pub"\nunderlay = "eth-ul"\nunderlay_address = "172.31.0.1"\n'
    printf 'tunnel = "vxlan"\ntunnel_mode = "external"\nisolation = "table"\noffload = "off"\n'
    printf 'state_dir = "%s/state"\n\n[shaper]\ntap = "tg0"\nstate_dir = "%s/state"\n' "$WORK" "$WORK"
    for ((i = 0; i < n; i++)); do
      id=$((10000 + i))
      printf '\n[[tenant]]\nname = "t%d"\nid = %d\npeer = "172.%d.%d.%d"\n' $i $id $((31 + i / 62500)) $(((i / 250) % 250 + 1)) $(((i % 250) + 2))
      printf 'peer_mac = "02:00:%02x:%02x:%02x:07"\nnetworks = ["10.0.0.0/24"]\ngateway_ip = "10.0.0.1/24"\nupload = "10mbit"\n' $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255))
    done
  } > "$out"
}
# t CMD...: runs CMD (output to $WORK/last.log), prints its wall time; exit 2 ("changes
# pending", from plan) counts as success
gen_sources_config() {
  local n=$1 out=$2 i
  {
    printf '[shaper]\ninterface = "eth0"\ntap = "tg0"\n'
    for ((i = 0; i < n; i++)); do
      printf '\n[[tenant]]\nname = "s%d"\nsources = ["10.%d.%d.%d/32"]\nupload = "10mbit"\n' $i $((i >> 16)) $(((i >> 8) & 255)) $((i & 255))
    done
  } > "$out"
}
t() {
  local s e rc=0
  s=$(now)
  "$@" > "$WORK/last.log" 2>&1 || rc=$?
  e=$(now)
  if ((rc != 0 && rc != 2)); then cat "$WORK/last.log" >&2; return 1; fi
  awk "BEGIN {printf \"%.2f\", $e - $s}"
}

results=()
printf '%-8s %7s %7s %7s %7s %7s %8s %8s %8s %8s\n' tenants check plan apply noop show destroy sh_start sh_MiB sh_stop
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
  gen_config "$n" "$cfg"
  check_s=$(t ip netns exec $NS "$TG" check -c "$cfg")
  plan_s=$(t ip netns exec $NS "$TG" plan -c "$cfg")
  apply_s=$(t ip netns exec $NS "$TG" apply -c "$cfg")
  noop_s=$(t ip netns exec $NS "$TG" apply -c "$cfg")
  grep -q "no changes" "$WORK/last.log" || { echo "second apply changed something"; cat "$WORK/last.log"; exit 1; }
  show_s=$(t ip netns exec $NS "$TG" show -c "$cfg")
  start_s=null; rss=null; stop_s=null; macvlans=0
  if ((n <= SHAPER_MAX)); then
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
    start_s=$(awk "BEGIN {printf \"%.2f\", $t2 - $t1}")
    stop_s=$(awk "BEGIN {printf \"%.2f\", $t4 - $t3}")
  fi
  destroy_s=$(t ip netns exec $NS "$TG" destroy -c "$cfg")
  ip netns del $NS
  printf '%-8s %7s %7s %7s %7s %7s %8s %8s %8s %8s\n' "$n" "$check_s" "$plan_s" "$apply_s" "$noop_s" "$show_s" "$destroy_s" "$start_s" "$rss" "$stop_s"
  results+=("{\"tenants\":$n,\"check_s\":$check_s,\"plan_s\":$plan_s,\"apply_s\":$apply_s,\"noop_apply_s\":$noop_s,\"show_s\":$show_s,\"destroy_s\":$destroy_s,\"shaper_start_s\":$start_s,\"shaper_rss_mib\":$rss,\"shaper_stop_s\":$stop_s,\"macvlans\":$macvlans}")
done
for n in $CHECK_ONLY; do
  gen_sources_config "$n" "$WORK/check-$n.toml"
  check_s=$(t "$TG" check --offline -c "$WORK/check-$n.toml")
  printf '%-8s %7s   (check --offline only)\n' "$n" "$check_s"
  results+=("{\"tenants\":$n,\"check_offline_s\":$check_s}")
done
mkdir -p bench/results
out=bench/results/gateway-scale-$(date -u +%Y%m%dT%H%M%SZ).json
{
  printf '{"command":"bash bench/gateway_scale.sh %s","kernel":"%s","cpus":%s,"runs":[' "${COUNTS[*]}" "$(uname -r)" "$(nproc)"
  (IFS=,; printf '%s' "${results[*]}")
  printf ']}\n'
} > "$out"
echo "wrote $out"
