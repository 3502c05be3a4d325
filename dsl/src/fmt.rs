//! The canonical layout of a scenario: four-space indents, one item per line,
//! attributes in a fixed order, comments and single blank lines kept.

use crate::ast::*;
use crate::text::{quote, triple_quote};

const INDENT: &str = "    ";

/// Prints a scenario in the canonical layout. Parsing the output gives the same
/// tree, and formatting it again changes nothing.
pub fn format(s: &Scenario) -> String {
    let mut p = Printer { out: String::new() };
    p.items(&s.body, 0, |p, stmt, depth| p.stmt(stmt, depth));
    p.out
}

/// One statement in the canonical layout (several lines for a block).
pub fn format_stmt(s: &Stmt) -> String {
    let mut p = Printer { out: String::new() };
    p.stmt(s, 0);
    p.out
}

/// One check of an `expect` block, as written.
pub fn format_check(c: &Check) -> String {
    let mut p = Printer { out: String::new() };
    p.check(c);
    p.out
}

/// One member of an `expect layer` block, as written.
pub fn format_tar_entry(t: &TarEntry) -> String {
    let mut p = Printer { out: String::new() };
    p.tar_entry(t);
    p.out
}

struct Printer {
    out: String,
}

fn pad(depth: usize) -> String {
    INDENT.repeat(depth)
}

/// A path as written: bare when it can be, quoted otherwise.
pub(crate) fn path(p: &PathRef) -> String {
    path_text(&p.node)
}

/// A path as the formatter writes it: bare when it can be, quoted otherwise.
pub fn path_text(p: &str) -> String {
    let safe = !p.is_empty()
        && p.starts_with('/')
        && !p.chars().any(|c| c.is_whitespace() || c.is_control() || "\"#,{}[]".contains(c))
        && !p.contains("=>")
        && !p.contains("->");
    if safe {
        p.to_string()
    } else {
        quote(p.as_bytes())
    }
}

/// A result as the formatter writes it after `=>`.
pub fn result_text(e: &Expected) -> String {
    match e {
        Expected::Ok => "ok".to_string(),
        Expected::Errno(e) => e.clone(),
        Expected::Text(t) => quote(t.as_slice()),
        Expected::List(l) => format!("[{}]", l.iter().map(|n| list_name(n.as_slice())).collect::<Vec<_>>().join(", ")),
        Expected::AnyError => "error".to_string(),
        Expected::Any => "any".to_string(),
        Expected::OneOf(names) => names.join("|"),
        Expected::Open => "?".to_string(),
    }
}

/// `setacl PATH [default] "ACL"`, `acl PATH [default] "ACL"`.
fn acl_text(word: &str, p: &PathRef, default: bool, acl: &crate::acl::Acl) -> String {
    format!("{word} {}{} {}", path(p), if default { " default" } else { "" }, quote(acl.to_string().as_bytes()))
}

/// `+i -a`.
fn changes_text(c: &[AttrChange]) -> String {
    c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
}

/// `LAYER:` before a path in a layer's own directory.
fn in_layer(layer: &Option<Name>) -> String {
    layer.as_ref().map(|l| format!("{}:", layer_name_text(&l.node))).unwrap_or_default()
}

fn list_name(n: &[u8]) -> String {
    match std::str::from_utf8(n) {
        Ok(s)
            if !s.is_empty()
                && !s.contains("=>")
                && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "\",[]#".contains(c)) =>
        {
            s.to_string()
        }
        _ => quote(n),
    }
}

fn outcome(r: &Option<Outcome>) -> String {
    match r {
        None => String::new(),
        Some(r) => format!(" => {}", result_text(&r.node)),
    }
}

/// ` at OFFSET`, or nothing.
fn at_text(at: &Option<Spanned<Size>>) -> String {
    at.as_ref().map(|a| format!(" at {}", a.node)).unwrap_or_default()
}

fn attrs(a: &Attrs) -> String {
    let mut s = String::new();
    if let Some(m) = &a.mode {
        s.push_str(&format!(" mode {}", m.node));
    }
    if let Some(o) = &a.owner {
        s.push_str(&format!(" owner {}", o.node));
    }
    for x in &a.xattrs {
        s.push_str(&format!(" xattr {}={}", x.name.node, quote(x.value.node.as_slice())));
    }
    if let Some(f) = &a.flags {
        s.push_str(&format!(" attrs {}", changes_text(&f.node)));
    }
    s
}

