# Sourced by suite.sh and test.sh: installs the Debian packages a command
# needs when a program of theirs is missing (as root, through apt), so that
# the README's commands work on a fresh Debian machine with Rust.
# Usage: need PROGRAM:PACKAGE ... (or /PATH:PACKAGE for a file)
need() {
    local missing="" spec prog
    for spec in "$@"; do
        prog="${spec%%:*}"
        case "$prog" in
        /*) [ -e "$prog" ] && continue ;;
        *) command -v "$prog" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 && continue ;;
        esac
        missing="$missing ${spec#*:}"
    done
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing programs; install them as root: apt-get install -y$missing" >&2
        exit 3
    fi
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Becomes root (through sudo when there is one): the suite mounts file
# systems and boots VMs.
as_root() {
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then exec sudo -E "$@"; fi
        echo "this mounts file systems and boots VMs: run it as root" >&2
        exit 3
    fi
}

# The programs the main job runs: fuse-overlayfs for host-fuse, QEMU for the
# VM targets, mkfs tools for the VMs' scratch disks and filesystems per
# layer, mksquashfs and mkfs.erofs for read-only image layers.
SUITE_PROGRAMS="fuse-overlayfs:fuse-overlayfs qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs
    mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs mksquashfs:squashfs-tools mkfs.erofs:erofs-utils"
