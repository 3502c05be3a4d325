//! Raw system calls the executor needs beyond `nix`: the new mount API,
//! extended attributes, per-thread credentials, path resolution that never
//! leaves the overlay (`openat2` with `RESOLVE_IN_ROOT`), each instance's
//! mount namespace, and the facts of the place that shape mounts and
//! processes (device nodes live only in a disposable guest).

use std::ffi::{CStr, CString, OsStr};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

pub mod cleanup;
pub mod kmsg;
pub mod loopdev;
pub mod mkfs;
pub mod programs;
pub mod userns;
pub mod watchdog;

pub type SysResult<T> = Result<T, Errno>;

fn cvt(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

pub fn cstring(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

pub fn path_c(p: &Path) -> SysResult<CString> {
    cstring(p.as_os_str().as_bytes())
}

/// Opens `rel` (relative, or "" for the root itself) below `root` as if `root`
/// were `/`: absolute symlinks and `..` stay inside.
///
/// The kernel answers `EAGAIN` when a rename or a mount anywhere on the
/// system raced with a walk through `..` (it cannot then prove the walk
/// stayed inside): that is a request to retry, not the operation's result,
/// so it is retried (up to [`RESOLVE_RETRIES`] times). Should the kernel
/// still refuse, the thread records it ([`take_resolve_exhausted`]) and the
/// executor reports an error of the run, never `EAGAIN` as the step's result.
pub fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlag, mode: u32) -> SysResult<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    retry_eagain(|| nix::fcntl::openat2(root, rel, how))
}

/// How many times a path walk the kernel asked to retry is retried.
pub const RESOLVE_RETRIES: u32 = 10_000;

thread_local! {
    static RESOLVE_EXHAUSTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Calls `walk` again while it fails with `EAGAIN` (bounded); yields the CPU
/// between attempts after the first few so that the racing writer finishes.
fn retry_eagain<T>(mut walk: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    for attempt in 0..RESOLVE_RETRIES {
        match walk() {
            Err(Errno::EAGAIN) => {
                if attempt >= 8 {
                    std::thread::yield_now();
                }
            }
            r => return r,
        }
    }
    RESOLVE_EXHAUSTED.with(|f| f.set(true));
    Err(Errno::EAGAIN)
}

/// Did a path walk on this thread give up retrying since the last call?
/// (Clears the mark.)
pub fn take_resolve_exhausted() -> bool {
    RESOLVE_EXHAUSTED.with(|f| f.replace(false))
}

/// Opens a directory as an `O_PATH` descriptor, the root for [`open_in_root`].
pub fn open_in_root_dir(p: &Path) -> SysResult<OwnedFd> {
    nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
}

/// The `/proc/self/fd/N` path of a descriptor: path-based calls on it act on
/// the inode the descriptor names (it works for `O_PATH` descriptors too).
pub fn fd_path(fd: &OwnedFd) -> CString {
    // A decimal number never holds a NUL byte.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// `/proc/self/fd/N/name`, for the l*xattr calls on an entry of a directory.
pub fn fd_child_path(dir: RawFd, name: &[u8]) -> SysResult<CString> {
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name);
    cstring(&p)
}

/// The first parent of `rel` below `root` that a write must not go through:
/// `(its path below root, true)` for a symlink, `false` for a non-directory.
/// Missing parents are fine (the caller creates them). For writers that work
/// by path as root (layer edits, OCI layers), so that a layer's own symlink
/// never leads them out of it.
pub fn bad_parent(root: &Path, rel: &Path) -> Option<(std::path::PathBuf, bool)> {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&at) {
            if m.file_type().is_symlink() || !m.is_dir() {
                let below = at.strip_prefix(root).unwrap_or(&at).to_path_buf();
                return Some((below, m.file_type().is_symlink()));
            }
        }
    }
    None
}

/// One record of `getdents64` (struct linux_dirent64): the name without its NUL.
#[derive(Debug)]
pub struct Dirent<'a> {
    pub ino: u64,
    /// The position just past this entry (for `lseek`).
    pub off: i64,
    pub dtype: u8,
    pub name: &'a [u8],
}

