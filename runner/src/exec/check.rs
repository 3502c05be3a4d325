//! Evaluating `expect` blocks against a captured tree.

use std::collections::BTreeSet;

use dsl::ast::{Check, DevKind, Expect};

use crate::tree::{component_key, Kind, Tree};

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
            let list: Vec<String> = extra.iter().map(|p| format!("{p} ({})", tree.nodes[*p].kind.name())).collect();
            problems.push(format!("`exactly`: paths not named in the block: {}", list.join(", ")));
        }
    }
    problems
}

/// Why a check does not hold: what was found instead.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unmet(String);

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn unmet<T>(why: impl Into<String>) -> Result<T, Unmet> {
    Err(Unmet(why.into()))
}

fn check(tree: &Tree, c: &Check) -> Result<(), Unmet> {
    let path = &c.path().node;
    let node = tree.nodes.get(path);
    if let Check::Absent { .. } = c {
        return match node {
            None => Ok(()),
            Some(n) => unmet(format!("found a {}", n.kind.name())),
        };
    }
    let Some(n) = node else {
        return unmet("nothing there");
    };
    let is = |k: Kind| -> Result<(), Unmet> {
        if n.kind == k {
            Ok(())
        } else {
            unmet(format!("found a {} instead of a {}", n.kind.name(), k.name()))
        }
    };
    match c {
        Check::File { content, size, .. } => {
            is(Kind::File)?;
            if let Some(want) = content {
                match &n.content {
                    Some(got) if got == want.node.as_slice() => {}
                    Some(got) => {
                        return unmet(format!("content is {}, expected {}", show(got), show(want.node.as_slice())))
                    }
                    None => {
                        return unmet(format!("content is {} bytes, expected {}", n.size, show(want.node.as_slice())))
                    }
                }
            }
            if let Some(s) = size {
                if n.size != s.node.bytes {
                    return unmet(format!("size is {}, expected {}", n.size, s.node.bytes));
                }
            }
            Ok(())
        }
        Check::Dir { opaque, .. } => {
            is(Kind::Dir)?;
            match opaque {
                Some(true) if !n.has_word("opaque") => unmet("the directory is not opaque"),
                Some(false) if n.has_word("opaque") => unmet("the directory is opaque"),
                _ => Ok(()),
            }
        }
        Check::Symlink { target, .. } => {
            is(Kind::Symlink)?;
            match (target, &n.target) {
                (Some(want), Some(got)) if got != want.node.as_slice() => {
                    unmet(format!("points to {}, expected {}", show(got), show(want.node.as_slice())))
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
                Some(got) => unmet(format!("device {}:{}, expected {}:{}", got.0, got.1, want.0, want.1)),
                None => unmet("no device number"),
            }
        }
        Check::Whiteout { .. } => is(Kind::Whiteout),
        Check::Absent { .. } => Ok(()),
        // The driver's own overlay xattrs are shown decoded into words
        // (`uuid`, `opaque`, `redirect="x"`, `overlay.NAME=...`): a check
        // names every xattr by its on-disk name.
        Check::Xattr { name, value, .. } => match (n.xattr(&name.node), value) {
            (None, _) => unmet(format!("no xattr {}", name.node)),
            (Some(got), Some(want)) if got != want.node.as_slice() => {
                unmet(format!("{} is {}, expected {}", name.node, show(got), show(want.node.as_slice())))
            }
            _ => Ok(()),
        },
        Check::NoXattr { name, .. } => match n.xattr(&name.node) {
            Some(v) => unmet(format!("{} is set ({})", name.node, show(v))),
            None => Ok(()),
        },
        Check::Metacopy { digest, .. } => {
            let word = n.words.iter().find(|w| *w == "metacopy" || w.starts_with("metacopy="));
            let want = digest.as_ref().map(|d| match d.node.as_slice() {
                b"" => "metacopy".to_string(),
                d => format!("metacopy={}", String::from_utf8_lossy(d)),
            });
            match (word, want) {
                (None, _) => unmet("no metacopy xattr"),
                (Some(w), Some(want)) if *w != want => unmet(format!("{w}, expected {want}")),
                _ => Ok(()),
            }
        }
        Check::Redirect { target, .. } => {
            let want = format!("redirect={}", show(target.node.as_slice()));
            match n.words.iter().find(|w| w.starts_with("redirect=")) {
                Some(w) if *w == want => Ok(()),
                Some(w) => unmet(format!("{w}, expected {want}")),
                None => unmet("no redirect xattr"),
            }
        }
        Check::Mode { mode, .. } => {
            if n.kind == Kind::Whiteout || n.mode == mode.node.0 {
                Ok(())
            } else {
                unmet(format!("mode is {:04o}, expected {}", n.mode, mode.node))
            }
        }
        Check::Owner { owner, .. } => {
            if (n.uid, n.gid) == (owner.node.uid, owner.node.gid) {
                Ok(())
            } else {
                unmet(format!("owner is {}:{}, expected {}", n.uid, n.gid, owner.node))
            }
        }
        Check::Acl { default, acl, .. } => match n.xattr(dsl::acl::xattr_name(*default)) {
            None => unmet(format!("no ACL ({} is not set)", dsl::acl::xattr_name(*default))),
            Some(raw) => match dsl::acl::Acl::decode(raw) {
                Some(got) if got == acl.node => Ok(()),
                Some(got) => unmet(format!("the ACL is \"{got}\"")),
                None => unmet(format!("{} holds no ACL", dsl::acl::xattr_name(*default))),
            },
        },
        Check::Attrs { flags, .. } => {
            let wrong: Vec<String> =
                flags.node.iter().filter(|c| (n.flags & c.flag.bit() != 0) != c.set).map(|c| c.to_string()).collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                unmet(format!("{} does not hold (flags 0x{:x})", wrong.join(" "), n.flags))
            }
        }
        Check::Blocks { op, count, .. } => {
            if op.holds(n.blocks.cmp(&count.node)) {
                Ok(())
            } else {
                unmet(format!("{} blocks, expected {} {}", n.blocks, op.symbol(), count.node))
            }
        }
        Check::Xattrs { names, .. } => {
            let mut got: Vec<&str> = n.xattrs.keys().chain(n.overlay_xattrs.keys()).map(String::as_str).collect();
            got.sort_unstable();
            let mut want: Vec<&str> = names.iter().map(|n| n.node.as_str()).collect();
            want.sort_unstable();
            if got == want {
                Ok(())
            } else {
                unmet(format!("xattrs are [{}]", got.join(", ")))
            }
        }
        Check::Entries { count, .. } => {
            is(Kind::Dir)?;
            let inside = |k: &String| k.rfind('/').map(|i| if i == 0 { "/" } else { &k[..i] }) == Some(path.as_str());
            let got = tree.nodes.keys().filter(|k| k.as_str() != "/" && inside(k)).count() as u64;
            if got == count.node {
                Ok(())
            } else {
                unmet(format!("{got} entries, expected {}", count.node))
            }
        }
        Check::Nlink { count, .. } => {
            if n.nlink == count.node {
                Ok(())
            } else {
                unmet(format!("nlink is {}, expected {}", n.nlink, count.node))
            }
        }
    }
}

