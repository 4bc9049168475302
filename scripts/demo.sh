#!/usr/bin/env bash
# One command for a newcomer: install, build, and run the shaper demo in network namespaces.
# Extra arguments go to `tollgate-demo` (e.g. --mode route --seconds 20, --only gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --workspace --quiet
exec ./target/release/tollgate-demo "$@"