/// Hands every entry of an open directory, from its current position, to
/// `each` until it breaks (`Ok(Some(value))`) or the directory ends
/// (`Ok(None)`). Read by `getdents64` itself: a failed read is an error, and
/// a malformed record is EIO.
pub fn each_dirent<T>(dir: RawFd, mut each: impl FnMut(Dirent<'_>) -> ControlFlow<T>) -> SysResult<Option<T>> {
    let mut buf = vec![0u8; 1 << 15];
    loop {
        let n = cvt(unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) })? as usize;
        if n == 0 {
            return Ok(None);
        }
        // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name (NUL-terminated).
        let mut at = 0;
        while at + 19 <= n {
            let field = |from: usize| <[u8; 8]>::try_from(&buf[from..from + 8]).map_err(|_| Errno::EIO);
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen < 19 || at + reclen > n {
                return Err(Errno::EIO);
            }
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            let entry = Dirent {
                ino: u64::from_ne_bytes(field(at)?),
                off: i64::from_ne_bytes(field(at + 8)?),
                dtype: buf[at + 18],
                name,
            };
            if let ControlFlow::Break(v) = each(entry) {
                return Ok(Some(v));
            }
            at += reclen;
        }
    }
}

/// `lseek(fd, off, SEEK_SET)`.
pub fn seek(fd: RawFd, off: i64) -> SysResult<()> {
    cvt(unsafe { libc::lseek(fd, off, libc::SEEK_SET) } as libc::c_long).map(drop)
}

/// Every name in an open directory, from its start (libc's `readdir_r`, as
/// nix 0.30 calls it, reports errors in a way that reads as the end of the
/// directory, so a driver's ENOMEM looked like an empty directory).
pub fn getdents(dir: &OwnedFd) -> SysResult<Vec<Vec<u8>>> {
    seek(dir.as_raw_fd(), 0)?;
    let mut names = Vec::new();
    each_dirent(dir.as_raw_fd(), |e| {
        names.push(e.name.to_vec());
        ControlFlow::<()>::Continue(())
    })?;
    Ok(names)
}

// ------------------------------------------------------------------ xattrs

/// Calls an xattr system call with a growing buffer until the value fits.
fn sized(mut call: impl FnMut(&mut [u8]) -> isize) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = Errno::last();
        if e != Errno::ERANGE || buf.len() > 1 << 20 {
            return Err(e);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

fn names(list: Vec<u8>) -> Vec<Vec<u8>> {
    list.split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect()
}

pub fn lgetxattr(path: &CStr, name: &[u8]) -> SysResult<Vec<u8>> {
    let name = cstring(name)?;
    sized(|b| unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), b.as_mut_ptr().cast(), b.len()) })
}

pub fn getxattr(path: &CStr, name: &[u8]) -> SysResult<Vec<u8>> {
    let name = cstring(name)?;
    sized(|b| unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), b.as_mut_ptr().cast(), b.len()) })
}

/// Extended attributes of an open object (a directory the walk holds open).
pub fn flistxattr(fd: RawFd) -> SysResult<Vec<Vec<u8>>> {
    sized(|b| unsafe { libc::flistxattr(fd, b.as_mut_ptr().cast(), b.len()) }).map(names)
}

pub fn fgetxattr(fd: RawFd, name: &[u8]) -> SysResult<Vec<u8>> {
    let name = cstring(name)?;
    sized(|b| unsafe { libc::fgetxattr(fd, name.as_ptr(), b.as_mut_ptr().cast(), b.len()) })
}

/// `listxattrat(2)` (Linux 6.13) where the kernel has it: the names of an
/// entry's xattrs without building a `/proc/self/fd/N/name` path. `None` when
/// the system call is missing, and the caller falls back.
pub fn listxattr_at(dir: RawFd, name: &[u8]) -> Option<SysResult<Vec<Vec<u8>>>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    const SYS_LISTXATTRAT: libc::c_long = 465;
    static MISSING: AtomicBool = AtomicBool::new(false);
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) || MISSING.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(n) = cstring(name) else { return Some(Err(Errno::EINVAL)) };
    let r = sized(|b| unsafe {
        libc::syscall(SYS_LISTXATTRAT, dir, n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, b.as_mut_ptr(), b.len()) as isize
    });
    if r == Err(Errno::ENOSYS) {
        MISSING.store(true, Ordering::Relaxed);
        return None;
    }
    Some(r.map(names))
}

