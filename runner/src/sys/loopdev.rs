//! Loop devices for filesystems made on images (`filesystem NAME
//! squashfs|erofs|ext4|xfs|btrfs`): an image (a memfd: see [`memfd`]) is
//! bound to a free loop device with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR`,
//! so the device lets go of the image as soon as the filesystem on it is
//! unmounted (or at once, when the mount fails).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{cvt, path_c, SysResult};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device bound to an image; the binding goes when the last user
/// (this descriptor, or the filesystem mounted from it) lets go.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _fd: OwnedFd,
}

fn open(path: &Path, flags: libc::c_int) -> SysResult<OwnedFd> {
    let c = path_c(path)?;
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An anonymous file for an image, and the path other programs open it by
/// (`/proc/PID/fd/N`). Not a file in the instance's directory: a loop
/// device bound to a file there pins that directory's filesystem, and when
/// an interrupted run removes the directory (detaching the instance's
/// mounts, children connected), the filesystem on the loop device would pin
/// the loop device in turn: a cycle the kernel never frees.
pub fn memfd(name: &str, size: u64) -> SysResult<(std::fs::File, PathBuf)> {
    let c = super::cstring(format!("ovlc-{name}").as_bytes())?;
    let fd = cvt(unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) } as libc::c_long)?;
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    file.set_len(size).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
    Ok((file, path))
}

/// Binds the image `backing` to a free loop device. Another thread may take
/// the device `LOOP_CTL_GET_FREE` named between the two calls: that gives
/// EBUSY, and the next free one is tried.
pub fn attach(backing: &impl AsRawFd, read_only: bool) -> SysResult<LoopDevice> {
    let control = open(Path::new("/dev/loop-control"), libc::O_RDWR)?;
    let mut last = nix::errno::Errno::EBUSY;
    for _ in 0..64 {
        let n = cvt(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) } as libc::c_long)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match open(&path, if read_only { libc::O_RDONLY } else { libc::O_RDWR }) {
            Ok(d) => d,
            // devtmpfs makes the node a moment after the device appears.
            Err(nix::errno::Errno::ENOENT) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                last = nix::errno::Errno::ENOENT;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
        match cvt(r as libc::c_long) {
            Ok(_) => return Ok(LoopDevice { path, _fd: dev }),
            Err(e @ nix::errno::Errno::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 8 + 232 + 64);
    }
}
