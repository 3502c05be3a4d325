//! One batch of instances on one kernel: booted in as many machines as it
//! takes. An instance that panics or hangs the kernel is charged with it (the
//! last console lines say why), and the rest of the batch goes on in a fresh
//! machine.

use std::path::{Path, PathBuf};

use dsl::ast::Driver;

use super::disks::make_disk;
use super::initramfs::{base_archive, program_closure};
use super::machine::{guest_memory, watchdog, Prepared, VmTarget};
use super::wire::{parse_console, DISKS_WORD, RESULT, START};
use crate::error::{Error, Result};
use crate::model::{Outcome, Plan};

/// Where a VM batch is: which machine of the batch (1 for the first boot,
/// more after a crash or hang), how many instances are behind it, and which
/// instance runs now (none while the machine boots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmProgress {
    pub target: String,
    pub machine: usize,
    pub position: usize,
    pub total: usize,
    pub current: Option<String>,
}

/// Boots one machine for `plans`; `kernel_words` go on its command line
/// (the target's overlay module parameters).
pub(crate) fn boot_batch(
    machine: &Prepared,
    kernel_words: &[String],
    plans: &[Plan],
    started: &dyn Fn(usize),
) -> Result<vm::console::Console> {
    use vm::initramfs::Entry;
    // Tarballs travel in the initramfs, under /scenario/<n>/ for each scenario directory.
    let mut plans = plans.to_vec();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut extra: Vec<Entry> = vec![Entry::Dir { path: "/scenario".into(), mode: 0o755 }];
    let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut programs = Vec::new();
    for p in plans.iter_mut() {
        let tars: Vec<String> = p.scenario.layer_tarballs().into_iter().map(|t| t.node.clone()).collect();
        if tars.is_empty() {
            continue;
        }
        let k = match dirs.iter().position(|d| *d == p.scenario_dir) {
            Some(k) => k,
            None => {
                dirs.push(p.scenario_dir.clone());
                dirs.len() - 1
            }
        };
        let guest_dir = format!("/scenario/{k}");
        for t in tars {
            let dest = format!("{guest_dir}/{t}");
            let mut parent = String::new();
            for c in dest.trim_start_matches('/').split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                parent.push('/');
                parent.push_str(c);
                if made.insert(parent.clone()) && parent != "/scenario" {
                    extra.push(Entry::Dir { path: parent.clone(), mode: 0o755 });
                }
            }
            if made.insert(dest.clone()) {
                extra.push(Entry::HostFile { path: dest, mode: 0o644, from: p.scenario_dir.join(&t) });
            }
        }
        p.scenario_dir = PathBuf::from(guest_dir);
    }
    // fuse-overlayfs for fuse targets, and for `mount ... driver fuse` on the others.
    let fuse = plans.iter().any(|p| p.driver == Driver::Fuse || p.scenario.mount_drivers().contains(&Driver::Fuse));
    if fuse {
        let bin = crate::sys::programs::which(Path::new(crate::sys::programs::FUSE_OVERLAYFS))
            .ok_or_else(|| {
                Error::Infrastructure(
                    "fuse-overlayfs is not installed on the host: apt-get install -y fuse-overlayfs (guests get the host's copy)"
                        .into(),
                )
            })?;
        for p in plans.iter_mut() {
            p.fuse_binary = Some(bin.clone());
        }
        programs = program_closure(&bin)?;
    }
    // Filesystems per layer other than tmpfs: loop devices, the filesystems'
    // modules, and the programs that make them (with xfs's feature sets).
    let mut kinds: Vec<dsl::ast::FsKind> = Vec::new();
    for p in &plans {
        for k in p.scenario.filesystem_kinds() {
            if k != dsl::ast::FsKind::Tmpfs && !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    kinds.sort_by_key(|k| k.name());
    let mut fs_modules: Vec<&'static str> = Vec::new();
    for k in &kinds {
        let (program, package) = crate::sys::mkfs::program(k.name()).unwrap_or(("", ""));
        let bin = crate::sys::programs::which(Path::new(program)).ok_or_else(|| {
            Error::Infrastructure(format!(
                "{program} is not installed on the host (guests get the host's copy to make {} filesystems): \
                 apt-get install -y {package}",
                k.name()
            ))
        })?;
        let mut more = program_closure(&bin)?;
        if *k == dsl::ast::FsKind::Xfs {
            more.extend(xfs_feature_sets());
        }
        // Programs share libraries and directories: each path once.
        for e in more {
            if !programs.iter().any(|p: &Entry| p.path() == e.path()) {
                programs.push(e);
            }
        }
        fs_modules.push(k.name());
    }
    if !fs_modules.is_empty() {
        fs_modules.insert(0, "loop");
    }
    let dir =
        crate::sys::cleanup::TempDir::new(crate::sys::cleanup::VM).map_err(Error::doing("a temporary directory"))?;
    // One scratch disk per backing filesystem the batch needs, made afresh for each machine.
    let mut backings: Vec<dsl::ast::Backing> = Vec::new();
    for p in &plans {
        let b = p.backing();
        if b != dsl::ast::Backing::Tmpfs && !backings.contains(&b) {
            backings.push(b);
        }
    }
    let mut disks = Vec::new();
    for b in &backings {
        disks.push(make_disk(dir.path(), *b, &machine.files.release)?);
    }
    // The kernel unpacks concatenated archives in turn: the cached part that
    // stays the same from batch to batch, then this batch's plans and tarballs.
    // The modules of the fuse driver too when a plan or a mount asks for it
    // (a machine runs every driver of its kernel: the agent takes each
    // plan's own).
    let modules_for = if fuse { Driver::Fuse } else { Driver::Kernel };
    let mut archive = base_archive(machine, modules_for, &backings, &fs_modules, programs)?;
    let json = serde_json::to_vec(&plans).map_err(|e| Error::Infrastructure(e.to_string()))?;
    extra.push(vm::initramfs::Entry::File { path: "/plans.json".into(), mode: 0o644, data: json });
    archive.extend(vm::initramfs::write(&extra).map_err(Error::doing("initramfs"))?);
    let mut append = kernel_words.to_vec();
    if !backings.is_empty() {
        append.push(format!("{DISKS_WORD}{}", backings.iter().map(|b| b.name()).collect::<Vec<_>>().join(",")));
    }
    // mkfs.xfs writes a 64 MiB log into the guest's memory (the instance's
    // tmpfs holds the image): disk filesystems per layer get more memory.
    let memory = if kinds.iter().any(|k| k.disk()) { guest_memory().max(512) } else { guest_memory() };
    let m = machine.describe(dir.path(), archive, memory, append, disks)?;
    let console = vm::console::run(&m, &watchdog(m.accel, plans.len()), |line| {
        let line = line.trim_start_matches(|c: char| c.is_control());
        if let Some((n, _)) = super::wire::start_frame(line) {
            started(n);
        }
        if line.starts_with(START) || line.starts_with(RESULT) {
            vm::console::Line::Progress
        } else {
            vm::console::Line::Output
        }
    })?;
    Ok(console)
}

const CONSOLE_LINES: usize = 40;

/// Boots machines until every plan has an outcome.
pub(crate) fn run_machines(
    machine: &Prepared,
    target: &VmTarget,
    plans: &[Plan],
    progress: &dyn Fn(VmProgress),
) -> Vec<Outcome> {
    // Warnings and oopses are charged by the agent itself: it reads the
    // guest's kernel log around each instance, as on the host.
    let mut out: Vec<Option<Outcome>> = vec![None; plans.len()];
    let mut next = 0;
    let mut machines = 0;
    while next < plans.len() {
        machines += 1;
        let report = |position: usize, current: Option<String>| {
            progress(VmProgress { target: target.name(), machine: machines, position, total: plans.len(), current })
        };
        report(next, None);
        let first = next;
        let c = match boot_batch(machine, &target.kernel_words(), &plans[next..], &|i| {
            if let Some(p) = plans.get(first + i) {
                report(first + i, Some(p.instance.id.clone()));
            }
        }) {
            Ok(c) => c,
            Err(e) => {
                for i in next..plans.len() {
                    out[i] = Some(Outcome::error(&plans[i], &machine.files.release, &e));
                }
                break;
            }
        };
        let (results, running, _done) = parse_console(&c.output);
        let mut advanced = 0;
        for (i, o) in results.into_iter().filter(|(i, _)| next + i < plans.len()) {
            out[next + i] = Some(o);
            advanced = advanced.max(i + 1);
        }
        if next + advanced >= plans.len() {
            break;
        }
        let trouble = vm::kernel_log::trouble(c.output.lines());
        let Some(running) = running else {
            // No instance was running: the machine never got ready (or died
            // between instances). Another boot would fare no better.
            let why = c.timeout.clone().unwrap_or_else(|| "the machine stopped before running an instance".into());
            let reason = format!("{why}; last console lines:\n{}", c.tail(CONSOLE_LINES));
            for i in next + advanced..plans.len() {
                out[i] = Some(Outcome::error(&plans[i], &machine.files.release, reason.clone()));
            }
            break;
        };
        // The machine stopped while an instance ran: charge it.
        let victim = next + running;
        if victim < plans.len() && out[victim].is_none() {
            let mut o = Outcome::new(&plans[victim], &machine.files.release);
            let mut reason = match &c.timeout {
                Some(t) => {
                    o.status = crate::model::Status::Timeout;
                    format!("{t} (the instance hung)")
                }
                None => {
                    o.status = crate::model::Status::Crash;
                    "the machine died while the instance ran".to_string()
                }
            };
            if !trouble.is_empty() {
                reason.push_str(&format!("; kernel: {}", trouble.join(" / ")));
            }
            reason.push_str(&format!("; last console lines:\n{}", c.tail(CONSOLE_LINES)));
            o.reason = Some(reason);
            o.millis = 0;
            out[victim] = Some(o);
        }
        next = victim + 1;
    }
    out.into_iter()
        .zip(plans)
        .map(|(o, p)| o.unwrap_or_else(|| Outcome::error(p, &target.kernel, "no result")))
        .collect()
}

/// xfsprogs' per-kernel feature sets (`lts_X.Y.conf`), for mkfs.xfs in a guest.
fn xfs_feature_sets() -> Vec<vm::initramfs::Entry> {
    use vm::initramfs::Entry;
    let dir = Path::new(crate::sys::mkfs::XFS_LTS_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    if files.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = PathBuf::from("/");
    for c in dir.components().skip(1) {
        at.push(c);
        out.push(Entry::Dir { path: at.display().to_string(), mode: 0o755 });
    }
    out.extend(files.into_iter().map(|f| Entry::HostFile { path: f.display().to_string(), mode: 0o644, from: f }));
    out
}