pub fn listxattr(path: &CStr) -> SysResult<Vec<Vec<u8>>> {
    sized(|b| unsafe { libc::listxattr(path.as_ptr(), b.as_mut_ptr().cast(), b.len()) }).map(names)
}

pub fn llistxattr(path: &CStr) -> SysResult<Vec<Vec<u8>>> {
    sized(|b| unsafe { libc::llistxattr(path.as_ptr(), b.as_mut_ptr().cast(), b.len()) }).map(names)
}

pub fn setxattr(path: &CStr, name: &[u8], value: &[u8], follow: bool) -> SysResult<()> {
    let name = cstring(name)?;
    let r = unsafe {
        if follow {
            libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
        } else {
            libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
        }
    };
    cvt(r as libc::c_long).map(drop)
}

pub fn removexattr(path: &CStr, name: &[u8]) -> SysResult<()> {
    let name = cstring(name)?;
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } as libc::c_long).map(drop)
}

// ------------------------------------------------------------------ credentials

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The calling thread's effective and permitted capability sets.
fn capget() -> SysResult<[CapData; 2]> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let mut data = [CapData::default(); 2];
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) })?;
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> SysResult<()> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) }).map(drop)
}

/// Runs as another fsuid/fsgid with an empty effective capability set, on
/// this thread only (both are per-thread in Linux), and restores both after.
#[derive(Debug)]
pub struct Identity {
    saved_caps: [CapData; 2],
    saved_uid: u32,
    saved_gid: u32,
}

impl Identity {
    pub fn assume(uid: u32, gid: u32) -> SysResult<Identity> {
        let saved_caps = capget()?;
        // setfsuid returns the previous value whatever happens; read it twice to check.
        let saved_gid = unsafe { libc::setfsgid(gid) } as u32;
        if unsafe { libc::setfsgid(gid) } as u32 != gid {
            unsafe { libc::setfsgid(saved_gid) };
            return Err(Errno::EPERM);
        }
        let saved_uid = unsafe { libc::setfsuid(uid) } as u32;
        if unsafe { libc::setfsuid(uid) } as u32 != uid {
            unsafe {
                libc::setfsuid(saved_uid);
                libc::setfsgid(saved_gid);
            }
            return Err(Errno::EPERM);
        }
        let mut dropped = saved_caps;
        dropped[0].effective = 0;
        dropped[1].effective = 0;
        let id = Identity { saved_caps, saved_uid, saved_gid };
        capset(&dropped)?;
        Ok(id)
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        unsafe {
            libc::setfsuid(self.saved_uid);
            libc::setfsgid(self.saved_gid);
        }
        let _ = capset(&self.saved_caps);
    }
}

