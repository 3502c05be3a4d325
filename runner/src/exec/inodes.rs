//! Remembered names: `stat`, `lstat`, `fstat`, `statfs` and `dirent` take a
//! snapshot of an inode, a file system or a directory entry under a name;
//! `compare` and `value` check against it, and `same-inode` is `compare ...
//! ino,dev same`. Raw numbers (inodes, times) go to a failure's notes only,
//! never into a step's result, so that snapshots stay the same from run to run.

use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};

use dsl::ast::{CmpOp, CompareHow, StatField};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};

use crate::sys::{self, SysResult};

/// The fields of an inode, times in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: i128,
    pub mtime: i128,
    pub ctime: i128,
}

impl Fields {
    pub fn of(st: &libc::stat) -> Fields {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Fields {
            ino: st.st_ino,
            dev: st.st_dev,
            nlink: st.st_nlink,
            mode: u64::from(st.st_mode),
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: ns(st.st_atime, st.st_atime_nsec),
            mtime: ns(st.st_mtime, st.st_mtime_nsec),
            ctime: ns(st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// What a name remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remembered {
    /// `stat`/`fstat` (following symlinks) or `lstat` (not).
    Inode { follow: bool, fields: Fields },
    /// `statfs`: f_type and f_fsid.
    Fs { ftype: u64, fsid: u64 },
    /// `dirent`: d_ino and d_type.
    Dirent { ino: u64, dtype: u64 },
}

impl Remembered {
    /// A field's value, if this kind of name holds it.
    pub fn get(&self, f: StatField) -> Option<i128> {
        Some(match (self, f) {
            (Remembered::Inode { fields: s, .. }, f) => match f {
                StatField::Ino | StatField::DIno => i128::from(s.ino),
                StatField::Dev => i128::from(s.dev),
                StatField::Nlink => i128::from(s.nlink),
                StatField::Mode => i128::from(s.mode),
                StatField::Uid => i128::from(s.uid),
                StatField::Gid => i128::from(s.gid),
                StatField::Size => i128::from(s.size),
                StatField::Blocks => i128::from(s.blocks),
                StatField::Atime => s.atime,
                StatField::Mtime => s.mtime,
                StatField::Ctime => s.ctime,
                StatField::Type | StatField::Fsid => return None,
            },
            (Remembered::Fs { ftype, .. }, StatField::Type) => i128::from(*ftype),
            (Remembered::Fs { fsid, .. }, StatField::Fsid) => i128::from(*fsid),
            (Remembered::Dirent { ino, .. }, StatField::Ino | StatField::DIno) => i128::from(*ino),
            (Remembered::Dirent { dtype, .. }, StatField::Type) => i128::from(*dtype),
            _ => return None,
        })
    }
}

/// `stat` (`follow`) or `lstat` of a path inside the overlay's root.
pub fn stat(root: &OwnedFd, path: &str, follow: bool) -> SysResult<Remembered> {
    let rel = path.trim_start_matches('/');
    let st = if follow {
        nix::sys::stat::fstat(&sys::open_in_root(root, rel, OFlag::O_PATH, 0)?)?
    } else {
        let fd = sys::open_in_root(root, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)?;
        nix::sys::stat::fstatat(&fd, "", AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW)?
    };
    Ok(Remembered::Inode { follow, fields: Fields::of(&st) })
}

/// `fstat` of a held descriptor.
pub fn fstat(fd: &OwnedFd) -> SysResult<Remembered> {
    Ok(Remembered::Inode { follow: true, fields: Fields::of(&nix::sys::stat::fstat(fd)?) })
}

/// `statfs` of a path inside the root.
pub fn statfs(root: &OwnedFd, path: &str) -> SysResult<Remembered> {
    let fd = sys::open_in_root(root, path.trim_start_matches('/'), OFlag::O_PATH, 0)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    if unsafe { libc::fstatfs(fd.as_raw_fd(), buf.as_mut_ptr()) } != 0 {
        return Err(Errno::last());
    }
    // SAFETY: fstatfs filled it.
    let st = unsafe { buf.assume_init() };
    // SAFETY: fsid_t is two ints.
    let [a, b]: [i32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok(Remembered::Fs { ftype: st.f_type as u64, fsid: (u64::from(a as u32) << 32) | u64::from(b as u32) })
}

/// `dirent DIR ENTRY`: the d_ino and d_type getdents64 gives for ENTRY (`.` and `..` too).
pub fn dirent(root: &OwnedFd, dir: &str, entry: &[u8]) -> SysResult<Remembered> {
    let fd = sys::open_in_root(root, dir.trim_start_matches('/'), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let found = sys::each_dirent(fd.as_raw_fd(), |e| match e.name == entry {
        true => ControlFlow::Break(Remembered::Dirent { ino: e.ino, dtype: u64::from(e.dtype) }),
        false => ControlFlow::Continue(()),
    })?;
    found.ok_or(Errno::ENOENT)
}

/// The same path taken again the way `like` was (lstat for `lstat` and
/// `dirent` names, statfs for `statfs` names, stat otherwise).
pub fn retake(root: &OwnedFd, path: &str, like: &Remembered) -> SysResult<Remembered> {
    match like {
        Remembered::Inode { follow, .. } => stat(root, path, *follow),
        Remembered::Dirent { .. } => stat(root, path, false),
        Remembered::Fs { .. } => statfs(root, path),
    }
}

/// `listxattr PATH` (following a final symlink), names sorted.
pub fn listxattr(root: &OwnedFd, path: &str) -> SysResult<Vec<Vec<u8>>> {
    let fd = sys::open_in_root(root, path.trim_start_matches('/'), OFlag::O_PATH, 0)?;
    let mut names = sys::listxattr(&sys::fd_path(&fd))?;
    names.sort();
    Ok(names)
}

/// `compare`: `now` (the path taken again, or another name) against `then`
/// (the name), field by field; `Err` says which field does not hold and its
/// values (for the failure's notes), `Ok` the word for the result.
pub fn compare(now: &Remembered, then: &Remembered, fields: &[StatField], how: CompareHow) -> Result<(), String> {
    for &f in fields {
        let (Some(a), Some(b)) = (now.get(f), then.get(f)) else {
            return Err(format!("{} is not remembered", f.name()));
        };
        let holds = match how {
            CompareHow::Same => a == b,
            CompareHow::Different => a != b,
            CompareHow::Newer => a > b,
            CompareHow::Older => a < b,
        };
        if !holds {
            return Err(format!("{}: {a} now, {b} as remembered", f.name()));
        }
    }
    Ok(())
}

/// `value NAME FIELD OP N`.
pub fn value(r: &Remembered, field: StatField, op: CmpOp, n: u64) -> Result<(), String> {
    let Some(v) = r.get(field) else { return Err(format!("{} is not remembered", field.name())) };
    if op.holds(v.cmp(&i128::from(n))) {
        Ok(())
    } else {
        Err(format!("{} is {v}", field.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(ino: u64, mtime: i128) -> Remembered {
        let fields = Fields {
            ino,
            dev: 1,
            nlink: 1,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size: 3,
            blocks: 8,
            atime: 0,
            mtime,
            ctime: 0,
        };
        Remembered::Inode { follow: true, fields }
    }

    #[test]
    fn comparisons_hold_field_by_field() {
        let (a, b) = (inode(5, 10), inode(5, 20));
        assert_eq!(compare(&a, &b, &[StatField::Ino, StatField::Dev], CompareHow::Same), Ok(()));
        assert!(compare(&a, &b, &[StatField::Mtime], CompareHow::Same).is_err_and(|w| w.starts_with("mtime: 10 now")));
        assert_eq!(compare(&b, &a, &[StatField::Mtime], CompareHow::Newer), Ok(()));
        assert_eq!(compare(&a, &b, &[StatField::Mtime], CompareHow::Older), Ok(()));
        assert!(compare(&a, &b, &[StatField::Ino], CompareHow::Different).is_err());
        let d = Remembered::Dirent { ino: 5, dtype: 8 };
        assert_eq!(compare(&a, &d, &[StatField::Ino], CompareHow::Same), Ok(()), "st_ino against d_ino");
        assert!(compare(&a, &d, &[StatField::Type], CompareHow::Same).is_err(), "an inode remembers no d_type");
    }

    #[test]
    fn values_compare_with_numbers() {
        let a = inode(5, 10);
        assert_eq!(value(&a, StatField::Nlink, CmpOp::Eq, 1), Ok(()));
        assert_eq!(value(&a, StatField::Nlink, CmpOp::Eq, 0), Err("nlink is 1".into()));
        assert_eq!(value(&a, StatField::Blocks, CmpOp::Gt, 0), Ok(()));
        assert!(value(&Remembered::Fs { ftype: 0x794c7630, fsid: 7 }, StatField::Type, CmpOp::Eq, 0x794c7630).is_ok());
    }

    #[test]
    fn names_are_taken_from_a_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("f"), "abc").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap_or_else(|e| panic!("{e}"));
        let root = sys::open_in_root_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let f = stat(&root, "/f", true).unwrap_or_else(|e| panic!("{e}"));
        let via_link = stat(&root, "/l", true).unwrap_or_else(|e| panic!("{e}"));
        let link = stat(&root, "/l", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(compare(&via_link, &f, &[StatField::Ino], CompareHow::Same), Ok(()));
        assert!(compare(&link, &f, &[StatField::Ino], CompareHow::Different).is_ok(), "lstat is the link itself");
        let d = dirent(&root, "/", b"f").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(compare(&f, &d, &[StatField::Ino], CompareHow::Same), Ok(()));
        assert_eq!(d.get(StatField::Type), Some(i128::from(libc::DT_REG)));
        assert_eq!(dirent(&root, "/", b"nope"), Err(Errno::ENOENT));
        assert!(dirent(&root, "/", b".").is_ok(), "`.` is an entry too");
        assert!(matches!(statfs(&root, "/f"), Ok(Remembered::Fs { .. })));
    }
}
