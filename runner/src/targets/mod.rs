//! Targets: where a plan runs. A target is a place and a driver: this
//! machine's kernel (`host`, with the rootless `agent` in a user namespace,
//! and fuse-overlayfs), or a kernel booted under QEMU (`vm`).

pub mod agent;
pub mod host;
pub mod vm;
