//! What a layer member is, by the image spec's rules: the one classifier that
//! applying, exporting checks (`expect layer`) and the round trip share, so
//! whiteouts and opaque markers are read the same way everywhere.

use std::io::Read;

use super::spec::{show, OPAQUE, WHITEOUT};
use crate::error::OciError;

/// What a member's name says, whatever its tar type: an opaque marker
/// (`.wh..wh..opq`) or a whiteout of the name after `.wh.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    Opaque,
    Whiteout(&'a [u8]),
}

/// The marker a member's last path component is, if any.
pub fn marker(name: &[u8]) -> Option<Marker<'_>> {
    if name == OPAQUE.as_bytes() {
        Some(Marker::Opaque)
    } else {
        name.strip_prefix(WHITEOUT.as_bytes()).map(Marker::Whiteout)
    }
}

/// What a member holds, by its tar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file (`0`, `\0`, contiguous `7`, or GNU sparse `S`).
    File,
    HardLink,
    Symlink,
    Fifo,
    Char,
    Block,
    /// A PAX global header: records for every member, not a member.
    Global,
    /// Anything else: the type byte.
    Other(u8),
}

/// The kind of a member of this tar type.
pub fn entry_kind(t: tar::EntryType) -> EntryKind {
    use tar::EntryType as T;
    match t {
        T::Directory => EntryKind::Dir,
        T::Regular | T::Continuous | T::GNUSparse => EntryKind::File,
        T::Link => EntryKind::HardLink,
        T::Symlink => EntryKind::Symlink,
        T::Fifo => EntryKind::Fifo,
        T::Char => EntryKind::Char,
        T::Block => EntryKind::Block,
        T::XGlobalHeader => EntryKind::Global,
        other => EntryKind::Other(other.as_byte()),
    }
}

/// A member path as the tree names it (`/a/b`, trailing `/` dropped), split
/// into its directory (`/a`, `/` at the top) and its last component.
pub fn split(raw: &str) -> (String, String, String) {
    let p = format!("/{}", raw.trim_end_matches('/'));
    let (dir, name) = match p.rfind('/') {
        Some(0) => ("/".to_string(), p[1..].to_string()),
        Some(i) => (p[..i].to_string(), p[i + 1..].to_string()),
        None => ("/".to_string(), p.clone()),
    };
    (p, dir, name)
}

/// `dir/name` for a directory from [`split`].
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
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

fn unreadable(e: std::io::Error) -> OciError {
    OciError::Refused(format!("is not a readable tar archive: {e}"))
}

/// The members of a layer tarball, as `expect layer` names them.
pub fn tar_members(bytes: &[u8]) -> Result<Vec<Member>, OciError> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().map_err(unreadable)? {
        let mut e = e.map_err(unreadable)?;
        let raw = e.path().map_err(unreadable)?.to_string_lossy().into_owned();
        let (p, dir, name) = split(&raw);
        let m = |head: String| Member { head, content: None };
        match (marker(name.as_bytes()), entry_kind(e.header().entry_type())) {
            (Some(Marker::Opaque), _) => out.push(m(format!("opaque {}", path_text(&dir)))),
            (Some(Marker::Whiteout(real)), _) => {
                out.push(m(format!("whiteout {}", path_text(&join(&dir, &String::from_utf8_lossy(real))))))
            }
            (None, EntryKind::Dir) => out.push(m(format!("dir {}", path_text(&p)))),
            (None, EntryKind::HardLink) => {
                let t = e.link_name().map_err(unreadable)?.unwrap_or_default().to_string_lossy().into_owned();
                out.push(m(format!("hardlink {} -> {}", path_text(&p), path_text(&format!("/{t}")))));
            }
            (None, EntryKind::Symlink) => {
                let t = e.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                out.push(m(format!("symlink {} -> {}", path_text(&p), show(&t))));
            }
            (None, EntryKind::File) => {
                let mut c = Vec::new();
                e.read_to_end(&mut c).map_err(unreadable)?;
                out.push(Member { head: format!("file {}", path_text(&p)), content: Some(c) });
            }
            (None, EntryKind::Fifo) => out.push(m(format!("fifo {}", path_text(&p)))),
            (None, EntryKind::Char | EntryKind::Block) => out.push(m(format!("device {}", path_text(&p)))),
            (None, EntryKind::Global | EntryKind::Other(_)) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_whiteout_or_opaque_whatever_the_type() {
        assert_eq!(marker(b".wh..wh..opq"), Some(Marker::Opaque));
        assert_eq!(marker(b".wh.a"), Some(Marker::Whiteout(b"a")));
        assert_eq!(marker(b".wh."), Some(Marker::Whiteout(b"")), "whites out no name: the applier refuses it");
        assert_eq!(marker(b"a.wh.b"), None);
        assert_eq!(entry_kind(tar::EntryType::Regular), EntryKind::File);
        assert_eq!(entry_kind(tar::EntryType::GNUSparse), EntryKind::File);
        assert_eq!(entry_kind(tar::EntryType::Link), EntryKind::HardLink);
        assert_eq!(entry_kind(tar::EntryType::XGlobalHeader), EntryKind::Global);
        assert_eq!(entry_kind(tar::EntryType::new(b'X')), EntryKind::Other(b'X'));
    }

    #[test]
    fn paths_split_into_directory_and_name() {
        assert_eq!(split("a/b/"), ("/a/b".into(), "/a".into(), "b".into()));
        assert_eq!(split("a"), ("/a".into(), "/".into(), "a".into()));
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }

    #[test]
    fn members_read_as_expect_layer_names_them() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, t: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(t);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap_or_else(|e| panic!("{e}"));
            }
            b.append_data(&mut h, path, data).unwrap_or_else(|e| panic!("{e}"));
        };
        add("d/", tar::EntryType::Directory, b"", None);
        add("d/.wh..wh..opq", tar::EntryType::Regular, b"", None);
        add("d/.wh.gone", tar::EntryType::Regular, b"", None);
        add("d/f", tar::EntryType::Regular, b"hi", None);
        add("d/l", tar::EntryType::Symlink, b"", Some("f"));
        add("d/h", tar::EntryType::Link, b"", Some("d/f"));
        add("p", tar::EntryType::Fifo, b"", None);
        let bytes = b.into_inner().unwrap_or_else(|e| panic!("{e}"));
        let got = tar_members(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let heads: Vec<&str> = got.iter().map(|m| m.head.as_str()).collect();
        assert_eq!(
            heads,
            [
                "dir /d",
                "opaque /d",
                "whiteout /d/gone",
                "file /d/f",
                "symlink /d/l -> f",
                "hardlink /d/h -> /d/f",
                "fifo /p"
            ]
        );
        assert_eq!(got[3].content.as_deref(), Some(&b"hi"[..]));
        let garbage = tar_members(&[b'x'; 1024]);
        assert!(
            garbage.is_err_and(|e| e.to_string().contains("is not a readable tar archive")),
            "a bad header checksum"
        );
    }
}
