//! Descriptors: `open PATH as F FLAGS` binds a descriptor for the rest of
//! the instance (across renames, unlinks, copy-ups and `umount`), and each
//! operation on it is one system call on that descriptor.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use dsl::ast::{FallocMode, FlockHow, Op, OpenFlag};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::ops::{Value, MAX_READ};
use crate::sys::{self, SysResult};

/// A descriptor the scenario holds: what it was opened as, and where.
#[derive(Debug)]
pub struct Held {
    pub fd: OwnedFd,
    /// The statement that opened it, as written (`open /a as f rdonly`).
    pub opened: String,
    pub line: u32,
}

/// The descriptors an instance holds, by name. Dropping it closes them.
#[derive(Debug, Default)]
pub struct Descriptors {
    held: HashMap<String, Held>,
}

impl Descriptors {
    pub fn get(&self, name: &str) -> Option<&Held> {
        self.held.get(name)
    }

    pub fn bind(&mut self, name: &str, held: Held) {
        self.held.insert(name.to_string(), held);
    }

    /// `close F`: close(2), with its errno.
    pub fn close(&mut self, name: &str) -> Option<SysResult<()>> {
        let held = self.held.remove(name)?;
        let raw = held.fd.into_raw_fd();
        Some(if unsafe { libc::close(raw) } == 0 { Ok(()) } else { Err(Errno::last()) })
    }

    /// Closes every descriptor (the end of the instance, before its last unmount).
    pub fn close_all(&mut self) {
        self.held.clear();
    }
}

/// The open(2) flags of `open`'s words.
pub fn oflags(flags: &[OpenFlag]) -> OFlag {
    flags.iter().fold(OFlag::empty(), |acc, f| {
        acc | match f {
            OpenFlag::Rdonly => OFlag::O_RDONLY,
            OpenFlag::Wronly => OFlag::O_WRONLY,
            OpenFlag::Rdwr => OFlag::O_RDWR,
            OpenFlag::Creat => OFlag::O_CREAT,
            OpenFlag::Excl => OFlag::O_EXCL,
            OpenFlag::Trunc => OFlag::O_TRUNC,
            OpenFlag::Append => OFlag::O_APPEND,
            OpenFlag::Directory => OFlag::O_DIRECTORY,
            OpenFlag::Nofollow => OFlag::O_NOFOLLOW,
            OpenFlag::Noatime => OFlag::O_NOATIME,
            OpenFlag::Path => OFlag::O_PATH,
            OpenFlag::Tmpfile => OFlag::O_TMPFILE,
        }
    })
}

/// The flags in C's words, for reports (`O_RDWR|O_CREAT`).
pub fn flags_text(flags: &[OpenFlag]) -> String {
    flags.iter().map(|f| format!("O_{}", f.name().to_uppercase())).collect::<Vec<_>>().join("|")
}

/// `open`: openat2 inside the overlay's root (the path never leaves it). A
/// mode goes with `creat` or `tmpfile` only (openat2 refuses one otherwise).
pub fn open(root: &OwnedFd, path: &str, flags: &[OpenFlag], mode: Option<u32>) -> SysResult<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let creates = flags.iter().any(|f| matches!(f, OpenFlag::Creat | OpenFlag::Tmpfile));
    sys::open_in_root(root, rel, oflags(flags), if creates { mode.unwrap_or(0o644) } else { 0 })
}

