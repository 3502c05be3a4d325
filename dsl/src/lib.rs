//! The ovlc scenario language: grammar, syntax tree, validation, diagnostics,
//! formatter and `vary` expansion. It knows nothing about mounts or VMs.
//!
//! ```
//! let src = "scenario \"demo\"\nlayer l {\n    file /a \"x\"\n}\nmount l\nexpect merged {\n    file /a \"x\"\n}\n";
//! let s = dsl::parse("demo.ovl", "demo", src.as_bytes()).unwrap();
//! assert_eq!(s.title(), "demo");
//! assert_eq!(dsl::format(&s), src);
//! ```

pub mod acl;
pub mod ast;
pub mod diag;
pub mod editor;
pub mod errno;
mod fmt;
mod syntax;
pub mod text;
mod validate;
pub mod vary;

use std::io::Read;
use std::path::{Component, Path};

pub use ast::Scenario;
pub use diag::{Diag, ErrorKind, Failure, Located};
pub use fmt::{format, format_check, format_stmt, format_tar_entry, path_text, result_text};
pub use syntax::{
    option_escape, path_problem, raw_options_escape, MAX_DEPTH, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_COMPONENTS,
    MAX_XATTR_NAME_BYTES, MAX_XATTR_VALUE_BYTES,
};
pub use vary::{instances, Instance, MAX_INSTANCES};

/// The largest scenario file accepted.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The most errors a file reports: the first ones, then one more,
/// `ovl::too-many-errors`, that says how many were left out. A hostile file
/// of a mebibyte could hold half a million errors; kept and drawn, they would
/// cost hundreds of megabytes for each such file.
pub const MAX_ERRORS: usize = 100;

/// Parses and validates one scenario. `name` is shown in messages, `id` becomes
/// the scenario's id. Every error in the file is returned, not only the first
/// (up to [`MAX_ERRORS`]), in the order of the text, each with its place.
pub fn parse(name: &str, id: &str, bytes: &[u8]) -> Result<Scenario, Failure> {
    if bytes.len() > MAX_FILE_BYTES {
        // Located where the limit is crossed: the text is the part read up to there.
        let text = String::from_utf8_lossy(&bytes[..MAX_FILE_BYTES]).into_owned();
        let at = text.len();
        return Err(Failure {
            name: name.to_string(),
            text,
            diags: vec![Diag::new(
                ErrorKind::TooLarge,
                format!("the file is larger than {} KiB", MAX_FILE_BYTES >> 10),
                (at, at),
                format!("{} KiB end here", MAX_FILE_BYTES >> 10),
            )
            .with_help("a scenario is a page or two of text; split large ones")],
        });
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let lossy = String::from_utf8_lossy(bytes).into_owned();
            let at = e.valid_up_to();
            let bad = bytes[at];
            return Err(Failure {
                name: name.to_string(),
                text: lossy,
                diags: vec![Diag::new(
                    ErrorKind::NotUtf8,
                    format!("the file is not UTF-8 (byte 0x{bad:02x})"),
                    (at, at + 3),
                    "invalid UTF-8 here",
                )
                .with_help("scenario files are UTF-8 text; write other bytes as \\xHH inside strings")],
            });
        }
    };
    let (body, mut diags, recovery) = syntax::parse_file(text);
    if !diags.iter().any(|d| matches!(d.kind, ErrorKind::TooDeep | ErrorKind::UnterminatedString)) {
        diags.extend(validate::validate(&body, &recovery));
    }
    if diags.is_empty() {
        Ok(Scenario { id: id.to_string(), file: name.to_string(), body })
    } else {
        for d in &mut diags {
            d.span = d.span.map(|s| diag::clamp_span(text, s));
            for r in &mut d.related {
                (r.start, r.end) = diag::clamp_span(text, (r.start, r.end));
            }
        }
        diags.sort_by_key(|d| d.span.map_or(0, |s| s.0));
        if diags.len() > MAX_ERRORS {
            let more = diags.len() - MAX_ERRORS;
            let next = diags[MAX_ERRORS].span.unwrap_or_default();
            diags.truncate(MAX_ERRORS);
            diags.push(
                Diag::new(
                    ErrorKind::TooManyErrors,
                    format!("{more} more error{} not shown", if more == 1 { " is" } else { "s are" }),
                    next,
                    "the next error",
                )
                .with_help(format!("a file reports its first {MAX_ERRORS} errors; fix them, and check it again")),
            );
        }
        Err(Failure { name: name.to_string(), text: text.to_string(), diags })
    }
}