fn cond(c: &Cond, parent: u8) -> String {
    let (prec, text) = match c {
        Cond::Or(a, b) => (1, format!("{} or {}", cond(a, 1), cond(b, 2))),
        Cond::And(a, b) => (2, format!("{} and {}", cond(a, 2), cond(b, 3))),
        Cond::Not(x) => (3, format!("not {}", cond(x, 3))),
        Cond::Kernel { op, version } => (4, format!("kernel {} {}", op.symbol(), version.node)),
        Cond::Driver { equal, driver } => {
            (4, format!("driver {} {}", if *equal { "==" } else { "!=" }, driver.node.name()))
        }
        Cond::Option(o) => (4, format!("option {o}")),
        Cond::Param(o) => (4, format!("param {o}")),
    };
    if prec < parent {
        format!("({text})")
    } else {
        text
    }
}

impl Printer {
    /// Items of a block at `depth`, with their comments and blank lines.
    fn items<T>(&mut self, block: &Block<T>, depth: usize, mut node: impl FnMut(&mut Self, &T, usize)) {
        let ind = pad(depth);
        for item in &block.items {
            self.trivia(&item.before, &ind);
            self.out.push_str(&ind);
            node(self, &item.node, depth);
            if let Some(c) = &item.comment {
                self.out.push(' ');
                self.out.push_str(c);
            }
            self.out.push('\n');
        }
        self.trivia(&block.end, &ind);
    }

    fn trivia(&mut self, t: &[Trivia], ind: &str) {
        for t in t {
            match t {
                Trivia::Blank => self.out.push('\n'),
                Trivia::Comment(c) => {
                    self.out.push_str(ind);
                    self.out.push_str(c);
                    self.out.push('\n');
                }
            }
        }
    }

    /// `{ ... }` after something already printed on the line; `{}` when empty.
    fn braced<T>(&mut self, block: &Block<T>, depth: usize, node: impl FnMut(&mut Self, &T, usize)) {
        if block.items.is_empty() && block.end.is_empty() {
            self.out.push_str("{}");
            return;
        }
        self.out.push_str("{\n");
        self.items(block, depth + 1, node);
        self.out.push_str(&pad(depth));
        self.out.push('}');
    }

