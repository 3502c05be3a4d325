#!/usr/bin/env bash
# The main job: run the whole default suite on this machine's host targets
# (kernel overlayfs as root, rootless overlayfs in a user namespace, and
# fuse-overlayfs), installing what is missing. Needs root; extra arguments go
# to `ovlc run` (for example --target host or --format json).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E "$0" "$@"; fi
    echo "the suite mounts file systems: run it as root" >&2
    exit 3
fi
if ! command -v fuse-overlayfs >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends fuse-overlayfs >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse || true
cargo build --release --locked --bin ovlc
exec ./target/release/ovlc run "$@" scenarios