/// The system call of an operation through a descriptor, and where the
/// descriptor came from: `pwrite64(f, at 4) — f: open /a as f rdonly (line 7)`.
pub fn syscall_name(op: &Op, held: Option<&Held>) -> String {
    let call = match op {
        Op::Open { flags, .. } => format!("openat2({})", flags_text(&flags.node)),
        Op::OpenHandle { flags, .. } => format!("open_by_handle_at({})", flags_text(&flags.node)),
        Op::FdWrite { at: None, .. } => "write".into(),
        Op::FdWrite { at: Some(_), .. } => "pwrite64".into(),
        Op::FdRead { at: None, .. } => "read".into(),
        Op::FdRead { at: Some(_), .. } => "pread64".into(),
        Op::FdReaddir { .. } => "getdents64".into(),
        Op::Rewind { .. } => "lseek(0, SEEK_SET)".into(),
        Op::Ftruncate { .. } => "ftruncate".into(),
        Op::Fsync { .. } => "fsync".into(),
        Op::Fdatasync { .. } => "fdatasync".into(),
        Op::Fchmod { .. } => "fchmod".into(),
        Op::FdChattr { .. } => "ioctl(FS_IOC_GETFLAGS, FS_IOC_SETFLAGS)".into(),
        Op::Fchown { .. } => "fchown".into(),
        Op::Fsetxattr { .. } => "fsetxattr".into(),
        Op::Fgetxattr { .. } => "fgetxattr".into(),
        Op::Fstat { .. } => "fstat".into(),
        Op::Fallocate { mode: None, .. } => "fallocate(0)".into(),
        Op::Fallocate { mode: Some(FallocMode::KeepSize), .. } => "fallocate(FALLOC_FL_KEEP_SIZE)".into(),
        Op::Fallocate { mode: Some(FallocMode::PunchHole), .. } => {
            "fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE)".into()
        }
        Op::Flock { how, nonblock, .. } => {
            let h = match how {
                FlockHow::Shared => "LOCK_SH",
                FlockHow::Exclusive => "LOCK_EX",
                FlockHow::Unlock => "LOCK_UN",
            };
            format!("flock({h}{})", if *nonblock { "|LOCK_NB" } else { "" })
        }
        Op::MmapWrite { .. } => "mmap(MAP_SHARED) + store + msync(MS_SYNC) + munmap".into(),
        Op::MmapRead { .. } => "mmap(MAP_SHARED) + load + munmap".into(),
        Op::Close { .. } => "close".into(),
        _ => String::new(),
    };
    match (op.fd(), held) {
        (Some(f), Some(h)) => format!("{call} on {}, the descriptor of `{}` (line {})", f.node, h.opened, h.line),
        _ => call,
    }
}

fn offset(bytes: u64) -> SysResult<i64> {
    i64::try_from(bytes).map_err(|_| Errno::EFBIG)
}

