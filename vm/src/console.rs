//! The serial console of a running machine: QEMU's `-serial stdio` on a
//! pseudo-terminal driven by rexpect, read line by line under watchdogs (boot,
//! progress, silence, total), until the machine powers off, dies or is stopped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::qemu::{args, qemu_binary, Accel, Machine};
use crate::VmError;

/// How long a machine may take, and what it may not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchdog {
    /// From QEMU's start to the first progress line.
    pub boot: Duration,
    /// Between two progress lines (for example the start and the end of one
    /// unit of work).
    pub progress: Duration,
    /// Without any console output at all.
    pub silence: Duration,
    /// The whole machine.
    pub total: Duration,
}

impl Watchdog {
    /// One limit for everything: for machines that report no progress.
    pub fn total(limit: Duration) -> Watchdog {
        Watchdog { boot: limit, progress: limit, silence: limit, total: limit }
    }
}

/// What a console line means to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Kernel chatter or anything else: only resets the silence watchdog.
    Output,
    /// The work moved on: resets the progress watchdog too.
    Progress,
}

/// What a machine printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    /// Every line, without carriage returns.
    pub output: String,
    /// Set when a watchdog stopped the machine: which one, and its limit.
    pub timeout: Option<String>,
    /// When the first progress line came, from QEMU's start.
    pub first_progress: Option<Duration>,
    /// How long QEMU ran.
    pub elapsed: Duration,
}

impl Console {
    pub fn timed_out(&self) -> bool {
        self.timeout.is_some()
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// rexpect reads bytes one by one and widens each to a char: put the bytes
/// back together so UTF-8 survives.
fn bytes_of(widened: &str) -> String {
    let bytes: Vec<u8> = widened.chars().map(|c| c as u32 as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Boots `m` with its serial console on a pseudo-terminal and reads it until
/// QEMU exits or a watchdog fires (QEMU is then killed). `on_line` sees every
/// line as it arrives.
pub fn run(m: &Machine, wd: &Watchdog, mut on_line: impl FnMut(&str) -> Line) -> Result<Console, VmError> {
    let bin = qemu_binary()?;
    let mut cmd = Command::new(&bin);
    cmd.args(args(m));
    // QEMU must not outlive ovlc, even when ovlc is killed.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc_prctl_pdeathsig() != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // rexpect polls; a short read timeout lets the watchdogs run between lines.
    let mut session = rexpect::session::spawn_command(cmd, Some(250))
        .map_err(|e| VmError::Qemu(format!("starting {} on a pseudo-terminal: {e}", bin.display())))?;
    session.process_mut().set_kill_timeout(Some(2000));
    let start = Instant::now();
    let mut last_output = start;
    let mut last_progress: Option<Instant> = None;
    let mut first_progress = None;
    let mut output = String::new();
    let mut timeout = None;
    loop {
        match session.read_line() {
            Ok(raw) => {
                let line = bytes_of(&raw).replace('\r', "");
                let now = Instant::now();
                last_output = now;
                if on_line(&line) == Line::Progress {
                    last_progress = Some(now);
                    first_progress.get_or_insert(now - start);
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(rexpect::error::Error::Timeout { .. }) => {}
            Err(rexpect::error::Error::EOF { got, .. }) => {
                let rest = bytes_of(&got).replace('\r', "");
                if !rest.is_empty() {
                    on_line(&rest);
                    output.push_str(&rest);
                    output.push('\n');
                }
                break;
            }
            Err(e) => return Err(VmError::Qemu(format!("reading the console: {e}"))),
        }
        let now = Instant::now();
        let fired = if now - start > wd.total {
            Some(format!("the machine ran longer than {} s", wd.total.as_secs()))
        } else if last_progress.is_none() && now - start > wd.boot {
            Some(format!("the machine did not get ready within {} s", wd.boot.as_secs()))
        } else if last_progress.is_some_and(|p| now - p > wd.progress) {
            Some(format!("no progress for {} s", wd.progress.as_secs()))
        } else if now - last_output > wd.silence {
            Some(format!("no console output for {} s", wd.silence.as_secs()))
        } else {
            None
        };
        if fired.is_some() {
            timeout = fired;
            let _ = session.process_mut().signal(rexpect::process::Signal::SIGKILL);
            let _ = session.process().wait();
            break;
        }
    }
    let elapsed = start.elapsed();
    // QEMU refusing to start prints its reason and exits at once.
    if timeout.is_none() && !output.contains("Linux version") && !output.contains("OVLC-") {
        let text = output.trim();
        if text.starts_with("qemu") || text.contains("qemu-system") {
            return Err(VmError::Qemu(text.to_string()));
        }
    }
    Ok(Console { output, timeout, first_progress, elapsed })
}

fn libc_prctl_pdeathsig() -> i32 {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) }
}

/// Boots a machine and collects its console until QEMU exits or `timeout`.
pub fn boot(m: &Machine, timeout: Duration) -> Result<Console, VmError> {
    run(m, &Watchdog::total(timeout), |_| Line::Output)
}

/// Does KVM really run a guest here? A `/dev/kvm` node is not proof: boot a
/// tiny machine with KVM and see whether its kernel gets as far as the console.
pub fn kvm_works(kernel: &Path, initrd: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let m = Machine {
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        memory_mib: 256,
        cpus: 1,
        accel: Accel::Kvm,
        append: vec!["ovlc.probe=1".into()],
        disks: Vec::new(),
    };
    boot(&m, Duration::from_secs(15)).is_ok_and(|c| c.output.contains("Linux version") || c.output.contains("OVLC-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widened_bytes_become_utf8_again() {
        let widened: String = "é→x".bytes().map(|b| b as char).collect();
        assert_eq!(bytes_of(&widened), "é→x");
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let c = Console { output: "a\nb\nc\n".into(), timeout: None, first_progress: None, elapsed: Duration::ZERO };
        assert_eq!(c.tail(2), "b\nc");
        assert_eq!(c.tail(10), "a\nb\nc");
    }
}
