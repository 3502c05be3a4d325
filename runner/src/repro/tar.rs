//! A layer tarball as layer entries, so that the reproducer builds it with
//! the same shell commands as a declared layer: `.wh.NAME` members become
//! whiteouts and `.wh..wh..opq` marks its directory opaque, as ovlc's
//! `layer NAME from` converts them. Members' times and PAX xattrs are not
//! carried (ovlc's results do not depend on them in the library).

use std::io::Read;
use std::path::Path;

use dsl::ast::{Attrs, DevKind, DevNum, Entry, EntryKind, Mode, Owner, Spanned};
use dsl::text::Bytes;

fn sp<T>(t: T) -> Spanned<T> {
    Spanned::new(t, dsl::ast::Span::default())
}

/// `./a/b/` -> `/a/b`; `None` for the root.
fn clean(raw: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = s.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// The entries of the OCI layer tarball at `path` (compressed or not).
pub fn tar_entries(path: &Path) -> Result<Vec<Entry>, String> {
    let layer = crate::oci::open_layer(path).map_err(|e| e.to_string())?;
    entries_of(layer).map_err(|e| format!("{}: {e}", path.display()))
}

fn entries_of(layer: impl Read) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for m in archive.entries().map_err(|e| e.to_string())? {
        let mut m = m.map_err(|e| e.to_string())?;
        let raw = m.path_bytes().into_owned();
        let Some(p) = clean(&raw) else { continue };
        let h = m.header().clone();
        let attrs = Attrs {
            mode: Some(sp(Mode(h.mode().map_err(|e| e.to_string())? & 0o7777))),
            owner: Some(sp(Owner {
                uid: h.uid().map_err(|e| e.to_string())? as u32,
                gid: h.gid().map_err(|e| e.to_string())? as u32,
            })),
            ..Attrs::default()
        };
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", &p));
        let parent = if parent.is_empty() { "/" } else { parent };
        if name == ".wh..wh..opq" {
            match out.iter_mut().find(|e| e.path.node == parent) {
                Some(Entry { kind: EntryKind::Dir { opaque }, .. }) => *opaque = true,
                _ => out.push(Entry {
                    path: sp(parent.to_string()),
                    kind: EntryKind::Dir { opaque: true },
                    attrs: Attrs::default(),
                }),
            }
            continue;
        }
        if let Some(real) = name.strip_prefix(".wh.") {
            let at = if parent == "/" { format!("/{real}") } else { format!("{parent}/{real}") };
            out.push(Entry { path: sp(at), kind: EntryKind::Whiteout, attrs: Attrs::default() });
            continue;
        }
        let link = || m.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let dev = || -> Result<DevNum, String> {
            Ok(DevNum {
                major: h.device_major().map_err(|e| e.to_string())?.unwrap_or(0),
                minor: h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0),
            })
        };
        let kind = match h.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir { opaque: false },
            tar::EntryType::Symlink => EntryKind::Symlink { target: sp(Bytes(link())) },
            tar::EntryType::Link => {
                let target = clean(&link()).ok_or("a hard link to the root")?;
                out.push(Entry {
                    path: sp(p),
                    kind: EntryKind::Hardlink { target: sp(target) },
                    attrs: Attrs::default(),
                });
                continue;
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            tar::EntryType::Char => EntryKind::Device { kind: DevKind::Char, dev: sp(dev()?) },
            tar::EntryType::Block => EntryKind::Device { kind: DevKind::Block, dev: sp(dev()?) },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                m.read_to_end(&mut data).map_err(|e| e.to_string())?;
                EntryKind::File { content: Some(sp(Bytes(data))), size: None, sparse: false, verity: false }
            }
            other => return Err(format!("{p}: a {other:?} member")),
        };
        // A directory declared again (a member after its children) keeps one entry.
        if let Some(e) = out.iter_mut().find(|e| e.path.node == p && matches!(kind, EntryKind::Dir { .. })) {
            e.attrs = attrs;
            continue;
        }
        out.push(Entry { path: sp(p), kind, attrs });
    }
    Ok(out)
}