/// Content short and textual enough to read in a scenario: UTF-8, at most
/// 256 bytes, no control characters but tab and newline.
fn readable(c: &[u8]) -> bool {
    c.len() <= 256
        && std::str::from_utf8(c).is_ok_and(|t| !t.chars().any(|ch| ch.is_control() && ch != '\n' && ch != '\t'))
}

/// A captured tree as the checks of an `expect` block that hold for it,
/// one per line, in the tree's order: what `ovlc bless` writes in place of
/// `expect TREE ?`. Every path is named (so the block holds with
/// `exactly`), with its content (or its size, for content that is not short text), link
/// target, device number, opaque flag, redirect and metacopy; modes that
/// are not the usual 0644 (files) and 0755 (directories), owners other than
/// 0:0, and xattrs that are not the overlay's own. The overlay's
/// bookkeeping (`origin`, `impure`, `uuid`, ...) is left out: it is not
/// what a scenario asserts.
/// `Err` when the tree holds what no check can name: a name that is not
/// UTF-8, an xattr name outside the language's characters.
pub fn describe(tree: &Tree) -> Result<String, String> {
    let mut out = Vec::new();
    for (p, n) in tree.ordered() {
        if p == "/" {
            continue;
        }
        if p.contains('\u{fffd}') {
            return Err(format!("the name {} is not UTF-8", dsl::path_text(p)));
        }
        let at = dsl::path_text(p);
        let line = match n.kind {
            Kind::Dir => format!("dir {at}{}", if n.has_word("opaque") { " opaque" } else { "" }),
            // Text is written out; anything else (or longer) by its size.
            Kind::File => match &n.content {
                Some(c) if readable(c) => format!("file {at} {}", show(c)),
                _ => format!("file {at} size {}", n.size),
            },
            Kind::Symlink => match &n.target {
                Some(t) => format!("symlink {at} -> {}", show(t)),
                None => format!("symlink {at}"),
            },
            Kind::Fifo => format!("fifo {at}"),
            Kind::Char | Kind::Block => {
                let (ma, mi) = n.rdev.unwrap_or((0, 0));
                format!("device {at} {} {ma}:{mi}", if n.kind == Kind::Char { "char" } else { "block" })
            }
            Kind::Whiteout => format!("whiteout {at}"),
            // No check names a socket; an existing path is all one can say.
            Kind::Socket => format!("mode {at} 0{:03o}", n.mode),
        };
        out.push(line);
        for w in &n.words {
            if let Some(t) = w.strip_prefix("redirect=") {
                out.push(format!("redirect {at} {t}"));
            } else if w == "metacopy" {
                out.push(format!("metacopy {at}"));
            } else if let Some(d) = w.strip_prefix("metacopy=") {
                out.push(format!("metacopy {at} {}", show(d.as_bytes())));
            }
        }
        let usual = match n.kind {
            Kind::Dir => Some(0o755),
            Kind::File => Some(0o644),
            _ => None,
        };
        if usual.is_some_and(|u| u != n.mode) {
            out.push(format!("mode {at} 0{:03o}", n.mode));
        }
        if (n.uid, n.gid) != (0, 0) && n.kind != Kind::Whiteout {
            out.push(format!("owner {at} {}:{}", n.uid, n.gid));
        }
        for (name, v) in &n.xattrs {
            // The overlay's own (a raw tree shows them undecoded): origins
            // and uuids differ from one mount to the next.
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                continue;
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@+".contains(c)) {
                return Err(format!(
                    "the xattr name {} of {at} cannot be written in a scenario",
                    show(name.as_bytes())
                ));
            }
            out.push(format!("xattr {at} {name} {}", show(v)));
        }
    }
    Ok(out.join("\n"))
}
