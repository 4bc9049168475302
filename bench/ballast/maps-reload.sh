#!/bin/sh
# Control for bench/ballast/maps.sh: the second lab's ruleset listed and loaded back with no
# element added, so that what maps.sh measures is the elements, not the reload.
set -e
exec python3 "$(dirname "$0")/maps.py" 1
