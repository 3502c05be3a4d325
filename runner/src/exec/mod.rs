//! The executor: runs one scenario instance for one driver in a directory it
//! owns: builds the layers, mounts, performs each operation as one system
//! call, evaluates expectations where they stand, captures the trees, and
//! checks that no lower layer changed.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dsl::ast::{self, CompareHow, Driver, LayerSource, Op, StatField, Stmt};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::model::{Failure, Fault, Outcome, Plan, Status, Step};
use crate::oci::member;
use crate::sys::{self, kernel_release, SysResult};
use crate::tree::{self, Dialect};

use self::ops::Value;

mod check;
pub(crate) mod env;
mod fds;
mod filesystems;
mod inodes;
pub mod layer;
pub mod mount;
mod ops;
pub(crate) mod results;
mod userns;

use env::{describe_cond, Env};
use results::{describe_value, errno_name};

/// Why an instance stopped before its end: an error of the run (or a skip),
/// never a result of the scenario (those are steps and failures).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The system refused what the instance needs (a directory, a file).
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A layer could not be built.
    #[error(transparent)]
    Layer(#[from] layer::BuildError),
    /// A tree could not be captured.
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    /// The instance may not run on this target (a layer its place cannot build).
    #[error("{0}")]
    Skip(String),
    /// The instance's time ran out before this line.
    #[error("line {line}: out of time")]
    OutOfTime { line: u32 },
    /// The scenario cannot go on (a layer of an untaken branch, a remount
    /// before any mount, the kernel refusing to settle a path walk, ...).
    #[error("{0}")]
    Stopped(String),
}

impl InstanceError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError {
        let path = path.to_path_buf();
        move |source| InstanceError::Io { what, path, source }
    }

    /// Did the backing filesystem run out of space?
    pub fn out_of_space(&self) -> bool {
        match self {
            InstanceError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            InstanceError::Layer(e) => e.out_of_space(),
            InstanceError::Tree(e) => e.errno == Errno::ENOSPC,
            _ => false,
        }
    }
}

type Stop<T = ()> = Result<T, InstanceError>;

fn dialect(driver: Driver) -> Dialect {
    match driver {
        Driver::Kernel => Dialect::Trusted,
        Driver::Rootless => Dialect::User,
        Driver::Fuse => Dialect::Fuse,
    }
}

/// The name the driver reads as the opaque marker, for pre-made opaque dirs.
fn opaque_xattr(driver: Driver) -> &'static str {
    match driver {
        Driver::Kernel | Driver::Fuse => tree::OPAQUE_TRUSTED,
        Driver::Rootless => tree::OPAQUE_USER,
    }
}

/// A mounted overlay of the instance.
struct Live {
    /// `as NAME`; `None` for an unnamed mount.
    name: Option<String>,
    merged: PathBuf,
    how: mount::Mounted,
    root: OwnedFd,
}

/// An upper directory: where it is, and the dialect of the last driver that
/// mounted it (how its tree is decoded).
struct Upper {
    dir: PathBuf,
    dialect: Dialect,
    /// The filesystem it is on (`upper NAME on FS`): its work directory goes there too.
    on: Option<PathBuf>,
}

/// The instance's directories inside its workspace.
struct Dirs {
    root: PathBuf,
    layers: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

impl Dirs {
    /// A message with the instance's directory left out of its paths
    /// (`layers/base/f`): a skip's reason is the same in every run.
    fn relative(&self, msg: &str) -> String {
        msg.replace(&format!("{}/", self.root.display()), "")
    }

    /// The directory of a named upper, work directory or mount: only for
    /// identifiers (letters, digits, `_` and `-`), which `ovlc check`
    /// requires; anything else stops the instance, since the name goes into
    /// option strings unescaped.
    fn named(&self, kind: &str, name: &str) -> Stop<PathBuf> {
        let mut c = name.chars();
        let ident = c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !ident {
            return Err(InstanceError::Stopped(format!("{kind} name {name:?} is no identifier")));
        }
        Ok(self.root.join(kind).join(name))
    }
}

struct Run<'a> {
    plan: &'a Plan,
    env: Env,
    kernel_release: String,
    dialect: Dialect,
    dirs: Dirs,
    /// Layers declared on the path taken so far; each is built when a mount
    /// first uses it (a layer only an untaken branch mounts is never built).
    declared: HashMap<String, ast::Layer>,
    layers: BTreeMap<String, PathBuf>,
    fingerprints: Vec<(String, String)>,
    /// The mounted overlays, oldest first; operations act on the last one
    /// (or on the one `on` names).
    mounts: Vec<Live>,
    /// `on MOUNT { ... }`: the mount operations act on.
    focus: Option<String>,
    last_mount: Option<ast::Mount>,
    /// The uppers made so far, by name (`""`: the default upper).
    uppers: BTreeMap<String, Upper>,
    /// The work directories made so far, by name (`""`: the default one).
    works: BTreeMap<String, PathBuf>,
    /// `filesystem NAME ...` declared on the path taken so far, and those
    /// mounted (when a layer or upper on them is first made).
    filesystems: HashMap<String, ast::Filesystem>,
    fs_mounted: Vec<(String, PathBuf)>,
    /// Names remembered by `stat`, `lstat`, `fstat`, `statfs` and `dirent`.
    stats: HashMap<String, inodes::Remembered>,
    /// File handles remembered by `handle`.
    handles: HashMap<String, sys::FileHandle>,
    /// Descriptors the scenario holds (`open ... as F`).
    fds: fds::Descriptors,
    steps: Vec<Step>,
    failures: Vec<Failure>,
    mount_api: Option<String>,
    merged_final: Option<String>,
}

/// The name of the file system `dir` is on, from its statfs magic.
fn filesystem_name(dir: &Path) -> Option<String> {
    let magic = nix::sys::statfs::statfs(dir).ok()?.filesystem_type().0 as u64;
    Some(
        match magic {
            0x0102_1994 => "tmpfs",
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x7371_7368 => "squashfs",
            0xE0F5_E1E2 => "erofs",
            m => return Some(format!("0x{m:x}")),
        }
        .to_string(),
    )
}

