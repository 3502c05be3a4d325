#!/usr/bin/env bash
# Builds the static ovlc that runs as /init in VM guests:
# target/guest/x86_64-unknown-linux-gnu/release/ovlc (found there by `ovlc run --target vm:...`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static' \
CARGO_PROFILE_RELEASE_DEBUG=0 \
CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin ovlc --target x86_64-unknown-linux-gnu --target-dir target/guest
