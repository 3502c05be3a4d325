//! Operations on the merged view, each one system call (after resolving its
//! path inside the overlay, never outside it).

use std::os::fd::OwnedFd;

use dsl::ast::{NodeKind, Op, RenameFlag};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::inodes;
use crate::sys::{self, SysResult};

/// What an operation returns besides success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    None,
    Bytes(Vec<u8>),
    /// The first [`MAX_READ`] bytes of a read that had more.
    Longer(Vec<u8>),
    /// Directory entries, sorted, without `.` and `..`.
    Names(Vec<Vec<u8>>),
    /// What `stat`, `lstat`, `fstat`, `statfs` or `dirent` took, to remember.
    Remember(super::inodes::Remembered),
    /// What `handle` took, to remember.
    Handle(sys::FileHandle),
}

/// The system call an operation makes, for reports and `explain`.
pub fn syscall_name(op: &Op) -> String {
    match op {
        Op::Write { .. } => "open(O_WRONLY|O_CREAT|O_TRUNC) + write",
        Op::Append { .. } => "open(O_WRONLY|O_APPEND) + write",
        Op::Create { .. } => "open(O_CREAT|O_EXCL)",
        Op::Truncate { .. } => "truncate",
        Op::Read { .. } => "open(O_RDONLY) + read",
        Op::Readlink { .. } => "readlinkat",
        Op::Measure { .. } => "ioctl(FS_IOC_MEASURE_VERITY)",
        Op::Readdir { .. } => "open(O_DIRECTORY) + getdents64",
        Op::Mkdir { .. } => "mkdirat",
        Op::Rmdir { .. } => "unlinkat(AT_REMOVEDIR)",
        Op::Unlink { .. } => "unlinkat",
        Op::Rename { flag: None, .. } => "renameat2(0)",
        Op::Rename { flag: Some(RenameFlag::Noreplace), .. } => "renameat2(RENAME_NOREPLACE)",
        Op::Rename { flag: Some(RenameFlag::Exchange), .. } => "renameat2(RENAME_EXCHANGE)",
        Op::Rename { flag: Some(RenameFlag::Whiteout), .. } => "renameat2(RENAME_WHITEOUT)",
        Op::Link { .. } => "linkat",
        Op::Symlink { .. } => "symlinkat",
        Op::Mknod { .. } => "mknodat",
        Op::Chmod { .. } => "chmod",
        Op::Chown { .. } => "fchownat(AT_SYMLINK_NOFOLLOW)",
        Op::Touch { .. } => "utimensat(UTIME_NOW)",
        Op::Setxattr { .. } => "setxattr",
        Op::Removexattr { .. } => "removexattr",
        Op::Getxattr { .. } => "getxattr",
        Op::Stat { .. } | Op::SameInode { .. } => "stat",
        Op::Lstat { .. } => "lstat",
        Op::Statfs { .. } => "statfs",
        Op::Dirent { .. } => "open(O_DIRECTORY) + getdents64",
        Op::Compare { subject: dsl::ast::Subject::Path(_), .. } => "stat (or lstat, statfs, as the name was taken)",
        Op::Compare { .. } | Op::Value { .. } => "(none: remembered values)",
        Op::Listxattr { .. } => "listxattr",
        Op::Handle { .. } => "openat2(O_PATH) + name_to_handle_at(AT_EMPTY_PATH)",
        Op::Sleep { .. } => "clock_nanosleep",
        Op::Setacl { default: false, .. } => "setxattr(system.posix_acl_access)",
        Op::Setacl { default: true, .. } => "setxattr(system.posix_acl_default)",
        Op::Chattr { .. } => "openat2(O_RDONLY|O_NONBLOCK|O_NOFOLLOW) + ioctl(FS_IOC_GETFLAGS, FS_IOC_SETFLAGS)",
        Op::DropCaches => "write(/proc/sys/vm/drop_caches, \"3\")",
        Op::Sync => "sync",
        // `open` and the operations on descriptors are exec::fds'.
        _ => "",
    }
    .to_string()
}

fn rel(p: &str) -> &str {
    p.trim_start_matches('/')
}

