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
