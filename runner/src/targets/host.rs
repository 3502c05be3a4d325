//! Host targets: where each instance runs on this machine's kernel, and the
//! isolation around it. The whole `ovlc run` lives in a private mount
//! namespace; each instance gets a fresh tmpfs as its backing filesystem (or
//! a fresh directory on a disk the guest mounted);
//! rootless instances run in an agent process inside a new user namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dsl::ast::Driver;

use crate::error::{Error, Result};
use crate::exec;
use crate::model::{Outcome, Plan};
use crate::sys;
use crate::sys::programs;
use crate::sys::userns::{spawn_agent, ROOTLESS_BASE};

/// A host target: a driver on this machine's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostTarget {
    Kernel,
    Rootless,
    Fuse,
}

impl HostTarget {
    pub const ALL: [HostTarget; 3] = [HostTarget::Kernel, HostTarget::Rootless, HostTarget::Fuse];

    pub fn name(self) -> &'static str {
        match self {
            HostTarget::Kernel => "host",
            HostTarget::Rootless => "host-rootless",
            HostTarget::Fuse => "host-fuse",
        }
    }

    pub fn parse(s: &str) -> Option<HostTarget> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The host target of a driver (in a guest, each driver runs as on a host).
    pub fn of(driver: Driver) -> HostTarget {
        match driver {
            Driver::Kernel => HostTarget::Kernel,
            Driver::Rootless => HostTarget::Rootless,
            Driver::Fuse => HostTarget::Fuse,
        }
    }

    pub fn driver(self) -> Driver {
        match self {
            HostTarget::Kernel => Driver::Kernel,
            HostTarget::Rootless => Driver::Rootless,
            HostTarget::Fuse => Driver::Fuse,
        }
    }
}

/// The run's temporary directory; each instance gets a numbered subdirectory.
#[derive(Debug)]
pub struct Workspace {
    dir: crate::sys::cleanup::TempDir,
    next: AtomicUsize,
}

impl Workspace {
    pub fn new() -> std::io::Result<Workspace> {
        let dir = crate::sys::cleanup::TempDir::new(crate::sys::cleanup::RUN)?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Workspace { dir, next: AtomicUsize::new(0) })
    }

    /// A fresh directory for one instance: in the run's directory for tmpfs
    /// backings, on the mounted disk for the others.
    fn instance_dir(&self, under: Option<&Path>) -> std::io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let d = under.unwrap_or(self.dir.path()).join(format!("i{n}"));
        std::fs::create_dir(&d)?;
        Ok(d)
    }
}

/// Backing filesystems other than tmpfs: disks the guest agent mounted (VM
/// targets), by filesystem, or why one could not be mounted.
static DISKS: std::sync::OnceLock<Vec<(dsl::ast::Backing, Result<PathBuf, String>)>> = std::sync::OnceLock::new();

/// Records the disk backings of this machine (the guest agent, once, at start).
pub fn set_disk_backings(disks: Vec<(dsl::ast::Backing, Result<PathBuf, String>)>) {
    let _ = DISKS.set(disks);
}

/// Where instances on `backing` live: `None` for tmpfs (a fresh tmpfs each).
fn disk_root(backing: dsl::ast::Backing) -> Result<Option<PathBuf>> {
    if backing == dsl::ast::Backing::Tmpfs {
        return Ok(None);
    }
    match DISKS.get().and_then(|d| d.iter().find(|(b, _)| *b == backing)) {
        Some((_, Ok(p))) => Ok(Some(p.clone())),
        Some((_, Err(e))) => Err(Error::Infrastructure(e.clone())),
        None => Err(Error::Usage(format!("backing {} is available on VM targets only", backing.name()))),
    }
}

/// The filesystem under one instance: a tmpfs mounted on its directory, or
/// its directory on a mounted disk. Everything on it goes on drop.
pub(crate) struct Backing {
    dir: PathBuf,
    tmpfs: bool,
}

/// Size of each instance's tmpfs, unless `OVLC_BACKING_SIZE` says otherwise (`512m`, `2g`).
const BACKING_SIZE: &str = "1g";

