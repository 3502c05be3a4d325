//! `filesystem NAME KIND [size SIZE]`: a filesystem of its own per name, for
//! layers and uppers (`layer NAME on FS`, `mount ... upper NAME on FS`).
//! tmpfs everywhere; squashfs and erofs are packed from their layers when a
//! mount first uses one and loop-mounted read-only (root targets); ext4, xfs
//! and btrfs are formatted on an image in the instance's directory and
//! loop-mounted, in VM guests only (the host's own filesystem drivers are not
//! handed images to parse). Each is mounted in the instance's directory and
//! unmounted at its end; the loop devices let go with the unmount.

use std::path::{Path, PathBuf};

use dsl::ast::{self, Driver, FsKind};

use super::{InstanceError, Run, Stop};
use crate::sys;

/// The size of a disk filesystem (ext4, xfs, btrfs) without `size`.
const DISK_SIZE: u64 = 512 << 20;

impl Run<'_> {
    /// The directory of filesystem `name` (tmpfs or a disk filesystem),
    /// mounted the first time a layer or an upper on it is made.
    pub(super) fn fs_dir(&mut self, name: &ast::Name) -> Stop<PathBuf> {
        if let Some((_, dir)) = self.fs_mounted.iter().find(|(n, _)| *n == name.node) {
            return Ok(dir.clone());
        }
        let f = self.declared_fs(name)?;
        if f.kind.node.read_only() {
            return Err(InstanceError::Stopped(format!(
                "line {}: filesystem {} is a read-only {} image: it holds layers only",
                name.span.line,
                name.node,
                f.kind.node.name()
            )));
        }
        self.can_mount(&f)?;
        let dir = self.dirs.named("fs", &name.node)?;
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        if f.kind.node == FsKind::Tmpfs {
            // At most 1 GiB, as `ovlc check` says: tmpfs takes `size=0` as no limit.
            let size = f.size.as_ref().map_or(1 << 30, |s| s.node.bytes).clamp(1, 1 << 30);
            sys::mount_legacy("ovlc", &dir, "tmpfs", sys::nodev_flags(), &format!("size={size},mode=0755")).map_err(
                |e| {
                    InstanceError::Stopped(format!(
                        "line {}: cannot mount tmpfs for {}: {e}",
                        f.name.span.line, name.node
                    ))
                },
            )?;
        } else {
            let size = f.size.as_ref().map_or(DISK_SIZE, |s| s.node.bytes).clamp(1, 1 << 30);
            let (image, path) = self.image(&f, size)?;
            let scratch = self.dirs.named("fs-image", &f.name.node)?;
            std::fs::create_dir_all(&scratch).map_err(InstanceError::io("mkdir", &scratch))?;
            sys::mkfs::format(&path, f.kind.node.name(), &self.kernel_release, &scratch).map_err(|e| {
                InstanceError::Stopped(format!("line {}: filesystem {}: {e}", f.name.span.line, name.node))
            })?;
            self.mount_image(&f, &image, &dir)?;
        }
        self.fs_mounted.push((name.node.clone(), dir.clone()));
        Ok(dir)
    }

    /// Builds every layer declared so far on the image filesystem `fs`
    /// (squashfs, erofs), packs them into the image and mounts it read-only;
    /// `asked` is the layer a mount needs.
    pub(super) fn pack_image(&mut self, fs: &ast::Name, asked: &ast::Name) -> Stop {
        if self.fs_mounted.iter().any(|(n, _)| *n == fs.node) {
            return Err(InstanceError::Stopped(format!(
                "line {}: layer {} is on {}, which was packed when a mount first used it: declare every layer \
                 on an image before that mount",
                asked.span.line, asked.node, fs.node
            )));
        }
        let f = self.declared_fs(fs)?;
        self.can_mount(&f)?;
        let mut on: Vec<ast::Layer> =
            self.declared.values().filter(|l| l.on.as_ref().is_some_and(|o| o.node == fs.node)).cloned().collect();
        on.sort_by_key(|l| l.name.span.start);
        let stage = self.dirs.named("fs-stage", &fs.node)?;
        for l in &on {
            let d = stage.join("layers").join(&l.name.node);
            std::fs::create_dir_all(&d).map_err(InstanceError::io("mkdir", &d))?;
            self.fill_layer(l, &d)?;
        }
        let (image, path) = self.image(&f, 0)?;
        sys::mkfs::pack(f.kind.node.name(), &stage, &path)
            .map_err(|e| InstanceError::Stopped(format!("line {}: filesystem {}: {e}", f.name.span.line, fs.node)))?;
        let _ = std::fs::remove_dir_all(&stage);
        let dir = self.dirs.named("fs", &fs.node)?;
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        self.mount_image(&f, &image, &dir)?;
        self.fs_mounted.push((fs.node.clone(), dir.clone()));
        for l in on {
            self.record_layer(&l.name.node, dir.join("layers").join(&l.name.node))?;
        }
        Ok(())
    }

    fn declared_fs(&self, name: &ast::Name) -> Stop<ast::Filesystem> {
        self.filesystems.get(&name.node).cloned().ok_or_else(|| {
            InstanceError::Stopped(format!(
                "line {}: filesystem {} was not declared on this path (in a branch not taken?)",
                name.span.line, name.node
            ))
        })
    }

    /// Whether this target can mount a filesystem of `f`'s kind, or the skip.
    fn can_mount(&self, f: &ast::Filesystem) -> Stop {
        let kind = f.kind.node;
        let why = if kind == FsKind::Tmpfs {
            return Ok(());
        } else if self.plan.driver == Driver::Rootless {
            "a user namespace mounts tmpfs only (rootless targets)"
        } else if kind.disk() && !sys::devices_live() {
            "disk filesystems per layer are made in VM targets only; host targets make tmpfs, squashfs and erofs"
        } else {
            return Ok(());
        };
        Err(InstanceError::Skip(format!(
            "line {}: filesystem {} is {}: {why}",
            f.kind.span.line,
            f.name.node,
            kind.name()
        )))
    }

    /// Filesystem `f`'s image, `size` bytes (sparse), and the path its mkfs
    /// writes it by: an anonymous file, gone with the loop device bound to
    /// it (see [`sys::loopdev::memfd`]).
    fn image(&self, f: &ast::Filesystem, size: u64) -> Stop<(std::fs::File, PathBuf)> {
        sys::loopdev::memfd(&f.name.node, size).map_err(|e| {
            InstanceError::Stopped(format!("line {}: filesystem {}: memfd_create: {e}", f.name.span.line, f.name.node))
        })
    }

    /// Binds `image` to a loop device and mounts it on `dir` (read-only for images).
    fn mount_image(&self, f: &ast::Filesystem, image: &std::fs::File, dir: &Path) -> Stop {
        let ro = f.kind.node.read_only();
        let line = f.name.span.line;
        let dev = sys::loopdev::attach(image, ro).map_err(|e| {
            InstanceError::Stopped(format!(
                "line {line}: filesystem {}: no loop device for its image: {e}",
                f.name.node
            ))
        })?;
        let flags = sys::nodev_flags() | if ro { libc::MS_RDONLY } else { 0 };
        let source = dev.path.to_string_lossy().into_owned();
        sys::mount_legacy(&source, dir, f.kind.node.name(), flags, "").map_err(|e| {
            InstanceError::Stopped(format!(
                "line {line}: cannot mount {} {} from {source}: {e}",
                f.kind.node.name(),
                f.name.node
            ))
        })
    }
}
