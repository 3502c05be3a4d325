//! Building layer directories exactly as a scenario declares them, and from
//! OCI layer tarballs (with `.wh.` whiteouts converted to overlay form).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use dsl::ast::{Attrs, Block, DevKind, EditItem, Entry, EntryKind};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::sys;

/// Why a layer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// What this place may not make at all: a device node or a `trusted.*`
    /// xattr inside a user namespace (the rootless agent). The instance is
    /// skipped with this reason, not an error.
    #[error("{0}")]
    NotPermittedHere(String),
    /// A system call failed: what, on which path, and the system's words.
    #[error("{what} {}: {why}", path.display())]
    Sys { what: String, path: PathBuf, why: String, errno: Option<i32> },
    /// Anything else: what failed, and the path it concerns.
    #[error("{0}")]
    Failed(String),
}

impl BuildError {
    /// Did the backing filesystem run out of space?
    pub fn out_of_space(&self) -> bool {
        matches!(self, BuildError::Sys { errno: Some(libc::ENOSPC), .. })
    }
}

/// An error that may carry the system's error number.
pub trait SysCode: std::fmt::Display {
    fn code(&self) -> Option<i32>;
}

impl SysCode for std::io::Error {
    fn code(&self) -> Option<i32> {
        self.raw_os_error()
    }
}

impl SysCode for nix::errno::Errno {
    fn code(&self) -> Option<i32> {
        Some(*self as i32)
    }
}

impl From<String> for BuildError {
    fn from(s: String) -> BuildError {
        BuildError::Failed(s)
    }
}

pub type BuildResult<T> = Result<T, BuildError>;

/// Like [`err`], for what a user namespace may not do: `EPERM` inside the
/// rootless agent says the driver's place cannot build this layer.
fn err_unprivileged<'a>(what: &'a str, p: &'a Path, why: &'a str) -> impl FnOnce(nix::errno::Errno) -> BuildError + 'a {
    move |e| {
        if e == nix::errno::Errno::EPERM && crate::sys::userns::in_agent() {
            BuildError::NotPermittedHere(format!("{what} {}: EPERM: {why}", p.display()))
        } else {
            BuildError::Sys { what: what.to_string(), path: p.to_path_buf(), why: e.to_string(), errno: Some(e as i32) }
        }
    }
}

fn err<'a, E: SysCode>(what: &'a str, p: &'a Path) -> impl FnOnce(E) -> BuildError + 'a {
    move |e| BuildError::Sys { what: what.to_string(), path: p.to_path_buf(), why: e.to_string(), errno: e.code() }
}

fn lchown(p: &Path, uid: Option<Uid>, gid: Option<Gid>) -> nix::Result<()> {
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, p, uid, gid, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The content of a `file PATH size N` without content: a fixed pattern, so
/// that two runs (and a lower and its copy-up) hold the same bytes.
pub fn pattern(size: u64) -> Vec<u8> {
    const UNIT: &[u8] = b"ovlc-pattern-0123456789abcdef\n";
    UNIT.iter().copied().cycle().take(size as usize).collect()
}

/// Writes [`pattern`]`(size)` to a new file a chunk at a time: a scenario's
/// `size 1000GiB` meets the backing's size limit (ENOSPC), not the
/// memory's.
fn write_pattern(p: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    const CHUNK: u64 = 30 << 11; // a whole number of pattern units (30 bytes each)
    let chunk = pattern(CHUNK.min(size));
    let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK);
        f.write_all(&chunk[..n as usize])?;
        left -= n;
    }
    f.flush()
}