/// Runs a plan in `workdir` (an empty directory on the backing filesystem, owned
/// by the caller, who removes it). Never panics on a kernel's answer: every
/// problem ends up in the outcome.
pub fn run(plan: &Plan, workdir: &Path) -> Outcome {
    let started = Instant::now();
    let (release, kernel) = kernel_release();
    let params: Vec<(String, Option<String>)> =
        plan.instance.params.iter().map(|(n, v)| (n.clone(), Some(v.clone()))).collect();
    let env = Env { kernel, driver: plan.driver, options: params, layout: plan.instance.layout.clone() };
    let mut outcome = Outcome::new(plan, &release);
    outcome.backing = filesystem_name(workdir);

    for c in plan.scenario.requires() {
        if !env.holds(&c) {
            outcome.status = Status::Skip;
            outcome.reason =
                Some(format!("requires {} (kernel {}, driver {})", describe_cond(&c), release, plan.driver.name()));
            return outcome;
        }
    }

    let dirs = Dirs {
        root: workdir.to_path_buf(),
        layers: workdir.join("layers"),
        upper: workdir.join("upper"),
        work: workdir.join("work"),
        merged: workdir.join("merged"),
    };
    let mut r = Run {
        plan,
        env,
        kernel_release: release,
        dialect: dialect(plan.driver),
        dirs,
        declared: HashMap::new(),
        layers: BTreeMap::new(),
        fingerprints: Vec::new(),
        mounts: Vec::new(),
        focus: None,
        last_mount: None,
        uppers: BTreeMap::new(),
        works: BTreeMap::new(),
        filesystems: HashMap::new(),
        fs_mounted: Vec::new(),
        stats: HashMap::new(),
        handles: HashMap::new(),
        fds: fds::Descriptors::default(),
        steps: Vec::new(),
        failures: Vec::new(),
        mount_api: None,
        merged_final: None,
    };
    let result = r.prepare().and_then(|()| r.block(&plan.scenario.body)).and_then(|()| r.finish());
    if let Err(e) = result {
        r.teardown();
        if let InstanceError::Skip(why) = e {
            r.release(workdir);
            outcome.status = Status::Skip;
            outcome.reason = Some(why);
            outcome.kernel = r.kernel_release.clone();
            return outcome;
        }
        let mut reason = e.to_string();
        if e.out_of_space() {
            reason.push_str(": no space left on the backing filesystem (ENOSPC); OVLC_BACKING_SIZE sets its size");
        }
        outcome.status = Status::Error;
        outcome.reason = Some(reason);
    }
    outcome.mount_api = r.mount_api.take();
    outcome.merged = r.merged_final.take();
    if outcome.status != Status::Error {
        for (name, u) in &r.uppers {
            let Ok(t) = tree::capture(&u.dir, u.dialect) else { continue };
            match name.as_str() {
                "" => outcome.upper = Some(t.render()),
                _ => outcome.uppers.push((name.clone(), t.render())),
            }
        }
        match r.verify_lowers() {
            Ok(()) => {}
            Err(f) => r.failures.push(f),
        }
        if !r.failures.is_empty() {
            outcome.status = Status::Fail;
        }
    }
    if plan.explain {
        let mut paths: Vec<String> = Vec::new();
        for dir in r.layers.values() {
            if let Ok(t) = tree::capture(dir, Dialect::Plain) {
                paths.extend(t.nodes.into_keys());
            }
        }
        paths.sort();
        paths.dedup();
        outcome.lower_paths = paths;
    }
    if plan.fault == Some(Fault::KernelWarning) {
        let _ = std::fs::write("/dev/kmsg", "<4>ovlc: WARNING: a deliberate warning (OVLC_FAULTS=kmsg)\n");
    }
    if plan.fault == Some(Fault::Flaky) && outcome.status == Status::Pass {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1 {
            outcome.status = Status::Fail;
            r.failures.push(Failure {
                line: 0,
                step: "OVLC_FAULTS=flaky".into(),
                expected: "the result of the first run".into(),
                actual: "a deliberate failure every other run".into(),
            });
        }
    }
    // After the trees are captured and the lowers checked.
    r.release(workdir);
    outcome.steps = std::mem::take(&mut r.steps);
    outcome.failures = std::mem::take(&mut r.failures);
    outcome.kernel = r.kernel_release.clone();
    outcome.millis = started.elapsed().as_millis() as u64;
    outcome
}

