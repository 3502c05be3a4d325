//! Evaluating `expect` blocks against a captured tree.

use std::collections::BTreeSet;

use dsl::ast::{Check, DevKind, Expect};

use crate::tree::{component_key, Kind, Node, Tree};

fn kind_word(n: &Node) -> &'static str {
    n.kind.name()
}

fn show(b: &[u8]) -> String {
    dsl::text::quote(b)
}

/// Every check that does not hold, as a sentence naming the check and what was found.
pub fn evaluate(tree: &Tree, e: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    for item in &e.checks.items {
        if let Err(why) = check(tree, &item.node) {
            problems.push(format!("line {}: `{}`: {why}", item.span.line, dsl::format_check(&item.node)));
        }
    }
    if e.exactly {
        let mut allowed: BTreeSet<String> = BTreeSet::new();
        allowed.insert("/".into());
        for item in &e.checks.items {
            if matches!(item.node, Check::Absent { .. }) {
                continue;
            }
            let p = &item.node.path().node;
            let mut cur = p.as_str();
            allowed.insert(cur.to_string());
            while let Some(i) = cur.rfind('/') {
                cur = if i == 0 { "/" } else { &cur[..i] };
                allowed.insert(cur.to_string());
                if cur == "/" {
                    break;
                }
            }
        }
        let mut extra: Vec<&String> = tree.nodes.keys().filter(|p| !allowed.contains(*p)).collect();
        extra.sort_by(|a, b| component_key(a).cmp(&component_key(b)));
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|p| format!("{p} ({})", kind_word(&tree.nodes[*p]))).collect();
            problems.push(format!("`exactly`: paths not named in the block: {}", list.join(", ")));
        }
    }
    problems
}

fn check(tree: &Tree, c: &Check) -> Result<(), String> {
    let path = &c.path().node;
    let node = tree.nodes.get(path);
    if let Check::Absent { .. } = c {
        return match node {
            None => Ok(()),
            Some(n) => Err(format!("found a {}", kind_word(n))),
        };
    }
    let Some(n) = node else {
        return Err("nothing there".into());
    };
    let is = |k: Kind| -> Result<(), String> {
        if n.kind == k {
            Ok(())
        } else {
            Err(format!("found a {} instead of a {}", kind_word(n), k.name()))
        }
    };
    match c {
        Check::File { content, size, .. } => {
            is(Kind::File)?;
            if let Some(want) = content {
                match &n.content {
                    Some(got) if got == want.node.as_slice() => {}
                    Some(got) => {
                        return Err(format!("content is {}, expected {}", show(got), show(want.node.as_slice())))
                    }
                    None => {
                        return Err(format!("content is {} bytes, expected {}", n.size, show(want.node.as_slice())))
                    }
                }
            }
            if let Some(s) = size {
                if n.size != s.node.bytes {
                    return Err(format!("size is {}, expected {}", n.size, s.node.bytes));
                }
            }
            Ok(())
        }
        Check::Dir { opaque, .. } => {
            is(Kind::Dir)?;
            match opaque {
                Some(true) if !n.has_word("opaque") => Err("the directory is not opaque".into()),
                Some(false) if n.has_word("opaque") => Err("the directory is opaque".into()),
                _ => Ok(()),
            }
        }
        Check::Symlink { target, .. } => {
            is(Kind::Symlink)?;
            match (target, &n.target) {
                (Some(want), Some(got)) if got != want.node.as_slice() => {
                    Err(format!("points to {}, expected {}", show(got), show(want.node.as_slice())))
                }
                _ => Ok(()),
            }
        }
        Check::Fifo { .. } => is(Kind::Fifo),
        Check::Device { kind, dev, .. } => {
            is(if *kind == DevKind::Char { Kind::Char } else { Kind::Block })?;
            let want = (dev.node.major, dev.node.minor);
            match n.rdev {
                Some(got) if got == want => Ok(()),
                Some(got) => Err(format!("device {}:{}, expected {}:{}", got.0, got.1, want.0, want.1)),
                None => Err("no device number".into()),
            }
        }
        Check::Whiteout { .. } => is(Kind::Whiteout),
        Check::Absent { .. } => Ok(()),
        // The driver's own overlay xattrs are shown decoded into words
        // (`uuid`, `opaque`, `redirect="x"`, `overlay.NAME=...`): a check
        // names every xattr by its on-disk name.
        Check::Xattr { name, value, .. } => match (n.xattr(&name.node), value) {
            (None, _) => Err(format!("no xattr {}", name.node)),
            (Some(got), Some(want)) if got != want.node.as_slice() => {
                Err(format!("{} is {}, expected {}", name.node, show(got), show(want.node.as_slice())))
            }
            _ => Ok(()),
        },
        Check::NoXattr { name, .. } => match n.xattr(&name.node) {
            Some(v) => Err(format!("{} is set ({})", name.node, show(v))),
            None => Ok(()),
        },
        Check::Metacopy { .. } => {
            if n.has_word("metacopy") {
                Ok(())
            } else {
                Err("no metacopy xattr".into())
            }
        }
        Check::Redirect { target, .. } => {
            let want = format!("redirect={}", show(target.node.as_slice()));
            match n.words.iter().find(|w| w.starts_with("redirect=")) {
                Some(w) if *w == want => Ok(()),
                Some(w) => Err(format!("{w}, expected {want}")),
                None => Err("no redirect xattr".into()),
            }
        }
        Check::Mode { mode, .. } => {
            if n.kind == Kind::Whiteout || n.mode == mode.node.0 {
                Ok(())
            } else {
                Err(format!("mode is {:04o}, expected {}", n.mode, mode.node))
            }
        }
        Check::Owner { owner, .. } => {
            if (n.uid, n.gid) == (owner.node.uid, owner.node.gid) {
                Ok(())
            } else {
                Err(format!("owner is {}:{}, expected {}", n.uid, n.gid, owner.node))
            }
        }
        Check::Nlink { count, .. } => {
            if n.nlink == count.node {
                Ok(())
            } else {
                Err(format!("nlink is {}, expected {}", n.nlink, count.node))
            }
        }
    }
}

