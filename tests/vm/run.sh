#!/usr/bin/env bash
# run.sh CMD [ARGS...]: boots Debian's stock kernel under qemu/TCG with virtme-ng, with this
# machine's root filesystem shared read-only (guest writes go to a tmpfs overlay), runs CMD as
# root in the guest and exits with its status. The guest has no network device: every topology
# lives in namespaces inside it. Needs tests/vm/setup.sh first.
#
# Knobs: KVER (default: newest kernel with /boot/vmlinuz-* and /lib/modules/*), VM_MEM (768M),
# VM_TIMEOUT seconds (1500), TOLLGATE_VNG_DIR (/opt/tollgate-vng).
#
# Facts this relies on (tested here): KVM hangs on this host, so TCG only, and 1 vCPU (2 made
# every program start 5-6x slower); qemu reopens a regular-file stdout with O_TRUNC, so vng's
# output always goes through pipes; the TCG translation cache is capped at 256 MiB.
set -u
VENV=${TOLLGATE_VNG_DIR:-/opt/tollgate-vng}
if [ -z "${KVER:-}" ]; then
  for k in $(ls /lib/modules 2>/dev/null | sort -V -r); do
    [ -r "/boot/vmlinuz-$k" ] && { KVER=$k; break; }
  done
fi
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
[ -n "${KVER:-}" ] || { echo "no Debian kernel installed: run tests/vm/setup.sh" >&2; exit 2; }
[ -x "$VENV/bin/vng" ] || { echo "virtme-ng missing: run tests/vm/setup.sh" >&2; exit 2; }
export PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
cmd=$(printf '%q ' "$@")
set -o pipefail
timeout -k 10 "${VM_TIMEOUT:-1500}" vng --run "/boot/vmlinuz-$KVER" \
    --disable-kvm --force-9p \
    --memory "${VM_MEM:-768M}" --cpus 1 \
    --append 'modprobe.blacklist=kvm,kvm_amd,kvm_intel' \
    --qemu-opts="-accel tcg,tb-size=256" \
    --exec "$cmd" 2> >(cat >&2) | cat
rc=${PIPESTATUS[0]}
sleep 0.2
exit "$rc"
