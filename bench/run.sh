#!/usr/bin/env bash
# The shaping benchmark: tollgate-shaper (netdev and route) against direct veth and the
# kernel's own ingress shaping (IFB + TBF, IFB + HTB), side by side in one run, in network
# namespaces it makes and removes. Writes every figure to bench/results/shaping-<UTC>.json and
# regenerates docs/benchmarks.md (tables) and docs/plots/*.svg from it.
#
#   bash bench/run.sh            full run (about 20 minutes)
#   bash bench/run.sh --quick    every scenario, short (under 3 minutes); writes only into
#                                target/bench-quick/ (CI runs this: the harness is tested,
#                                its numbers are not asserted)
#   bash bench/run.sh --report bench/results/shaping-<UTC>.json   the page from saved figures
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --quiet -p tollgate-shaper -p tollgate-lab
exec target/release/tollgate-bench "$@"
