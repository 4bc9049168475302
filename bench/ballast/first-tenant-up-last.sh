#!/bin/sh
# Ballast for `BALLAST=bench/ballast/first-tenant-up-last.sh SIDE=1 TENANTS=1,10000 bash
# bench/gateway.sh vm`: takes the first tenant's (user1, id 1000) two entry macvlans down and up
# again in the 10,000-tenant lab. A macvlan enters its lower's MAC-hash list (256 lists, walked
# newest first) when it comes up, so this moves user1's to the head of their lists on the
# public device and on `tgtun`, where the last tenant's are, and changes nothing else (they
# hold no addresses or routes; the device-index lists keep their order). If user1 then measures
# like user2, the MAC lists are what separated the two.
set -e
for d in tgp1000 tge1000; do
  ip link set "$d" down
  ip link set "$d" up
done
ip -br link show tgp1000
ip -br link show tge1000
