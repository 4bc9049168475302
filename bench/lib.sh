# Shared by the benchmark scripts: a client and a server namespace joined by a veth pair
# (client eth0 198.51.100.10/24, server veth-srv 198.51.100.2/24), removed on exit with
# everything running in them. Source it, then call `pair TAG`; $CL, $SRV and $WORK are set.

pair() {
  CL=tg$1-cl-$$
  SRV=tg$1-srv-$$
  WORK=$(mktemp -d)
  trap pair_cleanup EXIT
  ip netns add "$CL"
  ip netns add "$SRV"
  ip -n "$CL" link add eth0 type veth peer name veth-srv netns "$SRV"
  ip -n "$CL" addr add 198.51.100.10/24 dev eth0
  ip -n "$SRV" addr add 198.51.100.2/24 dev veth-srv
  for n in "$CL" "$SRV"; do ip -n "$n" link set lo up; done
  ip -n "$CL" link set eth0 up
  ip -n "$SRV" link set veth-srv up
}

pair_cleanup() {
  if [[ -n ${pid:-} ]]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; fi
  for n in "$CL" "$SRV"; do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$WORK"
}

# start_shaper BIN CONFIG: runs the shaper in the server namespace until it is shaping ($pid)
start_shaper() {
  ip netns exec "$SRV" "$1" -c "$2" > "$WORK/shaper.log" 2>&1 &
  pid=$!
  until grep -q shaping "$WORK/shaper.log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/shaper.log"; exit 1; }
    sleep 0.1
  done
}
