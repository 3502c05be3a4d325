//! Host targets: where each instance runs on this machine's kernel, and the
//! isolation around it. The whole `ovlc run` lives in a private mount
//! namespace; each instance gets a fresh tmpfs as its backing filesystem (or
//! a fresh directory on a disk the guest mounted);
//! rootless instances run in an agent process inside a new user namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use dsl::ast::Driver;

use crate::exec::{self, Outcome, Plan};
use crate::sys;

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

    pub fn driver(self) -> Driver {
        match self {
            HostTarget::Kernel => Driver::Kernel,
            HostTarget::Rootless => Driver::Rootless,
            HostTarget::Fuse => Driver::Fuse,
        }
    }
}

/// The host ids a rootless instance's user namespace maps to (0..65536 inside).
pub const ROOTLESS_BASE: u32 = 100_000;
pub const ROOTLESS_COUNT: u32 = 65_536;

/// The run's temporary directory; each instance gets a numbered subdirectory.
#[derive(Debug)]
pub struct Workspace {
    dir: crate::cleanup::TempDir,
    next: AtomicUsize,
}

impl Workspace {
    pub fn new() -> std::io::Result<Workspace> {
        let dir = crate::cleanup::TempDir::new("ovlc-run-")?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Workspace { dir, next: AtomicUsize::new(0) })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
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
fn disk_root(backing: dsl::ast::Backing) -> Result<Option<PathBuf>, String> {
    if backing == dsl::ast::Backing::Tmpfs {
        return Ok(None);
    }
    match DISKS.get().and_then(|d| d.iter().find(|(b, _)| *b == backing)) {
        Some((_, Ok(p))) => Ok(Some(p.clone())),
        Some((_, Err(e))) => Err(e.clone()),
        None => Err(format!("backing {} is available on VM targets only", backing.name())),
    }
}

/// The filesystem under one instance: a tmpfs mounted on its directory, or
/// its directory on a mounted disk. Everything on it goes on drop.
struct Backing {
    dir: PathBuf,
    tmpfs: bool,
}

/// Size of each instance's tmpfs, unless `OVLC_BACKING_SIZE` says otherwise (`512m`, `2g`).
const BACKING_SIZE: &str = "1g";

/// Each instance's tmpfs size: `OVLC_BACKING_SIZE` (a number of bytes with
/// an optional k, m or g), else [`BACKING_SIZE`].
pub fn backing_size() -> Result<String, String> {
    let size = std::env::var("OVLC_BACKING_SIZE").unwrap_or_else(|_| BACKING_SIZE.to_string());
    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let suffixes = size.len() - digits.len();
    if digits.is_empty() || suffixes > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 15 {
        return Err(format!(
            "OVLC_BACKING_SIZE={size:?} is not a size: give bytes, or a number with k, m or g (512m, 2g)"
        ));
    }
    Ok(size)
}

impl Backing {
    fn mount(dir: PathBuf) -> Result<Backing, String> {
        let size = backing_size()?;
        sys::mount_legacy("ovlc", &dir, "tmpfs", sys::nodev_flags(), &format!("size={size},mode=0755"))
            .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", dir.display()))?;
        Ok(Backing { dir, tmpfs: true })
    }

    /// The instance's directory on a disk, as it is.
    fn on_disk(dir: PathBuf) -> Backing {
        Backing { dir, tmpfs: false }
    }

