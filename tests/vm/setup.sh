#!/usr/bin/env bash
# Prepares this machine to boot Debian's stock kernel under qemu (TCG) with virtme-ng, for the
# tests that need what the host kernel lacks (VRF, GRE/gretap, nf_flow_table). Idempotent.
#
# Installs: qemu (TCG), a Debian kernel (its modules land in /lib/modules, which the guest sees
# through the shared root filesystem and autoloads), the userland the lab drives, virtme-ng in
# a venv. Root only; Debian only.
set -euo pipefail
VENV=${TOLLGATE_VNG_DIR:-/opt/tollgate-vng}
VNG_VERSION=1.42
export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 busybox-static python3-venv kmod udev iproute2 nftables conntrack procps iputils-ping)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
have_kernel() {
  for k in /lib/modules/*; do [ -r "/boot/vmlinuz-$(basename "$k")" ] && return 0; done
  return 1
}
if ((${#missing[@]})) || ! have_kernel; then
  apt-get update -qq
fi
if ((${#missing[@]})); then
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! have_kernel; then
  # writes an initramfs (~1 min); the guest only needs vmlinuz and the modules
  apt-get install -y -qq --no-install-recommends linux-image-amd64 >/dev/null
fi
if ! "$VENV/bin/vng" --version >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION"
fi
"$VENV/bin/vng" --version