// ------------------------------------------------------------------ mounting

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;
const FSPICK_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// `fsmount` attribute: device nodes on the mount cannot be opened.
pub const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// A filesystem context from `fsopen`; its messages are the kernel's own
/// words about a rejected configuration.
#[derive(Debug)]
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    pub fn open(fstype: &str) -> SysResult<FsContext> {
        let t = cstring(fstype.as_bytes())?;
        let fd = cvt(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) })?;
        Ok(FsContext { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } })
    }

    pub fn set(&self, key: &str, value: Option<&str>) -> SysResult<()> {
        let k = cstring(key.as_bytes())?;
        let r = match value {
            None => unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    self.fd.as_raw_fd(),
                    FSCONFIG_SET_FLAG,
                    k.as_ptr(),
                    std::ptr::null::<u8>(),
                    0,
                )
            },
            Some(v) => {
                let v = cstring(v.as_bytes())?;
                unsafe {
                    libc::syscall(
                        libc::SYS_fsconfig,
                        self.fd.as_raw_fd(),
                        FSCONFIG_SET_STRING,
                        k.as_ptr(),
                        v.as_ptr(),
                        0,
                    )
                }
            }
        };
        cvt(r).map(drop)
    }

    /// `fspick`: a context on the superblock mounted at `target`, to reconfigure it.
    pub fn pick(target: &Path) -> SysResult<FsContext> {
        let t = path_c(target)?;
        let fd = cvt(unsafe { libc::syscall(libc::SYS_fspick, libc::AT_FDCWD, t.as_ptr(), FSPICK_CLOEXEC) })?;
        Ok(FsContext { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } })
    }

    /// `fsconfig(FSCONFIG_CMD_RECONFIGURE)`: applies what was set to the picked superblock.
    pub fn reconfigure(&self) -> SysResult<()> {
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_RECONFIGURE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            )
        })
        .map(drop)
    }

    /// `fsconfig(FSCONFIG_SET_FD)`: a parameter given as a descriptor.
    pub fn set_fd(&self, key: &str, fd: &OwnedFd) -> SysResult<()> {
        let k = cstring(key.as_bytes())?;
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_SET_FD,
                k.as_ptr(),
                std::ptr::null::<u8>(),
                fd.as_raw_fd(),
            )
        })
        .map(drop)
    }

    /// Creates the superblock and attaches it at `target`.
    pub fn mount_at(&self, target: &Path, flags: libc::c_uint) -> SysResult<()> {
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            )
        })?;
        let mfd = cvt(unsafe { libc::syscall(libc::SYS_fsmount, self.fd.as_raw_fd(), FSMOUNT_CLOEXEC, flags) })?;
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd as RawFd) };
        let t = path_c(target)?;
        let empty = c"";
        cvt(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .map(drop)
    }

    /// The messages the kernel left on the context (`e overlay: ...`), without the prefix letters.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..32 {
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..n as usize]).trim().to_string();
            let line = line
                .strip_prefix("e ")
                .or_else(|| line.strip_prefix("w "))
                .or_else(|| line.strip_prefix("i "))
                .map(str::to_string)
                .unwrap_or(line);
            out.push(line);
        }
        out
    }
}

// ------------------------------------------------------------------ inode flags

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;

/// `FS_IOC_GETFLAGS`: the inode flags (FS_IMMUTABLE_FL, ...) of what `fd` is open on.
pub fn inode_flags(fd: &OwnedFd) -> SysResult<u32> {
    let mut v: libc::c_int = 0;
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut v as *mut libc::c_int) } as libc::c_long)?;
    Ok(v as u32)
}

/// `FS_IOC_SETFLAGS`.
pub fn set_inode_flags(fd: &OwnedFd, flags: u32) -> SysResult<()> {
    let v = flags as libc::c_int;
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &v as *const libc::c_int) } as libc::c_long).map(drop)
}

const FS_IOC_ENABLE_VERITY: libc::c_ulong = 0x4080_6685;
const FS_IOC_MEASURE_VERITY: libc::c_ulong = 0xC004_6686;

/// `FS_IOC_ENABLE_VERITY` with SHA-256, 4096-byte blocks, no salt and no
/// signature (what `fsverity enable` does by default).
pub fn enable_verity(fd: &OwnedFd) -> SysResult<()> {
    #[repr(C)]
    struct EnableArg {
        version: u32,
        hash_algorithm: u32,
        block_size: u32,
        salt_size: u32,
        salt_ptr: u64,
        sig_size: u32,
        reserved1: u32,
        sig_ptr: u64,
        reserved2: [u64; 11],
    }
    let arg = EnableArg {
        version: 1,
        hash_algorithm: 1,
        block_size: 4096,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    const _: () = assert!(std::mem::size_of::<EnableArg>() == 128);
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_ENABLE_VERITY, &arg as *const EnableArg) } as libc::c_long)
        .map(drop)
}

/// `FS_IOC_MEASURE_VERITY`: the file's fs-verity digest as `sha256:HEX`
/// (or `sha512:HEX`, or `algorithm-N:HEX`).
pub fn measure_verity(fd: &OwnedFd) -> SysResult<String> {
    #[repr(C)]
    struct Digest {
        algorithm: u16,
        size: u16,
        digest: [u8; 64],
    }
    let mut d = Digest { algorithm: 0, size: 64, digest: [0; 64] };
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_MEASURE_VERITY, &mut d as *mut Digest) } as libc::c_long)?;
    let name = match d.algorithm {
        1 => "sha256".to_string(),
        2 => "sha512".to_string(),
        n => format!("algorithm-{n}"),
    };
    let hex: String = d.digest[..usize::from(d.size).min(64)].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{name}:{hex}"))
}