    fn stmt(&mut self, s: &Stmt, depth: usize) {
        match s {
            Stmt::Scenario(t) => self.out.push_str(&format!("scenario {}", quote(t.node.as_slice()))),
            Stmt::About(t) => {
                let lit = triple_quote(t.node.as_slice(), &pad(depth)).unwrap_or_else(|| quote(t.node.as_slice()));
                self.out.push_str(&format!("about {lit}"));
            }
            Stmt::Tags(t) => {
                let names: Vec<&str> = t.iter().map(|n| n.node.as_str()).collect();
                self.out.push_str(&format!("tags {}", names.join(", ")));
            }
            Stmt::Requires(c) => {
                let cs: Vec<String> = c.iter().map(|c| cond(c, 0)).collect();
                self.out.push_str(&format!("requires {}", cs.join(", ")));
            }
            Stmt::Vary(axes) | Stmt::Param(axes) => {
                let a: Vec<String> = axes
                    .iter()
                    .map(|a| {
                        format!(
                            "{}={}",
                            a.name.node,
                            a.values.iter().map(|v| v.node.as_str()).collect::<Vec<_>>().join("|")
                        )
                    })
                    .collect();
                self.out.push_str(&format!("{} {}", s.keyword(), a.join(", ")));
            }
            Stmt::Backing(b) => self.out.push_str(&format!("backing {}", b.node.name())),
            Stmt::Filesystem(f) => {
                self.out.push_str(&format!("filesystem {} {}", f.name.node, f.kind.node.name()));
                if let Some(z) = &f.size {
                    self.out.push_str(&format!(" size {}", z.node));
                }
            }
            Stmt::Layer(l) => {
                self.out.push_str(&format!("layer {} ", layer_name_text(&l.name.node)));
                if let Some(fs) = &l.on {
                    self.out.push_str(&format!("on {} ", fs.node));
                }
                match &l.source {
                    LayerSource::Tar(p) => self.out.push_str(&format!("from {}", quote(p.node.as_bytes()))),
                    LayerSource::Entries(b) => self.braced(b, depth, |p, e, _| p.entry(e)),
                }
            }
            Stmt::Mount(m) => {
                let names = |v: &[DirRef]| v.iter().map(DirRef::text).collect::<Vec<_>>().join(", ");
                self.out.push_str(&format!("mount {}", names(&m.lowers)));
                if !m.data.is_empty() {
                    self.out.push_str(&format!(" :: {}", names(&m.data)));
                }
                if let Some(u) = &m.upper {
                    self.out.push_str(&format!(" upper {}", u.text()));
                }
                if let Some(fs) = &m.upper_on {
                    self.out.push_str(&format!(" on {}", fs.node));
                }
                if let Some(w) = &m.work {
                    self.out.push_str(&format!(" work {}", w.text()));
                }
                if let Some(n) = &m.name {
                    self.out.push_str(&format!(" as {}", n.node));
                }
                if !m.options.is_empty() {
                    let o: Vec<String> = m.options.iter().map(|o| o.to_string()).collect();
                    self.out.push_str(&format!(" with {}", o.join(", ")));
                }
                if m.readonly {
                    self.out.push_str(" readonly");
                }
                if let Some(u) = &m.upper_from {
                    self.out.push_str(&format!(" upper from {}", layer_name_text(&u.node)));
                }
                if let Some(r) = &m.raw {
                    self.out.push_str(&format!(" options {}", quote(r.node.as_slice())));
                }

                if let Some(v) = m.via {
                    self.out.push_str(&format!(" via {}", v.name()));
                }
                if let Some(d) = &m.driver {
                    self.out.push_str(&format!(" driver {}", d.node.name()));
                }
                self.out.push_str(&outcome(&m.result));
            }
            Stmt::Umount(u) => {
                let name = u.mount.as_ref().map(|n| format!(" {}", n.node)).unwrap_or_default();
                self.out.push_str(&format!("umount{name}{}", outcome(&u.result)));
            }
            Stmt::On(o) => {
                self.out.push_str(&format!("on {} ", o.mount.node));
                self.braced(&o.body, depth, |p, s, d| p.stmt(s, d));
            }
            Stmt::Remount(r) => self.out.push_str(&format!("remount{}", outcome(r))),
            Stmt::Reconfigure(r) => {
                let o: Vec<String> = r.options.iter().map(|o| o.to_string()).collect();
                self.out.push_str(&format!("reconfigure with {}{}", o.join(", "), outcome(&r.result)));
            }
            Stmt::ExpectMountinfo(e) => {
                let on = e.mount.as_ref().map(|n| format!(" on {}", n.node)).unwrap_or_default();
                self.out.push_str(&format!("expect mountinfo{on} "));
                self.braced(&e.checks, depth, |p, c, _| {
                    let not = if c.negated { "not " } else { "" };
                    p.out.push_str(&format!("{not}contains {}", quote(c.text.node.as_slice())));
                });
            }
            Stmt::If(i) => {
                for (n, (c, body)) in i.branches.iter().enumerate() {
                    if n > 0 {
                        self.out.push_str(" else ");
                    }
                    self.out.push_str(&format!("if {} ", cond(c, 0)));
                    self.braced(body, depth, |p, s, d| p.stmt(s, d));
                }
                if let Some(body) = &i.otherwise {
                    self.out.push_str(" else ");
                    self.braced(body, depth, |p, s, d| p.stmt(s, d));
                }
            }
            Stmt::As(a) => {
                self.out.push_str(&format!("as {}{} ", a.owner.node, if a.userns { " in userns" } else { "" }));
                self.braced(&a.body, depth, |p, s, d| p.stmt(s, d));
            }
            Stmt::Expect(e) => {
                let name = match (&e.name, e.target) {
                    (Some(n), TreeTarget::Merged) => format!(" on {}", n.node),
                    (Some(n), _) => format!(" {}", n.node),
                    (None, _) => String::new(),
                };
                let exactly = if e.exactly { " exactly" } else { "" };
                let raw = if e.raw { " raw" } else { "" };
                self.out.push_str(&format!("expect {}{name}{raw}{exactly} ", e.target.name()));
                if e.open {
                    self.out.push('?');
                } else {
                    self.braced(&e.checks, depth, |p, c, _| p.check(c));
                }
            }
            Stmt::Edit(e) => {
                match (&e.layer, &e.upper) {
                    _ if e.work.is_some() => match e.work.as_ref().map(|w| w.node.as_str()) {
                        Some("") | None => self.out.push_str("edit work "),
                        Some(w) => self.out.push_str(&format!("edit work {w} ")),
                    },
                    (Some(l), _) => self.out.push_str(&format!("edit layer {} ", layer_name_text(&l.node))),
                    (None, Some(u)) => self.out.push_str(&format!("edit upper {} ", u.node)),
                    (None, None) => self.out.push_str("edit upper "),
                }
                self.braced(&e.items, depth, |p, item, _| match item {
                    EditItem::Entry(en) => p.entry(en),
                    EditItem::Remove(r) => p.out.push_str(&format!("remove {}", path(r))),
                    EditItem::Xattr { path: x, name, value } => {
                        p.out.push_str(&format!("xattr {} {}={}", path(x), name.node, quote(value.node.as_slice())))
                    }
                    EditItem::NoXattr { path: x, name } => {
                        p.out.push_str(&format!("no xattr {} {}", path(x), name.node))
                    }
                    EditItem::Attrs { path: x, changes } => {
                        p.out.push_str(&format!("attrs {} {}", path(x), changes_text(&changes.node)))
                    }
                });
            }
            Stmt::ExpectLayer(b) => {
                self.out.push_str("expect layer ");
                self.braced(b, depth, |p, t, _| p.tar_entry(t));
            }
            Stmt::Op(o) => {
                self.op(&o.op);
                self.out.push_str(&outcome(&o.result));
            }
        }
    }

