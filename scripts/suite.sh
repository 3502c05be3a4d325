#!/usr/bin/env bash
# The main job: run the whole default suite on this machine's host targets
# (kernel overlayfs as root, rootless overlayfs in a user namespace,
# fuse-overlayfs) and in QEMU VMs on Debian's kernels 5.10, 6.1, 6.12, 7.2
# and 7.3 (kernel overlayfs and fuse-overlayfs on all five; rootless from
# 6.1, on an ext4 scratch disk for 6.1, whose tmpfs has no user xattrs;
# 5.10 allows no overlay mounts in a user namespace), installing what is
# missing (fuse-overlayfs, QEMU, mkfs and image tools, the kernels). One static build
# of ovlc is the CLI and the guests' /init. Needs root; extra arguments go
# to `ovlc run` (for example --format json).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
as_root "$0" "$@"
# shellcheck disable=SC2086
need $SUITE_PROGRAMS
[ -e /dev/fuse ] || modprobe fuse || true
cargo build --release --locked --bin ovlc
ovlc=target/x86_64-unknown-linux-gnu/release/ovlc
"$ovlc" kernels fetch
exec "$ovlc" run \
    --target host,host-rootless,host-fuse,vm:5.10,vm:6.1,vm:6.12,vm:7.2,vm:7.3 \
    --target vm:5.10/fuse,vm:6.1/fuse,vm:6.12/fuse,vm:7.2/fuse,vm:7.3/fuse \
    --target vm:6.1/rootless+ext4,vm:6.12/rootless,vm:7.2/rootless,vm:7.3/rootless \
    "$@" scenarios