/// Clears the immutable and append-only flags of everything below `dir`
/// (not following symlinks), so that it can be removed; best effort.
pub fn clear_sticky_flags(dir: &Path) {
    const STICKY: u32 = 0x10 | 0x20;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() || !(ft.is_dir() || ft.is_file()) {
            continue;
        }
        let p = e.path();
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if let Ok(fd) = nix::fcntl::open(&p, flags, nix::sys::stat::Mode::empty()) {
            if let Ok(f) = inode_flags(&fd) {
                if f & STICKY != 0 {
                    let _ = set_inode_flags(&fd, f & !STICKY);
                }
            }
        }
        if ft.is_dir() {
            clear_sticky_flags(&p);
        }
    }
}

// ------------------------------------------------------------------ file handles

/// `MAX_HANDLE_SZ`: the largest file handle the kernel gives.
const MAX_HANDLE_SZ: usize = 128;

/// A file handle (`struct file_handle`): its type and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    pub kind: i32,
    pub bytes: Vec<u8>,
}

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the handle of what `fd` is open on.
pub fn name_to_handle(fd: &OwnedFd) -> SysResult<FileHandle> {
    let mut buf = [0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    let empty = c"";
    cvt(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            empty.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(MAX_HANDLE_SZ);
    let kind = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(FileHandle { kind, bytes: buf[8..8 + len].to_vec() })
}

/// `open_by_handle_at(mount, handle, flags)`: opens what the handle names on
/// the filesystem `mount` is on.
pub fn open_by_handle(mount: &OwnedFd, h: &FileHandle, flags: OFlag) -> SysResult<OwnedFd> {
    let mut buf = Vec::with_capacity(8 + h.bytes.len());
    buf.extend_from_slice(&(h.bytes.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&h.kind.to_ne_bytes());
    buf.extend_from_slice(&h.bytes);
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_mut_ptr(),
            (flags | OFlag::O_CLOEXEC).bits(),
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Legacy `mount(2)`.
pub fn mount_legacy(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> SysResult<()> {
    let s = cstring(source.as_bytes())?;
    let t = path_c(target)?;
    let f = cstring(fstype.as_bytes())?;
    let d = cstring(data.as_bytes())?;
    cvt(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) } as libc::c_long).map(drop)
}

pub fn umount(target: &Path, flags: libc::c_int) -> SysResult<()> {
    let t = path_c(target)?;
    cvt(unsafe { libc::umount2(t.as_ptr(), flags) } as libc::c_long).map(drop)
}

/// Is something mounted exactly at `p` (per the calling thread's mount
/// namespace: `/proc/self` would show the main thread's)?
pub fn is_mountpoint(p: &Path) -> bool {
    mountinfo_line(p).is_some()
}

/// The last line of the calling thread's `mountinfo` whose mount point is `p`.
pub fn mountinfo_line(p: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").ok()?;
    let want = p.as_os_str().as_bytes();
    let line = info.lines().rev().find(|l| l.split(' ').nth(4).is_some_and(|m| unescape_mountinfo(m) == want))?;
    Some(line.to_string())
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Moves this process into a fresh mount namespace whose mounts never propagate
/// back to the host's. Must run before any thread is started.
pub fn private_mount_namespace() -> SysResult<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    make_private(c"/")
}

/// `mount --make-rprivate PATH`.
fn make_private(path: &CStr) -> SysResult<()> {
    let none = c"none";
    cvt(unsafe {
        libc::mount(none.as_ptr(), path.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
    } as libc::c_long)
    .map(drop)
}

// ------------------------------------------------------------------ the place

/// Set in a disposable VM guest: device nodes there stay live (a scenario
/// may open them), where on the host every instance's backing and overlay
/// are mounted `nodev`.
static DISPOSABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this machine as a disposable guest (the guest agent, at start).
pub fn set_disposable() {
    DISPOSABLE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether scenarios may open device nodes here: in disposable guests only.
pub fn devices_live() -> bool {
    DISPOSABLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `MS_NODEV` unless devices are live here: what every instance mount adds.
pub fn nodev_flags() -> libc::c_ulong {
    if devices_live() {
        0
    } else {
        libc::MS_NODEV
    }
}

/// Makes a child die when `ovlc` dies, even by SIGKILL.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

thread_local! {
    /// Whether this thread has its own filesystem context (root, cwd, umask),
    /// which a thread needs before it may change its mount namespace alone.
    static OWN_FS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set when a thread could not return from an instance's namespace: it
    /// would hand that instance's mounts to the next one, so it runs none.
    static STRANDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One instance's own mount namespace, entered by the calling thread (and
/// inherited by the processes it starts: fuse-overlayfs, the rootless agent).
///
/// It is unshared from the namespace the thread was in, which holds no
/// instance's mounts (every instance mounts only in a namespace of its own),
/// so no instance ever sees, or keeps alive, another's mounts: a copy of a
/// mount pins its superblock, so an `index=on` upper would stay "in use".
/// On drop the thread returns to the namespace it came from; the instance's
/// namespace, and whatever is still mounted in it, goes with its last user.
#[derive(Debug)]
pub struct InstanceNamespace {
    back: OwnedFd,
    cwd: OwnedFd,
}

impl InstanceNamespace {
    pub fn enter() -> SysResult<InstanceNamespace> {
        use nix::sched::{unshare, CloneFlags};
        if STRANDED.with(std::cell::Cell::get) {
            return Err(Errno::ESTALE);
        }
        if !OWN_FS.with(std::cell::Cell::get) {
            unshare(CloneFlags::CLONE_FS)?;
            OWN_FS.with(|f| f.set(true));
        }
        let back = nix::fcntl::open("/proc/thread-self/ns/mnt", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let cwd = nix::fcntl::open(".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        unshare(CloneFlags::CLONE_NEWNS)?;
        let ns = InstanceNamespace { back, cwd };
        // Private whatever the namespace it came from: nothing mounted here
        // may propagate anywhere (dropping `ns` on error goes back).
        make_private(c"/")?;
        Ok(ns)
    }
}

impl Drop for InstanceNamespace {
    fn drop(&mut self) {
        // Entering a namespace moves the thread to its root: go back to
        // where it was, or relative paths (scenario files) would break.
        if nix::sched::setns(&self.back, nix::sched::CloneFlags::CLONE_NEWNS).is_err()
            || nix::unistd::fchdir(&self.cwd).is_err()
        {
            STRANDED.with(|f| f.set(true));
        }
    }
}

/// The kernel release, and its version as three numbers.
pub fn kernel_release() -> (String, [u32; 3]) {
    let rel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    (rel.clone(), parse_release(&rel))
}

pub fn parse_release(rel: &str) -> [u32; 3] {
    let mut v = [0u32; 3];
    let head: &str = rel.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap_or("");
    for (i, p) in head.split('.').take(3).enumerate() {
        v[i] = p.parse().unwrap_or(0);
    }
    v
}

/// A field of /proc/meminfo, in KiB (`MemAvailable:`).
pub fn meminfo_kib(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines().find_map(|l| l.strip_prefix(field)?.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_read_as_three_numbers() {
        assert_eq!(parse_release("6.12.117+deb13-cloud-amd64"), [6, 12, 117]);
        assert_eq!(parse_release("5.10.0-32-cloud-amd64"), [5, 10, 0]);
        assert_eq!(parse_release("7.3-rc1"), [7, 3, 0]);
        assert_eq!(parse_release("custom"), [0, 0, 0]);
    }

    #[test]
    fn a_walk_the_kernel_asks_to_retry_is_retried() {
        let mut left = 5;
        let r = retry_eagain(|| {
            if left > 0 {
                left -= 1;
                Err(Errno::EAGAIN)
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        assert!(!take_resolve_exhausted());
        // Other errors are results, returned at once.
        let mut calls = 0;
        assert_eq!(
            retry_eagain(|| -> SysResult<()> {
                calls += 1;
                Err(Errno::ENOENT)
            }),
            Err(Errno::ENOENT)
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_walk_that_never_settles_is_marked_not_reported() {
        let mut calls = 0;
        let r = retry_eagain(|| -> SysResult<()> {
            calls += 1;
            Err(Errno::EAGAIN)
        });
        assert_eq!(r, Err(Errno::EAGAIN));
        assert_eq!(calls, RESOLVE_RETRIES);
        assert!(take_resolve_exhausted(), "the executor must learn that the retries ran out");
        assert!(!take_resolve_exhausted(), "the mark is taken once");
    }
}
