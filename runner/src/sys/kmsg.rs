//! Reading the kernel log (`/dev/kmsg`) from a point on: the kernel's words
//! about a rejected mount (overlayfs logs many of them with `pr_err`), and any
//! warning, oops or panic a scenario caused.

use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Held while the kernel log's words are gathered for one mount (from
/// before the mount until the log is read): instances run side by side in
/// one process, and the log does not say which mount a line is about. A
/// rootless instance that expects a mount to be refused holds it for its
/// whole run (its agent mounts out of sight; the host reads the log after).
pub fn attribution() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The log from the moment of [`KernelLog::open`] on; empty when it cannot be read.
#[derive(Debug)]
pub struct KernelLog {
    fd: Option<OwnedFd>,
}

impl KernelLog {
    pub fn open() -> KernelLog {
        let fd =
            nix::fcntl::open("/dev/kmsg", OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()).ok();
        if let Some(f) = &fd {
            let _ = nix::unistd::lseek(f, 0, nix::unistd::Whence::SeekEnd);
        }
        KernelLog { fd }
    }

    /// New messages since the last call (one per record, without the header).
    pub fn read_new(&mut self) -> Vec<String> {
        let Some(fd) = &self.fd else { return Vec::new() };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map_or(rec.as_ref(), |(_, m)| m);
                    out.push(msg.lines().next().unwrap_or("").to_string());
                }
                // EPIPE: records were overwritten; the read position moves on.
                Err(nix::errno::Errno::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// Lines about overlay (`overlayfs: ...`, `overlay: ...`).
    pub fn overlay_lines(lines: &[String]) -> Vec<String> {
        lines.iter().filter(|l| l.contains("overlay")).cloned().collect()
    }

    /// Lines that report a kernel bug.
    pub fn trouble(lines: &[String]) -> Vec<String> {
        vm::kernel_log::trouble(lines.iter().map(String::as_str))
    }
}