/// Reads at most `limit` bytes (to the end without one), at `at` or from the
/// descriptor's position.
fn read(fd: &OwnedFd, limit: Option<u64>, at: Option<u64>) -> SysResult<Value> {
    let want = limit.map_or(MAX_READ + 1, |l| usize::try_from(l).unwrap_or(usize::MAX).min(MAX_READ + 1));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = at.map(offset).transpose()?;
    while out.len() < want {
        let chunk = (want - out.len()).min(buf.len());
        let n = match pos {
            Some(p) => nix::sys::uio::pread(fd, &mut buf[..chunk], p)?,
            None => nix::unistd::read(fd, &mut buf[..chunk])?,
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        pos = pos.map(|p| p + n as i64);
    }
    if out.len() > MAX_READ {
        out.truncate(MAX_READ);
        return Ok(Value::Longer(out));
    }
    Ok(Value::Bytes(out))
}

fn write(fd: &OwnedFd, data: &[u8], at: Option<u64>) -> SysResult<Value> {
    let mut done = 0;
    let mut pos = at.map(offset).transpose()?;
    while done < data.len() {
        let n = match pos {
            Some(p) => nix::sys::uio::pwrite(fd, &data[done..], p)?,
            None => nix::unistd::write(fd, &data[done..])?,
        };
        done += n;
        pos = pos.map(|p| p + n as i64);
    }
    Ok(Value::None)
}

/// Directory entries from the descriptor's position: all of them, or the
/// first `max` names (`.` and `..` aside), the position then just past the
/// last one given. Sorted, without `.` and `..`.
fn readdir(fd: &OwnedFd, max: Option<u64>) -> SysResult<Value> {
    let raw = fd.as_raw_fd();
    let mut names = Vec::new();
    let stop = sys::each_dirent(raw, |e| {
        if e.name == b"." || e.name == b".." {
            return ControlFlow::Continue(());
        }
        names.push(e.name.to_vec());
        match max.is_some_and(|m| names.len() as u64 >= m) {
            // Keep the position just past this entry (the rest of the
            // buffer is read again by the next call).
            true => ControlFlow::Break(e.off),
            false => ControlFlow::Continue(()),
        }
    })?;
    if let Some(off) = stop {
        sys::seek(raw, off)?;
    }
    names.sort();
    Ok(Value::Names(names))
}

fn cvt(r: libc::c_int) -> SysResult<()> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// A shared mapping of the file's first `end` bytes, handed to `with`, then
/// unmapped. A mapping past the end of the file would fault (SIGBUS), so it
/// is refused first with the errno a caller can act on: EFBIG.
fn mapped<T>(fd: &OwnedFd, end: u64, write: bool, with: impl FnOnce(&mut [u8]) -> T) -> SysResult<T> {
    let st = nix::sys::stat::fstat(fd)?;
    if end > st.st_size as u64 || end == 0 {
        return Err(Errno::EFBIG);
    }
    let len = usize::try_from(end).map_err(|_| Errno::EFBIG)?;
    let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: `p` maps `len` bytes of the file, which holds at least that many.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    let out = with(bytes);
    let synced = if write { unsafe { libc::msync(p, len, libc::MS_SYNC) } } else { 0 };
    let sync_err = (synced != 0).then(Errno::last);
    unsafe { libc::munmap(p, len) };
    match sync_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Performs an operation on a held descriptor (not `open` or `close`).
pub fn perform(fd: &OwnedFd, op: &Op) -> SysResult<Value> {
    let raw = fd.as_raw_fd();
    match op {
        Op::FdWrite { data, at, .. } => write(fd, data.node.as_slice(), at.as_ref().map(|a| a.node.bytes)),
        Op::FdRead { size, at, .. } => read(fd, size.as_ref().map(|s| s.node.bytes), at.as_ref().map(|a| a.node.bytes)),
        Op::FdReaddir { max, .. } => readdir(fd, max.as_ref().map(|m| m.node)),
        Op::Rewind { .. } => {
            nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
            Ok(Value::None)
        }
        Op::Ftruncate { size, .. } => {
            nix::unistd::ftruncate(fd, offset(size.node.bytes)?)?;
            Ok(Value::None)
        }
        Op::Fsync { .. } => {
            nix::unistd::fsync(fd)?;
            Ok(Value::None)
        }
        Op::Fdatasync { .. } => {
            nix::unistd::fdatasync(fd)?;
            Ok(Value::None)
        }
        Op::Fchmod { mode, .. } => {
            cvt(unsafe { libc::fchmod(raw, mode.node.0) })?;
            Ok(Value::None)
        }
        Op::FdChattr { changes, .. } => {
            super::ops::chattr(fd, &changes.node)?;
            Ok(Value::None)
        }
        Op::Fchown { owner, .. } => {
            cvt(unsafe { libc::fchown(raw, owner.node.uid, owner.node.gid) })?;
            Ok(Value::None)
        }
        Op::Fsetxattr { name, value, .. } => {
            let n = sys::cstring(name.node.as_bytes())?;
            let v = value.node.as_slice();
            cvt(unsafe { libc::fsetxattr(raw, n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })?;
            Ok(Value::None)
        }
        Op::Fgetxattr { name, .. } => Ok(Value::Bytes(sys::fgetxattr(raw, name.node.as_bytes())?)),
        Op::Fstat { .. } => Ok(Value::Remember(super::inodes::fstat(fd)?)),
        Op::Fallocate { offset: off, len, mode, .. } => {
            let flags = match mode {
                None => 0,
                Some(FallocMode::KeepSize) => libc::FALLOC_FL_KEEP_SIZE,
                Some(FallocMode::PunchHole) => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            };
            cvt(unsafe { libc::fallocate(raw, flags, offset(off.node.bytes)?, offset(len.node.bytes)?) })?;
            Ok(Value::None)
        }
        Op::Flock { how, nonblock, .. } => {
            let mut how = match how {
                FlockHow::Shared => libc::LOCK_SH,
                FlockHow::Exclusive => libc::LOCK_EX,
                FlockHow::Unlock => libc::LOCK_UN,
            };
            if *nonblock {
                how |= libc::LOCK_NB;
            }
            cvt(unsafe { libc::flock(raw, how) })?;
            Ok(Value::None)
        }
        Op::MmapWrite { data, at, .. } => {
            let d = data.node.as_slice();
            let start = usize::try_from(at.node.bytes).map_err(|_| Errno::EFBIG)?;
            let end = at.node.bytes.checked_add(d.len() as u64).ok_or(Errno::EFBIG)?;
            mapped(fd, end, true, |m| m[start..].copy_from_slice(d))?;
            Ok(Value::None)
        }
        Op::MmapRead { size, at, .. } => {
            let start = usize::try_from(at.node.bytes).map_err(|_| Errno::EFBIG)?;
            let end = at.node.bytes.checked_add(size.node.bytes.min(MAX_READ as u64)).ok_or(Errno::EFBIG)?;
            Ok(Value::Bytes(mapped(fd, end, false, |m| m[start..].to_vec())?))
        }
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_c_names() {
        let f = [OpenFlag::Rdwr, OpenFlag::Creat, OpenFlag::Excl];
        assert_eq!(flags_text(&f), "O_RDWR|O_CREAT|O_EXCL");
        assert_eq!(oflags(&f), OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL);
        assert_eq!(oflags(&[OpenFlag::Tmpfile, OpenFlag::Wronly]), OFlag::O_TMPFILE | OFlag::O_WRONLY);
    }

    #[test]
    fn descriptors_read_write_and_list_from_their_position() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = sys::open_in_root_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let f = open(&root, "/f", &[OpenFlag::Rdwr, OpenFlag::Creat], None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(write(&f, b"hello world", None), Ok(Value::None));
        assert_eq!(read(&f, None, Some(6)), Ok(Value::Bytes(b"world".to_vec())));
        assert_eq!(read(&f, Some(4), Some(0)), Ok(Value::Bytes(b"hell".to_vec())));
        assert_eq!(read(&f, None, None), Ok(Value::Bytes(Vec::new())), "the position is at the end");
        assert_eq!(write(&f, b"J", Some(0)), Ok(Value::None));
        let mut seen = Vec::new();
        assert!(mapped(&f, 5, false, |m| seen = m.to_vec()).is_ok());
        assert_eq!(seen, b"Jello");
        assert_eq!(mapped(&f, 100, false, |_| ()), Err(Errno::EFBIG), "past the end would fault");
        for n in ["a", "b", "c"] {
            std::fs::write(dir.path().join(n), "").unwrap_or_else(|e| panic!("{e}"));
        }
        let d = open(&root, "/", &[OpenFlag::Rdonly, OpenFlag::Directory], None).unwrap_or_else(|e| panic!("{e}"));
        let Ok(Value::Names(first)) = readdir(&d, Some(2)) else { panic!("readdir") };
        let Ok(Value::Names(rest)) = readdir(&d, None) else { panic!("readdir") };
        assert_eq!((first.len(), rest.len()), (2, 2), "{first:?} {rest:?}");
        let mut all: Vec<Vec<u8>> = first.into_iter().chain(rest).collect();
        all.sort();
        assert_eq!(all, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"f".to_vec()]);
        assert!(open(&root, "/../../etc/passwd", &[OpenFlag::Rdonly], None).is_err(), "never outside the root");
    }
}
