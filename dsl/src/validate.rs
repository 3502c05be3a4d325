//! Checks that need the whole file: header order, layer names, paths inside
//! a layer, the mount state at each statement, `stat` names, `vary` axes.

use std::collections::{BTreeMap, HashMap};

use crate::ast::*;
use crate::diag::{closest, Diag, ErrorKind};
use crate::syntax::Recovery;
use crate::vary::MAX_INSTANCES;

const HEADER_ORDER: &str = "the header is, in this order: scenario, about, tags, requires, vary, param, backing";

/// A mount live at a statement, as far as the text tells.
#[derive(Clone, Debug, PartialEq)]
struct Live {
    /// `as NAME`; `None` for an unnamed mount.
    name: Option<String>,
    readonly: bool,
    at: Span,
}

#[derive(Clone, Debug)]
struct Flow {
    /// The mounts live here, oldest first (operations act on the last);
    /// `None` where branches disagree, and then nothing is reported.
    live: Option<Vec<Live>>,
    /// Whether a `mount` succeeded before, on some path to here.
    ever: bool,
    /// The last `mount`: what `remount` repeats.
    last: Option<Live>,
    /// Where each upper (by name; `""` for the default one) was made, on some
    /// path to here: it exists from then on, and `upper from` can fill it no more.
    uppers_made: BTreeMap<String, Span>,
    /// Descriptors open on every path to here, with where they were opened.
    fds: BTreeMap<String, Span>,
    /// Descriptors closed on some path to here, with where.
    closed: BTreeMap<String, Span>,
    /// Layers and filesystems declared on some path to here: a name may be
    /// declared once on each path (in each branch of an `if`, say, to pick
    /// a filesystem's kind by `param`).
    declared: BTreeMap<(bool, String), Span>,
}

impl Flow {
    fn is_live(&self, name: &str) -> Option<bool> {
        self.live.as_ref().map(|v| v.iter().any(|l| l.name.as_deref() == Some(name)))
    }
}

/// What a remembered name holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameKind {
    /// `stat`, `lstat`, `fstat`: an inode's fields.
    Inode,
    /// `statfs`: a file system's type and fsid.
    Fs,
    /// `dirent`: a directory entry's d_ino and d_type.
    Dirent,
    /// `handle`: a file handle, for `open-handle`.
    Handle,
}

impl NameKind {
    fn of(op: &Op) -> Option<NameKind> {
        match op {
            Op::Stat { .. } | Op::Lstat { .. } | Op::Fstat { .. } => Some(NameKind::Inode),
            Op::Statfs { .. } => Some(NameKind::Fs),
            Op::Dirent { .. } => Some(NameKind::Dirent),
            Op::Handle { .. } => Some(NameKind::Handle),
            _ => None,
        }
    }

    fn has(self, f: StatField) -> bool {
        match self {
            NameKind::Inode => !matches!(f, StatField::Type | StatField::Fsid | StatField::DIno),
            NameKind::Fs => matches!(f, StatField::Type | StatField::Fsid),
            NameKind::Dirent => matches!(f, StatField::Ino | StatField::DIno | StatField::Type),
            NameKind::Handle => false,
        }
    }

    fn words(self) -> &'static str {
        match self {
            NameKind::Inode => "ino, dev, nlink, mode, uid, gid, size, blocks, atime, mtime, ctime",
            NameKind::Fs => "type, fsid",
            NameKind::Dirent => "ino (or d_ino), type",
            NameKind::Handle => "no fields (a file handle, for `open-handle`)",
        }
    }

    fn made_by(self) -> &'static str {
        match self {
            NameKind::Inode => "stat",
            NameKind::Fs => "statfs",
            NameKind::Dirent => "dirent",
            NameKind::Handle => "handle",
        }
    }
}

/// The most a `filesystem NAME tmpfs size SIZE` may hold.
const MAX_FILESYSTEM: u64 = 1 << 30;

/// An identifier: a letter or `_`, then letters, digits, `_` and `-`.
fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

/// "Did you mean" help is worked out for this many unknown layer names of a
/// file; each costs a look at every declared layer.
const LAYER_HINTS: usize = 32;

struct Validator<'a> {
    diags: Vec<Diag>,
    /// The whole file, for what may be named before or after (work directories).
    body: &'a Block<Stmt>,
    /// The work directories mounts name anywhere in the file, once asked for.
    named_works: Option<Vec<String>>,
    /// Sorted, so that of two equally close names the first is suggested.
    layers: BTreeMap<String, Span>,
    /// Unknown layer names given a "did you mean" so far.
    hints: usize,
    /// Remembered names (`stat`, `lstat`, `fstat`, `statfs`, `dirent`) and their kind.
    stats: HashMap<String, (Span, NameKind)>,
    vary: BTreeMap<String, Span>,
    /// Named uppers, work directories and mounts, where first named.
    uppers: BTreeMap<String, Span>,
    works: BTreeMap<String, Span>,
    mounts: BTreeMap<String, Span>,
    filesystems: BTreeMap<String, Span>,
    /// Read-only image filesystems (squashfs, erofs) by name, and the layers on them.
    images: BTreeMap<String, FsKind>,
    image_layers: BTreeMap<String, (String, FsKind)>,
    /// Images a mount has used (so packed), with that mount.
    packed: BTreeMap<String, Span>,
    recovery: &'a Recovery,
}

pub(crate) fn validate(body: &Block<Stmt>, recovery: &Recovery) -> Vec<Diag> {
    let mut v = Validator {
        diags: Vec::new(),
        body,
        named_works: None,
        layers: BTreeMap::new(),
        hints: 0,
        stats: HashMap::new(),
        vary: BTreeMap::new(),
        uppers: BTreeMap::new(),
        works: BTreeMap::new(),
        mounts: BTreeMap::new(),
        filesystems: BTreeMap::new(),
        images: BTreeMap::new(),
        image_layers: BTreeMap::new(),
        packed: BTreeMap::new(),
        recovery,
    };
    v.header(body);
    v.instances(body);
    let mut flow = Flow {
        live: Some(Vec::new()),
        ever: false,
        last: None,
        uppers_made: BTreeMap::new(),
        fds: BTreeMap::new(),
        closed: BTreeMap::new(),
        declared: BTreeMap::new(),
    };
    v.block(body, &mut flow, true);
    v.diags
}

