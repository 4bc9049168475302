#!/bin/sh
# Ballast for `BALLAST=bench/ballast/tables.sh SIDE=1 TENANTS=1,1 bash bench/gateway.sh vm`:
# 10,000 routing tables (ids 3000-12999, one unreachable route each), made after the kernel's
# own: the kernel finds a table by id in 256 lists walked newest first, so `local`, `main` and
# `default` (made first) end up behind about 40 tables each, as with 10,000 VRF tables.
set -e
seq 3000 12999 | awk '{ print "route add unreachable 10.255.255.1/32 table " $1 }' | ip -batch -
echo "$(ip route show table all | grep -c 10.255.255.1) tables"
