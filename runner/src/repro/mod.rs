//! `ovlc repro`: a standalone shell script that reproduces one instance on
//! a machine without ovlc, for a bug report. Pure functions from a [`Plan`]
//! to the script's text: nothing here touches the system, so the generator
//! is tested without mounting anything.
//!
//! The script is a POSIX `sh` script: it re-executes itself in a private
//! mount namespace, makes a temporary directory with a fresh `nodev` tmpfs
//! (as ovlc gives each instance), builds the layers with coreutils
//! commands, then hands the steps to an embedded `python3` program (a
//! quoted here-document: nothing in it reaches the shell) that makes each
//! system call as ovlc does (`openat2(RESOLVE_IN_ROOT)`, `renameat2`,
//! `mount(2)`, fsuid switches), prints each result in ovlc's words beside
//! the expected one, and exits 0 when every step agreed, 1 when one
//! differed. Whatever the generator cannot express is refused with the
//! scenario's file, line and column, never written approximately.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use dsl::ast::{self, Check, Driver, Entry, EntryKind, Expected, NodeKind, Op, RenameFlag, Stmt, Subject};

use crate::exec::env::Env;
use crate::model::Plan;

mod tar;

pub use tar::tar_entries;

/// The embedded Python runtime (steps are calls into it).
const RUNTIME: &str = include_str!("runtime.py");

/// The here-document's delimiter: every line of the Python program is
/// generated with printable ASCII literals, none of which is this line.
const PY_END: &str = "OVLC_PY_END";

/// The prefix of the script's machine-readable lines, one per step.
pub const STEP_PREFIX: &str = "OVLC-STEP ";
/// The prefix of the machine-readable final upper trees.
pub const UPPER_PREFIX: &str = "OVLC-UPPER ";

/// What the generator needs besides the plan: the facts of the target that
/// `if kernel` and `requires` read, and the layers of tarballs, read by
/// the caller (see [`tar_entries`]).
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The target's kernel version, for conditions.
    pub kernel: [u32; 3],
    /// How it is named in the script's header (`6.12.48+deb13-cloud-amd64`).
    pub kernel_release: String,
    /// The entries of each `layer NAME from "x.tar"`, by layer name.
    pub tar_layers: BTreeMap<String, Vec<Entry>>,
    /// The steps of ovlc's run of this instance on this target (`ovlc repro
    /// --from-run`): each step then expects exactly the result ovlc got
    /// (line, statement, result), so that the script shows whether a
    /// machine does what ovlc saw rather than what the scenario says.
    pub from_run: Option<Vec<(u32, String, String)>>,
}

/// Why no script was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The instance does not run on this target (`requires`): ovlc skips it.
    Skip(String),
    /// A statement the generator cannot express (yet), with its place.
    Cannot { file: String, line: u32, col: u32, step: String, why: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Skip(why) => write!(f, "the instance is skipped on this target: {why}"),
            Refusal::Cannot { file, line, col, step, why } => {
                write!(f, "{file}:{line}:{col}: `{step}`: a reproducer cannot express this yet: {why}")
            }
        }
    }
}

/// The script reproducing `plan` (an instance on a target).
pub fn script(plan: &Plan, cx: &Context) -> Result<String, Refusal> {
    let mut g = Gen::new(plan, cx);
    if plan.driver != Driver::Kernel {
        return Err(g.cannot(
            ast::Span { line: 1, col: 1, ..Default::default() },
            "scenario",
            format!(
                "the {} driver: the reproducer makes kernel overlay mounts as root only \
                 (rootless needs ovlc's mapping of 65536 ids, fuse its daemon's life cycle)",
                plan.driver.name()
            ),
        ));
    }
    if plan.backing() != ast::Backing::Tmpfs {
        return Err(g.cannot(
            ast::Span { line: 1, col: 1, ..Default::default() },
            "backing",
            format!("backing {}: the reproducer puts the instance on a tmpfs", plan.backing().name()),
        ));
    }
    for c in plan.scenario.requires() {
        if !g.env.holds(&c) {
            return Err(Refusal::Skip(format!(
                "requires {} (kernel {}, driver {})",
                crate::exec::env::describe_cond(&c),
                cx.kernel_release,
                plan.driver.name()
            )));
        }
    }
    g.block(&plan.scenario.body)?;
    Ok(g.assemble())
}

struct Gen<'a> {
    plan: &'a Plan,
    cx: &'a Context,
    env: Env,
    declared: HashMap<String, ast::Layer>,
    /// Layers built so far: name -> directory under the instance's.
    built: BTreeMap<String, String>,
    /// Uppers made so far: key (`""` the default) -> directory, and the
    /// filesystem it is on (where its work directories go).
    uppers: BTreeMap<String, String>,
    upper_fs: BTreeMap<String, String>,
    /// Work directories made so far: key -> directory.
    works: BTreeMap<String, String>,
    /// `filesystem NAME tmpfs` declared on the path, and those mounted.
    filesystems: HashMap<String, ast::Filesystem>,
    fs_mounted: BTreeSet<String>,
    shell: Vec<String>,
    py: Vec<String>,
    /// The steps in order (line, statement), for the script's header.
    steps: Vec<(u32, String)>,
    /// How far the steps of `Context::from_run` are matched.
    cursor: usize,
}