    fn entry(&mut self, e: &Entry) {
        let p = path(&e.path);
        let s = match &e.kind {
            EntryKind::File { content, size, sparse, verity } => {
                let mut s = format!("file {p}");
                if let Some(c) = content {
                    s.push_str(&format!(" {}", quote(c.node.as_slice())));
                }
                if let Some(z) = size {
                    s.push_str(&format!(" size {}", z.node));
                }
                if *sparse {
                    s.push_str(" sparse");
                }
                if *verity {
                    s.push_str(" verity");
                }
                s
            }
            EntryKind::Dir { opaque } => format!("dir {p}{}", if *opaque { " opaque" } else { "" }),
            EntryKind::Symlink { target } => format!("symlink {p} -> {}", quote(target.node.as_slice())),
            EntryKind::Hardlink { target } => format!("hardlink {p} -> {}", path(target)),
            EntryKind::Fifo => format!("fifo {p}"),
            EntryKind::Socket => format!("socket {p}"),
            EntryKind::Device { kind, dev } => format!("device {p} {} {}", kind.name(), dev.node),
            EntryKind::Whiteout => format!("whiteout {p}"),
        };
        self.out.push_str(&s);
        self.out.push_str(&attrs(&e.attrs));
    }

    fn op(&mut self, op: &Op) {
        let s = match op {
            Op::Write { path: p, data } => format!("write {} {}", path(p), quote(data.node.as_slice())),
            Op::Append { path: p, data } => format!("append {} {}", path(p), quote(data.node.as_slice())),
            Op::Create { path: p } => format!("create {}", path(p)),
            Op::Truncate { path: p, size } => format!("truncate {} {}", path(p), size.node),
            Op::Read { path: p } => format!("read {}", path(p)),
            Op::Readlink { path: p } => format!("readlink {}", path(p)),
            Op::Measure { path: p, layer } => format!("measure {}{}", in_layer(layer), path(p)),
            Op::Readdir { path: p } => format!("readdir {}", path(p)),
            Op::Mkdir { path: p, mode } => match mode {
                Some(m) => format!("mkdir {} mode {}", path(p), m.node),
                None => format!("mkdir {}", path(p)),
            },
            Op::Rmdir { path: p } => format!("rmdir {}", path(p)),
            Op::Unlink { path: p } => format!("unlink {}", path(p)),
            Op::Rename { from, to, flag } => match flag {
                Some(f) => format!("rename {} {} {}", path(from), path(to), f.name()),
                None => format!("rename {} {}", path(from), path(to)),
            },
            Op::Link { from, to } => format!("link {} {}", path(from), path(to)),
            Op::Symlink { path: p, target } => format!("symlink {} -> {}", path(p), quote(target.node.as_slice())),
            Op::Mknod { path: p, node } => match node.node {
                NodeKind::Fifo => format!("mknod {} fifo", path(p)),
                NodeKind::Socket => format!("mknod {} socket", path(p)),
                NodeKind::Char(d) => format!("mknod {} char {d}", path(p)),
                NodeKind::Block(d) => format!("mknod {} block {d}", path(p)),
            },
            Op::Chmod { path: p, mode } => format!("chmod {} {}", path(p), mode.node),
            Op::Chown { path: p, owner } => format!("chown {} {}", path(p), owner.node),
            Op::Touch { path: p } => format!("touch {}", path(p)),
            Op::Setxattr { path: p, name, value } => {
                format!("setxattr {} {} {}", path(p), name.node, quote(value.node.as_slice()))
            }
            Op::Removexattr { path: p, name } => format!("removexattr {} {}", path(p), name.node),
            Op::Getxattr { path: p, name } => format!("getxattr {} {}", path(p), name.node),
            Op::Stat { path: p, name, layer } => format!("stat {}{} as {}", in_layer(layer), path(p), name.node),
            Op::SameInode { path: p, name } => format!("same-inode {} {}", path(p), name.node),
            Op::DropCaches => "drop-caches".to_string(),
            Op::Sync => "sync".to_string(),
            Op::Open { path: p, fd, flags, mode } => {
                let f: Vec<&str> = flags.node.iter().map(|f| f.name()).collect();
                let mut s = format!("open {} as {} {}", path(p), fd.node, f.join("|"));
                if let Some(m) = mode {
                    s.push_str(&format!(" mode {}", m.node));
                }
                s
            }
            Op::Handle { path: p, name } => format!("handle {} as {}", path(p), name.node),
            Op::Chattr { path: p, changes } => format!("chattr {} {}", path(p), changes_text(&changes.node)),
            Op::Sleep { millis } => {
                if millis.node % 1000 == 0 && millis.node > 0 {
                    format!("sleep {}s", millis.node / 1000)
                } else {
                    format!("sleep {}ms", millis.node)
                }
            }
            Op::Setacl { path: p, default, acl } => acl_text("setacl", p, *default, &acl.node),
            Op::FdChattr { fd, changes } => format!("chattr {} {}", fd.node, changes_text(&changes.node)),
            Op::OpenHandle { handle, fd, flags } => {
                let f: Vec<&str> = flags.node.iter().map(|f| f.name()).collect();
                format!("open-handle {} as {} {}", handle.node, fd.node, f.join("|"))
            }
            Op::FdWrite { fd, data, at } => format!("write {} {}{}", fd.node, quote(data.node.as_slice()), at_text(at)),
            Op::FdRead { fd, size, at } => {
                let size = size.as_ref().map(|z| format!(" {}", z.node)).unwrap_or_default();
                format!("read {}{size}{}", fd.node, at_text(at))
            }
            Op::FdReaddir { fd, max } => match max {
                Some(n) => format!("readdir {} max {}", fd.node, n.node),
                None => format!("readdir {}", fd.node),
            },
            Op::Rewind { fd } => format!("rewind {}", fd.node),
            Op::Ftruncate { fd, size } => format!("ftruncate {} {}", fd.node, size.node),
            Op::Fsync { fd } => format!("fsync {}", fd.node),
            Op::Fdatasync { fd } => format!("fdatasync {}", fd.node),
            Op::Fchmod { fd, mode } => format!("fchmod {} {}", fd.node, mode.node),
            Op::Fchown { fd, owner } => format!("fchown {} {}", fd.node, owner.node),
            Op::Fsetxattr { fd, name, value } => {
                format!("fsetxattr {} {} {}", fd.node, name.node, quote(value.node.as_slice()))
            }
            Op::Fgetxattr { fd, name } => format!("fgetxattr {} {}", fd.node, name.node),
            Op::Fstat { fd, name } => format!("fstat {} as {}", fd.node, name.node),
            Op::Fallocate { fd, offset, len, mode } => {
                let m = mode.map(|m| format!(" {}", m.name())).unwrap_or_default();
                format!("fallocate {} {} {}{m}", fd.node, offset.node, len.node)
            }
            Op::Flock { fd, how, nonblock } => {
                format!("flock {} {}{}", fd.node, how.name(), if *nonblock { " nb" } else { "" })
            }
            Op::MmapWrite { fd, data, at } => {
                format!("mmap {} write {} at {}", fd.node, quote(data.node.as_slice()), at.node)
            }
            Op::MmapRead { fd, size, at } => format!("mmap {} read {} at {}", fd.node, size.node, at.node),
            Op::Close { fd } => format!("close {}", fd.node),
            Op::Lstat { path: p, name, layer } => format!("lstat {}{} as {}", in_layer(layer), path(p), name.node),
            Op::Statfs { path: p, name } => format!("statfs {} as {}", path(p), name.node),
            Op::Dirent { dir, entry, name } => {
                format!("dirent {} {} as {}", path(dir), list_name(entry.node.as_slice()), name.node)
            }
            Op::Compare { subject, name, fields, how } => {
                let s = match subject {
                    Subject::Path(p) => path(p),
                    Subject::Name(n) => format!("@{}", n.node),
                    Subject::Layer { layer, path: p } => format!("{}:{}", layer_name_text(&layer.node), path(p)),
                };
                let f: Vec<&str> = fields.node.iter().map(|f| f.name()).collect();
                format!("compare {s} {} {} {}", name.node, f.join(","), how.name())
            }
            Op::Value { name, field, op, value } => {
                format!("value {} {} {} {}", name.node, field.node.name(), op.symbol(), value.node)
            }
            Op::Listxattr { path: p } => format!("listxattr {}", path(p)),
        };
        self.out.push_str(&s);
    }