    /// A tmpfs for tmpfs plans, else the directory itself.
    fn for_plan(plan: &Plan, dir: PathBuf) -> Result<Backing, String> {
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
    let (release, _) = exec::kernel_release();
    if !nix::unistd::geteuid().is_root() {
        return Outcome::error(plan, &release, format!("the {} target needs root (run ovlc as root)", target.name()));
    }
    let under = match disk_root(plan.backing()) {
        Ok(u) => u,
        Err(why) => {
            let mut o = Outcome::new(plan, &release);
            o.status = exec::Status::Skip;
            o.reason = Some(why);
            return o;
        }
    };
    let dir = match ws.instance_dir(under.as_deref()) {
        Ok(d) => d,
        Err(e) => return Outcome::error(plan, &release, format!("cannot create an instance directory: {e}")),
    };
    let mut log = crate::kmsg::KernelLog::open();
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
    let watch = (!sys::devices_live()).then(|| crate::watchdog::arm(crate::watchdog::limit()));
    let mut out = run_in(plan, target, dir, &release);
    if let Some(w) = watch.filter(crate::watchdog::Armed::expired) {
        out.status = exec::Status::Timeout;
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
    let overlay = crate::kmsg::KernelLog::overlay_lines(&lines);
    if target == HostTarget::Rootless && !overlay.is_empty() {
        for st in out.steps.iter_mut().filter(|s| !s.ok && s.text.starts_with("mount") && s.notes.is_empty()) {
            st.notes.extend(overlay.iter().map(|l| format!("kernel log: {l}")));
        }
        for f in out.failures.iter_mut().filter(|f| f.step.starts_with("mount") && !f.actual.contains("kernel log")) {
            f.actual.push_str(&format!(" (kernel log: {})", overlay.join("; ")));
        }
    }
    out.fail_on_kernel_trouble(&crate::kmsg::KernelLog::trouble(&lines), KERNEL_LOG_STEP);
    out
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

fn fuse_ready(plan: &Plan) -> Result<(), String> {
    let bin = plan.fuse_binary.clone().unwrap_or_else(|| PathBuf::from("fuse-overlayfs"));
    if which(&bin).is_none() {
        return Err(format!(
            "{} is not installed: install Debian's fuse-overlayfs package (apt-get install -y fuse-overlayfs)",
            bin.display()
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse)".into());
    }
    Ok(())
}

/// The full path of a program, searched on PATH.
pub fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(p)).find(|c| c.is_file())
}

/// Starts `ovlc __agent rootless DIR` as host uid [`ROOTLESS_BASE`], maps its
/// new user namespace, hands it the plan and reads back its outcome.
fn run_rootless(plan: &Plan, dir: &Path) -> Result<Outcome, String> {
    let handed = hand_over_tarballs(plan, dir)?;
    let json =
        serde_json::to_vec(handed.as_ref().map_or(plan, |(p, _)| p)).map_err(|e| format!("encoding the plan: {e}"))?;
    let last = spawn_agent("rootless", dir, &json, true);
    if let Some((_, copies)) = handed {
        let _ = std::fs::remove_dir_all(copies);
    }
    serde_json::from_str(&last?).map_err(|e| format!("the rootless agent's outcome: {e}"))
}

/// The host reads a scenario's layer tarballs (the agent's mapped user may
/// not: a 0700 directory, a private home) and hands the agent copies it can
/// read, in a directory beside the instance's; returns the plan that names
/// them, and that directory.
fn hand_over_tarballs(plan: &Plan, dir: &Path) -> Result<Option<(Plan, PathBuf)>, String> {
    let tars = plan.scenario.layer_tarballs();
    if tars.is_empty() {
        return Ok(None);
    }
    let copies = dir.with_extension("tarballs");
    for t in tars {
        // Checked paths: relative, inside the scenario's directory.
        let to = copies.join(&t.node);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        let from = plan.scenario_dir.join(&t.node);
        std::fs::copy(&from, &to).map_err(|e| format!("reading the layer tarball {}: {e}", from.display()))?;
    }
    // For the agent's eyes only: owned by its user, closed to everyone else.
    for e in walkdir::WalkDir::new(&copies) {
        let e = e.map_err(|e| format!("{}: {e}", copies.display()))?;
        let mode = if e.file_type().is_dir() { 0o700 } else { 0o400 };
        std::os::unix::fs::chown(e.path(), Some(ROOTLESS_BASE), Some(ROOTLESS_BASE))
            .and_then(|()| std::fs::set_permissions(e.path(), std::os::unix::fs::PermissionsExt::from_mode(mode)))
            .map_err(|err| format!("handing {} to the agent: {err}", e.path().display()))?;
    }
    let mut handed = plan.clone();
    handed.scenario_dir = copies.clone();
    Ok(Some((handed, copies)))
}

/// Runs the agent in `mode` on `dir` with `payload` on its standard input, and
/// returns the last line it prints. With `serve_drop_caches`, the agent may
/// print `drop-caches`: the host (which may, unlike a user namespace) drops
/// the kernel's caches and answers with a byte on the agent's descriptor 3.
pub fn spawn_agent(mode: &str, dir: &Path, payload: &[u8], serve_drop_caches: bool) -> Result<String, String> {
    let ack = if serve_drop_caches { Some(nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?) } else { None };
    let extra_fd = ack.as_ref().map(|(r, _)| std::os::fd::AsRawFd::as_raw_fd(r));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ovlc binary: {e}"))?;
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(ROOTLESS_BASE)),
        Some(nix::unistd::Gid::from_raw(ROOTLESS_BASE)),
    )
    .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__agent").arg(mode).arg(dir);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if extra_fd.is_some() {
        cmd.env(HOST_ACK_FD, "3");
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
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the rootless agent: {e}"))?;
    let pid = child.id();
    crate::watchdog::track(pid);
    let mut stdout = BufReader::new(child.stdout.take().ok_or("agent has no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| format!("reading from the agent: {e}"))?;
    if line.trim() != "unshared" {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        return Err(format!("the rootless agent could not enter a user namespace: {}{}", line.trim(), err.trim()));
    }
    let map = format!("0 {ROOTLESS_BASE} {ROOTLESS_COUNT}\n");
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), &map).map_err(|e| format!("writing /proc/{pid}/{f}: {e}"))?;
    }
    {
        let mut stdin = child.stdin.take().ok_or("agent has no stdin")?;
        stdin.write_all(payload).map_err(|e| format!("sending the job: {e}"))?;
    }
    let mut rest = String::new();
    loop {
        let mut l = String::new();
        if stdout.read_line(&mut l).map_err(|e| format!("reading the result: {e}"))? == 0 {
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
    let status = child.wait().map_err(|e| format!("waiting for the agent: {e}"))?;
    match rest.lines().last() {
        Some(l) if status.success() => Ok(l.to_string()),
        _ => Err(format!("the rootless agent failed ({status}): {}", err.trim())),
    }
}

/// The environment variable that tells an agent which descriptor the host
/// answers its requests on.
const HOST_ACK_FD: &str = "OVLC_HOST_ACK_FD";

/// Is this process an agent the host answers requests from?
pub fn in_agent() -> bool {
    std::env::var(HOST_ACK_FD).is_ok_and(|v| v == "3")
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

/// `ovlc __agent MODE DIR`: the agent side of [`spawn_agent`]. Runs as an
/// unprivileged host user; must be called before any thread starts. `rootless`
/// runs a plan, `rootless-bench` the benchmark's workloads.
pub fn agent(mode: &str, dir: &Path) -> i32 {
    use nix::sched::{unshare, CloneFlags};
    if mode != "rootless" && mode != "rootless-bench" {
        eprintln!("unknown agent mode {mode}");
        return 2;
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        println!("unshare failed: {e}");
        return 3;
    }
    println!("unshared");
    let _ = std::io::stdout().flush();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading the job: {e}");
        return 3;
    }
    let root = c"/";
    if unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        eprintln!("making / private in the user namespace: {}", std::io::Error::last_os_error());
        return 3;
    }
    let out = if mode == "rootless-bench" {
        let job: crate::bench::BenchJob = match serde_json::from_slice(&input) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("decoding the job: {e}");
                return 3;
            }
        };
        match crate::bench::measure(crate::bench::BenchDriver::Rootless, &job.dir, &job.sizes, &job.workloads, || {}) {
            Ok(m) => serde_json::to_string(&m),
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    } else {
        let plan: Plan = match exec::plans_from_json(&input) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("decoding the plan: {e}");
                return 3;
            }
        };
        serde_json::to_string(&rootless_outcome(&plan, dir))
    };
    match out {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("encoding the result: {e}");
            3
        }
    }
}

fn rootless_outcome(plan: &Plan, dir: &Path) -> Outcome {
    let (release, _) = exec::kernel_release();
    // On a disk, the directory (owned by the agent's root) is the backing;
    // the host side removes it.
    let backing = if plan.backing() == dsl::ast::Backing::Tmpfs {
        match Backing::mount(dir.to_path_buf()) {
            Ok(b) => Some(b),
            Err(e) => return Outcome::error(plan, &release, format!("{e} (inside the user namespace)")),
        }
    } else {
        None
    };
    let work = dir.join("w");
    if let Err(e) = std::fs::create_dir(&work) {
        return Outcome::error(plan, &release, format!("mkdir {}: {e}", work.display()));
    }
    let out = exec::run(plan, &work);
    drop(backing);
    out
}
