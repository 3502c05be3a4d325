//! The rootless agent's channel: `ovlc __agent` started as an unprivileged
//! host user in a user namespace of its own, mapped by the host, fed a job
//! on its standard input; and the few requests it may ask of the host
//! (drop the caches, chown to an id outside its map).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The host ids a rootless instance's user namespace maps to (0..65536 inside).
pub const ROOTLESS_BASE: u32 = 100_000;
pub const ROOTLESS_COUNT: u32 = 65_536;

/// Runs the agent in `mode` on `dir` with `payload` on its standard input, and
/// returns the last line it prints. With `serve_drop_caches`, the agent may
/// print `drop-caches`: the host (which may, unlike a user namespace) drops
/// the kernel's caches and answers with a byte on the agent's descriptor 3.
pub fn spawn_agent(mode: &str, dir: &Path, payload: &[u8], serve_drop_caches: bool) -> Result<String> {
    let ack = if serve_drop_caches { Some(nix::unistd::pipe().map_err(Error::sys("pipe"))?) } else { None };
    let extra_fd = ack.as_ref().map(|(r, _)| std::os::fd::AsRawFd::as_raw_fd(r));
    let exe = std::env::current_exe().map_err(Error::doing("cannot find the ovlc binary"))?;
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(ROOTLESS_BASE)),
        Some(nix::unistd::Gid::from_raw(ROOTLESS_BASE)),
    )
    .map_err(Error::sys(format!("chown {}", dir.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__agent").arg(mode).arg(dir);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if extra_fd.is_some() {
        cmd.env(crate::settings::HOST_ACK_FD, "3");
    }
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = extra_fd {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(ROOTLESS_BASE, ROOTLESS_BASE, ROOTLESS_BASE) != 0
                || libc::setresuid(ROOTLESS_BASE, ROOTLESS_BASE, ROOTLESS_BASE) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(Error::doing("cannot start the rootless agent"))?;
    let pid = child.id();
    crate::sys::watchdog::track(pid);
    let mut stdout =
        BufReader::new(child.stdout.take().ok_or_else(|| Error::Infrastructure("agent has no stdout".into()))?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(Error::doing("reading from the agent"))?;
    if line.trim() != "unshared" {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        return Err(Error::Infrastructure(format!(
            "the rootless agent could not enter a user namespace: {}{}",
            line.trim(),
            err.trim()
        )));
    }
    let map = format!("0 {ROOTLESS_BASE} {ROOTLESS_COUNT}\n");
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), &map).map_err(Error::doing(format!("writing /proc/{pid}/{f}")))?;
    }
    {
        let mut stdin = child.stdin.take().ok_or_else(|| Error::Infrastructure("agent has no stdin".into()))?;
        stdin.write_all(payload).map_err(Error::doing("sending the job"))?;
    }
    let mut rest = String::new();
    loop {
        let mut l = String::new();
        if stdout.read_line(&mut l).map_err(Error::doing("reading the result"))? == 0 {
            break;
        }
        let request = l.trim_end_matches('\n');
        let answer = if request == "drop-caches" {
            nix::unistd::sync();
            Some(std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok())
        } else {
            request.strip_prefix("chown ").map(|rest| host_chown(pid, rest))
        };
        if let Some(ok) = answer {
            if let Some((_, w)) = &ack {
                let _ = nix::unistd::write(w, if ok { b"y" } else { b"n" });
            }
            continue;
        }
        rest.push_str(&l);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(Error::doing("waiting for the agent"))?;
    match rest.lines().last() {
        Some(l) if status.success() => Ok(l.to_string()),
        _ => Err(Error::Infrastructure(format!("the rootless agent failed ({status}): {}", err.trim()))),
    }
}

/// Is this process an agent the host answers requests from?
pub fn in_agent() -> bool {
    crate::settings::get().host_answers
}

/// Inside an agent: asks the host to do what a user namespace may not
/// (`drop-caches`; `chown UID GID PATH` for ids outside the namespace), and
/// says whether it did. False outside an agent.
pub fn ask_host(request: &str) -> bool {
    if !in_agent() {
        return false;
    }
    println!("{request}");
    let _ = std::io::stdout().flush();
    let mut b = [0u8; 1];
    // SAFETY: descriptor 3 is the acknowledgement pipe spawn_agent set up for this process.
    matches!(nix::unistd::read(unsafe { std::os::fd::BorrowedFd::borrow_raw(3) }, &mut b), Ok(1)) && b[0] == b'y'
}

/// `chown UID GID PATH` from the rootless agent: a layer entry owned by an id
/// the namespace does not map (UID >= 65536). The ids are namespace ids,
/// shifted like the mapped ones (host id = 100000 + id), so they land
/// outside the map; the path is seen through the agent's root.
fn host_chown(pid: u32, rest: &str) -> bool {
    let mut parts = rest.splitn(3, ' ');
    let (Some(uid), Some(gid), Some(path)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else { return false };
    if uid < ROOTLESS_COUNT && gid < ROOTLESS_COUNT {
        return false;
    }
    let target = PathBuf::from(format!("/proc/{pid}/root{path}"));
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &target,
        Some(nix::unistd::Uid::from_raw(ROOTLESS_BASE + uid)),
        Some(nix::unistd::Gid::from_raw(ROOTLESS_BASE + gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
}