impl Run<'_> {
    fn prepare(&mut self) -> Stop {
        for d in [&self.dirs.layers, &self.dirs.merged] {
            std::fs::create_dir_all(d).map_err(InstanceError::io("mkdir", d))?;
        }
        Ok(())
    }

    fn block(&mut self, b: &ast::Block<Stmt>) -> Stop {
        for item in &b.items {
            if crate::sys::watchdog::expired() {
                return Err(InstanceError::OutOfTime { line: item.span.line });
            }
            self.stmt(&item.node, item.span)?;
        }
        Ok(())
    }

    fn step(&mut self, span: ast::Span, text: String, syscall: String, result: String, ok: bool, notes: Vec<String>) {
        let upper_after = match self.uppers.get("") {
            Some(u) if self.plan.explain => tree::capture(&u.dir, u.dialect).ok().map(|t| t.render()),
            _ => None,
        };
        let text = self.in_focus(text);
        self.steps.push(Step {
            line: span.line,
            text,
            syscall,
            result,
            ok,
            notes,
            upper_after,
            mount: false,
            got: None,
        });
    }

    fn fail(&mut self, span: ast::Span, step: &str, expected: String, actual: String) {
        let step = self.in_focus(step.to_string());
        self.failures.push(Failure { line: span.line, step, expected, actual });
    }

    /// A step inside `on MOUNT { ... }` says so: `on inner: read /f`.
    fn in_focus(&self, text: String) -> String {
        match &self.focus {
            Some(m) => format!("on {m}: {text}"),
            None => text,
        }
    }

    fn stmt(&mut self, s: &Stmt, span: ast::Span) -> Stop {
        let before = self.steps.len();
        let done = self.stmt_steps(s, span);
        if matches!(s, Stmt::Mount(_) | Stmt::Remount(_)) {
            for st in &mut self.steps[before..] {
                st.mount = true;
            }
        }
        done
    }

    fn stmt_steps(&mut self, s: &Stmt, span: ast::Span) -> Stop {
        match s {
            Stmt::Scenario(_)
            | Stmt::About(_)
            | Stmt::Tags(_)
            | Stmt::Requires(_)
            | Stmt::Vary(_)
            | Stmt::Param(_)
            | Stmt::Backing(_) => Ok(()),
            Stmt::Layer(l) => {
                self.declared.insert(l.name.node.clone(), l.clone());
                Ok(())
            }
            Stmt::Filesystem(f) => {
                self.filesystems.insert(f.name.node.clone(), f.clone());
                Ok(())
            }
            Stmt::Edit(e) => self.edit(e, span),
            Stmt::Mount(m) => {
                let text = first_line(&Stmt::Mount(Box::new(ast::Mount { result: None, ..(**m).clone() })));
                self.mount(m, span, &text)
            }
            Stmt::Umount(u) => {
                let name = u.mount.as_ref().map(|n| n.node.as_str());
                let (res, notes) = match self.unmount(name) {
                    Ok(()) => ("ok".to_string(), vec![]),
                    Err(e) => (errno_name(e), vec![]),
                };
                let text = first_line(&Stmt::Umount(ast::Umount { mount: u.mount.clone(), result: None }));
                self.compare_simple(span, &text, "umount2(merged, 0)", res, u.result.as_ref(), notes);
                Ok(())
            }
            Stmt::Reconfigure(r) => {
                let text = first_line(&Stmt::Reconfigure(ast::Reconfigure { result: None, ..r.clone() }));
                let opts: Vec<(String, Option<String>)> =
                    r.options.iter().map(|o| (o.name.clone(), o.value.clone())).collect();
                refuse_directory_options(&opts, span)?;
                let (call, res, notes) = match self.active() {
                    Some(live) => {
                        let _attribution = crate::sys::kmsg::attribution();
                        let mut log = crate::sys::kmsg::KernelLog::open();
                        let (call, r) = mount::reconfigure(&live.merged, &opts);
                        match r {
                            Ok(()) => (call, "ok".to_string(), vec![]),
                            Err(refused) => {
                                let (res, notes) = with_kernel_log(refused, &mut log);
                                (call, res, notes)
                            }
                        }
                    }
                    None => ("fspick(merged)".to_string(), "not mounted".to_string(), vec![]),
                };
                self.compare_simple(span, &text, &call, res, r.result.as_ref(), notes);
                Ok(())
            }
            Stmt::ExpectMountinfo(e) => {
                self.expect_mountinfo(e, span);
                Ok(())
            }
            Stmt::On(o) => {
                let before = self.focus.replace(o.mount.node.clone());
                let r = self.block(&o.body);
                self.focus = before;
                r
            }
            Stmt::Remount(r) => {
                let Some(m) = self.last_mount.clone() else {
                    return Err(InstanceError::Stopped(format!("line {}: remount before any mount", span.line)));
                };
                let name = m.name.as_ref().map(|n| n.node.clone());
                if self.mounts.iter().any(|l| l.name == name) {
                    if let Err(e) = self.unmount_where(|l| l.name == name) {
                        self.compare_simple(span, "remount", "umount2(merged, 0)", errno_name(e), r.as_ref(), vec![]);
                        return Ok(());
                    }
                }
                let mut again = m;
                again.result = r.clone();
                self.mount(&again, span, "remount")
            }
            Stmt::If(i) => {
                for (c, body) in &i.branches {
                    if self.env.holds(c) {
                        return self.block(body);
                    }
                }
                match &i.otherwise {
                    Some(b) => self.block(b),
                    None => Ok(()),
                }
            }
            Stmt::As(a) if a.userns => self.in_userns(a, span),
            Stmt::As(a) => {
                let id = sys::Identity::assume(a.owner.node.uid, a.owner.node.gid).map_err(|e| {
                    InstanceError::Stopped(format!(
                        "line {}: cannot switch to fsuid/fsgid {}: {e}",
                        span.line, a.owner.node
                    ))
                })?;
                let r = self.block(&a.body);
                drop(id);
                r
            }
            Stmt::Op(o) => self.op(o, span),
            Stmt::Expect(e) => {
                self.expect_tree(e, span);
                Ok(())
            }
            Stmt::ExpectLayer(entries) => {
                self.expect_layer(entries, span);
                Ok(())
            }
        }
    }

    // -------------------------------------------------------------- layers

    /// Builds a declared layer the first time a mount uses it.
    fn ensure_layer(&mut self, n: &ast::Name) -> Stop {
        if self.layers.contains_key(&n.node) {
            return Ok(());
        }
        let Some(l) = self.declared.get(&n.node).cloned() else {
            return Err(InstanceError::Stopped(format!(
                "line {}: layer {} was not declared on this path (in a branch not taken?)",
                n.span.line, n.node
            )));
        };
        if let Some(fs) =
            l.on.as_ref().filter(|fs| self.filesystems.get(&fs.node).is_some_and(|f| f.kind.node.read_only()))
        {
            return self.pack_image(fs, n);
        }
        let dir = match &l.on {
            Some(fs) => self.fs_dir(fs)?.join("layers").join(&l.name.node),
            None => self.dirs.layers.join(&l.name.node),
        };
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        self.fill_layer(&l, &dir)?;
        self.record_layer(&l.name.node, dir)
    }

    /// A built (or edited) layer: where it is, and its fingerprint, what
    /// "a lower layer must not change" compares with at the end.
    fn record_layer(&mut self, name: &str, dir: PathBuf) -> Stop {
        let fp = tree::capture(&dir, Dialect::Plain)?.fingerprint();
        match self.fingerprints.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = fp,
            None => self.fingerprints.push((name.to_string(), fp)),
        }
        self.layers.insert(name.to_string(), dir);
        Ok(())
    }

    fn fill_layer(&mut self, l: &ast::Layer, dir: &Path) -> Stop {
        let ox = opaque_xattr(self.plan.driver);
        let built = match &l.source {
            LayerSource::Entries(b) => crate::exec::layer::build(dir, b, ox),
            LayerSource::Tar(p) => crate::exec::layer::unpack_oci(&self.plan.scenario_dir.join(&p.node), dir, ox),
        };
        built.map_err(|e| match e {
            layer::BuildError::NotPermittedHere(why) => InstanceError::Skip(format!(
                "layer {} cannot be built on {}: {}",
                l.name.node,
                self.plan.target,
                self.dirs.relative(&why)
            )),
            e => InstanceError::Layer(e),
        })
    }

    /// `edit layer NAME` / `edit upper`: raw changes on the directory, then
    /// a new fingerprint (the layer as edited is what must not change next).
    fn edit(&mut self, e: &ast::Edit, span: ast::Span) -> Stop {
        let (dir, text, syscall) = match &e.layer {
            _ if e.work.is_some() => {
                let key = e.work.as_ref().map_or("", |w| w.node.as_str());
                self.make_work(key, None)?;
                let dir =
                    self.works.get(key).cloned().ok_or_else(|| InstanceError::Stopped("no work directory".into()))?;
                (
                    dir,
                    first_line(&Stmt::Edit(ast::Edit { items: ast::Block::default(), ..e.clone() })),
                    "raw calls on the work directory, not through the overlay",
                )
            }
            Some(l) => {
                self.ensure_layer(l)?;
                let dir = self
                    .layers
                    .get(&l.node)
                    .cloned()
                    .ok_or_else(|| InstanceError::Stopped(format!("layer {} not built", l.node)))?;
                (dir, format!("edit layer {}", l.node), "raw calls on the layer's directory, not through the overlay")
            }
            None if self.uppers.contains_key(e.upper.as_ref().map_or("", |n| n.node.as_str())) => (
                self.uppers[e.upper.as_ref().map_or("", |n| n.node.as_str())].dir.clone(),
                first_line(&Stmt::Edit(ast::Edit { items: ast::Block::default(), ..e.clone() })),
                "raw calls on the upper directory, not through the overlay",
            ),
            None => {
                return Err(InstanceError::Stopped(format!("line {}: `edit upper` before the upper exists", span.line)))
            }
        };
        layer::edit(&dir, &e.items, opaque_xattr(self.plan.driver)).map_err(|e| match e {
            layer::BuildError::NotPermittedHere(why) => {
                InstanceError::Skip(format!("line {}: {}", span.line, self.dirs.relative(&why)))
            }
            e => InstanceError::Stopped(format!("line {}: {}", span.line, self.dirs.relative(&e.to_string()))),
        })?;
        if let Some(l) = &e.layer {
            self.record_layer(&l.node, dir)?;
        }
        self.step(span, text, syscall.to_string(), "ok".into(), true, vec![]);
        Ok(())
    }

    /// The directories of the last mount's lower layers (data-only layers are
    /// not in the merged view, so not among them).
    fn visible_lowers(&self) -> Vec<PathBuf> {
        let Some(m) = &self.last_mount else { return Vec::new() };
        m.lowers.iter().filter_map(|r| self.layers.get(&r.name()?.node).cloned()).collect()
    }

    fn verify_lowers(&self) -> Result<(), Failure> {
        for (name, before) in &self.fingerprints {
            let Some(dir) = self.layers.get(name) else { continue };
            let after = tree::capture(dir, Dialect::Plain).map_or_else(|e| e.to_string(), |t| t.fingerprint());
            if &after != before {
                return Err(Failure {
                    line: 0,
                    step: format!("layer {name} must never change"),
                    expected: "the layer as built".into(),
                    actual: format!("it changed:\n{}", tree::diff(before, &after)),
                });
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- mounts

    /// The directory a name stands for: a declared layer (built now), or
    /// else a named upper.
    fn own_dir(&mut self, n: &ast::Name) -> Stop<PathBuf> {
        if let (false, Some(u)) = (self.declared.contains_key(&n.node), self.uppers.get(&n.node)) {
            return Ok(u.dir.clone());
        }
        self.ensure_layer(n)?;
        self.layers.get(&n.node).cloned().ok_or_else(|| InstanceError::Stopped(format!("layer {} not built", n.node)))
    }

    /// A directory a mount takes, as the path the mount is given: a layer
    /// (built now), a named upper (layer rotation), or a directory inside a
    /// mounted overlay, opened inside it (never following a symlink out of
    /// it) and named through the descriptor, which `held` keeps open until
    /// the mount is made.
    fn dir_path(&mut self, r: &ast::DirRef, held: &mut Vec<OwnedFd>) -> Stop<String> {
        match r {
            ast::DirRef::Name(n) => Ok(self.own_dir(n)?.display().to_string()),
            ast::DirRef::InMount { mount, path } => {
                let live = self.mount_named(&mount.node);
                let root = match live {
                    Some(l) => l.root.try_clone().map_err(|e| InstanceError::Stopped(format!("dup: {e}")))?,
                    None if self.declared.contains_key(&mount.node) || self.uppers.contains_key(&mount.node) => {
                        // A directory inside a layer or a named upper (`base:/sub`).
                        let dir = self.own_dir(mount)?;
                        sys::open_in_root_dir(&dir).map_err(|e| {
                            InstanceError::Stopped(format!("line {}: open {}: {e}", mount.span.line, mount.node))
                        })?
                    }
                    None => {
                        return Err(InstanceError::Stopped(format!(
                            "line {}: mount {} is not mounted (for {})",
                            mount.span.line,
                            mount.node,
                            r.text()
                        )))
                    }
                };
                let rel = path.node.trim_start_matches('/');
                let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                let fd = sys::open_in_root(&root, if rel.is_empty() { "." } else { rel }, flags, 0).map_err(|e| {
                    InstanceError::Stopped(format!("line {}: cannot open {}: {}", mount.span.line, r.text(), e.desc()))
                })?;
                let name = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
                held.push(fd);
                Ok(name)
            }
        }
    }

    fn mount(&mut self, m: &ast::Mount, span: ast::Span, text: &str) -> Stop {
        let name = m.name.as_ref().map(|n| n.node.clone());
        if self.mounts.iter().any(|l| l.name == name) {
            // A second unnamed `mount` replaces the first, as `remount` does.
            let _ = self.unmount_where(|l| l.name == name);
        }
        let mut held = Vec::new();
        let mut lower = Vec::new();
        for r in &m.lowers {
            lower.push(mount::escape_layer(&self.dir_path(r, &mut held)?));
        }
        let mut lower = lower.join(":");
        for d in &m.data {
            lower.push_str("::");
            lower.push_str(&mount::escape_layer(&self.dir_path(d, &mut held)?));
        }
        if m.raw.is_some() {
            // The raw option string may name any layer declared so far.
            let mut names: Vec<String> = self.declared.keys().cloned().collect();
            names.sort();
            for n in names {
                self.ensure_layer(&ast::Spanned::new(n, span))?;
            }
        }
        let mut opts: Vec<(String, Option<String>)> = vec![("lowerdir".into(), Some(lower))];
        // The upper this mount makes or reuses (`""`: the default one).
        let upper_key = match &m.upper {
            None => Some(String::new()),
            Some(ast::DirRef::Name(n)) => Some(n.node.clone()),
            Some(ast::DirRef::InMount { .. }) => None,
        };
        if !m.readonly {
            let upper = match (&upper_key, &m.upper) {
                (Some(k), _) => self.make_upper(k, m.upper_from.as_ref(), m.upper_on.as_ref(), span)?,
                (None, Some(r)) => self.dir_path(r, &mut held)?,
                (None, None) => unreachable!("an upper without a key is a path inside a mount"),
            };
            // A new work directory goes where the upper is (the kernel wants
            // both on one filesystem): `upper NAME` alone has the work
            // directory NAME; `work W` is made beside the upper if new.
            let upper_on = upper_key.as_deref().and_then(|k| self.uppers.get(k)).and_then(|u| u.on.clone());
            let work = match &m.work {
                Some(r @ ast::DirRef::InMount { .. }) => self.dir_path(r, &mut held)?,
                Some(ast::DirRef::Name(w)) => self.make_work(&w.node, upper_on)?,
                None => self.make_work(upper_key.as_deref().unwrap_or(""), upper_on)?,
            };
            opts.push(("upperdir".into(), Some(upper)));
            opts.push(("workdir".into(), Some(work)));
        }
        let driver = self.mount_driver(m, span)?;
        let mut in_force: Vec<(String, Option<String>)> =
            m.options.iter().map(|o| (o.name.clone(), o.value.clone())).collect();
        in_force.extend(self.plan.instance.params.iter().map(|(n, v)| (n.clone(), Some(v.clone()))));
        refuse_directory_options(&in_force, span)?;
        if driver == Driver::Rootless && !in_force.iter().any(|(n, _)| n == "userxattr") {
            in_force.push(("userxattr".into(), None));
        }
        opts.extend(in_force.iter().cloned());
        // userxattr moves the overlay's own xattrs to user.overlay.*, whoever mounts.
        self.dialect = match dialect(driver) {
            Dialect::Trusted if in_force.iter().any(|(n, _)| n == "userxattr") => Dialect::User,
            d => d,
        };
        self.env.options = in_force;
        self.last_mount = Some(m.clone());

        let via = m.via.unwrap_or(ast::Via::String);
        if via != ast::Via::String && driver == Driver::Fuse {
            return Err(InstanceError::Skip(format!(
                "line {}: fuse-overlayfs takes its layers as one option string, not `via {}`",
                span.line,
                via.name()
            )));
        }
        if via == ast::Via::Fd && self.env.kernel < [6, 13, 0] {
            return Err(InstanceError::Skip(format!(
                "line {}: `via fd` needs kernel 6.13 (overlay layers by FSCONFIG_SET_FD); this kernel is {}",
                span.line, self.kernel_release
            )));
        }
        let merged = match &name {
            Some(n) => {
                let d = self.dirs.named("mounts", n)?;
                std::fs::create_dir_all(&d).map_err(InstanceError::io("mkdir", &d))?;
                d
            }
            None => self.dirs.merged.clone(),
        };
        // fuse-overlayfs writes to its standard error, not to the kernel log.
        let attribution = (driver != Driver::Fuse).then(crate::sys::kmsg::attribution);
        let mut log = crate::sys::kmsg::KernelLog::open();
        let at = mount::Place { merged: &merged, layers: &self.dirs.layers };
        let raw = m.raw.as_ref().map(|r| String::from_utf8_lossy(r.node.as_slice()).into_owned());
        if raw.as_deref().is_some_and(dsl::raw_options_escape) {
            // `ovlc check` refuses it; a plan made some other way is refused here too.
            return Err(InstanceError::Stopped(format!("line {}: `options` may name layers only", span.line)));
        }
        let attempt = match (driver, &raw) {
            (Driver::Fuse, _) => {
                opts.extend(raw.iter().map(|r| (r.clone(), None)));
                mount::fuse(&sys::programs::fuse_binary(self.plan.fuse_binary.as_deref()), at, &opts)
            }
            (_, Some(r)) => mount::settled(|| mount::legacy_raw(at, &opts, r)),
            (_, None) => mount::settled(|| mount::kernel(at, &opts, via)),
        };
        drop(held);
        self.mount_api = Some(attempt.api.to_string());
        let (res, notes) = match attempt.result {
            Ok(how) => {
                let root = sys::open_in_root_dir(&merged)
                    .map_err(|e| InstanceError::Stopped(format!("open merged dir: {e}")))?;
                self.mounts.push(Live { name, merged, how, root });
                // The upper is now in this mount's dialect (not after a refused mount).
                if let Some(u) = upper_key.as_ref().filter(|_| !m.readonly).and_then(|k| self.uppers.get_mut(k)) {
                    u.dialect = self.dialect;
                }
                ("ok".to_string(), Vec::new())
            }
            Err(refused) => with_kernel_log(refused, &mut log),
        };
        drop(attribution);
        self.compare_simple(span, text, &attempt.syscall, res, m.result.as_ref(), notes);
        Ok(())
    }

    /// What the instance leaves to be removed: its directory without inode
    /// flags that would keep it (`chattr +i`, `+a`), and the filesystems of
    /// `filesystem` statements (they hold layers and uppers) unmounted.
    fn release(&mut self, workdir: &Path) {
        if self.plan.scenario.uses_chattr() {
            sys::clear_sticky_flags(workdir);
        }
        self.unmount_filesystems();
    }

    /// Unmounts the filesystems of `filesystem` statements, after the overlays.
    fn unmount_filesystems(&mut self) {
        while let Some((_, dir)) = self.fs_mounted.pop() {
            if sys::umount(&dir, 0).is_err() {
                let _ = sys::umount(&dir, libc::MNT_DETACH);
            }
        }
    }

    /// The driver of a mount: `driver D`, or the target's. A root target
    /// runs the kernel driver and fuse-overlayfs; a rootless target (in a
    /// user namespace) the rootless driver only.
    fn mount_driver(&self, m: &ast::Mount, span: ast::Span) -> Stop<Driver> {
        let Some(d) = &m.driver else { return Ok(self.plan.driver) };
        let (want, have) = (d.node, self.plan.driver);
        if want != have && (want == Driver::Rootless || have == Driver::Rootless) {
            return Err(InstanceError::Skip(format!(
                "line {}: `driver {}` needs a {} target; this one ({}) runs {}",
                span.line,
                want.name(),
                if want == Driver::Rootless { "rootless" } else { "root" },
                self.plan.target,
                if have == Driver::Rootless { "in a user namespace" } else { "as root" },
            )));
        }
        if want == Driver::Fuse {
            if let Some(why) = sys::programs::fuse_unavailable(self.plan.fuse_binary.as_deref()) {
                return Err(InstanceError::Skip(format!("line {}: `driver fuse`: {why}", span.line)));
            }
        }
        Ok(want)
    }

    /// The upper `key` names (`""`: the default one), made (and filled from
    /// `upper from`) the first time a mount takes it, kept across `umount`;
    /// on filesystem `on` when the mount says so.
    fn make_upper(
        &mut self,
        key: &str,
        from: Option<&ast::Name>,
        on: Option<&ast::Name>,
        span: ast::Span,
    ) -> Stop<String> {
        if let Some(u) = self.uppers.get(key) {
            return Ok(u.dir.display().to_string());
        }
        let base = match on {
            Some(fs) => Some(self.fs_dir(fs)?),
            None => None,
        };
        let dir = match (&base, key.is_empty()) {
            (Some(b), _) => b.join("uppers").join(key),
            (None, true) => self.dirs.upper.clone(),
            (None, false) => self.dirs.named("uppers", key)?,
        };
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        if let Some(name) = from {
            let l = self.declared.get(&name.node).cloned().ok_or_else(|| {
                InstanceError::Stopped(format!(
                    "line {}: layer {} was not declared on this path (in a branch not taken?)",
                    span.line, name.node
                ))
            })?;
            self.fill_layer(&l, &dir)?;
        }
        let shown = dir.display().to_string();
        self.uppers.insert(key.to_string(), Upper { dir, dialect: self.dialect, on: base });
        Ok(shown)
    }

    /// The work directory `key` names (`""`: the default one), under `on`
    /// (the filesystem of `upper NAME on FS`, which names its work too).
    fn make_work(&mut self, key: &str, on: Option<PathBuf>) -> Stop<String> {
        // A name used again is the same directory, wherever it was made.
        if let Some(d) = self.works.get(key) {
            return Ok(d.display().to_string());
        }
        let dir = match (on, key.is_empty()) {
            (Some(b), _) => b.join("works").join(key),
            (None, true) => self.dirs.work.clone(),
            (None, false) => self.dirs.named("works", key)?,
        };
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        let shown = dir.display().to_string();
        self.works.insert(key.to_string(), dir);
        Ok(shown)
    }

    /// The mounted overlay named `name` (`as NAME`).
    fn mount_named(&self, name: &str) -> Option<&Live> {
        self.mounts.iter().rev().find(|l| l.name.as_deref() == Some(name))
    }

    /// The mount operations act on: the one `on` names, or the most recent.
    fn active(&self) -> Option<&Live> {
        match &self.focus {
            Some(n) => self.mount_named(n),
            None => self.mounts.last(),
        }
    }

    /// `umount [NAME]`: the named mount, or the most recent.
    fn unmount(&mut self, name: Option<&str>) -> Result<(), Errno> {
        match name {
            Some(n) => self.unmount_where(|l| l.name.as_deref() == Some(n)),
            None => {
                let last = self.mounts.len().checked_sub(1).ok_or(Errno::EINVAL)?;
                self.unmount_at(last)
            }
        }
    }

    fn unmount_where(&mut self, which: impl Fn(&Live) -> bool) -> Result<(), Errno> {
        let i = self.mounts.iter().rposition(which).ok_or(Errno::EINVAL)?;
        self.unmount_at(i)
    }

    /// Unmounts one overlay; when the kernel refuses (EBUSY: a descriptor
    /// still open on it), it stays mounted and usable.
    fn unmount_at(&mut self, i: usize) -> Result<(), Errno> {
        let Live { name, merged, mut how, root } = self.mounts.remove(i);
        drop(root);
        let r = mount::unmount(&merged, &mut how);
        if r.is_err() {
            if let Ok(root) = sys::open_in_root_dir(&merged) {
                self.mounts.insert(i, Live { name, merged, how, root });
            }
        }
        r
    }

    /// Unmounts whatever is mounted, newest first, for the error path.
    fn teardown(&mut self) {
        self.fds.close_all();
        while let Some(last) = self.mounts.len().checked_sub(1) {
            let merged = self.mounts[last].merged.clone();
            if self.unmount_at(last).is_err() {
                let _ = sys::umount(&merged, libc::MNT_DETACH);
                if self.mounts.len() > last {
                    self.mounts.remove(last);
                }
            }
        }
    }

    fn finish(&mut self) -> Stop {
        // The instance's descriptors close at its end, before its last unmount.
        self.fds.close_all();
        self.focus = None;
        if let Some(live) = self.mounts.last() {
            let merged_dir = live.merged.clone();
            let merged = tree::capture(&merged_dir, Dialect::Plain).ok();
            let default_upper = self.last_mount.as_ref().is_some_and(|m| m.upper.is_none() && m.name.is_none());
            if let (true, true, Some(u)) = (self.plan.roundtrip, default_upper, self.uppers.get("")) {
                if let Some(m) = &merged {
                    let lowers = self.visible_lowers();
                    let trip = crate::oci::roundtrip(&u.dir, &lowers, m, &merged_dir);
                    if let Some(d) = trip.unwrap_or_else(|e| Some(e.to_string())) {
                        self.failures.push(Failure {
                            line: 0,
                            step: "layer round trip: export the upper, apply it onto the lowers".into(),
                            expected: "the merged view".into(),
                            actual: d,
                        });
                    }
                }
            }
            self.merged_final = merged.map(|t| t.render());
        }
        while let Some(last) = self.mounts.len().checked_sub(1) {
            if let Err(e) = self.unmount_at(last) {
                return Err(InstanceError::Stopped(format!("final unmount failed: {e}")));
            }
        }
        Ok(())
    }

    /// Records a statement whose result is `ok` or an errno, and checks it.
    fn compare_simple(
        &mut self,
        span: ast::Span,
        text: &str,
        syscall: &str,
        actual: String,
        want: Option<&ast::Outcome>,
        notes: Vec<String>,
    ) {
        let (ok, expected) = results::judge_simple(want.map(|w| &w.node), &actual);
        if !ok {
            let mut act = actual.clone();
            if !notes.is_empty() {
                act.push_str(&format!(" ({})", notes.join("; ")));
            }
            self.fail(span, text, expected, act);
        }
        let said = (!ok || want.is_some_and(|w| results::open_ended(&w.node))).then(|| actual.clone());
        self.step(span, text.to_string(), syscall.to_string(), actual, ok, notes);
        self.said(said);
    }

    /// What the last step did, in the language's words (`Step::got`).
    fn said(&mut self, got: Option<String>) {
        if let (Some(step), Some(g)) = (self.steps.last_mut(), got) {
            step.got = Some(g);
        }
    }

    // -------------------------------------------------------------- operations

    /// Performs an operation: on the merged view, on a held descriptor, or
    /// `open`/`close` of one.
    fn perform(&mut self, o: &ast::OpStmt, text: &str, span: ast::Span) -> Result<SysResult<Value>, String> {
        if let Some(fd) = o.op.fd() {
            if let Op::Close { .. } = o.op {
                return self.fds.close(&fd.node).map(|r| r.map(|()| Value::None)).ok_or_else(|| "not open".into());
            }
            let held = self.fds.get(&fd.node).ok_or_else(|| "not open".to_string())?;
            return Ok(fds::perform(&held.fd, &o.op));
        }
        match &o.op {
            Op::Value { .. } | Op::Compare { subject: ast::Subject::Name(_), .. } => return Ok(Ok(Value::None)),
            Op::Sleep { millis } => {
                std::thread::sleep(std::time::Duration::from_millis(millis.node));
                return Ok(Ok(Value::None));
            }
            Op::Sync | Op::DropCaches => return Ok(ops::whole_kernel(&o.op)),
            _ => {}
        }
        if let Some(l) = o.op.layer() {
            // `LAYER:/path`: the layer's (or named upper's) own directory.
            let dir = self.own_dir(l).map_err(|e| e.to_string())?;
            let root = match sys::open_in_root_dir(&dir) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            return Ok(match &o.op {
                Op::Compare { subject: ast::Subject::Layer { path, .. }, name, .. } => match self.stats.get(&name.node)
                {
                    Some(then) => inodes::retake(&root, &path.node, then).map(Value::Remember),
                    None => Ok(Value::None),
                },
                op => ops::perform(&root, op),
            });
        }
        let Some(cur) = self.active() else { return Err("not mounted".into()) };
        if let Op::Compare { subject: ast::Subject::Path(p), name, .. } = &o.op {
            return Ok(match self.stats.get(&name.node) {
                Some(then) => inodes::retake(&cur.root, &p.node, then).map(Value::Remember),
                None => Ok(Value::None),
            });
        }
        if let Op::OpenHandle { handle, fd, flags } = &o.op {
            let Some(h) = self.handles.get(&handle.node) else { return Err("no handle".into()) };
            // open_by_handle_at takes no O_PATH descriptor for the mount.
            let mount = sys::open_in_root(&cur.root, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0);
            let opened = mount.and_then(|m| sys::open_by_handle(&m, h, fds::oflags(&flags.node)));
            return Ok(opened.map(|f| {
                self.fds.bind(&fd.node, fds::Held { fd: f, opened: text.to_string(), line: span.line });
                Value::None
            }));
        }
        if let Op::Open { path, fd, flags, mode } = &o.op {
            let opened = fds::open(&cur.root, &path.node, &flags.node, mode.as_ref().map(|m| m.node.0));
            return Ok(opened.map(|f| {
                self.fds.bind(&fd.node, fds::Held { fd: f, opened: text.to_string(), line: span.line });
                Value::None
            }));
        }
        Ok(ops::perform(&cur.root, &o.op))
    }

    fn op(&mut self, o: &ast::OpStmt, span: ast::Span) -> Stop {
        let text = dsl::format_stmt(&Stmt::Op(ast::OpStmt { op: o.op.clone(), result: None }));
        let syscall = match o.op.fd() {
            Some(fd) => fds::syscall_name(&o.op, self.fds.get(&fd.node)),
            None if matches!(o.op, Op::Open { .. } | Op::OpenHandle { .. }) => fds::syscall_name(&o.op, None),
            None => ops::syscall_name(&o.op),
        };
        let got = match self.perform(o, &text, span) {
            Ok(got) => got,
            Err(missing) => {
                let (want, found) = match missing.as_str() {
                    "not mounted" => ("a mounted overlay", "nothing is mounted"),
                    "no handle" => ("a file handle remembered by `handle`", "none: that `handle` failed"),
                    _ => ("an open descriptor", "it is not open"),
                };
                self.fail(span, &text, want.into(), found.into());
                self.step(span, text, syscall, missing, false, vec![]);
                return Ok(());
            }
        };
        if sys::take_resolve_exhausted() {
            // The kernel's EAGAIN asked for a retry every time: the run's
            // trouble (something raced the walk endlessly), not a result.
            return Err(InstanceError::Stopped(format!(
                "{text}: resolving the path inside the overlay failed {} times with EAGAIN \
                 (renames or mounts elsewhere on the system kept racing the walk)",
                sys::RESOLVE_RETRIES
            )));
        }
        let actual = match &got {
            Ok(v) => describe_value(&o.op, v),
            Err(e) => errno_name(*e),
        };
        let mut notes = Vec::new();
        let (got, unmet) = self.remembered(&o.op, got, &mut notes);
        let want = o.result.as_ref().map(|r| &r.node);
        let (ok, expected, shown) = results::judge(want, &got, &actual, &unmet);
        let said =
            if !ok || want.is_some_and(results::open_ended) { results::language_text(&o.op, &got) } else { None };
        if !ok {
            let mut act = shown.clone();
            if !notes.is_empty() {
                act.push_str(&format!(" ({})", notes.join("; ")));
            }
            self.fail(span, &text, expected, act);
        }
        let result = if matches!(got, Err(None)) { unmet } else { shown };
        self.step(span, text, syscall, result, ok, notes);
        self.said(said);
        Ok(())
    }

    /// Remembered names: what `stat`, `lstat`, `fstat`, `statfs` and `dirent`
    /// took is kept; `same-inode`, `compare` and `value` are judged against it.
    /// A comparison that does not hold is `Err(None)`, with the word for it
    /// (the raw values go to `notes`).
    #[allow(clippy::type_complexity)]
    fn remembered(
        &mut self,
        op: &Op,
        got: SysResult<Value>,
        notes: &mut Vec<String>,
    ) -> (Result<Value, Option<Errno>>, String) {
        let judged = |r: Result<(), String>, notes: &mut Vec<String>| match r {
            Ok(()) => Ok(Value::None),
            Err(why) => {
                notes.push(why);
                Err(None)
            }
        };
        let unknown = |name: &str| Err(format!("nothing is remembered as {name}"));
        match (op, got) {
            (
                Op::Stat { name, .. }
                | Op::Lstat { name, .. }
                | Op::Fstat { name, .. }
                | Op::Statfs { name, .. }
                | Op::Dirent { name, .. },
                Ok(Value::Remember(r)),
            ) => {
                self.stats.insert(name.node.clone(), r);
                (Ok(Value::None), String::new())
            }
            (Op::SameInode { name, .. }, Ok(Value::Remember(now))) => {
                let r = match self.stats.get(&name.node) {
                    Some(then) => inodes::compare(&now, then, &[StatField::Ino, StatField::Dev], CompareHow::Same),
                    None => unknown(&name.node),
                };
                (judged(r, notes), "different inode".into())
            }
            (Op::Compare { subject, name, fields, how }, Ok(v)) => {
                let now = match (subject, v) {
                    (ast::Subject::Name(other), _) => self.stats.get(&other.node).copied(),
                    (_, Value::Remember(r)) => Some(r),
                    _ => None,
                };
                let r = match (now, self.stats.get(&name.node)) {
                    (Some(now), Some(then)) => inodes::compare(&now, then, &fields.node, *how),
                    _ => unknown(&name.node),
                };
                (judged(r, notes), format!("not {}", how.name()))
            }
            (Op::Value { name, field, op, value }, Ok(_)) => {
                let r = match self.stats.get(&name.node) {
                    Some(then) => inodes::value(then, field.node, *op, value.node),
                    None => unknown(&name.node),
                };
                (judged(r, notes), "does not hold".into())
            }
            (Op::Handle { name, .. }, Ok(Value::Handle(h))) => {
                self.handles.insert(name.node.clone(), h);
                (Ok(Value::None), String::new())
            }
            (_, Ok(v)) => (Ok(v), String::new()),
            (_, Err(e)) => (Err(Some(e)), String::new()),
        }
    }

    // -------------------------------------------------------------- expectations

    fn expect_tree(&mut self, e: &ast::Expect, span: ast::Span) {
        let head = first_line(&Stmt::Expect(ast::Expect { checks: ast::Block::default(), ..e.clone() }));
        let key = e.name.as_ref().map_or("", |n| n.node.as_str());
        let place = match e.target {
            ast::TreeTarget::Upper => {
                self.uppers.get(key).map(|u| (u.dir.clone(), if e.raw { Dialect::Plain } else { u.dialect }))
            }
            ast::TreeTarget::Work => self.works.get(key).map(|w| (w.clone(), Dialect::Plain)),
            ast::TreeTarget::Merged => match &e.name {
                Some(n) => self.mount_named(&n.node),
                None => self.active(),
            }
            .map(|l| (l.merged.clone(), Dialect::Plain)),
        };
        let tree = match place {
            Some((dir, dialect)) => tree::capture(&dir, dialect).map_err(|e| e.to_string()),
            None => Err(format!("there is no {} tree here", e.target.name())),
        };
        let problems = match &tree {
            // `?`: nothing to check, the tree is the answer.
            Ok(_) if e.open => Vec::new(),
            Ok(t) => check::evaluate(t, e),
            Err(msg) => vec![msg.clone()],
        };
        let said = match &tree {
            // The tree in checks: the answer to `?`, or what a wrong block should have said.
            Ok(t) if e.open || !problems.is_empty() => Some(check::describe(t)),
            _ => None,
        };
        let (said, unsaid) = match said {
            Some(Ok(text)) => (Some(text), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        let mut problems = problems;
        let n = e.checks.items.len();
        for p in &problems {
            self.fail(span, &head, "all checks hold".into(), p.clone());
        }
        let result = checks_result(n, problems.len());
        let syscall = format!("walk the {} tree (lstat, readlink, llistxattr, read)", e.target.name());
        let ok = problems.is_empty();
        // `?`: how many paths the tree holds (the root aside).
        let result = match tree.as_ref().map_or(0, |t| t.nodes.len().saturating_sub(1)) {
            n if e.open => format!("? ({n} path{})", if n == 1 { "" } else { "s" }),
            _ => result,
        };
        problems.extend(unsaid.map(|why| format!("not in the language's words: {why}")));
        self.step(span, head, syscall, result, ok, problems);
        self.said(said);
    }

    fn expect_mountinfo(&mut self, e: &ast::MountinfoExpect, span: ast::Span) {
        let head =
            first_line(&Stmt::ExpectMountinfo(ast::MountinfoExpect { checks: ast::Block::default(), ..e.clone() }));
        let live = match &e.mount {
            Some(n) => self.mount_named(&n.node),
            None => self.active(),
        };
        let line = live.and_then(|l| mount::mountinfo_line(&l.merged, &self.dirs.root));
        let problems: Vec<String> = match &line {
            None => vec!["no line of /proc/self/mountinfo for this mount".into()],
            Some(l) => e
                .checks
                .items
                .iter()
                .filter_map(|c| {
                    let want = String::from_utf8_lossy(c.node.text.node.as_slice());
                    (l.contains(want.as_ref()) == c.node.negated).then(|| {
                        let not = if c.node.negated { "not " } else { "" };
                        format!(
                            "line {}: `{not}contains {}` does not hold",
                            c.span.line,
                            dsl::text::quote(want.as_bytes())
                        )
                    })
                })
                .collect(),
        };
        let n = e.checks.items.len();
        let ok = problems.is_empty();
        let mut notes = problems.clone();
        if !ok {
            notes.extend(line.iter().map(|l| format!("mountinfo: {l}")));
            self.fail(span, &head, "all checks hold".into(), notes.join("\n"));
        }
        let result = checks_result(n, problems.len());
        self.step(span, head, "read /proc/self/mountinfo".into(), result, ok, notes);
    }

    fn expect_layer(&mut self, entries: &ast::Block<ast::TarEntry>, span: ast::Span) {
        let head = "expect layer".to_string();
        let lowers = self.visible_lowers();
        let members = if let Some(u) = self.uppers.get("") {
            let opts = crate::oci::ExportOptions { lowers, mtime_clamp: Some(0), naive_diff: None };
            let mut buf = Vec::new();
            crate::oci::export(&u.dir, &opts, &mut buf)
                .and_then(|_| member::tar_members(&buf))
                .map_err(|e| e.to_string())
        } else {
            Err("there is no upper to export".into())
        };
        let want: Vec<member::Member> = entries.items.iter().map(|i| member::expected_member(&i.node)).collect();
        let problem = match members {
            Ok(got) => member::compare_members(&want, &got),
            Err(e) => Some(e),
        };
        let n = want.len();
        let ok = problem.is_none();
        let notes: Vec<String> = problem.into_iter().collect();
        if !ok {
            self.fail(span, &head, format!("{n} members as listed"), notes.join("\n"));
        }
        let result = if ok { format!("{n} members match") } else { "members differ".into() };
        self.step(span, head, "export the upper as an OCI layer tar (ovlc layer export)".into(), result, ok, notes);
    }
}

/// `ovlc check` refuses options that name directories (or hold `/` or `\`);
/// a plan made some other way is refused here too.
fn refuse_directory_options(opts: &[(String, Option<String>)], span: ast::Span) -> Stop {
    match opts.iter().find_map(|(n, v)| dsl::option_escape(n, v.as_deref()).map(|why| (n, why))) {
        Some((n, why)) => Err(InstanceError::Stopped(format!("line {}: option `{n}` {why}", span.line))),
        None => Ok(()),
    }
}

/// An expectation's result: `3 checks hold`, `1 check holds`, `2 of 3 failed`.
fn checks_result(n: usize, failed: usize) -> String {
    match (failed, n) {
        (0, 1) => "1 check holds".into(),
        (0, n) => format!("{n} checks hold"),
        (f, n) => format!("{f} of {n} failed"),
    }
}

/// A refused mount or reconfigure with the overlay's lines of the kernel
/// log since `log` was opened (many refusals are logged with pr_err, not on
/// the fs context), each once.
fn with_kernel_log(mut refused: mount::Refused, log: &mut crate::sys::kmsg::KernelLog) -> (String, Vec<String>) {
    for l in crate::sys::kmsg::KernelLog::overlay_lines(&log.read_new()) {
        let note = format!("kernel log: {l}");
        if !refused.notes.contains(&note) {
            refused.notes.push(note);
        }
    }
    (errno_name(refused.errno), refused.notes)
}

fn first_line(s: &Stmt) -> String {
    let line = dsl::format_stmt(s).lines().next().unwrap_or_default().to_string();
    line.trim_end_matches(" {}").trim_end_matches(" {").to_string()
}
