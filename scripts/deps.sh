#!/usr/bin/env bash
# Installs what tollgate's demo, tests and benchmarks drive (Debian, as root). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# python3: the benchmark scripts read iperf3's JSON with it
pkgs=(iproute2 nftables iperf3 iputils-ping procps kmod make systemd python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: tollgate needs Rust >= 1.85 (edition 2024), e.g. from rustup" >&2
  exit 1
fi