/// The first word of a statement, so that a label on a block does not cover all of it.
fn head(span: Span, stmt: &Stmt) -> Span {
    Span { end: (span.start + stmt.keyword().len()).min(span.end), ..span }
}

fn d(kind: ErrorKind, msg: impl Into<String>, span: Span, label: impl Into<String>) -> Diag {
    Diag::new(kind, msg, (span.start, span.end), label)
}

impl Validator<'_> {
    fn push(&mut self, diag: Diag) {
        self.diags.push(diag);
    }

    fn header(&mut self, body: &Block<Stmt>) {
        let mut seen: HashMap<u8, Span> = HashMap::new();
        let mut highest: Option<(u8, &'static str)> = None;
        let mut first_body: Option<(Span, &'static str)> = None;
        for item in &body.items {
            let Some(rank) = item.node.header_rank() else {
                if first_body.is_none() {
                    first_body = Some((head(item.span, &item.node), item.node.keyword()));
                }
                continue;
            };
            let kw = item.node.keyword();
            if let Some(prev) = seen.get(&rank) {
                self.push(
                    d(ErrorKind::DuplicateHeader, format!("`{kw}` is given twice"), item.span, "second one")
                        .with_related((prev.start, prev.end), "first one")
                        .with_help(format!("a scenario has one `{kw}` statement")),
                );
                continue;
            }
            seen.insert(rank, item.span);
            if let Some((b_span, b_kw)) = first_body {
                self.push(
                    d(
                        ErrorKind::HeaderOrder,
                        format!("`{kw}` must come before the first `{b_kw}`"),
                        item.span,
                        "header statement here",
                    )
                    .with_related((b_span.start, b_span.end), "the body starts here")
                    .with_help(HEADER_ORDER),
                );
            } else if let Some((h, h_kw)) = highest.filter(|&(h, _)| h > rank) {
                let _ = h;
                self.push(
                    d(ErrorKind::HeaderOrder, format!("`{kw}` must come before `{h_kw}`"), item.span, "out of order")
                        .with_help(HEADER_ORDER),
                );
            }
            if highest.is_none_or(|(h, _)| rank > h) {
                highest = Some((rank, kw));
            }
        }
        if !seen.contains_key(&0) {
            let at = body.items.first().map(|i| i.span).unwrap_or_default();
            self.push(
                d(
                    ErrorKind::MissingScenario,
                    "the file has no `scenario` statement",
                    Span { end: at.start.max(at.end.min(at.start + 1)), ..at },
                    "expected `scenario \"title\"` first",
                )
                .with_help("start the file with `scenario \"what this checks\"`"),
            );
        }
        // Vary axes: each name once, each value once, and never also set by a `with`.
        for item in &body.items {
            if let Stmt::Vary(axes) | Stmt::Param(axes) = &item.node {
                for axis in axes {
                    if let Some(prev) = self.vary.get(&axis.name.node) {
                        let prev = *prev;
                        self.push(
                            d(
                                ErrorKind::VaryConflict,
                                format!("`{}` is varied twice", axis.name.node),
                                axis.name.span,
                                "second axis",
                            )
                            .with_related((prev.start, prev.end), "first axis")
                            .with_help(format!("list every value in one axis: {}=A|B|C", axis.name.node)),
                        );
                        continue;
                    }
                    self.vary.insert(axis.name.node.clone(), axis.name.span);
                    let mut vals: HashMap<&str, Span> = HashMap::new();
                    for v in &axis.values {
                        if let Some(p) = vals.get(v.node.as_str()) {
                            self.push(
                                d(
                                    ErrorKind::VaryConflict,
                                    format!("value `{}` of `{}` is listed twice", v.node, axis.name.node),
                                    v.span,
                                    "again",
                                )
                                .with_related((p.start, p.end), "first here")
                                .with_help("each value gives one instance; list it once"),
                            );
                        } else {
                            vals.insert(&v.node, v.span);
                        }
                    }
                }
            }
        }
    }

    /// The instances `vary` makes, one per combination of values, are at most [`MAX_INSTANCES`].
    fn instances(&mut self, body: &Block<Stmt>) {
        let varies = || {
            body.items.iter().filter_map(|i| match &i.node {
                Stmt::Vary(axes) | Stmt::Param(axes) if !axes.is_empty() => Some(axes),
                _ => None,
            })
        };
        let total = varies().flatten().fold(1u64, |n, a| n.saturating_mul(a.values.len() as u64));
        if total <= MAX_INSTANCES as u64 {
            return;
        }
        let mut n = 1u64;
        let Some(axes) = varies().find(|axes| {
            n = axes.iter().fold(n, |n, a| n.saturating_mul(a.values.len() as u64));
            n > MAX_INSTANCES as u64
        }) else {
            return;
        };
        let (first, last) = (&axes[0], &axes[axes.len() - 1]);
        let end = last.values.last().map_or(last.name.span.end, |v| v.span.end);
        let total = if total == u64::MAX { "more than 2^64".to_string() } else { total.to_string() };
        self.push(
            d(
                ErrorKind::TooManyInstances,
                format!("`vary` makes {total} instances; a scenario may have {MAX_INSTANCES}"),
                Span { end, ..first.name.span },
                format!("{total} combinations of values"),
            )
            .with_help(format!(
                "a scenario has at most {MAX_INSTANCES} instances, the product of the numbers of values of \
                 its axes; vary fewer options, or split the scenario into several files"
            )),
        );
    }

    fn block(&mut self, block: &Block<Stmt>, flow: &mut Flow, top: bool) {
        for item in &block.items {
            self.stmt(&item.node, item.span, flow, top);
        }
    }

    fn need_mounted(&mut self, flow: &Flow, span: Span, what: &str) {
        if self.recovery.failed || flow.live.as_ref().is_none_or(|v| !v.is_empty()) {
            return;
        }
        if !flow.ever {
            self.push(
                d(ErrorKind::BeforeMount, format!("{what} before the first `mount`"), span, "nothing is mounted yet")
                    .with_help("declare the layers, then `mount` them, then act on the merged view"),
            );
        } else {
            self.push(
                d(ErrorKind::NotMounted, format!("{what} after `umount`"), span, "the overlay is not mounted here")
                    .with_help("`remount` or `mount` again first"),
            );
        }
    }

    /// A mount named by `on`, `umount NAME`, `expect merged on NAME` or
    /// `NAME:/path`: named by an earlier `mount ... as NAME`, and mounted here.
    fn need_named_mount(&mut self, flow: &Flow, name: &Name, what: &str) {
        if self.recovery.failed {
            return;
        }
        let Some(at) = self.mounts.get(&name.node).copied() else {
            let help = match closest(&name.node, self.mounts.keys().map(String::as_str)) {
                Some(k) => format!("did you mean `{k}`?"),
                None => "name a mount first: `mount LAYERS as NAME`".to_string(),
            };
            self.push(
                d(
                    ErrorKind::UnknownMount,
                    format!("unknown mount `{}`", name.node),
                    name.span,
                    "no mount has this name",
                )
                .with_help(help),
            );
            return;
        };
        if flow.is_live(&name.node) == Some(false) {
            self.push(
                d(
                    ErrorKind::NotMounted,
                    format!("{what}: mount `{}` is not mounted here", name.node),
                    name.span,
                    "not mounted",
                )
                .with_related((at.start, at.end), "named here")
                .with_help(format!("mount it again first (`mount ... as {}`)", name.node)),
            );
        }
    }

    /// A layer, upper or work directory of a mount.
    fn dir_ref(&mut self, r: &DirRef, flow: &Flow, role: &str) {
        match r {
            // A directory inside a layer or a named upper, unless a mount has that name.
            DirRef::InMount { mount, .. }
                if !self.mounts.contains_key(&mount.node)
                    && (self.layers.contains_key(&mount.node) || self.uppers.contains_key(&mount.node)) => {}
            DirRef::InMount { mount, .. } => self.need_named_mount(flow, mount, &format!("`{}` as {role}", r.text())),
            DirRef::Name(n) if role == "a lower layer" => {
                if !self.uppers.contains_key(&n.node) {
                    self.known_layer(n);
                }
            }
            DirRef::Name(n) if role != "a lower layer" && !is_ident(&n.node) => self.push(
                d(ErrorKind::BadPath, format!("{role}'s name `{}` is no identifier", n.node), n.span, "not a name")
                    .with_help("name an upper or a work directory with letters, digits, `_` and `-`"),
            ),
            DirRef::Name(n) if role == "the upper" => {
                if let Some(at) = self.layers.get(&n.node).copied() {
                    self.push(
                        d(ErrorKind::NameClash, format!("`{}` is a layer, not an upper", n.node), n.span, "a layer")
                            .with_related((at.start, at.end), "declared here")
                            .with_help(
                                "a named upper is a directory of its own; give it another name, or start it \
                                 as a copy of the layer with `upper from`",
                            ),
                    );
                }
            }
            DirRef::Name(_) => {}
        }
    }

    fn stmt(&mut self, stmt: &Stmt, full: Span, flow: &mut Flow, top: bool) {
        let span = head(full, stmt);
        if !top && stmt.header_rank().is_some() {
            self.push(
                d(
                    ErrorKind::HeaderOrder,
                    format!("`{}` cannot be conditional", stmt.keyword()),
                    span,
                    "inside a block",
                )
                .with_help(format!("header statements stand at the top of the file; {HEADER_ORDER}")),
            );
        }
        match stmt {
            Stmt::Layer(l) => {
                if let Some(fs) = &l.on {
                    self.known_dir(fs, "filesystem");
                    if let Some(k) = self.images.get(&fs.node) {
                        self.image_layers.insert(l.name.node.clone(), (fs.node.clone(), *k));
                        if let Some(at) = self.packed.get(&fs.node).copied() {
                            self.push(
                                d(
                                    ErrorKind::ReadOnlyFilesystem,
                                    format!("layer `{}` comes after the {} image `{}` was packed", l.name.node, k.name(), fs.node),
                                    fs.span,
                                    "packed already",
                                )
                                .with_related((at.start, at.end), "packed for this mount")
                                .with_help("an image is packed when a mount first uses one of its layers: declare every layer on it before that mount"),
                            );
                        }
                    }
                }
                self.layer(l, flow)
            }
            Stmt::Filesystem(f) => {
                if let Some(z) = f.size.as_ref().filter(|z| z.node.bytes == 0 || z.node.bytes > MAX_FILESYSTEM) {
                    self.push(
                        d(ErrorKind::BadSize, "a filesystem's size is 1 byte to 1 GiB", z.span, "this size")
                            .with_help("a per-layer tmpfs holds at most 1 GiB (its default), like the instance's"),
                    );
                }
                let least = match f.kind.node {
                    FsKind::Xfs => 300 << 20,
                    FsKind::Btrfs => 128 << 20,
                    _ => 0,
                };
                if let Some(z) = f.size.as_ref().filter(|z| z.node.bytes > 0 && z.node.bytes < least) {
                    self.push(
                        d(
                            ErrorKind::BadSize,
                            format!("{} needs at least {} MiB", f.kind.node.name(), least >> 20),
                            z.span,
                            "too small for mkfs",
                        )
                        .with_help(format!("leave the size out (512 MiB) or give {}MiB or more", least >> 20)),
                    );
                }
                if let Some(at) = flow.declared.get(&(true, f.name.node.clone())).copied() {
                    self.push(
                        d(
                            ErrorKind::NameClash,
                            format!("filesystem `{}` is declared twice", f.name.node),
                            f.name.span,
                            "second one",
                        )
                        .with_related((at.start, at.end), "first one")
                        .with_help("give each filesystem a name of its own"),
                    );
                }
                self.filesystems.entry(f.name.node.clone()).or_insert(f.name.span);
                flow.declared.entry((true, f.name.node.clone())).or_insert(f.name.span);
                if f.kind.node.read_only() {
                    self.images.entry(f.name.node.clone()).or_insert(f.kind.node);
                }
            }
            Stmt::Mount(m) => self.mount(m, span, flow),
            Stmt::Umount(u) => {
                match &u.mount {
                    Some(n) => self.need_named_mount(flow, n, "`umount`"),
                    None => self.need_mounted(flow, span, "`umount`"),
                }
                self.result_kind(u.result.as_ref(), "umount", false, false);
                // A refused unmount (EBUSY: a descriptor still open) leaves it mounted.
                let fails = matches!(&u.result, Some(r) if !matches!(r.node, Expected::Ok | Expected::Open));
                if let (false, Some(v)) = (fails, &mut flow.live) {
                    match &u.mount {
                        Some(n) => v.retain(|l| l.name.as_deref() != Some(n.node.as_str())),
                        None => {
                            v.pop();
                        }
                    }
                }
            }
            Stmt::Remount(r) => {
                if !flow.ever && !self.recovery.failed {
                    self.push(
                        d(ErrorKind::BeforeMount, "`remount` before the first `mount`", span, "nothing to mount again")
                            .with_help("`remount` repeats the last `mount`; mount first"),
                    );
                }
                self.result_kind(r.as_ref(), "remount", false, false);
                let fails = matches!(r, Some(r) if !matches!(r.node, Expected::Ok | Expected::Open));
                match (&flow.last, &mut flow.live) {
                    (Some(last), Some(v)) if !fails => {
                        v.retain(|l| l.name != last.name);
                        v.push(Live { at: span, ..last.clone() });
                    }
                    (Some(_), _) => flow.live = None,
                    (None, _) => {}
                }
            }
            Stmt::Reconfigure(r) => {
                self.need_mounted(flow, span, "`reconfigure`");
                self.result_kind(r.result.as_ref(), "reconfigure", false, false);
            }
            Stmt::ExpectMountinfo(e) => match &e.mount {
                Some(n) => self.need_named_mount(flow, n, "`expect mountinfo`"),
                None => self.need_mounted(flow, span, "`expect mountinfo`"),
            },
            Stmt::If(i) => {
                let mut ends = Vec::new();
                for (cond, body) in &i.branches {
                    self.cond(cond);
                    let mut f = flow.clone();
                    self.block(body, &mut f, false);
                    ends.push(f);
                }
                match &i.otherwise {
                    Some(body) => {
                        let mut f = flow.clone();
                        self.block(body, &mut f, false);
                        ends.push(f);
                    }
                    None => ends.push(flow.clone()),
                }
                join(flow, &ends);
            }
            Stmt::As(a) => {
                // A user namespace block runs in a child process: what it
                // opens or closes is its own, gone at the block's end.
                let saved = a.userns.then(|| (flow.fds.clone(), flow.closed.clone(), self.stats.clone()));
                for item in &a.body.items {
                    self.stmt(&item.node, item.span, flow, false);
                }
                if let Some((fds, closed, stats)) = saved {
                    flow.fds = fds;
                    flow.closed = closed;
                    // Names (`stat ... as`, `handle ... as`) remembered in the child go with it.
                    self.stats = stats;
                }
            }
            Stmt::On(o) => {
                self.need_named_mount(flow, &o.mount, "`on`");
                // What acts on a mount that is not mounted was reported once, with `on`.
                let saved = match flow.is_live(&o.mount.node) {
                    Some(true) => None,
                    _ => Some(flow.live.take()),
                };
                self.on_body(&o.body);
                for item in &o.body.items {
                    self.stmt(&item.node, item.span, flow, false);
                }
                if let Some(live) = saved {
                    flow.live = live;
                }
            }
            Stmt::Expect(e) => {
                let what = format!("`expect {}`", e.target.name());
                match (e.target, &e.name) {
                    (TreeTarget::Merged, Some(n)) => self.need_named_mount(flow, n, &what),
                    (TreeTarget::Merged, None) => self.need_mounted(flow, span, &what),
                    (TreeTarget::Upper, Some(n)) => self.known_dir(n, "upper"),
                    (TreeTarget::Work, Some(n)) => self.known_dir(n, "work"),
                    (TreeTarget::Upper | TreeTarget::Work, None) => {
                        if !flow.ever {
                            self.need_mounted(flow, span, &what);
                        }
                    }
                }
                for c in &e.checks.items {
                    self.check(&c.node, e.target, c.span);
                }
            }
            Stmt::ExpectLayer(entries) => {
                if !flow.ever {
                    self.need_mounted(flow, span, "`expect layer`");
                }
                if let Some(Live { readonly: true, at, .. }) = flow.live.as_ref().and_then(|v| v.last()) {
                    let at = *at;
                    self.push(
                        d(
                            ErrorKind::ExpectLayerReadonly,
                            "`expect layer` on a readonly mount",
                            span,
                            "no upper to export",
                        )
                        .with_related((at.start, at.end), "mounted readonly here")
                        .with_help("a readonly mount has no upper layer; mount with an upper to export one"),
                    );
                }
                let _ = entries;
            }
            Stmt::Op(o) => {
                // A descriptor outlives the mount it was opened on.
                if let Some(fd) = o.op.fd() {
                    self.need_open(flow, fd);
                }
                if o.op.needs_mount() {
                    self.need_mounted(flow, span, &format!("`{}`", o.op.keyword()));
                }
                self.op(o);
                self.descriptors(o, flow);
            }
            Stmt::Edit(Edit { work: Some(w), .. }) => {
                let body = self.body;
                let known = self.named_works.get_or_insert_with(|| named_works(body)).contains(&w.node);
                if !w.node.is_empty() && !self.recovery.failed && !known {
                    self.push(
                        d(
                            ErrorKind::UnknownDir,
                            format!("unknown work directory `{}`", w.node),
                            w.span,
                            "no mount names it",
                        )
                        .with_help(format!(
                            "a mount names it (`mount LAYERS upper U work {}`); `edit work` may come before that mount",
                            w.node
                        )),
                    );
                }
            }
            Stmt::Edit(e) => match (&e.layer, &e.upper) {
                (Some(l), _) => {
                    self.known_layer(l);
                    if let Some((fs, k)) = self.image_layers.get(&l.node) {
                        let msg = format!("layer `{}` is on {fs}, a read-only {} image", l.node, k.name());
                        self.push(
                            d(ErrorKind::ReadOnlyFilesystem, msg, l.span, "cannot be edited")
                                .with_help("an image is packed from its layers when first mounted; put a layer to edit on tmpfs or a disk filesystem"),
                        );
                    }
                }
                (None, upper) if !self.recovery.failed => {
                    let key = upper.as_ref().map_or("", |n| n.node.as_str());
                    if let Some(n) = upper.as_ref().filter(|n| !self.uppers.contains_key(&n.node)) {
                        self.known_dir(n, "upper");
                    } else if !flow.uppers_made.contains_key(key) {
                        self.push(
                            d(
                                ErrorKind::BeforeMount,
                                "`edit upper` before a mount made the upper",
                                span,
                                "no upper yet",
                            )
                            .with_help("the first `mount` with an upper makes it; edit it after that (mounted or not)"),
                        );
                    }
                }
                (None, _) => {}
            },
            Stmt::Requires(conds) => {
                for c in conds {
                    self.cond(c);
                }
            }
            Stmt::Scenario(_) | Stmt::About(_) | Stmt::Tags(_) | Stmt::Vary(_) | Stmt::Param(_) | Stmt::Backing(_) => {}
        }
    }

    fn mount(&mut self, m: &Mount, span: Span, flow: &mut Flow) {
        for r in m.lowers.iter().chain(&m.data) {
            self.dir_ref(r, flow, "a lower layer");
            if let DirRef::Name(n) = r {
                if let Some((fs, _)) = self.image_layers.get(&n.node) {
                    self.packed.entry(fs.clone()).or_insert(span);
                }
            }
        }
        if let Some(u) = &m.upper {
            self.dir_ref(u, flow, "the upper");
        }
        if let Some(w) = &m.work {
            self.dir_ref(w, flow, "the work directory");
        }
        if let Some(fs) = &m.upper_on {
            self.known_dir(fs, "filesystem");
            if let Some(k) = self.images.get(&fs.node) {
                self.push(
                    d(
                        ErrorKind::ReadOnlyFilesystem,
                        format!("filesystem `{}` is a read-only {} image", fs.node, k.name()),
                        fs.span,
                        "cannot hold an upper",
                    )
                    .with_help(
                        "squashfs and erofs hold lower layers only; put the upper on tmpfs or a disk filesystem",
                    ),
                );
            }
            match &m.upper {
                Some(DirRef::Name(u)) if flow.uppers_made.contains_key(&u.node) && !self.recovery.failed => {
                    let at = flow.uppers_made[&u.node];
                    self.push(
                        d(ErrorKind::UpperExists, format!("upper `{}` was made already", u.node), fs.span, "too late")
                            .with_related((at.start, at.end), "made by this mount")
                            .with_help("`on FS` places an upper when a mount first makes it; name FS on that mount"),
                    );
                }
                Some(DirRef::Name(_)) => {}
                _ => self.push(
                    d(ErrorKind::Conflict, "`on` places a named upper", fs.span, "no named upper here")
                        .with_help("write `upper NAME on FS`"),
                ),
            }
        }
        if let Some(from) = &m.upper_from {
            self.known_layer(from);
        }
        for opt in &m.options {
            if let Some(axis) = self.vary.get(&opt.name) {
                let axis = *axis;
                self.push(
                    d(ErrorKind::VaryConflict, format!("option `{}` is also varied", opt.name), opt.span, "set here")
                        .with_related((axis.start, axis.end), "varied here")
                        .with_help("`vary` appends its value to every mount; drop one of the two"),
                );
            }
        }
        // The upper this mount makes or reuses: `""` for the default one.
        let upper_key = match &m.upper {
            None => Some(String::new()),
            Some(DirRef::Name(n)) => Some(n.node.clone()),
            Some(DirRef::InMount { .. }) => None,
        };
        if let (Some(from), Some(at)) = (&m.upper_from, upper_key.as_ref().and_then(|k| flow.uppers_made.get(k))) {
            let at = *at;
            self.push(
                d(ErrorKind::UpperExists, "`upper from` after the upper was made", from.span, "too late")
                    .with_related((at.start, at.end), "the upper was made by this mount")
                    .with_help(
                        "an upper is filled from a layer once, by the first mount with an upper, and \
                         kept across `umount`; name the layer on that mount",
                    ),
            );
        }
        if let (false, Some(k)) = (m.readonly, upper_key) {
            flow.uppers_made.entry(k).or_insert(span);
        }
        if let Some(DirRef::Name(n)) = &m.upper {
            self.uppers.entry(n.node.clone()).or_insert(n.span);
            if m.work.is_none() {
                // `upper NAME` alone has the work directory NAME.
                self.works.entry(n.node.clone()).or_insert(n.span);
            }
        }
        if let Some(DirRef::Name(n)) = &m.work {
            self.works.entry(n.node.clone()).or_insert(n.span);
        }
        self.result_kind(m.result.as_ref(), "mount", false, false);
        let fails = matches!(&m.result, Some(r) if !matches!(r.node, Expected::Ok | Expected::Open));
        let live = Live { name: m.name.as_ref().map(|n| n.node.clone()), readonly: m.readonly, at: span };
        if let Some(n) = &m.name {
            if let Some(at) = self.layers.get(&n.node).or(self.uppers.get(&n.node)).copied() {
                self.push(
                    d(
                        ErrorKind::NameClash,
                        format!("`{}` names a layer or an upper already", n.node),
                        n.span,
                        "this mount's name",
                    )
                    .with_related((at.start, at.end), "named here")
                    .with_help("`NAME:/path` would be ambiguous: give the mount a name of its own"),
                );
            }
            if let (Some(true), false) = (flow.is_live(&n.node), self.recovery.failed) {
                let at = self.mounts.get(&n.node).copied().unwrap_or_default();
                self.push(
                    d(ErrorKind::NameClash, format!("mount `{}` is already mounted", n.node), n.span, "mounted again")
                        .with_related((at.start, at.end), "named here")
                        .with_help(format!("`umount {}` first, or give this mount another name", n.node)),
                );
            }
            self.mounts.entry(n.node.clone()).or_insert(n.span);
        }
        flow.last = Some(live.clone());
        if fails {
            return;
        }
        flow.ever = true;
        if let Some(v) = &mut flow.live {
            // An unnamed mount replaces the unnamed one still mounted.
            v.retain(|l| l.name != live.name);
            v.push(live);
        }
    }

    /// A named upper or work directory, named by an earlier mount.
    fn known_dir(&mut self, n: &Name, what: &str) {
        let known = match what {
            "upper" => &self.uppers,
            "work" => &self.works,
            _ => &self.filesystems,
        };
        if known.contains_key(&n.node) || self.recovery.failed {
            return;
        }
        let help = match closest(&n.node, known.keys().map(String::as_str)) {
            Some(k) => format!("did you mean `{k}`?"),
            None if what == "filesystem" => format!("declare it first: `filesystem {} tmpfs`", n.node),
            None => format!("a mount names it first: `mount LAYERS {what} {}`", n.node),
        };
        self.push(
            d(
                ErrorKind::UnknownDir,
                format!("unknown {what} `{}`", n.node),
                n.span,
                if what == "filesystem" {
                    "not declared before this".to_string()
                } else {
                    format!("no mount names this {what}")
                },
            )
            .with_help(help),
        );
    }

    /// What `on MOUNT { ... }` may hold, in its `if` blocks too: operations,
    /// expectations, `if` and `as`.
    fn on_body(&mut self, body: &Block<Stmt>) {
        for item in &body.items {
            let inner = &item.node;
            match inner {
                Stmt::Op(_) | Stmt::Expect(_) | Stmt::ExpectMountinfo(_) | Stmt::As(_) => {}
                Stmt::If(i) => {
                    for (_, b) in &i.branches {
                        self.on_body(b);
                    }
                    if let Some(b) = &i.otherwise {
                        self.on_body(b);
                    }
                }
                _ => self.push(
                    d(
                        ErrorKind::Conflict,
                        format!("`{}` cannot stand inside `on`", inner.keyword()),
                        head(item.span, inner),
                        "inside `on`",
                    )
                    .with_help("`on MOUNT { ... }` holds operations, expectations, `if` and `as` blocks"),
                ),
            }
        }
    }

    fn need_open(&mut self, flow: &Flow, fd: &Name) {
        if self.recovery.failed || flow.fds.contains_key(&fd.node) {
            return;
        }
        let mut diag =
            d(ErrorKind::DescriptorNotOpen, format!("descriptor `{}` is not open here", fd.node), fd.span, "not open");
        diag = match flow.closed.get(&fd.node) {
            Some(at) => diag
                .with_related((at.start, at.end), "closed here")
                .with_help(format!("open it again first: `open PATH as {} rdonly`", fd.node)),
            None => diag.with_help(format!(
                "open it first on every path to here (`open PATH as {} rdonly`); a failed `open` binds nothing",
                fd.node
            )),
        };
        self.push(diag);
    }

    /// What `open` and `close` do to the descriptors open after them.
    fn descriptors(&mut self, o: &OpStmt, flow: &mut Flow) {
        match &o.op {
            Op::Open { fd, .. } | Op::OpenHandle { fd, .. } => {
                if let Some(at) = flow.fds.get(&fd.node).copied() {
                    if !self.recovery.failed {
                        self.push(
                            d(
                                ErrorKind::DescriptorOpen,
                                format!("descriptor `{}` is already open", fd.node),
                                fd.span,
                                "opened again",
                            )
                            .with_related((at.start, at.end), "opened here")
                            .with_help(format!("`close {}` first, or give this one another name", fd.node)),
                        );
                    }
                    return;
                }
                // A failed `open` binds nothing.
                let fails = matches!(&o.result, Some(r) if !matches!(r.node, Expected::Ok | Expected::Open));
                if !fails {
                    flow.fds.insert(fd.node.clone(), fd.span);
                    flow.closed.remove(&fd.node);
                }
            }
            Op::Close { fd } if flow.fds.remove(&fd.node).is_some() => {
                flow.closed.insert(fd.node.clone(), fd.span);
            }
            _ => {}
        }
    }

    fn cond(&mut self, _c: &Cond) {
        // Tokens inside conditions are checked as they are built.
    }

    fn known_layer(&mut self, name: &Name) {
        if self.layers.contains_key(&name.node) || self.recovery.layers.contains(&name.node) {
            return;
        }
        let close = if self.hints < LAYER_HINTS {
            self.hints += 1;
            closest(&name.node, self.layers.keys().map(String::as_str))
        } else {
            None
        };
        let help = match close {
            Some(k) => format!("did you mean `{k}`?"),
            None if self.layers.is_empty() => "declare it first: `layer NAME { ... }`".to_string(),
            None if self.layers.len() <= 8 => {
                format!("declared layers: {}", self.layers.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
            }
            None => format!("{} layers are declared before this; declare this one too", self.layers.len()),
        };
        self.push(
            d(ErrorKind::UnknownLayer, format!("unknown layer `{}`", name.node), name.span, "not declared before this")
                .with_help(help),
        );
    }

    fn layer(&mut self, l: &Layer, flow: &mut Flow) {
        if let Some(prev) = flow.declared.get(&(false, l.name.node.clone())) {
            let prev = *prev;
            self.push(
                d(
                    ErrorKind::DuplicateLayer,
                    format!("layer `{}` is declared twice", l.name.node),
                    l.name.span,
                    "second declaration",
                )
                .with_related((prev.start, prev.end), "first declaration")
                .with_help("give each layer its own name"),
            );
        } else {
            self.layers.entry(l.name.node.clone()).or_insert(l.name.span);
            flow.declared.insert((false, l.name.node.clone()), l.name.span);
        }
        match &l.source {
            LayerSource::Tar(p) => {
                let bad = p.node.is_empty()
                    || p.node.starts_with('/')
                    || p.node.split('/').any(|c| c == "..")
                    || p.node.contains('\0');
                if bad {
                    self.push(
                        d(
                            ErrorKind::BadTarPath,
                            format!("layer tarball path `{}` must stay beside the scenario", p.node),
                            p.span,
                            "not a relative path",
                        )
                        .with_help("name the tarball relative to the scenario file, without `..`: \"layers/base.tar\""),
                    );
                }
            }
            LayerSource::Entries(entries) => self.entries(entries),
        }
    }

    fn entries(&mut self, entries: &Block<Entry>) {
        // Every path and every prefix of it that ends before a `/` is a node
        // of a tree of components, found from its parent and its last
        // component: a path costs its length, not its length times its depth.
        let mut nodes = Nodes::default();
        // node -> (is a directory, where), for the paths declared so far
        let mut seen: HashMap<usize, (bool, Span)> = HashMap::new();
        // node -> the first entry below it, for the prefixes of those paths
        let mut implicit: HashMap<usize, Span> = HashMap::new();
        let mut prefixes: Vec<(usize, usize)> = Vec::new();
        for item in &entries.items {
            let e = &item.node;
            let path = e.path.node.as_str();
            let is_dir = matches!(e.kind, EntryKind::Dir { .. });
            nodes.prefixes(path, &mut prefixes);
            let Some(&(node, _)) = prefixes.last() else { continue };
            if let Some((_, prev)) = seen.get(&node) {
                let prev = *prev;
                self.push(
                    d(
                        ErrorKind::DuplicatePath,
                        format!("`{path}` is declared twice in this layer"),
                        e.path.span,
                        "second entry",
                    )
                    .with_related((prev.start, prev.end), "first entry")
                    .with_help("a layer holds one entry per path"),
                );
                continue;
            }
            if !is_dir {
                if let Some(child) = implicit.get(&node) {
                    let child = *child;
                    self.push(
                        d(
                            ErrorKind::PathConflict,
                            format!("`{path}` is a {} but an earlier entry lies inside it", e.kind.keyword()),
                            e.path.span,
                            "not a directory",
                        )
                        .with_related((child.start, child.end), "this entry needs it to be a directory")
                        .with_help("declare the parent as a `dir`, or move the child"),
                    );
                }
            }
            // Every ancestor must be (or become) a directory; the nearest first.
            for &(anc_node, anc_end) in prefixes.iter().rev().skip(1) {
                if anc_end == 0 {
                    break;
                }
                if let Some((false, at)) = seen.get(&anc_node) {
                    let at = *at;
                    let anc = &path[..anc_end];
                    self.push(
                        d(
                            ErrorKind::PathConflict,
                            format!("`{path}` lies inside `{anc}`, which is not a directory"),
                            e.path.span,
                            "needs a directory parent",
                        )
                        .with_related((at.start, at.end), "declared here")
                        .with_help("make the parent a `dir`"),
                    );
                    break;
                }
                implicit.entry(anc_node).or_insert(e.path.span);
            }
            if let EntryKind::Hardlink { target } = &e.kind {
                match nodes.find(&target.node).and_then(|n| seen.get(&n)) {
                    None => self.push(
                        d(
                            ErrorKind::HardlinkTarget,
                            format!("hard link target `{}` is not defined earlier in this layer", target.node),
                            target.span,
                            "no such entry above",
                        )
                        .with_help("declare the target first; a hard link names an entry of its own layer"),
                    ),
                    Some((true, at)) => {
                        let at = *at;
                        self.push(
                            d(
                                ErrorKind::HardlinkTarget,
                                format!("hard link target `{}` is a directory", target.node),
                                target.span,
                                "a directory",
                            )
                            .with_related((at.start, at.end), "declared here")
                            .with_help("Linux does not hard-link directories"),
                        )
                    }
                    Some(_) => {}
                }
            }
            seen.insert(node, (is_dir, e.path.span));
        }
    }

    fn op(&mut self, o: &OpStmt) {
        let (text_ok, list_ok) = match o.op {
            Op::Read { .. }
            | Op::Readlink { .. }
            | Op::Measure { .. }
            | Op::Getxattr { .. }
            | Op::FdRead { .. }
            | Op::Fgetxattr { .. }
            | Op::MmapRead { .. } => (true, false),
            Op::Readdir { .. } | Op::FdReaddir { .. } | Op::Listxattr { .. } => (false, true),
            _ => (false, false),
        };
        self.result_kind(o.result.as_ref(), o.op.keyword(), text_ok, list_ok);
        if let Some(l) = o.op.layer() {
            if !self.uppers.contains_key(&l.node) {
                self.known_layer(l);
            }
        }
        match &o.op {
            Op::Stat { name, .. }
            | Op::Fstat { name, .. }
            | Op::Lstat { name, .. }
            | Op::Statfs { name, .. }
            | Op::Handle { name, .. }
            | Op::Dirent { name, .. } => {
                let kind = NameKind::of(&o.op).unwrap_or(NameKind::Inode);
                self.stats.insert(name.node.clone(), (name.span, kind));
            }
            Op::OpenHandle { handle, .. } => {
                if let Some(kind) = self.remembered(handle, "open-handle").filter(|k| *k != NameKind::Handle) {
                    self.push(
                        d(
                            ErrorKind::BadField,
                            format!("`{}` holds no file handle", handle.node),
                            handle.span,
                            format!("remembered by `{}`", kind.made_by()),
                        )
                        .with_help(format!("take one first: `handle PATH as {}`", handle.node)),
                    );
                }
            }
            Op::Compare { subject, name, fields, how } => {
                let mut kinds = vec![self.remembered(name, "compare")];
                if let Subject::Name(other) = subject {
                    kinds.push(self.remembered(other, "compare"));
                }
                for f in &fields.node {
                    self.field_of(kinds.iter().flatten(), *f, fields.span);
                    if matches!(how, CompareHow::Newer | CompareHow::Older) && !f.is_time() {
                        self.push(
                            d(ErrorKind::BadField, format!("`{}` is not a time", f.name()), fields.span, "not a time")
                                .with_help(format!("`{}` compares atime, mtime or ctime", how.name())),
                        );
                    }
                }
            }
            Op::Value { name, field, .. } => {
                let kind = self.remembered(name, "value");
                self.field_of(kind.iter(), field.node, field.span);
            }
            Op::SameInode { name, .. } if !self.stats.contains_key(&name.node) && !self.recovery.failed => {
                self.push(
                    d(
                        ErrorKind::SameInodeBeforeStat,
                        format!("`same-inode` names `{}`, which no earlier `stat` remembers", name.node),
                        name.span,
                        "unknown name",
                    )
                    .with_help(format!("remember the inode first: `stat PATH as {}`", name.node)),
                );
            }
            _ => {}
        }
    }

    /// The remembered names, sorted (so that of two equally close names the
    /// first is suggested, whatever the hash order).
    fn stats_sorted(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.stats.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The kind of a remembered name; an error when no earlier statement remembers it.
    fn remembered(&mut self, name: &Name, what: &str) -> Option<NameKind> {
        if let Some((_, kind)) = self.stats.get(&name.node) {
            return Some(*kind);
        }
        if !self.recovery.failed {
            self.push(
                d(
                    ErrorKind::UnknownName,
                    format!("`{what}` names `{}`, which no earlier statement remembers", name.node),
                    name.span,
                    "unknown name",
                )
                .with_help(match closest(&name.node, self.stats_sorted()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => {
                        format!("remember it first: `stat PATH as {}` (or lstat, fstat, statfs, dirent)", name.node)
                    }
                }),
            );
        }
        None
    }

    /// A field the names of these kinds hold.
    fn field_of<'k>(&mut self, kinds: impl Iterator<Item = &'k NameKind>, f: StatField, span: Span) {
        for k in kinds {
            if !k.has(f) {
                self.push(
                    d(
                        ErrorKind::BadField,
                        format!("a `{}` name has no `{}`", k.made_by(), f.name()),
                        span,
                        "no such field",
                    )
                    .with_help(format!("a `{}` name remembers {}", k.made_by(), k.words())),
                );
            }
        }
    }

    fn result_kind(&mut self, r: Option<&Outcome>, what: &str, text_ok: bool, list_ok: bool) {
        let Some(r) = r else { return };
        let bad = match r.node {
            Expected::Text(_) if !text_ok => Some("a string"),
            Expected::List(_) if !list_ok => Some("a list"),
            _ => None,
        };
        if let Some(kind) = bad {
            let fits = match (text_ok, list_ok) {
                (true, _) => "`ok`, an errno name or a string",
                (_, true) => "`ok`, an errno name or a list of names",
                _ => "`ok` or an errno name",
            };
            self.push(
                d(ErrorKind::ResultKind, format!("`{what}` cannot result in {kind}"), r.span, "this result")
                    .with_help(format!("the result of `{what}` is {fits}")),
            );
        }
    }

    fn check(&mut self, c: &Check, target: TreeTarget, span: Span) {
        if target == TreeTarget::Merged {
            let upper_only = match c {
                Check::Whiteout { .. } => Some("whiteout"),
                Check::Metacopy { .. } => Some("metacopy"),
                Check::Redirect { .. } => Some("redirect"),
                Check::Dir { opaque: Some(_), .. } => Some("opaque"),
                _ => None,
            };
            if let Some(w) = upper_only {
                self.push(
                    d(
                        ErrorKind::UpperOnlyCheck,
                        format!("`{w}` can only be checked on the upper"),
                        span,
                        "in `expect merged`",
                    )
                    .with_help(format!(
                        "the merged view hides overlay metadata; check it in `expect upper`{}",
                        if w == "whiteout" { ", or use `absent` here" } else { "" }
                    )),
                );
            }
        }
    }
}

/// The paths of a layer as a tree: node 0 is the empty prefix, and each
/// other node is a prefix of some path that ends before a `/` or at its end,
/// known by its parent and the component between them.
#[derive(Default)]
struct Nodes<'p> {
    children: HashMap<(usize, &'p str), usize>,
}

impl<'p> Nodes<'p> {
    /// The nodes of `path`'s prefixes, shortest first, with where each
    /// ends in `path`: `/a/b` gives the nodes of ``, `/a` and `/a/b`.
    fn prefixes(&mut self, path: &'p str, out: &mut Vec<(usize, usize)>) {
        out.clear();
        let mut node = 0;
        let mut end = 0;
        for (i, comp) in path.split('/').enumerate() {
            if i > 0 {
                end += 1;
            }
            end += comp.len();
            let next = self.children.len() + 1;
            node = *self.children.entry((node, comp)).or_insert(next);
            out.push((node, end));
        }
    }

    /// The node of `path`, if it is a prefix of a path seen.
    fn find(&self, path: &str) -> Option<usize> {
        let mut node = 0;
        for comp in path.split('/') {
            node = *self.children.get(&(node, comp))?;
        }
        Some(node)
    }
}

/// The work directories mounts name anywhere in the file: `work NAME`, or
/// `upper NAME` alone, which names its work directory NAME too.
fn named_works(body: &Block<Stmt>) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(b: &Block<Stmt>, out: &mut Vec<String>) {
        for item in &b.items {
            match &item.node {
                Stmt::Mount(m) => match (&m.work, &m.upper) {
                    (Some(DirRef::Name(n)), _) | (None, Some(DirRef::Name(n))) => out.push(n.node.clone()),
                    _ => {}
                },
                Stmt::If(i) => {
                    for (_, b) in &i.branches {
                        walk(b, out);
                    }
                    if let Some(b) = &i.otherwise {
                        walk(b, out);
                    }
                }
                Stmt::As(a) => walk(&a.body, out),
                Stmt::On(o) => walk(&o.body, out),
                _ => {}
            }
        }
    }
    walk(body, &mut out);
    out
}

fn join(flow: &mut Flow, ends: &[Flow]) {
    let Some((first, rest)) = ends.split_first() else { return };
    let names = |f: &Flow| f.live.as_ref().map(|v| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>());
    flow.live = if rest.iter().all(|f| f.live == first.live) {
        first.live.clone()
    } else if names(first).is_some() && rest.iter().all(|f| names(f) == names(first)) {
        // The same mounts, readonly on some paths only: nothing to report about it.
        first.live.as_ref().map(|v| v.iter().map(|l| Live { readonly: false, ..l.clone() }).collect())
    } else {
        None
    };
    flow.ever = ends.iter().any(|f| f.ever);
    flow.last = ends.iter().rev().find_map(|f| f.last.clone()).or(flow.last.take());
    for f in ends {
        for (k, at) in &f.uppers_made {
            flow.uppers_made.entry(k.clone()).or_insert(*at);
        }
    }
    // Open after the `if`: what every branch left open.
    flow.fds = first
        .fds
        .iter()
        .filter(|(n, _)| rest.iter().all(|f| f.fds.contains_key(*n)))
        .map(|(n, a)| (n.clone(), *a))
        .collect();
    for f in ends {
        for (name, at) in &f.closed {
            flow.closed.entry(name.clone()).or_insert(*at);
        }
        for (name, at) in &f.declared {
            flow.declared.entry(name.clone()).or_insert(*at);
        }
    }
}
