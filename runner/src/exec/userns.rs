//! `as UID:GID in userns { ... }`: the block's operations in a child process
//! in a new user namespace whose root is UID:GID, against the overlay the
//! instance mounted (the overlay's mounter stays the instance: copy-ups use
//! its credentials). The child is forked from the instance's thread (so it
//! shares the instance's mount namespace and descriptors), unshares its user
//! namespace, waits for this process to write its id maps, becomes the
//! namespace's root, runs the block and sends back the steps and failures.
//! Descriptors and names the block makes are the child's: gone at its end.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use dsl::ast;
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::{InstanceError, Run, Stop};
use crate::model::{Failure, Step};

/// What the child sends back.
#[derive(Serialize, Deserialize)]
struct Report {
    steps: Vec<Step>,
    failures: Vec<Failure>,
    /// Why the block could not run, or stopped.
    end: Option<End>,
}

#[derive(Serialize, Deserialize)]
enum End {
    Skip(String),
    Stop(String),
}

impl Run<'_> {
    pub(super) fn in_userns(&mut self, a: &ast::AsBlock, span: ast::Span) -> Stop {
        let (uid, gid) = (a.owner.node.uid, a.owner.node.gid);
        let stop = |what: &str, e: nix::errno::Errno| {
            InstanceError::Stopped(format!("line {}: `as {} in userns`: {what}: {e}", span.line, a.owner.node))
        };
        let (up_r, up_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| stop("pipe", e))?;
        let (down_r, down_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| stop("pipe", e))?;
        let (steps0, failures0) = (self.steps.len(), self.failures.len());
        // SAFETY: the child runs the block on this thread's copy of the
        // instance and leaves with _exit, never returning into the caller.
        match unsafe { nix::unistd::fork() }.map_err(|e| stop("fork", e))? {
            ForkResult::Child => {
                drop(up_r);
                drop(down_w);
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.child(a, up_w, down_r, steps0, failures0)
                }))
                .unwrap_or(3);
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(up_w);
                drop(down_r);
                // Out of time, the child is killed with the instance's other processes.
                crate::sys::watchdog::track(child.as_raw() as u32);
                let r = self.parent(child, uid, gid, up_r, down_w);
                let _ = nix::sys::wait::waitpid(child, None);
                crate::sys::watchdog::untrack(child.as_raw() as u32);
                let report = r.map_err(|e| stop("the child", e))?;
                self.steps.extend(report.steps);
                self.failures.extend(report.failures);
                let at = |why: String| format!("line {}: `as {} in userns`: {why}", span.line, a.owner.node);
                match report.end {
                    None => Ok(()),
                    Some(End::Skip(why)) => Err(InstanceError::Skip(at(why))),
                    Some(End::Stop(why)) => Err(InstanceError::Stopped(at(why))),
                }
            }
        }
    }

    /// This side: the child's id maps, then its report.
    fn parent(
        &mut self,
        child: Pid,
        uid: u32,
        gid: u32,
        up: OwnedFd,
        down: OwnedFd,
    ) -> Result<Report, nix::errno::Errno> {
        let mut up = std::fs::File::from(up);
        let mut down = std::fs::File::from(down);
        let mut b = [0u8; 1];
        if up.read(&mut b).unwrap_or(0) == 1 && b[0] == b'u' {
            let maps = [("uid_map", uid), ("gid_map", gid)];
            let written = maps.iter().try_for_each(|(f, id)| {
                std::fs::write(format!("/proc/{child}/{f}"), format!("0 {id} 1\n")).map_err(|e| format!("{f}: {e}"))
            });
            let _ = down.write_all(if written.is_ok() { b"m" } else { b"x" });
            if let Err(e) = written {
                return Ok(Report {
                    steps: Vec::new(),
                    failures: Vec::new(),
                    end: Some(End::Skip(format!("cannot map the namespace's root to {uid}:{gid} here ({e})"))),
                });
            }
        }
        drop(down);
        let mut text = Vec::new();
        let _ = up.read_to_end(&mut text);
        serde_json::from_slice(&text).map_err(|_| nix::errno::Errno::EPROTO)
    }

    /// The child: a new user namespace, its root, the block, the report.
    fn child(&mut self, a: &ast::AsBlock, up: OwnedFd, down: OwnedFd, steps0: usize, failures0: usize) -> i32 {
        let mut up = std::fs::File::from(up);
        let mut down = std::fs::File::from(down);
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let send = |up: &mut std::fs::File, r: &Report| {
            let _ = up.write_all(&serde_json::to_vec(r).unwrap_or_default());
        };
        let fail = |up: &mut std::fs::File, why: End| {
            send(up, &Report { steps: Vec::new(), failures: Vec::new(), end: Some(why) });
            1
        };
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
            return fail(&mut up, End::Skip(format!("unshare(CLONE_NEWUSER): {e}")));
        }
        let _ = up.write_all(b"u");
        let mut b = [0u8; 1];
        if down.read(&mut b).unwrap_or(0) != 1 || b[0] != b'm' {
            return 1;
        }
        let root = nix::unistd::Gid::from_raw(0);
        let became =
            nix::unistd::setresgid(root, root, root).and_then(|()| nix::unistd::setgroups(&[])).and_then(|()| {
                let r = nix::unistd::Uid::from_raw(0);
                nix::unistd::setresuid(r, r, r)
            });
        if let Err(e) = became {
            return fail(&mut up, End::Stop(format!("becoming the namespace's root: {e}")));
        }
        // A change of ids clears the parent-death signal: set it again.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let end = match self.block(&a.body) {
            Ok(()) => None,
            Err(InstanceError::Skip(s)) => Some(End::Skip(s)),
            Err(e) => Some(End::Stop(e.to_string())),
        };
        self.fds.close_all();
        let report = Report {
            steps: self.steps.split_off(steps0.min(self.steps.len())),
            failures: self.failures.split_off(failures0.min(self.failures.len())),
            end,
        };
        send(&mut up, &report);
        0
    }
}