/// The directory holding `path` (resolved inside the root) and the last
/// name, with the path's trailing `/` if it has one (the system call gets
/// `a/`, as written).
fn parent(root: &OwnedFd, path: &str) -> SysResult<(OwnedFd, String)> {
    let r = rel(path);
    let (trimmed, slash) = match r.strip_suffix('/') {
        Some(t) => (t, "/"),
        None => (r, ""),
    };
    if trimmed.is_empty() {
        return Ok((sys::open_in_root(root, "", OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?, ".".into()));
    }
    let (dir, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    Ok((sys::open_in_root(root, dir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?, format!("{name}{slash}")))
}

/// The object at `path`, following a final symlink (inside the root).
fn resolve(root: &OwnedFd, path: &str) -> SysResult<OwnedFd> {
    sys::open_in_root(root, rel(path), OFlag::O_PATH, 0)
}

/// `chattr`: the inode's flags, changed as listed.
pub fn chattr(fd: &OwnedFd, changes: &[dsl::ast::AttrChange]) -> SysResult<()> {
    let mut flags = sys::inode_flags(fd)?;
    for c in changes {
        if c.set {
            flags |= c.flag.bit();
        } else {
            flags &= !c.flag.bit();
        }
    }
    sys::set_inode_flags(fd, flags)
}

fn write_all(fd: &OwnedFd, data: &[u8]) -> SysResult<()> {
    let mut done = 0;
    while done < data.len() {
        done += nix::unistd::write(fd, &data[done..])?;
    }
    Ok(())
}

/// The most a `read` keeps: past it (an endless device in a VM, a huge
/// sparse file), the value is [`Value::Longer`].
pub const MAX_READ: usize = 16 << 20;

/// Reads to the end, or to [`MAX_READ`] bytes and one more.
fn read_all(fd: &OwnedFd) -> SysResult<Value> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = nix::unistd::read(fd, &mut buf)?;
        if n == 0 {
            return Ok(Value::Bytes(out));
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_READ {
            out.truncate(MAX_READ);
            return Ok(Value::Longer(out));
        }
    }
}

fn cvt(r: libc::c_int) -> SysResult<()> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Performs one operation with `root` (the merged directory) as `/`.
pub fn perform(root: &OwnedFd, op: &Op) -> SysResult<Value> {
    match op {
        Op::Write { path, data } => {
            let fd =
                sys::open_in_root(root, rel(&path.node), OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC, 0o644)?;
            write_all(&fd, data.node.as_slice())?;
            Ok(Value::None)
        }
        Op::Append { path, data } => {
            let fd = sys::open_in_root(root, rel(&path.node), OFlag::O_WRONLY | OFlag::O_APPEND, 0)?;
            write_all(&fd, data.node.as_slice())?;
            Ok(Value::None)
        }
        Op::Create { path } => {
            sys::open_in_root(root, rel(&path.node), OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL, 0o644)?;
            Ok(Value::None)
        }
        Op::Truncate { path, size } => {
            let fd = resolve(root, &path.node)?;
            let len = libc::off_t::try_from(size.node.bytes).map_err(|_| Errno::EFBIG)?;
            cvt(unsafe { libc::truncate(sys::fd_path(&fd).as_ptr(), len) })?;
            Ok(Value::None)
        }
        Op::Read { path } => {
            let fd = sys::open_in_root(root, rel(&path.node), OFlag::O_RDONLY, 0)?;
            read_all(&fd)
        }
        Op::Measure { path, .. } => {
            // Non-blocking: a FIFO without a writer answers at once.
            let fd = sys::open_in_root(root, rel(&path.node), OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
            Ok(Value::Bytes(sys::measure_verity(&fd)?.into_bytes()))
        }
        Op::Readlink { path } => {
            let (dir, name) = parent(root, &path.node)?;
            Ok(Value::Bytes(nix::fcntl::readlinkat(&dir, name.as_str())?.as_encoded_bytes().to_vec()))
        }
        Op::Readdir { path } => {
            let fd = sys::open_in_root(root, rel(&path.node), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
            Ok(Value::Names(crate::tree::list_dir(&fd)?))
        }
        Op::Mkdir { path, mode } => {
            let (dir, name) = parent(root, &path.node)?;
            let m = mode.as_ref().map_or(0o755, |m| m.node.0);
            nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(m))?;
            Ok(Value::None)
        }
        Op::Rmdir { path } | Op::Unlink { path } => {
            let (dir, name) = parent(root, &path.node)?;
            let flag = if matches!(op, Op::Rmdir { .. }) {
                nix::unistd::UnlinkatFlags::RemoveDir
            } else {
                nix::unistd::UnlinkatFlags::NoRemoveDir
            };
            nix::unistd::unlinkat(&dir, name.as_str(), flag)?;
            Ok(Value::None)
        }
        Op::Rename { from, to, flag } => {
            let (d1, n1) = parent(root, &from.node)?;
            let (d2, n2) = parent(root, &to.node)?;
            let f = match flag {
                None => RenameFlags::empty(),
                Some(RenameFlag::Noreplace) => RenameFlags::RENAME_NOREPLACE,
                Some(RenameFlag::Exchange) => RenameFlags::RENAME_EXCHANGE,
                Some(RenameFlag::Whiteout) => RenameFlags::RENAME_WHITEOUT,
            };
            nix::fcntl::renameat2(&d1, n1.as_str(), &d2, n2.as_str(), f)?;
            Ok(Value::None)
        }
        Op::Link { from, to } => {
            let (d1, n1) = parent(root, &from.node)?;
            let (d2, n2) = parent(root, &to.node)?;
            nix::unistd::linkat(&d1, n1.as_str(), &d2, n2.as_str(), AtFlags::empty())?;
            Ok(Value::None)
        }
        Op::Symlink { path, target } => {
            let (dir, name) = parent(root, &path.node)?;
            nix::unistd::symlinkat(sys::os(target.node.as_slice()), &dir, name.as_str())?;
            Ok(Value::None)
        }
        Op::Mknod { path, node } => {
            let (dir, name) = parent(root, &path.node)?;
            let (kind, dev) = match node.node {
                NodeKind::Fifo => (SFlag::S_IFIFO, 0),
                NodeKind::Socket => (SFlag::S_IFSOCK, 0),
                NodeKind::Char(d) => (SFlag::S_IFCHR, nix::sys::stat::makedev(d.major.into(), d.minor.into())),
                NodeKind::Block(d) => (SFlag::S_IFBLK, nix::sys::stat::makedev(d.major.into(), d.minor.into())),
            };
            nix::sys::stat::mknodat(&dir, name.as_str(), kind, Mode::from_bits_truncate(0o644), dev)?;
            Ok(Value::None)
        }
        Op::Chmod { path, mode } => {
            let fd = resolve(root, &path.node)?;
            cvt(unsafe { libc::chmod(sys::fd_path(&fd).as_ptr(), mode.node.0) })?;
            Ok(Value::None)
        }
        Op::Chown { path, owner } => {
            let (dir, name) = parent(root, &path.node)?;
            nix::unistd::fchownat(
                &dir,
                name.as_str(),
                Some(Uid::from_raw(owner.node.uid)),
                Some(Gid::from_raw(owner.node.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            Ok(Value::None)
        }
        Op::Touch { path } => {
            let fd = resolve(root, &path.node)?;
            cvt(unsafe { libc::utimensat(libc::AT_FDCWD, sys::fd_path(&fd).as_ptr(), std::ptr::null(), 0) })?;
            Ok(Value::None)
        }
        Op::Setxattr { path, name, value } => {
            let fd = resolve(root, &path.node)?;
            sys::setxattr(&sys::fd_path(&fd), name.node.as_bytes(), value.node.as_slice(), true)?;
            Ok(Value::None)
        }
        Op::Removexattr { path, name } => {
            let fd = resolve(root, &path.node)?;
            sys::removexattr(&sys::fd_path(&fd), name.node.as_bytes())?;
            Ok(Value::None)
        }
        Op::Getxattr { path, name } => {
            let fd = resolve(root, &path.node)?;
            Ok(Value::Bytes(sys::getxattr(&sys::fd_path(&fd), name.node.as_bytes())?))
        }
        Op::Stat { path, .. } | Op::SameInode { path, .. } => {
            Ok(Value::Remember(inodes::stat(root, &path.node, true)?))
        }
        Op::Lstat { path, .. } => Ok(Value::Remember(inodes::stat(root, &path.node, false)?)),
        Op::Statfs { path, .. } => Ok(Value::Remember(inodes::statfs(root, &path.node)?)),
        Op::Dirent { dir, entry, .. } => Ok(Value::Remember(inodes::dirent(root, &dir.node, entry.node.as_slice())?)),
        Op::Listxattr { path } => Ok(Value::Names(inodes::listxattr(root, &path.node)?)),
        Op::Handle { path, .. } => Ok(Value::Handle(sys::name_to_handle(&resolve(root, &path.node)?)?)),
        Op::Setacl { path, default, acl } => {
            let fd = resolve(root, &path.node)?;
            let name = dsl::acl::xattr_name(*default);
            sys::setxattr(&sys::fd_path(&fd), name.as_bytes(), &acl.node.encode(), true)?;
            Ok(Value::None)
        }
        Op::Chattr { path, changes } => {
            let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW;
            chattr(&sys::open_in_root(root, rel(&path.node), flags, 0)?, &changes.node)?;
            Ok(Value::None)
        }
        // `open` and the operations on descriptors are exec::fds';
        // `sync` and `drop-caches` are [`whole_kernel`]'s.
        _ => Err(Errno::EINVAL),
    }
}

/// `sync` and `drop-caches`: the whole kernel's, mounted or not.
pub fn whole_kernel(op: &Op) -> Result<Value, Errno> {
    match op {
        Op::DropCaches => {
            let fd = nix::fcntl::open("/proc/sys/vm/drop_caches", OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
            write_all(&fd, b"3")?;
            Ok(Value::None)
        }
        Op::Sync => {
            nix::unistd::sync();
            Ok(Value::None)
        }
        _ => Err(Errno::EINVAL),
    }
}