fn host_path(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// `mkdir -p` with `0755 0:0` directories.
fn ensure_parents(root: &Path, target: &Path) -> BuildResult<()> {
    let Some(parent) = target.parent() else { return Ok(()) };
    if parent == root || parent.exists() {
        return Ok(());
    }
    ensure_parents(root, parent)?;
    std::fs::create_dir(parent).map_err(err("mkdir", parent))?;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(err("chmod", parent))?;
    lchown(parent, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(err("chown", parent))?;
    Ok(())
}

/// Writes every entry of a layer below `root` (which exists).
/// `opaque_xattr` is the driver's name for the opaque marker.
pub fn build(root: &Path, entries: &Block<Entry>, opaque_xattr: &str) -> BuildResult<()> {
    for item in &entries.items {
        build_entry(root, &item.node, opaque_xattr)?;
    }
    // Inode flags last: an immutable directory takes no more entries.
    for item in &entries.items {
        set_flags(root, &item.node)?;
    }
    Ok(())
}

/// An entry's `attrs +i ...`: FS_IOC_SETFLAGS on what was built.
fn set_flags(root: &Path, e: &Entry) -> BuildResult<()> {
    let Some(f) = &e.attrs.flags else { return Ok(()) };
    change_flags(&host_path(root, &e.path.node), &f.node)
}

/// FS_IOC_SETFLAGS on `p` (not following a final symlink), changed as listed.
fn change_flags(p: &Path, changes: &[dsl::ast::AttrChange]) -> BuildResult<()> {
    let p = p.to_path_buf();
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::open(&p, flags | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(err("open", &p))?;
    let what = "ioctl(FS_IOC_SETFLAGS)";
    match crate::exec::ops::chattr(&fd, changes) {
        Err(nix::errno::Errno::ENOTTY) => Err(BuildError::NotPermittedHere(format!(
            "{what} {}: ENOTTY: this filesystem has no inode flags",
            p.display()
        ))),
        Err(nix::errno::Errno::EOPNOTSUPP) => Err(BuildError::NotPermittedHere(format!(
            "{what} {}: EOPNOTSUPP: this filesystem does not keep one of these inode flags",
            p.display()
        ))),
        r => r.map_err(err_unprivileged(what, &p, "a user namespace may not set inode flags (CAP_LINUX_IMMUTABLE)")),
    }
}

/// Refuses a path whose parents below `root` include a symlink or a
/// non-directory: an edit writes with raw calls as root, and a layer's own
/// symlink must not lead it outside the layer (`edit layer l { file /link/x }`).
fn inside(root: &Path, p: &Path) -> BuildResult<()> {
    let rel = p.strip_prefix(root).map_err(|_| BuildError::Failed(format!("{} is outside the layer", p.display())))?;
    match crate::sys::bad_parent(root, rel) {
        Some((_, true)) => {
            Err(BuildError::Failed(format!("{}: a parent is a symlink, which an edit does not follow", p.display())))
        }
        Some((_, false)) => Err(BuildError::Failed(format!("{}: a parent is not a directory", p.display()))),
        None => Ok(()),
    }
}

/// Removes what is at `p` (recursively; a symlink itself, never what it
/// points to).
fn remove(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    }
}

/// `edit layer` / `edit upper`: changes `root` (a layer's or the upper's
/// directory) with raw calls, never through the overlay. An entry replaces
/// what is at its path (a directory over a directory keeps its content);
/// xattrs are set and removed raw, without a dialect's translation.
pub fn edit(root: &Path, items: &Block<EditItem>, opaque_xattr: &str) -> BuildResult<()> {
    for item in &items.items {
        match &item.node {
            EditItem::Entry(e) => {
                let p = host_path(root, &e.path.node);
                inside(root, &p)?;
                if let EntryKind::Hardlink { target } = &e.kind {
                    inside(root, &host_path(root, &target.node))?;
                }
                let keep =
                    matches!(e.kind, EntryKind::Dir { .. }) && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                if !keep && std::fs::symlink_metadata(&p).is_ok() && e.path.node != "/" {
                    remove(&p).map_err(err("remove", &p))?;
                }
                build_entry(root, e, opaque_xattr)?;
                set_flags(root, e)?;
            }
            EditItem::Attrs { path, changes } => {
                let p = host_path(root, &path.node);
                inside(root, &p)?;
                change_flags(&p, &changes.node)?;
            }
            EditItem::Remove(path) => {
                let p = host_path(root, &path.node);
                inside(root, &p)?;
                remove(&p).map_err(err("remove", &p))?;
            }
            EditItem::Xattr { path, name, value } => {
                let p = host_path(root, &path.node);
                inside(root, &p)?;
                let what = format!("setxattr {}", name.node);
                sys::setxattr(
                    &sys::path_c(&p).map_err(err("path", &p))?,
                    name.node.as_bytes(),
                    value.node.as_slice(),
                    false,
                )
                .map_err(err_unprivileged(
                    &what,
                    &p,
                    "a user namespace may not set trusted.* or security.* xattrs",
                ))?;
            }
            EditItem::NoXattr { path, name } => {
                let p = host_path(root, &path.node);
                inside(root, &p)?;
                let c = sys::path_c(&p).map_err(err("path", &p))?;
                let n = sys::cstring(name.node.as_bytes()).map_err(err("xattr name", &p))?;
                if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } != 0 {
                    let e = nix::errno::Errno::last();
                    return Err(err_unprivileged(
                        "removexattr",
                        &p,
                        "a user namespace may not remove trusted.* xattrs",
                    )(e));
                }
            }
        }
    }
    Ok(())
}

fn build_entry(root: &Path, e: &Entry, opaque_xattr: &str) -> BuildResult<()> {
    let p = host_path(root, &e.path.node);
    if e.path.node != "/" {
        ensure_parents(root, &p)?;
    }
    let mknod = |kind: SFlag, dev: libc::dev_t, perm: u32| {
        nix::sys::stat::mknod(&p, kind, Mode::from_bits_truncate(perm), dev).map_err(err_unprivileged(
            "mknod",
            &p,
            "a user namespace may not create device nodes",
        ))
    };
    let mut default_mode = 0o644;
    match &e.kind {
        EntryKind::File { content, size, sparse, verity } => {
            match (content, size) {
                (Some(c), _) => std::fs::write(&p, &c.node.0).map_err(err("write", &p))?,
                (None, Some(s)) if *sparse => {
                    std::fs::File::create(&p).and_then(|f| f.set_len(s.node.bytes)).map_err(err("write", &p))?
                }
                (None, Some(s)) => write_pattern(&p, s.node.bytes).map_err(err("write", &p))?,
                (None, None) => std::fs::write(&p, b"").map_err(err("write", &p))?,
            }
            if *verity {
                enable_verity(&p)?;
            }
        }
        // A socket inode, as bind(2) leaves one (mknod: no 108-byte sun_path limit).
        EntryKind::Socket => mknod(SFlag::S_IFSOCK, 0, 0o755)?,
        EntryKind::Dir { opaque } => {
            default_mode = 0o755;
            if !p.is_dir() {
                std::fs::create_dir(&p).map_err(err("mkdir", &p))?;
            }
            if *opaque {
                sys::setxattr(&sys::path_c(&p).map_err(err("path", &p))?, opaque_xattr.as_bytes(), b"y", false)
                    .map_err(err(&format!("setxattr {opaque_xattr} on"), &p))?;
            }
        }
        EntryKind::Symlink { target } => {
            symlink(sys::os(target.node.as_slice()), &p).map_err(err("symlink", &p))?;
        }
        EntryKind::Hardlink { target } => {
            let t = host_path(root, &target.node);
            std::fs::hard_link(&t, &p).map_err(err("link", &p))?;
            return Ok(());
        }
        EntryKind::Fifo => mknod(SFlag::S_IFIFO, 0, 0o644)?,
        EntryKind::Device { kind, dev } => {
            let k = if *kind == DevKind::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
            mknod(k, nix::sys::stat::makedev(dev.node.major.into(), dev.node.minor.into()), 0o644)?;
        }
        EntryKind::Whiteout => {
            default_mode = 0;
            mknod(SFlag::S_IFCHR, 0, 0)?;
        }
    }
    apply_attrs(&p, &e.attrs, default_mode, matches!(e.kind, EntryKind::Symlink { .. }))
}

/// fs-verity on a file just written (closed, so no writer holds it); a
/// filesystem without it skips the instance.
fn enable_verity(p: &Path) -> BuildResult<()> {
    let fd = std::fs::File::open(p).map_err(err("open", p))?;
    match sys::enable_verity(&fd.into()) {
        Ok(()) => Ok(()),
        Err(e @ (nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL)) => {
            Err(BuildError::NotPermittedHere(format!(
                "fs-verity on {}: {e}: the layer's filesystem has no fs-verity (put the layer on \
                 `filesystem NAME ext4` or btrfs, in a VM target)",
                p.display()
            )))
        }
        Err(e) => Err(err("enable fs-verity on", p)(e)),
    }
}

fn apply_attrs(p: &Path, a: &Attrs, default_mode: u32, is_symlink: bool) -> BuildResult<()> {
    let (uid, gid) = a.owner.as_ref().map_or((0, 0), |o| (o.node.uid, o.node.gid));
    // In the rootless agent's namespace an id beyond its map cannot be set:
    // the host sets it last (an owner the namespace cannot see, after which
    // the namespace may no longer change the file).
    let by_host = match lchown(p, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
        Err(nix::errno::Errno::EINVAL) if crate::sys::userns::in_agent() => true,
        r => {
            r.map_err(err("chown", p))?;
            false
        }
    };
    if !is_symlink {
        let mode = a.mode.as_ref().map_or(default_mode, |m| m.node.0);
        // After chown, which clears set-id bits.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            p,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(err("chmod", p))?;
    }
    let c = sys::path_c(p).map_err(err("path", p))?;
    for x in &a.xattrs {
        let what = format!("setxattr {} on", x.name.node);
        sys::setxattr(&c, x.name.node.as_bytes(), x.value.node.as_slice(), false).map_err(err_unprivileged(
            &what,
            p,
            "a user namespace may not set trusted.* or security.* xattrs",
        ))?;
    }
    if by_host && !crate::sys::userns::ask_host(&format!("chown {uid} {gid} {}", p.display())) {
        return Err(format!("chown {}: the host could not set {uid}:{gid}", p.display()).into());
    }
    Ok(())
}

/// Unpacks an OCI layer tarball below `root` (see [`crate::oci::apply_into`]):
/// `.wh.NAME` members become whiteouts, `.wh..wh..opq` marks its directory opaque.
pub fn unpack_oci(tar_path: &Path, root: &Path, opaque_xattr: &str) -> BuildResult<()> {
    let opts = crate::oci::ApplyOptions { opaque_xattr: opaque_xattr.to_string(), ..Default::default() };
    let layer = crate::oci::open_layer(tar_path).map_err(|e| e.to_string())?;
    crate::oci::apply_into(layer, root, &opts).map(drop).map_err(|e| {
        let msg = format!("{}: {e}", tar_path.display());
        // A device member or a trusted.* xattr in a user namespace.
        if crate::sys::userns::in_agent() && (msg.contains("EPERM") || msg.contains("Operation not permitted")) {
            BuildError::NotPermittedHere(msg)
        } else {
            BuildError::Failed(msg)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_written_in_chunks_is_the_pattern() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for n in [0u64, 29, 30, 61_439, 61_440, 61_441, 200_000] {
            let p = dir.path().join(format!("f{n}"));
            write_pattern(&p, n).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(std::fs::read(&p).unwrap_or_default(), pattern(n), "size {n}");
        }
    }
}