/// Why a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{} has {} error(s)", .0.name, .0.diags.len())]
    Invalid(Failure),
}

/// Reads (at most [`MAX_FILE_BYTES`] + 1 bytes of) a file and parses it;
/// its id comes from its path under its own directory (see [`scenario_id`]).
pub fn load(path: &Path) -> Result<Scenario, LoadError> {
    load_under(path, path.parent().unwrap_or(Path::new("")))
}

/// [`load`] for a file found under the directory `base` a user named: its
/// id is its path relative to `base` (see [`scenario_id`]).
pub fn load_under(path: &Path, base: &Path) -> Result<Scenario, LoadError> {
    let name = path.display().to_string();
    let io = |source| LoadError::Io { path: name.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    parse(&name, &scenario_id(path, base), &bytes).map_err(LoadError::Invalid)
}

/// A scenario's id, the same in every command and report whatever the
/// current directory: its path without the extension, relative to the
/// nearest `scenarios/` directory above it (the library's ids, which name its
/// snapshots: `scenarios/lab/copy-up.ovl` is `lab/copy-up`), or else
/// relative to `base`, the directory the user named (or the file's own
/// directory for a file named directly).
pub fn scenario_id(path: &Path, base: &Path) -> String {
    fn names(p: &Path) -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    }
    let comps = names(path);
    let mut parts: Vec<String> = match comps.iter().rposition(|c| c == "scenarios") {
        Some(i) if i + 1 < comps.len() => comps[i + 1..].to_vec(),
        _ => match path.strip_prefix(base) {
            Ok(rest) if !names(rest).is_empty() => names(rest),
            _ => comps.last().cloned().into_iter().collect(),
        },
    };
    if let Some(last) = parts.last_mut() {
        if let Some(stem) = last.strip_suffix(".ovl") {
            *last = stem.to_string();
        }
    }
    parts.join("/")
}

impl Scenario {
    fn header<'a, T>(&'a self, f: impl Fn(&'a ast::Stmt) -> Option<T>) -> Option<T> {
        self.body.items.iter().find_map(|i| f(&i.node))
    }

