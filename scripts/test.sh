#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the namespace integration tests (which
# skip themselves with a message when not run as root) and the VM test of the gateway's
# reference design (Debian's stock kernel under qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# qemu, a Debian kernel and virtme-ng for the reference-design test (VRF, gretap, flowtable)
bash tests/vm/setup.sh
# cargo-deb, for the packaging test (`make deb`)
cargo deb --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# the benchmark's harness, end to end in its quick mode (its numbers are not asserted): every
# scenario runs, the JSON it writes reads back, and the page and its four plots are made
bash bench/run.sh --quick
json=$(ls -t target/bench-quick/shaping-*.json | head -1)
target/release/tollgate-bench --quick --report "$json" >/dev/null
for plot in accuracy first-seconds rtt-cdf ceiling; do
  test -s "target/bench-quick/plots/$plot.svg"
done
grep -q '### 5. Scale' target/bench-quick/benchmarks.md