impl<'a> Gen<'a> {
    fn new(plan: &'a Plan, cx: &'a Context) -> Gen<'a> {
        let options = plan.instance.params.iter().map(|(n, v)| (n.clone(), Some(v.clone()))).collect();
        let env = Env { kernel: cx.kernel, driver: plan.driver, options, layout: plan.instance.layout.clone() };
        Gen {
            plan,
            cx,
            env,
            declared: HashMap::new(),
            built: BTreeMap::new(),
            uppers: BTreeMap::new(),
            upper_fs: BTreeMap::new(),
            works: BTreeMap::new(),
            filesystems: HashMap::new(),
            fs_mounted: BTreeSet::new(),
            shell: Vec::new(),
            py: Vec::new(),
            steps: Vec::new(),
            cursor: 0,
        }
    }

    fn cannot(&self, span: ast::Span, step: &str, why: impl Into<String>) -> Refusal {
        Refusal::Cannot {
            file: self.plan.scenario.file.clone(),
            line: span.line,
            col: span.col,
            step: step.to_string(),
            why: why.into(),
        }
    }

    /// The expected result of a step, in words and as the runtime's tuple:
    /// what ovlc's run got when generating from one (the step found in
    /// order), else what the scenario says (`scenario`).
    fn expect_of(&mut self, line: u32, text: &str, scenario: (String, String)) -> (String, String) {
        self.steps.push((line, text.to_string()));
        let Some(steps) = &self.cx.from_run else { return scenario };
        match steps.get(self.cursor) {
            Some((l, t, r)) if *l == line && t == text => {
                self.cursor += 1;
                (r.clone(), format!("('exact', {})", py_str(r)))
            }
            _ => scenario,
        }
    }

    fn block(&mut self, b: &ast::Block<Stmt>) -> Result<(), Refusal> {
        for item in &b.items {
            self.stmt(&item.node, item.span)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt, span: ast::Span) -> Result<(), Refusal> {
        let line = span.line;
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
            Stmt::Filesystem(f) if f.kind.node == ast::FsKind::Tmpfs => {
                self.filesystems.insert(f.name.node.clone(), f.clone());
                Ok(())
            }
            Stmt::Filesystem(f) => Err(self.cannot(
                span,
                &first_line(s),
                format!("a {} filesystem (only tmpfs ones: images need mkfs and loop devices)", f.kind.node.name()),
            )),
            Stmt::Mount(m) => {
                let text = first_line(&Stmt::Mount(Box::new(ast::Mount { result: None, ..(**m).clone() })));
                self.mount(m, span, &text)
            }
            Stmt::Umount(u) => {
                let text = first_line(&Stmt::Umount(ast::Umount { mount: u.mount.clone(), result: None }));
                let name = u.mount.as_ref().map_or("None".into(), |n| py_bytes(n.node.as_bytes()));
                let (exp, want) = self.expect_of(line, &text, expected(u.result.as_ref().map(|r| &r.node)));
                self.py.push(format!("R.umount({line}, {}, {}, {want}, {name})", py_str(&text), py_str(&exp)));
                Ok(())
            }
            Stmt::Remount(r) => {
                let (exp, want) = self.expect_of(line, "remount", expected(r.as_ref().map(|r| &r.node)));
                self.py.push(format!("R.remount({line}, {}, {want})", py_str(&exp)));
                Ok(())
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
            Stmt::As(a) if a.userns => {
                Err(self.cannot(span, &first_line(s), "`as ... in userns` (a child process in a user namespace)"))
            }
            Stmt::As(a) => {
                self.py.push(format!("R.become({}, {})", a.owner.node.uid, a.owner.node.gid));
                self.block(&a.body)?;
                self.py.push("R.restore()".into());
                Ok(())
            }
            Stmt::Op(o) => self.op(o, span),
            Stmt::Expect(e) => self.expect(e, span),
            Stmt::ExpectLayer(entries) => {
                self.expect_of(line, "expect layer", (String::new(), String::new()));
                self.py.push(format!("R.expect_layer({line}, 'expect layer', {})", entries.items.len()));
                Ok(())
            }
            Stmt::Reconfigure(_) | Stmt::ExpectMountinfo(_) | Stmt::On(_) | Stmt::Edit(_) => {
                Err(self.cannot(span, &first_line(s), format!("`{}` statements", s.keyword())))
            }
        }
    }

    /// The directory a name stands for as a layer: a declared layer (built
    /// now, in the shell part), or a named upper made earlier.
    fn own_dir(&mut self, n: &ast::Name, span: ast::Span, step: &str) -> Result<String, Refusal> {
        if let Some(d) = self.built.get(&n.node) {
            return Ok(d.clone());
        }
        if let Some(l) = self.declared.get(&n.node).cloned() {
            let dir = match &l.on {
                Some(fs) => format!("{}/layers/{}", self.fs_dir(fs, span, step)?, n.node),
                None => format!("layers/{}", n.node),
            };
            let entries = self.entries_of(&l, span, step)?;
            self.shell.push(format!("# layer {}", ast::layer_name_text(&n.node)));
            self.shell.push(format!("mkdir -p -- {}", sh_path(&dir, "/")));
            emit_layer(&mut self.shell, &dir, &entries).map_err(|why| self.cannot(span, step, why))?;
            self.built.insert(n.node.clone(), dir.clone());
            return Ok(dir);
        }
        if let Some(d) = self.uppers.get(&n.node) {
            return Ok(d.clone());
        }
        Err(self.cannot(span, step, format!("{} is no layer declared on this path", n.node)))
    }

    /// The directory of a tmpfs of its own (`filesystem NAME tmpfs`),
    /// mounted (nodev, as ovlc does) the first time a layer or an upper is
    /// made on it.
    fn fs_dir(&mut self, fs: &ast::Name, span: ast::Span, step: &str) -> Result<String, Refusal> {
        let dir = format!("fs/{}", fs.node);
        if !self.fs_mounted.contains(&fs.node) {
            let Some(f) = self.filesystems.get(&fs.node) else {
                return Err(self.cannot(span, step, format!("filesystem {} is not declared on this path", fs.node)));
            };
            let size = f.size.as_ref().map_or(1 << 30, |s| s.node.bytes).clamp(1, 1 << 30);
            self.shell.push(format!("# filesystem {} tmpfs", fs.node));
            self.shell.push(format!(
                "mkdir -p -- {at} && mount -t tmpfs -o nodev,size={size},mode=0755 ovlc {at} || exit 2",
                at = sh_path(&dir, "/")
            ));
            self.fs_mounted.insert(fs.node.clone());
        }
        Ok(dir)
    }

    fn entries_of(&self, l: &ast::Layer, span: ast::Span, step: &str) -> Result<Vec<Entry>, Refusal> {
        match &l.source {
            ast::LayerSource::Entries(b) => Ok(b.items.iter().map(|i| i.node.clone()).collect()),
            ast::LayerSource::Tar(p) => self
                .cx
                .tar_layers
                .get(&l.name.node)
                .cloned()
                .ok_or_else(|| self.cannot(span, step, format!("the layer tarball {} was not read", p.node))),
        }
    }

    fn mount(&mut self, m: &ast::Mount, span: ast::Span, text: &str) -> Result<(), Refusal> {
        if let Some(d) = m.driver.as_ref().filter(|d| d.node != Driver::Kernel) {
            return Err(self.cannot(span, text, format!("`driver {}`", d.node.name())));
        }
        let why = if m.raw.is_some() {
            Some("`options \"...\"`")
        } else if matches!(m.via, Some(ast::Via::Append | ast::Via::Fd)) {
            Some("`via append` and `via fd` (the new mount API layer by layer)")
        } else if !m.data.is_empty() {
            Some("data-only layers")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(self.cannot(span, text, why));
        }
        let mut lowers = Vec::new();
        for r in &m.lowers {
            let ast::DirRef::Name(n) = r else {
                return Err(self.cannot(span, text, "a directory inside a mount or layer as a layer"));
            };
            lowers.push(py_bytes(self.own_dir(n, span, text)?.as_bytes()));
        }
        let (upper, work) = if m.readonly {
            ("None".to_string(), ("None".to_string(), "None".to_string()))
        } else {
            let key = match &m.upper {
                None => String::new(),
                Some(ast::DirRef::Name(n)) => n.node.clone(),
                Some(_) => return Err(self.cannot(span, text, "an upper inside a mount")),
            };
            if !self.uppers.contains_key(&key) {
                let dir = match &m.upper_on {
                    Some(fs) => {
                        let d = self.fs_dir(fs, span, text)?;
                        self.upper_fs.insert(key.clone(), d.clone());
                        format!("{d}/uppers/{key}")
                    }
                    None if key.is_empty() => "upper".to_string(),
                    None => format!("uppers/{key}"),
                };
                self.uppers.insert(key.clone(), dir.clone());
                if let Some(from) = &m.upper_from {
                    let l = self.declared.get(&from.node).cloned().ok_or_else(|| {
                        self.cannot(span, text, format!("layer {} is not declared on this path", from.node))
                    })?;
                    let entries = self.entries_of(&l, span, text)?;
                    self.shell.push(format!("# the upper, from layer {}", ast::layer_name_text(&from.node)));
                    self.shell.push(format!("mkdir -p -- {}", sh_path(&dir, "/")));
                    emit_layer(&mut self.shell, &dir, &entries).map_err(|why| self.cannot(span, text, why))?;
                }
            }
            let dir = self.uppers[&key].clone();
            let wkey = match &m.work {
                None => key.clone(),
                Some(ast::DirRef::Name(w)) => w.node.clone(),
                Some(_) => return Err(self.cannot(span, text, "a work directory inside a mount")),
            };
            // A work directory goes beside its upper (one filesystem), made once per name.
            let on = self.upper_fs.get(&key).cloned();
            let wdir = self
                .works
                .entry(wkey.clone())
                .or_insert_with(|| match (on, wkey.is_empty()) {
                    (Some(fs), _) => format!("{fs}/works/{wkey}"),
                    (None, true) => "work".to_string(),
                    (None, false) => format!("works/{wkey}"),
                })
                .clone();
            (format!("({}, {})", py_str(&key), py_bytes(dir.as_bytes())), (py_str(&wkey), py_bytes(wdir.as_bytes())))
        };
        let mut in_force: Vec<(String, Option<String>)> =
            m.options.iter().map(|o| (o.name.clone(), o.value.clone())).collect();
        in_force.extend(self.plan.instance.params.iter().map(|(n, v)| (n.clone(), Some(v.clone()))));
        if let Some((n, why)) = in_force.iter().find_map(|(n, v)| dsl::option_escape(n, v.as_deref()).map(|w| (n, w))) {
            return Err(self.cannot(span, text, format!("option `{n}` {why}")));
        }
        let dialect = if in_force.iter().any(|(n, _)| n == "userxattr") { "user" } else { "trusted" };
        let opts: Vec<String> = in_force
            .iter()
            .map(|(k, v)| py_bytes(v.as_ref().map_or(k.clone(), |v| format!("{k}={v}")).as_bytes()))
            .collect();
        self.env.options = in_force;
        let name = m.name.as_ref().map_or("None".into(), |n| py_bytes(n.node.as_bytes()));
        let (exp, want) = self.expect_of(span.line, text, expected(m.result.as_ref().map(|r| &r.node)));
        self.py.push(format!(
            "R.mount({}, {}, {}, {want}, {{'name': {name}, 'lowers': [{}], 'upper': {upper}, 'workkey': {}, \
             'work': {}, 'opts': [{}], 'dialect': '{dialect}'}})",
            span.line,
            py_str(text),
            py_str(&exp),
            lowers.join(", "),
            work.0,
            work.1,
            opts.join(", ")
        ));
        Ok(())
    }

    fn op(&mut self, o: &ast::OpStmt, span: ast::Span) -> Result<(), Refusal> {
        let text = dsl::format_stmt(&Stmt::Op(ast::OpStmt { op: o.op.clone(), result: None }));
        let text = text.trim_end().to_string();
        let (exp, want) = self.expect_of(span.line, &text, expected(o.result.as_ref().map(|r| &r.node)));
        let mut a: Vec<(&str, String)> = Vec::new();
        let path = |p: &ast::PathRef| py_bytes(p.node.as_bytes());
        let kind = o.op.keyword();
        match &o.op {
            Op::Write { path: p, data } | Op::Append { path: p, data } => {
                a.push(("path", path(p)));
                a.push(("data", py_bytes(data.node.as_slice())));
            }
            Op::Create { path: p }
            | Op::Read { path: p }
            | Op::Readlink { path: p }
            | Op::Readdir { path: p }
            | Op::Rmdir { path: p }
            | Op::Unlink { path: p }
            | Op::Touch { path: p }
            | Op::Listxattr { path: p } => a.push(("path", path(p))),
            Op::Truncate { path: p, size } => {
                a.push(("path", path(p)));
                a.push(("size", size.node.bytes.to_string()));
            }
            Op::Mkdir { path: p, mode } => {
                a.push(("path", path(p)));
                a.push(("mode", format!("0o{:o}", mode.as_ref().map_or(0o755, |m| m.node.0))));
            }
            Op::Rename { from, to, flag } => {
                a.push(("path", path(from)));
                a.push(("to", path(to)));
                let f = match flag {
                    None => 0,
                    Some(RenameFlag::Noreplace) => 1,
                    Some(RenameFlag::Exchange) => 2,
                    Some(RenameFlag::Whiteout) => 4,
                };
                a.push(("flags", f.to_string()));
            }
            Op::Link { from, to } => {
                a.push(("path", path(from)));
                a.push(("to", path(to)));
            }
            Op::Symlink { path: p, target } => {
                a.push(("path", path(p)));
                a.push(("target", py_bytes(target.node.as_slice())));
            }
            Op::Mknod { path: p, node } => {
                a.push(("path", path(p)));
                let (t, dev) = match node.node {
                    NodeKind::Fifo => ("0o010000", "0".to_string()),
                    NodeKind::Socket => ("0o140000", "0".to_string()),
                    NodeKind::Char(d) => ("0o020000", format!("os.makedev({}, {})", d.major, d.minor)),
                    NodeKind::Block(d) => ("0o060000", format!("os.makedev({}, {})", d.major, d.minor)),
                };
                a.push(("type", t.into()));
                a.push(("dev", dev));
            }
            Op::Chmod { path: p, mode } => {
                a.push(("path", path(p)));
                a.push(("mode", format!("0o{:o}", mode.node.0)));
            }
            Op::Chown { path: p, owner } => {
                a.push(("path", path(p)));
                a.push(("uid", owner.node.uid.to_string()));
                a.push(("gid", owner.node.gid.to_string()));
            }
            Op::Setxattr { path: p, name, value } => {
                a.push(("path", path(p)));
                a.push(("name", py_bytes(name.node.as_bytes())));
                a.push(("value", py_bytes(value.node.as_slice())));
            }
            Op::Removexattr { path: p, name } | Op::Getxattr { path: p, name } => {
                a.push(("path", path(p)));
                a.push(("name", py_bytes(name.node.as_bytes())));
            }
            Op::Stat { path: p, name, layer } | Op::Lstat { path: p, name, layer } => {
                a.push(("path", path(p)));
                a.push(("as", py_str(&name.node)));
                if let Some(l) = layer {
                    let d = self.own_dir(l, span, &text)?;
                    a.push(("layer", py_bytes(d.as_bytes())));
                }
            }
            Op::SameInode { path: p, name } => {
                a.push(("path", path(p)));
                a.push(("name", py_str(&name.node)));
            }
            Op::Statfs { path: p, name } => {
                a.push(("path", path(p)));
                a.push(("as", py_str(&name.node)));
            }
            Op::Dirent { dir, entry, name } => {
                a.push(("path", path(dir)));
                a.push(("entry", py_bytes(entry.node.as_slice())));
                a.push(("as", py_str(&name.node)));
            }
            Op::Compare { subject, name, fields, how } => {
                match subject {
                    Subject::Path(p) => a.push(("path", path(p))),
                    Subject::Name(n) => a.push(("other", py_str(&n.node))),
                    Subject::Layer { layer, path: p } => {
                        a.push(("path", path(p)));
                        let d = self.own_dir(layer, span, &text)?;
                        a.push(("layer", py_bytes(d.as_bytes())));
                    }
                }
                a.push(("name", py_str(&name.node)));
                let f: Vec<String> = fields.node.iter().map(|f| py_str(f.name())).collect();
                a.push(("fields", format!("[{}]", f.join(", "))));
                a.push(("how", py_str(how.name())));
            }
            Op::Value { name, field, op, value } => {
                a.push(("name", py_str(&name.node)));
                a.push(("field", py_str(field.node.name())));
                a.push(("op", py_str(op.symbol())));
                a.push(("n", value.node.to_string()));
            }
            Op::Open { path: p, fd, flags, mode } => {
                a.push(("path", path(p)));
                a.push(("fd", py_str(&fd.node)));
                let f: Vec<String> = flags.node.iter().map(|f| format!("os.O_{}", f.name().to_uppercase())).collect();
                a.push(("flags", f.join(" | ")));
                let creates = flags.node.iter().any(|f| matches!(f, ast::OpenFlag::Creat | ast::OpenFlag::Tmpfile));
                let m = if creates { mode.as_ref().map_or(0o644, |m| m.node.0) } else { 0 };
                a.push(("mode", format!("0o{m:o}")));
            }
            Op::Close { fd } | Op::Rewind { fd } | Op::Fsync { fd } | Op::Fdatasync { fd } => {
                a.push(("fd", py_str(&fd.node)))
            }
            Op::FdWrite { fd, data, at } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("data", py_bytes(data.node.as_slice())));
                if let Some(at) = at {
                    a.push(("at", at.node.bytes.to_string()));
                }
            }
            Op::FdRead { fd, size, at } => {
                a.push(("fd", py_str(&fd.node)));
                if let Some(size) = size {
                    a.push(("size", size.node.bytes.to_string()));
                }
                if let Some(at) = at {
                    a.push(("at", at.node.bytes.to_string()));
                }
            }
            Op::FdReaddir { fd, max } => {
                a.push(("fd", py_str(&fd.node)));
                if let Some(m) = max {
                    a.push(("max", m.node.to_string()));
                }
            }
            Op::Ftruncate { fd, size } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("size", size.node.bytes.to_string()));
            }
            Op::Fchmod { fd, mode } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("mode", format!("0o{:o}", mode.node.0)));
            }
            Op::Fchown { fd, owner } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("uid", owner.node.uid.to_string()));
                a.push(("gid", owner.node.gid.to_string()));
            }
            Op::Fsetxattr { fd, name, value } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("name", py_bytes(name.node.as_bytes())));
                a.push(("value", py_bytes(value.node.as_slice())));
            }
            Op::Fgetxattr { fd, name } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("name", py_bytes(name.node.as_bytes())));
            }
            Op::Fstat { fd, name } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("as", py_str(&name.node)));
            }
            Op::Fallocate { fd, offset, len, mode } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("offset", offset.node.bytes.to_string()));
                a.push(("len", len.node.bytes.to_string()));
                // FALLOC_FL_KEEP_SIZE 1, FALLOC_FL_PUNCH_HOLE 2 (with KEEP_SIZE).
                let m = match mode {
                    None => 0,
                    Some(ast::FallocMode::KeepSize) => 1,
                    Some(ast::FallocMode::PunchHole) => 3,
                };
                a.push(("mode", m.to_string()));
            }
            Op::Flock { fd, how, nonblock } => {
                a.push(("fd", py_str(&fd.node)));
                // LOCK_SH 1, LOCK_EX 2, LOCK_UN 8, LOCK_NB 4.
                let h = match how {
                    ast::FlockHow::Shared => 1,
                    ast::FlockHow::Exclusive => 2,
                    ast::FlockHow::Unlock => 8,
                } | if *nonblock { 4 } else { 0 };
                a.push(("how", h.to_string()));
            }
            Op::MmapWrite { fd, data, at } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("data", py_bytes(data.node.as_slice())));
                a.push(("at", at.node.bytes.to_string()));
            }
            Op::MmapRead { fd, size, at } => {
                a.push(("fd", py_str(&fd.node)));
                a.push(("size", size.node.bytes.to_string()));
                a.push(("at", at.node.bytes.to_string()));
            }
            Op::Sleep { millis } => a.push(("ms", millis.node.to_string())),
            Op::Sync | Op::DropCaches => {}
            other => {
                let on = if other.fd().is_some() { " on a descriptor" } else { "" };
                return Err(self.cannot(span, &text, format!("the operation `{}`{on}", other.keyword())));
            }
        }
        let kind = match &o.op {
            Op::SameInode { .. } => "same-inode",
            Op::FdWrite { .. } => "fd-write",
            Op::FdRead { .. } => "fd-read",
            Op::FdReaddir { .. } => "fd-readdir",
            Op::MmapWrite { .. } => "mmap-write",
            Op::MmapRead { .. } => "mmap-read",
            _ => kind,
        };
        let args: Vec<String> = a.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
        self.py.push(format!(
            "R.op({}, {}, {}, {want}, '{kind}', {{{}}})",
            span.line,
            py_str(&text),
            py_str(&exp),
            args.join(", ")
        ));
        Ok(())
    }

    fn expect(&mut self, e: &ast::Expect, span: ast::Span) -> Result<(), Refusal> {
        let head = first_line(&Stmt::Expect(ast::Expect { checks: ast::Block::default(), ..e.clone() }));
        let mut checks = Vec::new();
        for item in &e.checks.items {
            let c = &item.node;
            let p = py_bytes(c.path().node.as_bytes());
            let opt = |t: &Option<ast::Text>| t.as_ref().map_or("None".into(), |t| py_bytes(t.node.as_slice()));
            let tuple = match c {
                Check::File { content, size, .. } => {
                    format!(
                        "('file', {p}, {}, {})",
                        opt(content),
                        size.as_ref().map_or("None".into(), |s| s.node.bytes.to_string())
                    )
                }
                Check::Dir { opaque, .. } => format!(
                    "('dir', {p}, {})",
                    match opaque {
                        Some(true) => "True",
                        Some(false) => "False",
                        None => "None",
                    }
                ),
                Check::Symlink { target, .. } => format!("('symlink', {p}, {})", opt(target)),
                Check::Fifo { .. } => format!("('fifo', {p})"),
                Check::Whiteout { .. } => format!("('whiteout', {p})"),
                Check::Absent { .. } => format!("('absent', {p})"),
                Check::Device { kind, dev, .. } => {
                    format!("('device', {p}, '{}', ({}, {}))", kind.name(), dev.node.major, dev.node.minor)
                }
                Check::Xattr { name, value, .. } => {
                    format!("('xattr', {p}, {}, {})", py_bytes(name.node.as_bytes()), opt(value))
                }
                Check::NoXattr { name, .. } => format!("('no-xattr', {p}, {})", py_bytes(name.node.as_bytes())),
                Check::Metacopy { digest, .. } => format!("('metacopy', {p}, {})", opt(digest)),
                Check::Redirect { target, .. } => format!("('redirect', {p}, {})", py_bytes(target.node.as_slice())),
                Check::Mode { mode, .. } => format!("('mode', {p}, 0o{:o})", mode.node.0),
                Check::Owner { owner, .. } => format!("('owner', {p}, ({}, {}))", owner.node.uid, owner.node.gid),
                Check::Nlink { count, .. } => format!("('nlink', {p}, {})", count.node),
                Check::Entries { count, .. } => format!("('entries', {p}, {})", count.node),
                Check::Blocks { op, count, .. } => format!("('blocks', {p}, '{}', {})", op.symbol(), count.node),
                Check::Xattrs { names, .. } => {
                    let n: Vec<String> = names.iter().map(|n| py_bytes(n.node.as_bytes())).collect();
                    format!("('xattrs', {p}, [{}])", n.join(", "))
                }
                Check::Attrs { .. } | Check::Acl { .. } => {
                    return Err(self.cannot(item.span, &dsl::format_check(c), "inode flag and ACL checks"));
                }
            };
            checks.push(format!("({}, {}, {tuple})", item.span.line, py_str(&dsl::format_check(c))));
        }
        let name = match (e.target, &e.name) {
            (ast::TreeTarget::Merged, Some(n)) => py_bytes(n.node.as_bytes()),
            (ast::TreeTarget::Merged, None) => "None".into(),
            (_, n) => py_str(n.as_ref().map_or("", |n| n.node.as_str())),
        };
        let said = if e.open { "?" } else { "all checks hold" };
        let (exp, want) = self.expect_of(span.line, &head, (said.into(), "('checks',)".into()));
        self.py.push(format!(
            "R.expect({}, {}, {}, {want}, '{}', {name}, {}, {}, [{}], {})",
            span.line,
            py_str(&head),
            py_str(&exp),
            e.target.name(),
            if e.raw { "True" } else { "False" },
            // `expect TREE exactly ?` checks nothing: the tree is the question.
            if e.exactly && !e.open { "True" } else { "False" },
            checks.join(", "),
            if e.open { "True" } else { "False" }
        ));
        Ok(())
    }

    fn assemble(&self) -> String {
        let p = self.plan;
        let mut s = String::new();
        let title = p.scenario.title();
        let _ = writeln!(s, "#!/bin/sh");
        let _ = writeln!(s, "# A reproducer written by `ovlc repro` (ovlc {}).", env!("CARGO_PKG_VERSION"));
        for (k, v) in [
            ("instance", p.instance.id.as_str()),
            ("scenario", title.as_str()),
            ("file", p.scenario.file.as_str()),
            ("target", p.target.as_str()),
            ("kernel", self.cx.kernel_release.as_str()),
        ] {
            let _ = writeln!(s, "#   {k}: {}", comment_safe(v));
        }
        s.push_str(HEADER);
        s.push_str("#\n# The steps, run by the Python program at the end of this script:\n");
        for (line, text) in &self.steps {
            let _ = writeln!(s, "#   line {line}: {}", comment_safe(text));
        }
        if self.cx.from_run.is_some() {
            s.push_str("# Each step expects the result ovlc's run got (`ovlc repro --from-run`).\n");
        }
        s.push_str("\n# ---- the layers, built as ovlc builds them\n");
        for l in &self.shell {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("\n# ---- the steps: python3 makes each system call as ovlc does and prints its result\n");
        let _ = writeln!(s, "python3 - \"$I\" <<'{PY_END}'");
        s.push_str(&errno_table());
        s.push_str(RUNTIME);
        s.push_str("\n# ---- the scenario's steps\n");
        for l in &self.py {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("R.finish()\n");
        let _ = writeln!(s, "{PY_END}");
        s.push_str("exit $?\n");
        s
    }
}

/// The shell part before the layers: a private mount namespace, the
/// temporary directory with its tmpfs, the clean-up, the helpers.
const HEADER: &str = r#"#
# Needs: root, a POSIX sh, util-linux (unshare, mount, umount), coreutils
# and python3 (for the system calls the shell lacks). It runs in a private
# mount namespace when unshare(1) is there, in a temporary directory on a
# fresh tmpfs, and removes everything on exit. Each step prints
# `line N: STATEMENT` with the expected and the actual result (and a line
# `OVLC-STEP {json}` for machines). Exit 0: every step agreed; 1: one
# differed; 2: it could not run.
set -u
umask 022
if [ "$(id -u)" != 0 ]; then
    echo "ovlc repro: run as root (kernel overlay mounts)" >&2
    exit 2
fi
if [ -z "${OVLC_REPRO_PRIVATE:-}" ]; then
    if [ -f "$0" ] && command -v unshare >/dev/null 2>&1; then
        OVLC_REPRO_PRIVATE=1
        export OVLC_REPRO_PRIVATE
        exec unshare -m --propagation private sh "$0" "$@"
    fi
    echo "ovlc repro: no private mount namespace (no unshare, or the script came on standard input); mounting in this one, removed on exit" >&2
fi
for p in python3 mount umount mknod; do
    command -v "$p" >/dev/null 2>&1 || { echo "ovlc repro: $p is missing" >&2; exit 2; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/ovlc-repro.XXXXXX") || exit 2
I="$T/i"
cleanup() {
    cd /
    if [ -d "$I" ]; then
        umount -R "$I" 2>/dev/null || umount -l "$I" 2>/dev/null
    fi
    rm -rf -- "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
mkdir "$I" || exit 2
# A fresh tmpfs for the instance, nodev like ovlc's.
mount -t tmpfs -o nodev,size=1g ovlc-repro "$I" || exit 2
mkdir "$I/layers" "$I/merged" || exit 2
# xattrs, sockets and unusual symlink targets: values in hex, names as they are.
ovl_setxattr() {
    python3 -c 'import os, sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), follow_symlinks=False)' "$@" || exit 2
}
ovl_socket() {
    python3 -c 'import os, stat, sys; os.mknod(sys.argv[1], stat.S_IFSOCK | 0o755)' "$@" || exit 2
}
ovl_symlink() {
    python3 -c 'import os, sys; os.symlink(bytes.fromhex(sys.argv[1]), sys.argv[2])' "$@" || exit 2
}
"#;

/// `ERRNO = {1: 'EPERM', ...}`: ovlc's names for errno values (its aliases
/// resolved as ovlc resolves them).
fn errno_table() -> String {
    let mut s = String::from("ERRNO = {");
    for code in 1..=133 {
        if let Some(n) = dsl::errno::name(code) {
            let _ = write!(s, "{code}: '{n}', ");
        }
    }
    s.push_str("}\n");
    s
}

/// The expected result in words, and as the runtime's tuple.
fn expected(want: Option<&Expected>) -> (String, String) {
    let canon = crate::exec::results::canonical_errno;
    match want {
        None | Some(Expected::Ok) => ("ok".into(), "('ok',)".into()),
        Some(w) => {
            let text = crate::exec::results::expected_text(w);
            let tuple = match w {
                Expected::Ok => "('ok',)".to_string(),
                Expected::Errno(e) => format!("('errno', {})", py_str(&canon(e))),
                Expected::Text(t) => format!("('text', {})", py_bytes(t.as_slice())),
                Expected::List(l) => {
                    let v: Vec<String> = l.iter().map(|b| py_bytes(b.as_slice())).collect();
                    format!("('list', [{}])", v.join(", "))
                }
                Expected::AnyError => "('any',)".into(),
                // `=> any`: whatever happens is recorded, never a difference.
                Expected::Any | Expected::Open => "('whatever',)".into(),
                Expected::OneOf(names) => {
                    let v: Vec<String> = names.iter().map(|n| py_str(&canon(n))).collect();
                    format!("('oneof', [{}])", v.join(", "))
                }
            };
            (text, tuple)
        }
    }
}

/// A statement's first line, as ovlc's executor names its step.
fn first_line(s: &Stmt) -> String {
    let line = dsl::format_stmt(s).lines().next().unwrap_or_default().to_string();
    line.trim_end_matches(" {}").trim_end_matches(" {").to_string()
}

/// One line of a comment: control characters shown as `?`.
fn comment_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

// ------------------------------------------------------------------ quoting

/// A Python bytes literal of printable ASCII only: no byte of it can end
/// the here-document or mean anything to the shell.
pub fn py_bytes(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push('\'');
    s
}

/// A Python str literal of printable ASCII only (other characters as `\u` escapes).
pub fn py_str(t: &str) -> String {
    let mut s = String::from("'");
    for c in t.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\'' => s.push_str("\\'"),
            ' '..='~' => s.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(s, "\\U{:08x}", c as u32);
            }
        }
    }
    s.push('\'');
    s
}