    /// The `scenario` title.
    pub fn title(&self) -> String {
        self.header(|s| match s {
            ast::Stmt::Scenario(t) => Some(String::from_utf8_lossy(t.node.as_slice()).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
    }

    /// The `about` text, if any.
    pub fn about(&self) -> Option<String> {
        self.header(|s| match s {
            ast::Stmt::About(t) => Some(String::from_utf8_lossy(t.node.as_slice()).into_owned()),
            _ => None,
        })
    }

    pub fn tags(&self) -> Vec<String> {
        self.header(|s| match s {
            ast::Stmt::Tags(t) => Some(t.iter().map(|n| n.node.clone()).collect()),
            _ => None,
        })
        .unwrap_or_default()
    }

    pub fn requires(&self) -> Vec<ast::Cond> {
        self.header(|s| match s {
            ast::Stmt::Requires(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap_or_default()
    }

    /// Every statement, those inside `if`, `as` and `on` blocks too, in no
    /// particular order.
    pub fn all_statements(&self) -> Vec<&ast::Stmt> {
        self.all_items().into_iter().map(|i| &i.node).collect()
    }

    /// [`Scenario::all_statements`] with their places in the file, in no
    /// particular order.
    pub fn all_items(&self) -> Vec<&ast::Item<ast::Stmt>> {
        use ast::Stmt;
        let mut out = Vec::new();
        let mut stack: Vec<&ast::Item<Stmt>> = self.body.items.iter().collect();
        while let Some(item) = stack.pop() {
            match &item.node {
                Stmt::If(i) => {
                    for (_, b) in &i.branches {
                        stack.extend(&b.items);
                    }
                    if let Some(b) = &i.otherwise {
                        stack.extend(&b.items);
                    }
                }
                Stmt::As(a) => stack.extend(&a.body.items),
                Stmt::On(o) => stack.extend(&o.body.items),
                _ => {}
            }
            out.push(item);
        }
        out
    }

    /// The tarballs of `layer NAME from "x.tar"` statements, in any branch.
    pub fn layer_tarballs(&self) -> Vec<&ast::Spanned<String>> {
        let mut out: Vec<&ast::Spanned<String>> = self
            .all_statements()
            .into_iter()
            .filter_map(|st| match st {
                ast::Stmt::Layer(ast::Layer { source: ast::LayerSource::Tar(t), .. }) => Some(t),
                _ => None,
            })
            .collect();
        out.sort_by_key(|t| t.span.start);
        out
    }

    /// Does any statement drop the kernel's caches (`drop-caches`)? That
    /// reaches every instance on the same kernel, not just this one's.
    pub fn drops_caches(&self) -> bool {
        self.all_statements()
            .into_iter()
            .any(|st| matches!(st, ast::Stmt::Op(o) if matches!(o.op, ast::Op::DropCaches)))
    }

    /// Does any statement set inode flags (`chattr`)?
    pub fn uses_chattr(&self) -> bool {
        use ast::{EditItem, LayerSource, Stmt};
        self.all_statements().into_iter().any(|st| match st {
            Stmt::Op(o) => matches!(o.op, ast::Op::Chattr { .. } | ast::Op::FdChattr { .. }),
            Stmt::Layer(ast::Layer { source: LayerSource::Entries(b), .. }) => {
                b.items.iter().any(|e| e.node.attrs.flags.is_some())
            }
            Stmt::Edit(e) => e.items.items.iter().any(|i| match &i.node {
                EditItem::Entry(en) => en.attrs.flags.is_some(),
                EditItem::Attrs { .. } => true,
                _ => false,
            }),
            _ => false,
        })
    }

    /// The drivers that `mount ... driver D` statements name, in any branch.
    pub fn mount_drivers(&self) -> Vec<ast::Driver> {
        let mut out: Vec<ast::Driver> = self
            .all_statements()
            .into_iter()
            .filter_map(|st| match st {
                ast::Stmt::Mount(m) => m.driver.as_ref().map(|d| d.node),
                _ => None,
            })
            .collect();
        out.sort_by_key(|d| d.name());
        out.dedup();
        out
    }

    /// The kinds of `filesystem NAME KIND` statements, in any branch.
    pub fn filesystem_kinds(&self) -> Vec<ast::FsKind> {
        let mut out: Vec<ast::FsKind> = Vec::new();
        for st in self.all_statements() {
            if let ast::Stmt::Filesystem(f) = st {
                if !out.contains(&f.kind.node) {
                    out.push(f.kind.node);
                }
            }
        }
        out.sort_by_key(|k| k.name());
        out
    }

    pub fn backing(&self) -> ast::Backing {
        self.declared_backing().unwrap_or(ast::Backing::Tmpfs)
    }

    /// The `backing` statement's filesystem, if the scenario has one.
    pub fn declared_backing(&self) -> Option<ast::Backing> {
        self.header(|s| match s {
            ast::Stmt::Backing(b) => Some(b.node),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::scenario_id;
    use std::path::Path;

    #[test]
    fn ids_come_from_the_path_under_scenarios() {
        let id = |p: &str, base: &str| scenario_id(Path::new(p), Path::new(base));
        assert_eq!(id("scenarios/lab/copy-up.ovl", "scenarios"), "lab/copy-up");
        assert_eq!(id("scenarios/lab/copy-up.ovl", "scenarios/lab"), "lab/copy-up");
        assert_eq!(id("/x/y/scenarios/basics/a/b.ovl", "/x"), "basics/a/b");
    }

    #[test]
    fn elsewhere_ids_are_relative_to_the_directory_named() {
        let id = |p: &str, base: &str| scenario_id(Path::new(p), Path::new(base));
        assert_eq!(id("./mine.ovl", "."), "mine");
        assert_eq!(id("tmp/mine.ovl", "tmp"), "mine");
        assert_eq!(id("/some/dir/x.ovl", "/some/dir"), "x");
        assert_eq!(id("/some/dir/sub/x.ovl", "/some/dir"), "sub/x");
        assert_eq!(id("/some/dir/sub/x.ovl", "/elsewhere"), "x");
        // A directory named `scenarios` as the last component is no library root.
        assert_eq!(id("/a/scenarios.ovl", "/a"), "scenarios");
    }
}
