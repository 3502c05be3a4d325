//! The machines ovlc boots: kernel catalog, Debian package fetch, initramfs and QEMU.
//!
//! This crate is a placeholder until the VM targets land; it knows nothing about
//! scenarios and will own everything that turns a kernel version into a running guest.
