#!/usr/bin/env bash
# The tests: every test of the workspace, with fixed seeds (PROPTEST_CASES
# generated cases per property), installing what they need when missing:
# what the main job needs, plus xmllint (JUnit schema), Chromium (the HTML
# report), GNU tar and Python (foreign readers of exported layers). As root:
# the executor's tests mount, the VM tests boot the five kernels (fetched
# when missing); then the unit tests again as an unprivileged user. Extra
# arguments go to the first `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
as_root "$0" "$@"
# shellcheck disable=SC2086
need $SUITE_PROGRAMS xmllint:libxml2-utils chromium:chromium /usr/share/fonts/truetype/dejavu:fonts-dejavu-core \
    tar:tar python3:python3 unshare:util-linux
[ -e /dev/fuse ] || modprobe fuse || true
export PROPTEST_CASES="${PROPTEST_CASES:-3000}"
cargo test --workspace --release --locked --no-fail-fast "$@"
# The unit tests (`--lib`) need no privilege: they run again as nobody, in a
# user namespace of their own (which keeps the checkout readable wherever it is).
exec unshare --user --map-user=65534 --map-group=65534 -- cargo test --workspace --release --locked --lib
