//! The executor: runs one scenario instance for one driver in a directory it
//! owns: builds the layers, mounts, performs each operation as one system
//! call, evaluates expectations where they stand, captures the trees, and
//! checks that no lower layer changed.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dsl::ast::{self, CompareHow, Driver, LayerSource, Op, StatField, Stmt};
use nix::errno::Errno;

use crate::model::{Failure, Fault, Outcome, Plan, Status, Step};
use crate::oci::member;
use crate::sys::{self, kernel_release, SysResult};
use crate::tree::{self, Dialect};

use self::ops::Value;

mod check;
mod env;
mod fds;
mod inodes;
pub mod layer;
pub mod mount;
mod ops;
mod results;

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

struct Current {
    how: mount::Mounted,
    root: OwnedFd,
}

/// The instance's directories inside its workspace.
struct Dirs {
    layers: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
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
    current: Option<Current>,
    last_mount: Option<ast::Mount>,
    upper_ready: bool,
    /// Names remembered by `stat`, `lstat`, `fstat`, `statfs` and `dirent`.
    stats: HashMap<String, inodes::Remembered>,
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
        current: None,
        last_mount: None,
        upper_ready: false,
        stats: HashMap::new(),
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
        outcome.upper =
            if r.upper_ready { tree::capture(&r.dirs.upper, r.dialect).ok().map(|t| t.render()) } else { None };
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
        let upper_after = if self.plan.explain && self.upper_ready {
            tree::capture(&self.dirs.upper, self.dialect).ok().map(|t| t.render())
        } else {
            None
        };
        self.steps.push(Step { line: span.line, text, syscall, result, ok, notes, upper_after, mount: false });
    }

    fn fail(&mut self, span: ast::Span, step: &str, expected: String, actual: String) {
        self.failures.push(Failure { line: span.line, step: step.to_string(), expected, actual });
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
            Stmt::Edit(e) => self.edit(e, span),
            Stmt::Mount(m) => {
                let text = first_line(&Stmt::Mount(ast::Mount { result: None, ..m.clone() }));
                self.mount(m, span, &text)
            }
            Stmt::Umount(r) => {
                let (res, notes) = match self.unmount() {
                    Ok(()) => ("ok".to_string(), vec![]),
                    Err(e) => (errno_name(e), vec![]),
                };
                self.compare_simple(span, "umount", "umount2(merged, 0)", res, r.as_ref(), notes);
                Ok(())
            }
            Stmt::Remount(r) => {
                let Some(m) = self.last_mount.clone() else {
                    return Err(InstanceError::Stopped(format!("line {}: remount before any mount", span.line)));
                };
                if self.current.is_some() {
                    if let Err(e) = self.unmount() {
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
        let dir = self.dirs.layers.join(&l.name.node);
        std::fs::create_dir_all(&dir).map_err(InstanceError::io("mkdir", &dir))?;
        self.fill_layer(&l, &dir)?;
        let fp = tree::capture(&dir, Dialect::Plain)?.fingerprint();
        self.fingerprints.push((l.name.node.clone(), fp));
        self.layers.insert(l.name.node.clone(), dir);
        Ok(())
    }

    fn fill_layer(&mut self, l: &ast::Layer, dir: &Path) -> Stop {
        let ox = opaque_xattr(self.plan.driver);
        let built = match &l.source {
            LayerSource::Entries(b) => crate::exec::layer::build(dir, b, ox),
            LayerSource::Tar(p) => crate::exec::layer::unpack_oci(&self.plan.scenario_dir.join(&p.node), dir, ox),
        };
        built.map_err(|e| match e {
            layer::BuildError::NotPermittedHere(why) => {
                InstanceError::Skip(format!("layer {} cannot be built on {}: {why}", l.name.node, self.plan.target))
            }
            e => InstanceError::Layer(e),
        })
    }

    /// `edit layer NAME` / `edit upper`: raw changes on the directory, then
    /// a new fingerprint (the layer as edited is what must not change next).
    fn edit(&mut self, e: &ast::Edit, span: ast::Span) -> Stop {
        let (dir, text, syscall) = match &e.layer {
            Some(l) => {
                self.ensure_layer(l)?;
                let dir = self
                    .layers
                    .get(&l.node)
                    .cloned()
                    .ok_or_else(|| InstanceError::Stopped(format!("layer {} not built", l.node)))?;
                (dir, format!("edit layer {}", l.node), "raw calls on the layer's directory, not through the overlay")
            }
            None if self.upper_ready => (
                self.dirs.upper.clone(),
                "edit upper".to_string(),
                "raw calls on the upper directory, not through the overlay",
            ),
            None => {
                return Err(InstanceError::Stopped(format!("line {}: `edit upper` before the upper exists", span.line)))
            }
        };
        layer::edit(&dir, &e.items, opaque_xattr(self.plan.driver))?;
        if let Some(l) = &e.layer {
            let fp = tree::capture(&dir, Dialect::Plain)?.fingerprint();
            match self.fingerprints.iter_mut().find(|(n, _)| *n == l.node) {
                Some(slot) => slot.1 = fp,
                None => self.fingerprints.push((l.node.clone(), fp)),
            }
        }
        self.step(span, text, syscall.to_string(), "ok".into(), true, vec![]);
        Ok(())
    }

    /// The directories of the last mount's lower layers (data-only layers are
    /// not in the merged view, so not among them).
    fn visible_lowers(&self) -> Vec<PathBuf> {
        let Some(m) = &self.last_mount else { return Vec::new() };
        m.lowers.iter().filter_map(|n| self.layers.get(&n.node).cloned()).collect()
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

    fn layer_dir(&mut self, n: &ast::Name) -> Stop<String> {
        self.ensure_layer(n)?;
        self.layers
            .get(&n.node)
            .map(|p| p.display().to_string())
            .ok_or_else(|| InstanceError::Stopped(format!("layer {} not built", n.node)))
    }

    fn mount(&mut self, m: &ast::Mount, span: ast::Span, text: &str) -> Stop {
        if self.current.is_some() {
            // A second `mount` replaces the first, as `remount` does.
            let _ = self.unmount();
        }
        let mut lower = m.lowers.iter().map(|n| self.layer_dir(n)).collect::<Result<Vec<_>, _>>()?.join(":");
        for d in &m.data {
            lower.push_str("::");
            lower.push_str(&self.layer_dir(d)?);
        }
        if !m.readonly && !self.upper_ready {
            std::fs::create_dir_all(&self.dirs.work).map_err(InstanceError::io("mkdir", &self.dirs.work))?;
            std::fs::create_dir_all(&self.dirs.upper).map_err(InstanceError::io("mkdir", &self.dirs.upper))?;
            if let Some(name) = &m.upper_from {
                let l = self.declared.get(&name.node).cloned().ok_or_else(|| {
                    InstanceError::Stopped(format!(
                        "line {}: layer {} was not declared on this path (in a branch not taken?)",
                        span.line, name.node
                    ))
                })?;
                let upper = self.dirs.upper.clone();
                self.fill_layer(&l, &upper)?;
            }
            self.upper_ready = true;
        }
        let mut opts: Vec<(String, Option<String>)> = vec![("lowerdir".into(), Some(lower))];
        if !m.readonly {
            opts.push(("upperdir".into(), Some(self.dirs.upper.display().to_string())));
            opts.push(("workdir".into(), Some(self.dirs.work.display().to_string())));
        }
        let mut in_force: Vec<(String, Option<String>)> =
            m.options.iter().map(|o| (o.name.clone(), o.value.clone())).collect();
        in_force.extend(self.plan.instance.params.iter().map(|(n, v)| (n.clone(), Some(v.clone()))));
        if self.plan.driver == Driver::Rootless && !in_force.iter().any(|(n, _)| n == "userxattr") {
            in_force.push(("userxattr".into(), None));
        }
        opts.extend(in_force.iter().cloned());
        // userxattr moves the overlay's own xattrs to user.overlay.*, whoever mounts.
        if in_force.iter().any(|(n, _)| n == "userxattr") && self.dialect == Dialect::Trusted {
            self.dialect = Dialect::User;
        }
        self.env.options = in_force;
        self.last_mount = Some(m.clone());

        let via = m.via.unwrap_or(ast::Via::String);
        if via != ast::Via::String && self.plan.driver == Driver::Fuse {
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
        let mut log = crate::sys::kmsg::KernelLog::open();
        let at = mount::Place { merged: &self.dirs.merged, layers: &self.dirs.layers };
        let attempt = match self.plan.driver {
            Driver::Fuse => {
                mount::fuse(&sys::programs::fuse_binary(self.plan.fuse_binary.as_deref()), at.merged, &opts)
            }
            _ => mount::kernel(at, &opts, via),
        };
        self.mount_api = Some(attempt.api.to_string());
        let (res, notes) = match attempt.result {
            Ok(how) => {
                let root = sys::open_in_root_dir(&self.dirs.merged)
                    .map_err(|e| InstanceError::Stopped(format!("open merged dir: {e}")))?;
                self.current = Some(Current { how, root });
                ("ok".to_string(), Vec::new())
            }
            Err(mut refused) => {
                // Many rejections are logged with pr_err, not on the fs context.
                for l in crate::sys::kmsg::KernelLog::overlay_lines(&log.read_new()) {
                    if !refused.notes.contains(&l) {
                        refused.notes.push(format!("kernel log: {l}"));
                    }
                }
                (errno_name(refused.errno), refused.notes)
            }
        };
        self.compare_simple(span, text, &attempt.syscall, res, m.result.as_ref(), notes);
        Ok(())
    }

    /// Unmounts the overlay; when the kernel refuses (EBUSY: a descriptor
    /// still open on it), it stays mounted and usable.
    fn unmount(&mut self) -> Result<(), Errno> {
        let Some(Current { mut how, root }) = self.current.take() else { return Err(Errno::EINVAL) };
        drop(root);
        let r = mount::unmount(&self.dirs.merged, &mut how);
        if r.is_err() {
            if let Ok(root) = sys::open_in_root_dir(&self.dirs.merged) {
                self.current = Some(Current { how, root });
            }
        }
        r
    }

    /// Unmounts whatever is mounted, for the error path.
    fn teardown(&mut self) {
        self.fds.close_all();
        if self.current.is_some() && self.unmount().is_err() {
            let _ = sys::umount(&self.dirs.merged, libc::MNT_DETACH);
        }
    }

    fn finish(&mut self) -> Stop {
        // The instance's descriptors close at its end, before its last unmount.
        self.fds.close_all();
        if self.current.is_some() {
            let merged = tree::capture(&self.dirs.merged, Dialect::Plain).ok();
            if self.plan.roundtrip && self.upper_ready {
                if let Some(m) = &merged {
                    let lowers = self.visible_lowers();
                    let trip = crate::oci::roundtrip(&self.dirs.upper, &lowers, m, &self.dirs.merged);
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
            if let Err(e) = self.unmount() {
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
        self.step(span, text.to_string(), syscall.to_string(), actual, ok, notes);
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
            _ => {}
        }
        let Some(cur) = &self.current else { return Err("not mounted".into()) };
        if let Op::Compare { subject: ast::Subject::Path(p), name, .. } = &o.op {
            return Ok(match self.stats.get(&name.node) {
                Some(then) => inodes::retake(&cur.root, &p.node, then).map(Value::Remember),
                None => Ok(Value::None),
            });
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
            None if matches!(o.op, Op::Open { .. }) => fds::syscall_name(&o.op, None),
            None => ops::syscall_name(&o.op),
        };
        let got = match self.perform(o, &text, span) {
            Ok(got) => got,
            Err(missing) => {
                let want = if missing == "not mounted" { "a mounted overlay" } else { "an open descriptor" };
                let found = if missing == "not mounted" { "nothing is mounted" } else { "it is not open" };
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
        let (ok, expected, shown) = results::judge(o.result.as_ref().map(|r| &r.node), &got, &actual, &unmet);
        if !ok {
            let mut act = shown.clone();
            if !notes.is_empty() {
                act.push_str(&format!(" ({})", notes.join("; ")));
            }
            self.fail(span, &text, expected, act);
        }
        let result = if matches!(got, Err(None)) { unmet } else { shown };
        self.step(span, text, syscall, result, ok, notes);
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
            (_, Ok(v)) => (Ok(v), String::new()),
            (_, Err(e)) => (Err(Some(e)), String::new()),
        }
    }

    // -------------------------------------------------------------- expectations

    fn expect_tree(&mut self, e: &ast::Expect, span: ast::Span) {
        let head = format!("expect {}{}", e.target.name(), if e.exactly { " exactly" } else { "" });
        let (dir, dialect) = match e.target {
            ast::TreeTarget::Upper => (self.dirs.upper.clone(), self.dialect),
            ast::TreeTarget::Merged => (self.dirs.merged.clone(), Dialect::Plain),
        };
        let ready = match e.target {
            ast::TreeTarget::Upper => self.upper_ready,
            ast::TreeTarget::Merged => self.current.is_some(),
        };
        let tree = if ready {
            tree::capture(&dir, dialect).map_err(|e| e.to_string())
        } else {
            Err(format!("there is no {} tree here", e.target.name()))
        };
        let problems = match &tree {
            Ok(t) => check::evaluate(t, e),
            Err(msg) => vec![msg.clone()],
        };
        let n = e.checks.items.len();
        for p in &problems {
            self.fail(span, &head, "all checks hold".into(), p.clone());
        }
        let result = if problems.is_empty() {
            format!("{n} check{} hold{}", if n == 1 { "" } else { "s" }, if n == 1 { "s" } else { "" })
        } else {
            format!("{} of {n} failed", problems.len())
        };
        let syscall = format!("walk the {} tree (lstat, readlink, llistxattr, read)", e.target.name());
        let ok = problems.is_empty();
        self.step(span, head, syscall, result, ok, problems);
    }

    fn expect_layer(&mut self, entries: &ast::Block<ast::TarEntry>, span: ast::Span) {
        let head = "expect layer".to_string();
        let lowers = self.visible_lowers();
        let members = if self.upper_ready {
            let opts = crate::oci::ExportOptions { lowers, mtime_clamp: Some(0), naive_diff: None };
            let mut buf = Vec::new();
            crate::oci::export(&self.dirs.upper, &opts, &mut buf)
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

fn first_line(s: &Stmt) -> String {
    dsl::format_stmt(s).lines().next().unwrap_or_default().trim_end_matches(" {").to_string()
}