/// A word for sh: as it is when it holds only safe characters, else in
/// single quotes (a `'` inside as `'\''`). Nothing inside single quotes is
/// special to sh: not `$`, backslashes, newlines or backquotes.
pub fn sh_quote(t: &str) -> String {
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&c)) {
        return t.to_string();
    }
    format!("'{}'", t.replace('\'', "'\\''"))
}

/// A path inside the instance's directory: `"$I"/'layers/base/etc'`.
fn sh_path(dir: &str, p: &str) -> String {
    let rel = if p == "/" { dir.to_string() } else { format!("{dir}{p}") };
    format!("\"$I\"/{}", sh_quote(&rel))
}

/// A printf(1) format that prints exactly `b`: `%` doubled, `\` doubled,
/// every byte that is not printable ASCII (and `'`, and a leading `-`) as a
/// three-digit octal escape, so the format goes in single quotes as it is.
pub fn printf_format(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' => s.push_str("%%"),
            b'\\' => s.push_str("\\\\"),
            b'-' if i == 0 => s.push_str("\\055"),
            b'\'' => s.push_str("\\047"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\{c:03o}");
            }
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Does a symlink target read as itself inside single quotes (UTF-8,
/// no control characters, not empty, not starting with `-`)?
fn plain_text(b: &[u8]) -> Option<&str> {
    let t = std::str::from_utf8(b).ok()?;
    (!t.is_empty() && !t.starts_with('-') && !t.chars().any(char::is_control)).then_some(t)
}

/// The shell commands that build a layer's entries below `dir`, as
/// exec::layer does: parents as `0755 0:0` directories, then each entry
/// with its content, owner, mode and xattrs (chown before chmod, which
/// would otherwise lose set-id bits).
fn emit_layer(out: &mut Vec<String>, dir: &str, entries: &[Entry]) -> Result<(), String> {
    let mut dirs: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
    for e in entries {
        let p = e.path.node.as_str();
        if p != "/" {
            let mut ancestors = Vec::new();
            let mut cur = p;
            while let Some(i) = cur.rfind('/') {
                cur = if i == 0 { "/" } else { &cur[..i] };
                if dirs.contains(cur) {
                    break;
                }
                ancestors.push(cur.to_string());
            }
            for a in ancestors.into_iter().rev() {
                out.push(format!("mkdir -m 0755 -- {}", sh_path(dir, &a)));
                dirs.insert(a);
            }
        }
        let at = sh_path(dir, p);
        let mut default_mode = 0o644;
        match &e.kind {
            EntryKind::File { content, size, sparse, verity } => {
                if *verity {
                    return Err("fs-verity files".into());
                }
                match (content, size) {
                    (Some(c), _) if c.node.as_slice().is_empty() => out.push(format!(": > {at}")),
                    (Some(c), _) => {
                        for (k, chunk) in c.node.as_slice().chunks(1024).enumerate() {
                            let redirect = if k == 0 { ">" } else { ">>" };
                            out.push(format!("printf '{}' {redirect} {at}", printf_format(chunk)));
                        }
                    }
                    (None, Some(s)) if *sparse => out.push(format!(": > {at} && truncate -s {} {at}", s.node.bytes)),
                    // exec::layer::pattern: the 30-byte unit `yes` repeats, cut to the size.
                    (None, Some(s)) => {
                        out.push(format!("yes ovlc-pattern-0123456789abcdef | head -c {} > {at}", s.node.bytes))
                    }
                    (None, None) => out.push(format!(": > {at}")),
                }
            }
            EntryKind::Dir { opaque } => {
                default_mode = 0o755;
                if !dirs.contains(p) {
                    out.push(format!("mkdir -- {at}"));
                    dirs.insert(p.to_string());
                }
                if *opaque {
                    out.push(format!("ovl_setxattr {at} trusted.overlay.opaque {}", sh_quote(&hex(b"y"))));
                }
            }
            EntryKind::Symlink { target } => match plain_text(target.node.as_slice()) {
                Some(t) => out.push(format!("ln -s -- {} {at}", sh_quote(t))),
                None => out.push(format!("ovl_symlink {} {at}", hex(target.node.as_slice()))),
            },
            EntryKind::Hardlink { target } => {
                out.push(format!("ln -- {} {at}", sh_path(dir, &target.node)));
                continue;
            }
            EntryKind::Fifo => out.push(format!("mknod {at} p")),
            EntryKind::Device { kind, dev } => {
                let k = if *kind == ast::DevKind::Char { "c" } else { "b" };
                out.push(format!("mknod {at} {k} {} {}", dev.node.major, dev.node.minor));
            }
            EntryKind::Whiteout => {
                default_mode = 0;
                out.push(format!("mknod {at} c 0 0"));
            }
            EntryKind::Socket => out.push(format!("ovl_socket {at}")),
        }
        if e.attrs.flags.is_some() {
            return Err("inode flags (`attrs`) in a layer".into());
        }
        let (uid, gid) = e.attrs.owner.as_ref().map_or((0, 0), |o| (o.node.uid, o.node.gid));
        out.push(format!("chown -h {uid}:{gid} {at}"));
        if !matches!(e.kind, EntryKind::Symlink { .. }) {
            let mode = e.attrs.mode.as_ref().map_or(default_mode, |m| m.node.0);
            out.push(format!("chmod 0{mode:04o} {at}"));
        }
        for x in &e.attrs.xattrs {
            // An empty value is `''`: an argument still.
            out.push(format!(
                "ovl_setxattr {at} {} {}",
                sh_quote(&x.name.node),
                sh_quote(&hex(x.value.node.as_slice()))
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The layers of a scenario made from tarballs, anywhere in it (`if`
/// branches too): name and tarball path, relative to the scenario's directory.
pub fn tarball_layers(s: &dsl::Scenario) -> Vec<(String, String)> {
    fn walk(b: &ast::Block<Stmt>, out: &mut Vec<(String, String)>) {
        for item in &b.items {
            match &item.node {
                Stmt::Layer(ast::Layer { name, source: ast::LayerSource::Tar(p), .. }) => {
                    out.push((name.node.clone(), p.node.clone()))
                }
                Stmt::If(i) => {
                    for (_, body) in &i.branches {
                        walk(body, out);
                    }
                    if let Some(o) = &i.otherwise {
                        walk(o, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&s.body, &mut out);
    out
}
