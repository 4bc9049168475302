#!/bin/sh
# Ballast for `BALLAST=bench/ballast/maps.sh SIDE=1 TENANTS=1,1 bash bench/gateway.sh vm`:
# every per-tenant set and map of the second lab's ruleset grown to 10,000 elements (keys no
# packet carries), so that its packets look up maps as large as 10,000 tenants make, with
# one tenant's devices.
set -e
exec python3 "$(dirname "$0")/maps.py" 10000
