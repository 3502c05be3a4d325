#!/usr/bin/env bash
# The main job: run the whole default suite on this machine's host targets
# (kernel overlayfs as root, rootless overlayfs in a user namespace,
# fuse-overlayfs) and in QEMU VMs on Debian's kernels 5.10, 6.1, 6.12, 7.2
# and 7.3 (kernel overlayfs and fuse-overlayfs on all five; rootless from
# 6.1, on an ext4 scratch disk for 6.1, whose tmpfs has no user xattrs;
# 5.10 allows no overlay mounts in a user namespace), installing what is
# missing (fuse-overlayfs, QEMU, mkfs tools, the static guest build, the
# kernels). Needs root; extra arguments go to `ovlc run` (for example
# --format json).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E "$0" "$@"; fi
    echo "the suite mounts file systems and boots VMs: run it as root" >&2
    exit 3
fi
missing=
for tool in fuse-overlayfs:fuse-overlayfs qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs \
    mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null 2>&1 ||
        missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse || true
cargo build --release --locked --bin ovlc
bash scripts/build-guest.sh
./target/release/ovlc kernels fetch
exec ./target/release/ovlc run \
    --target host,host-rootless,host-fuse,vm:5.10,vm:6.1,vm:6.12,vm:7.2,vm:7.3 \
    --target vm:5.10/fuse,vm:6.1/fuse,vm:6.12/fuse,vm:7.2/fuse,vm:7.3/fuse \
    --target vm:6.1/rootless+ext4,vm:6.12/rootless,vm:7.2/rootless,vm:7.3/rootless \
    "$@" scenarios