    fn check(&mut self, c: &Check) {
        let s = match c {
            Check::File { path: p, content, size } => {
                let mut s = format!("file {}", path(p));
                if let Some(c) = content {
                    s.push_str(&format!(" {}", quote(c.node.as_slice())));
                }
                if let Some(z) = size {
                    s.push_str(&format!(" size {}", z.node));
                }
                s
            }
            Check::Dir { path: p, opaque } => match opaque {
                None => format!("dir {}", path(p)),
                Some(true) => format!("dir {} opaque", path(p)),
                Some(false) => format!("dir {} not opaque", path(p)),
            },
            Check::Symlink { path: p, target } => match target {
                Some(t) => format!("symlink {} -> {}", path(p), quote(t.node.as_slice())),
                None => format!("symlink {}", path(p)),
            },
            Check::Fifo { path: p } => format!("fifo {}", path(p)),
            Check::Device { path: p, kind, dev } => format!("device {} {} {}", path(p), kind.name(), dev.node),
            Check::Whiteout { path: p } => format!("whiteout {}", path(p)),
            Check::Absent { path: p } => format!("absent {}", path(p)),
            Check::Xattr { path: p, name, value } => match value {
                Some(v) => format!("xattr {} {} {}", path(p), name.node, quote(v.node.as_slice())),
                None => format!("xattr {} {}", path(p), name.node),
            },
            Check::NoXattr { path: p, name } => format!("no xattr {} {}", path(p), name.node),
            Check::Metacopy { path: p, digest } => match digest {
                Some(d) => format!("metacopy {} {}", path(p), quote(d.node.as_slice())),
                None => format!("metacopy {}", path(p)),
            },
            Check::Entries { path: p, count } => format!("entries {} {}", path(p), count.node),
            Check::Acl { path: p, default, acl } => acl_text("acl", p, *default, &acl.node),
            Check::Attrs { path: p, flags } => format!("attrs {} {}", path(p), changes_text(&flags.node)),
            Check::Blocks { path: p, op, count } => format!("blocks {} {} {}", path(p), op.symbol(), count.node),
            Check::Xattrs { path: p, names } => {
                let n: Vec<String> = names.iter().map(|n| list_name(n.node.as_bytes())).collect();
                format!("xattrs {} [{}]", path(p), n.join(", "))
            }
            Check::Redirect { path: p, target } => format!("redirect {} {}", path(p), quote(target.node.as_slice())),
            Check::Mode { path: p, mode } => format!("mode {} {}", path(p), mode.node),
            Check::Owner { path: p, owner } => format!("owner {} {}", path(p), owner.node),
            Check::Nlink { path: p, count } => format!("nlink {} {}", path(p), count.node),
        };
        self.out.push_str(&s);
    }

    fn tar_entry(&mut self, t: &TarEntry) {
        let s = match t {
            TarEntry::Dir { path: p } => format!("dir {}", path(p)),
            TarEntry::File { path: p, content } => match content {
                Some(c) => format!("file {} {}", path(p), quote(c.node.as_slice())),
                None => format!("file {}", path(p)),
            },
            TarEntry::Symlink { path: p, target } => {
                format!("symlink {} -> {}", path(p), quote(target.node.as_slice()))
            }
            TarEntry::Hardlink { path: p, target } => format!("hardlink {} -> {}", path(p), path(target)),
            TarEntry::Whiteout { path: p } => format!("whiteout {}", path(p)),
            TarEntry::Opaque { path: p } => format!("opaque {}", path(p)),
        };
        self.out.push_str(&s);
    }
}
