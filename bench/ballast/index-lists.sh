#!/bin/sh
# Ballast for `BALLAST=bench/ballast/index-lists.sh SIDE=1 TENANTS=1,1 bash bench/gateway.sh vm`:
# 117 dummies in each device-index list holding one of the tenant's devices (`tgv*`, `tge*`,
# `tgp*`), made after them: the kernel walks those lists newest first on every route lookup
# (the input device, its VRF), and 30,000 per-tenant devices put about 117 in each, with the
# oldest tenant's at the end.
set -e
sysctl -qw net.ipv6.conf.default.disable_ipv6=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ip -o link | awk -F': ' '{ split($2, n, "@"); print $1, n[1] }' > "$tmp/idx"
awk '{ if ($2 ~ /^tg[vep][0-9]/) t[$1 % 256] = 1; if ($1 > m) m = $1 } END {
  k = 0
  for (b in t) for (j = 0; j < 117; j++) printf "link add bd%d index %d type dummy\n", k++, (int(m / 256) + 1 + j) * 256 + b
}' "$tmp/idx" > "$tmp/add"
ip -batch "$tmp/add"
echo "$(ip -o link | wc -l) devices; the tenant's: $(awk '$2 ~ /^tg[vep][0-9]/ { printf "%s (list %d) ", $2, $1 % 256 }' "$tmp/idx")"