/// Each instance's tmpfs size: `OVLC_BACKING_SIZE` (a number of bytes with
/// an optional k, m or g), else [`BACKING_SIZE`].
pub fn backing_size() -> Result<String> {
    checked_size(crate::settings::get().backing_size.clone().unwrap_or_else(|| BACKING_SIZE.to_string()))
}

/// A tmpfs size as mount(2) takes it: bytes, or a number with k, m or g.
fn checked_size(size: String) -> Result<String> {
    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let suffixes = size.len() - digits.len();
    if digits.is_empty() || suffixes > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 15 {
        return Err(Error::Usage(format!(
            "OVLC_BACKING_SIZE={size:?} is not a size: give bytes, or a number with k, m or g (512m, 2g)"
        )));
    }
    Ok(size)
}

impl Backing {
    pub(crate) fn mount(dir: PathBuf) -> Result<Backing> {
        let size = backing_size()?;
        sys::mount_legacy("ovlc", &dir, "tmpfs", sys::nodev_flags(), &format!("size={size},mode=0755"))
            .map_err(Error::sys(format!("cannot mount a tmpfs on {}", dir.display())))?;
        Ok(Backing { dir, tmpfs: true })
    }

    /// The instance's directory on a disk, as it is.
    fn on_disk(dir: PathBuf) -> Backing {
        Backing { dir, tmpfs: false }
    }