/// One member of an exported layer: `file /a`, `whiteout /b`, ..., and a file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub head: String,
    pub content: Option<Vec<u8>>,
}

fn path_text(p: &str) -> String {
    if p.chars().any(|c| c.is_whitespace() || "\"#,{}[]".contains(c)) {
        show(p.as_bytes())
    } else {
        p.to_string()
    }
}

/// The member an `expect layer` entry names.
pub fn expected_member(t: &dsl::ast::TarEntry) -> Member {
    use dsl::ast::TarEntry as T;
    let p = |x: &dsl::ast::PathRef| path_text(&x.node);
    match t {
        T::Dir { path } => Member { head: format!("dir {}", p(path)), content: None },
        T::File { path, content } => {
            Member { head: format!("file {}", p(path)), content: content.as_ref().map(|c| c.node.0.clone()) }
        }
        T::Symlink { path, target } => {
            Member { head: format!("symlink {} -> {}", p(path), show(target.node.as_slice())), content: None }
        }
        T::Hardlink { path, target } => {
            Member { head: format!("hardlink {} -> {}", p(path), p(target)), content: None }
        }
        T::Whiteout { path } => Member { head: format!("whiteout {}", p(path)), content: None },
        T::Opaque { path } => Member { head: format!("opaque {}", p(path)), content: None },
    }
}

/// Compares exported members with the expected ones; `None` when they match.
pub fn compare_members(want: &[Member], got: &[Member]) -> Option<String> {
    let heads = |v: &[Member]| v.iter().map(|m| m.head.clone()).collect::<Vec<_>>().join("\n");
    if want.len() != got.len() || want.iter().zip(got).any(|(w, g)| w.head != g.head) {
        return Some(format!("members (- expected, + exported):\n{}", crate::tree::diff(&heads(want), &heads(got))));
    }
    for (w, g) in want.iter().zip(got) {
        if let Some(c) = &w.content {
            if g.content.as_ref() != Some(c) {
                let found = g.content.as_deref().map_or("(not kept)".to_string(), show);
                return Some(format!("{}: content is {found}, expected {}", w.head, show(c)));
            }
        }
    }
    None
}

/// The members of a layer tarball, as `expect layer` names them.
pub fn tar_members(bytes: &[u8]) -> Result<Vec<Member>, String> {
    use std::io::Read;
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let raw = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        let p = format!("/{}", raw.trim_end_matches('/'));
        let (dir, name) = match p.rfind('/') {
            Some(0) => ("", &p[1..]),
            Some(i) => (&p[..i], &p[i + 1..]),
            None => ("", p.as_str()),
        };
        let et = e.header().entry_type();
        let m = |head: String| Member { head, content: None };
        if name == crate::oci::OPAQUE {
            out.push(m(format!("opaque {}", path_text(if dir.is_empty() { "/" } else { dir }))));
        } else if let Some(real) = name.strip_prefix(crate::oci::WHITEOUT) {
            out.push(m(format!("whiteout {}", path_text(&format!("{dir}/{real}")))));
        } else if et.is_dir() {
            out.push(m(format!("dir {}", path_text(&p))));
        } else if et.is_hard_link() {
            let t = e.link_name().map_err(|e| e.to_string())?.unwrap_or_default().to_string_lossy().into_owned();
            out.push(m(format!("hardlink {} -> {}", path_text(&p), path_text(&format!("/{t}")))));
        } else if et.is_symlink() {
            let t = e.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
            out.push(m(format!("symlink {} -> {}", path_text(&p), show(&t))));
        } else if et.is_file() {
            let mut c = Vec::new();
            e.read_to_end(&mut c).map_err(|e| e.to_string())?;
            out.push(Member { head: format!("file {}", path_text(&p)), content: Some(c) });
        } else if et.is_fifo() {
            out.push(m(format!("fifo {}", path_text(&p))));
        } else if et.is_character_special() || et.is_block_special() {
            out.push(m(format!("device {}", path_text(&p))));
        }
    }
    Ok(out)
}
