#!/bin/sh
# Ballast for `BALLAST=bench/ballast/macvlans.sh SIDE=1 TENANTS=1,1 bash bench/gateway.sh vm`:
# what 10,000 tenants put in the macvlan driver's MAC hashes (256 lists, walked newest first):
# 10,000 macvlans, up, on the public device and 10,000 on `tgtun` (MACs like tollgate's), plus
# 10,000 dummies for the VRFs. Every device gets an index outside the lists of the devices
# present (the tenant's included), so only the MAC hashes grow on the measured paths.
set -e
sysctl -qw net.ipv6.conf.default.disable_ipv6=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ip -o link | awk -F': ' '{ print $1 }' > "$tmp/idx"
awk -v n=10000 'BEGIN { b[0] = 1 } { b[$1 % 256] = 1; if ($1 > m) m = $1 } END {
  i = m + 1000; k = 0
  while (k < 3 * n) { if (!((i % 256) in b)) idx[k++] = i; i++ }
  for (j = 0; j < n; j++) {
    printf "link add bv%d index %d type dummy\n", j, idx[3*j]
    printf "link add link eth-pub name bp%d index %d address 02:71:00:00:%02x:%02x type macvlan\n", j, idx[3*j+1], int(j/256), j%256
    printf "link add link tgtun name be%d index %d address 02:68:00:00:%02x:%02x type macvlan\n", j, idx[3*j+2], int(j/256), j%256
  }
}' "$tmp/idx" > "$tmp/add"
ip -batch "$tmp/add"
seq 0 9999 | awk '{ print "link set bp" $1 " up"; print "link set be" $1 " up" }' | ip -batch -
echo "$(ip -o link | wc -l) devices"