    /// A tmpfs for tmpfs plans, else the directory itself.
    fn for_plan(plan: &Plan, dir: PathBuf) -> Result<Backing> {
        if plan.backing() == dsl::ast::Backing::Tmpfs {
            Backing::mount(dir)
        } else {
            Ok(Backing::on_disk(dir))
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // Anything still mounted below (an overlay after an error) goes too.
        let merged = self.dir.join("w/merged");
        if sys::is_mountpoint(&merged) {
            let _ = sys::umount(&merged, libc::MNT_DETACH);
        }
        if self.tmpfs {
            let _ = sys::umount(&self.dir, libc::MNT_DETACH);
            let _ = std::fs::remove_dir(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The failure an instance gets for kernel trouble logged while it ran.
/// Instances running at the same time share the log: the run re-runs such
/// an instance alone ([`kernel_trouble_shared`]), and that verdict stands.
pub const KERNEL_LOG_STEP: &str = "the kernel log while this instance ran";

/// Whether an outcome failed for kernel trouble that other instances,
/// running at the same time, may have caused.
pub fn kernel_trouble_shared(o: &Outcome) -> bool {
    o.failures.iter().any(|f| f.step == KERNEL_LOG_STEP)
}

/// Runs one instance on a host target and returns its outcome; every failure
/// of the machinery is an `error` outcome, never a panic.
pub fn run(ws: &Workspace, plan: &Plan, target: HostTarget) -> Outcome {
    let (release, _) = crate::sys::kernel_release();
    if !nix::unistd::geteuid().is_root() {
        return Outcome::error(plan, &release, format!("the {} target needs root (run ovlc as root)", target.name()));
    }
    let under = match disk_root(plan.backing()) {
        Ok(u) => u,
        Err(why) => {
            let mut o = Outcome::new(plan, &release);
            o.status = crate::model::Status::Skip;
            o.reason = Some(why.to_string());
            return o;
        }
    };
    let dir = match ws.instance_dir(under.as_deref()) {
        Ok(d) => d,
        Err(e) => return Outcome::error(plan, &release, format!("cannot create an instance directory: {e}")),
    };
    let _attribution = (target == HostTarget::Rootless && crate::author::expects_refusal(&plan.scenario))
        .then(crate::sys::kmsg::attribution);
    let mut log = crate::sys::kmsg::KernelLog::open();
    // Every mount of the instance (its tmpfs, its overlays, fuse-overlayfs,
    // the rootless agent's namespace) lives in a namespace of its own.
    let ns = match sys::InstanceNamespace::enter() {
        Ok(ns) => ns,
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            return Outcome::error(plan, &release, format!("cannot give the instance a mount namespace: {e}"));
        }
    };
    // A disposable guest has the console's watchdogs; here, an instance
    // that does not finish in time is interrupted.
    let watch = (!sys::devices_live()).then(|| crate::sys::watchdog::arm(crate::sys::watchdog::limit()));
    let mut out = run_in(plan, target, dir, &release);
    if let Some(w) = watch.filter(crate::sys::watchdog::Armed::expired) {
        out.status = crate::model::Status::Timeout;
        // The interrupted call's EINTR is the watchdog's doing, not a result.
        out.failures.retain(|f| f.actual != "EINTR");
        out.reason = Some(format!(
            "the instance did not finish within {} s (OVLC_INSTANCE_TIMEOUT): it was interrupted{}",
            w.limit().as_secs(),
            out.steps.last().map(|s| format!(" after line {}: {}", s.line, s.text)).unwrap_or_default()
        ));
    }
    drop(ns);
    let lines = log.read_new();
    // The agent of a rootless instance cannot read the log: add the kernel's
    // words to the mounts it saw fail.
    let mut overlay = crate::sys::kmsg::KernelLog::overlay_lines(&lines);
    let mut seen = std::collections::HashSet::new();
    overlay.retain(|l| seen.insert(l.clone()));
    if target == HostTarget::Rootless && !overlay.is_empty() {
        let mut mount_lines = Vec::new();
        // Failed mounts, and refused ones a probe (`=> any`) recorded.
        for st in out.steps.iter_mut().filter(|s| s.mount && (!s.ok || s.result != "ok")) {
            if st.notes.is_empty() {
                st.notes.extend(overlay.iter().map(|l| format!("kernel log: {l}")));
            }
            mount_lines.push(st.line);
        }
        for f in out.failures.iter_mut().filter(|f| mount_lines.contains(&f.line) && !f.actual.contains("kernel log")) {
            f.actual.push_str(&format!(" (kernel log: {})", overlay.join("; ")));
        }
    }
    out.fail_on_kernel_trouble(&crate::sys::kmsg::KernelLog::trouble(&lines), KERNEL_LOG_STEP);
    if plan.scenario.tags().iter().any(|t| t == MODULE_PARAMETERS_TAG) {
        out.module_params = module_parameters(Path::new("/sys/module/overlay/parameters"));
    }
    out
}

/// The tag of scenarios whose outcome records the overlay module's parameters.
pub const MODULE_PARAMETERS_TAG: &str = "module-parameters";

/// Each file of the overlay module's parameter directory with its value;
/// `None` where the module is not loaded (fuse-overlayfs alone).
fn module_parameters(dir: &Path) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let value = std::fs::read_to_string(e.path()).unwrap_or_else(|e| format!("(unreadable: {e})"));
        out.insert(e.file_name().to_string_lossy().into_owned(), value.trim().to_string());
    }
    Some(out)
}

fn run_in(plan: &Plan, target: HostTarget, dir: PathBuf, release: &str) -> Outcome {
    let release = release.to_string();
    match target {
        HostTarget::Kernel | HostTarget::Fuse => {
            if target == HostTarget::Fuse {
                if let Err(e) = fuse_ready(plan) {
                    let _ = std::fs::remove_dir(&dir);
                    return Outcome::error(plan, &release, e);
                }
            }
            let backing = match Backing::for_plan(plan, dir) {
                Ok(b) => b,
                Err(e) => return Outcome::error(plan, &release, e),
            };
            let work = backing.dir.join("w");
            if let Err(e) = std::fs::create_dir(&work) {
                return Outcome::error(plan, &release, format!("mkdir {}: {e}", work.display()));
            }
            exec::run(plan, &work)
        }
        HostTarget::Rootless => {
            let out = run_rootless(plan, &dir).unwrap_or_else(|e| Outcome::error(plan, &release, e));
            // The agent unmounted its tmpfs; a disk directory is emptied here.
            drop(Backing::on_disk(dir));
            out
        }
    }
}

fn fuse_ready(plan: &Plan) -> Result<()> {
    match programs::fuse_unavailable(plan.fuse_binary.as_deref()) {
        Some(why) => Err(Error::Infrastructure(why)),
        None => Ok(()),
    }
}

/// Starts `ovlc __agent rootless DIR` as host uid [`ROOTLESS_BASE`], maps its
/// new user namespace, hands it the plan and reads back its outcome.
fn run_rootless(plan: &Plan, dir: &Path) -> Result<Outcome> {
    let handed = hand_over_tarballs(plan, dir)?;
    let json = serde_json::to_vec(handed.as_ref().map_or(plan, |(p, _)| p))
        .map_err(|e| Error::Infrastructure(format!("encoding the plan: {e}")))?;
    let last = spawn_agent("rootless", dir, &json, true);
    if let Some((_, copies)) = handed {
        let _ = std::fs::remove_dir_all(copies);
    }
    serde_json::from_str(&last?).map_err(|e| Error::Infrastructure(format!("the rootless agent's outcome: {e}")))
}

/// The host reads a scenario's layer tarballs (the agent's mapped user may
/// not: a 0700 directory, a private home) and hands the agent copies it can
/// read, in a directory beside the instance's; returns the plan that names
/// them, and that directory.
fn hand_over_tarballs(plan: &Plan, dir: &Path) -> Result<Option<(Plan, PathBuf)>> {
    let tars = plan.scenario.layer_tarballs();
    if tars.is_empty() {
        return Ok(None);
    }
    let copies = dir.with_extension("tarballs");
    for t in tars {
        // Checked paths: relative, inside the scenario's directory.
        let to = copies.join(&t.node);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(Error::doing(format!("mkdir {}", parent.display())))?;
        }
        let from = plan.scenario_dir.join(&t.node);
        std::fs::copy(&from, &to).map_err(Error::doing(format!("reading the layer tarball {}", from.display())))?;
    }
    // For the agent's eyes only: owned by its user, closed to everyone else.
    for e in walkdir::WalkDir::new(&copies) {
        let e = e.map_err(|e| Error::Infrastructure(format!("{}: {e}", copies.display())))?;
        let mode = if e.file_type().is_dir() { 0o700 } else { 0o400 };
        std::os::unix::fs::chown(e.path(), Some(ROOTLESS_BASE), Some(ROOTLESS_BASE))
            .and_then(|()| std::fs::set_permissions(e.path(), std::os::unix::fs::PermissionsExt::from_mode(mode)))
            .map_err(Error::doing(format!("handing {} to the agent", e.path().display())))?;
    }
    let mut handed = plan.clone();
    handed.scenario_dir = copies.clone();
    Ok(Some((handed, copies)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_targets_have_one_name_each() {
        for t in HostTarget::ALL {
            assert_eq!(HostTarget::parse(t.name()), Some(t));
            assert_eq!(HostTarget::of(t.driver()), t, "a guest runs each driver as its host target");
        }
        assert_eq!(HostTarget::parse("host-rootless").map(HostTarget::driver), Some(Driver::Rootless));
        assert_eq!(HostTarget::parse("vm:6.1"), None);
    }

    #[test]
    fn tmpfs_sizes_are_numbers_with_one_unit() {
        for good in ["1g", "512m", "1048576", "64K"] {
            assert_eq!(checked_size(good.into()).ok().as_deref(), Some(good));
        }
        for bad in ["", "g", "1gg", "1.5g", "-1", "1t", "9999999999999999g"] {
            assert!(checked_size(bad.into()).is_err_and(|e| e.exit_code() == 2), "{bad:?}");
        }
    }

    #[test]
    fn kernel_trouble_is_told_by_its_step() {
        let s = dsl::parse("a.ovl", "a", b"scenario \"a\"\nlayer l {\n    dir /d\n}\nmount l\n")
            .unwrap_or_else(|f| panic!("{}", f.short()));
        let plan = Plan::new(dsl::instances(&s).remove(0), s, "host".into(), Driver::Kernel);
        let mut o = Outcome::new(&plan, "k");
        assert!(!kernel_trouble_shared(&o));
        o.fail_on_kernel_trouble(&["WARNING: CPU: 0 PID: 1".into()], KERNEL_LOG_STEP);
        assert!(kernel_trouble_shared(&o) && o.status == crate::model::Status::Fail);
    }
}
