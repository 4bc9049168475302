#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the namespace integration tests
# (which skip themselves with a message when not run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
