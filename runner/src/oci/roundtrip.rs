//! The layer round trip: export an upper, apply it onto the union of its
//! lowers in memory, and compare with the merged view.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::export::{export, lower_union, remove_subtree, ExportOptions};
use super::member::{self, EntryKind, Marker};
use super::spec::{is_overlay_xattr, PAX_XATTR};
use crate::error::OciError;
use crate::tree::{self, Kind, Node, Tree};

/// The fields a layer carries, for comparing trees across a round trip.
fn shape(p: &str, n: &Node) -> String {
    let x: Vec<String> = n.xattrs.iter().map(|(k, v)| format!("{k}={}", dsl::text::quote(v))).collect();
    format!(
        "{p} {} {:04o} {}:{} size={} sha={} target={} rdev={:?} [{}]",
        n.kind.name(),
        n.mode,
        n.uid,
        n.gid,
        n.size,
        n.sha256.as_deref().unwrap_or("-"),
        n.target.as_deref().map(dsl::text::quote).unwrap_or_default(),
        n.rdev,
        x.join(" ")
    )
}

fn shapes(t: &Tree) -> String {
    t.ordered().into_iter().map(|(p, n)| shape(p, n) + "\n").collect()
}

/// The exported layer could not be read back (it is this process's own).
fn unreadable(e: std::io::Error) -> OciError {
    OciError::Io { what: "reading the exported layer".into(), source: e }
}

/// Applies layer members to an in-memory tree with the spec's applier rules.
fn apply_to_tree(tree: &mut Tree, layer: &[u8]) -> Result<(), OciError> {
    use sha2::Digest;
    let mut ar = tar::Archive::new(layer);
    for e in ar.entries().map_err(unreadable)? {
        let mut e = e.map_err(unreadable)?;
        let raw = e.path().map_err(unreadable)?.to_string_lossy().into_owned();
        let (p, dir, name) = member::split(&raw);
        match member::marker(name.as_bytes()) {
            Some(Marker::Opaque) => {
                let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
                tree.nodes.retain(|k, _| !k.starts_with(&prefix) || *k == dir);
                continue;
            }
            Some(Marker::Whiteout(real)) => {
                remove_subtree(tree, &member::join(&dir, &String::from_utf8_lossy(real)));
                continue;
            }
            None => {}
        }
        let h = e.header().clone();
        let et = h.entry_type();
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for x in exts.flatten() {
                if let Some(k) = x.key_bytes().strip_prefix(PAX_XATTR) {
                    xattrs.insert(String::from_utf8_lossy(k).into_owned(), x.value_bytes().to_vec());
                }
            }
        }
        let mut node = Node {
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            xattrs,
            ..Node::new(Kind::File)
        };
        let kind = member::entry_kind(et);
        if kind == EntryKind::Dir {
            node.kind = Kind::Dir;
            if tree.nodes.get(&p).is_some_and(|o| o.kind != Kind::Dir) {
                remove_subtree(tree, &p);
            }
            tree.nodes.insert(p, node);
            continue;
        }
        remove_subtree(tree, &p);
        if kind == EntryKind::HardLink {
            let t = format!("/{}", e.link_name().map_err(unreadable)?.unwrap_or_default().to_string_lossy());
            let target = tree
                .nodes
                .get(&t)
                .cloned()
                .ok_or_else(|| OciError::Refused(format!("hard link {p} -> {t}: no such member")))?;
            tree.nodes.insert(p, target);
            continue;
        }
        match kind {
            EntryKind::Symlink => {
                node.kind = Kind::Symlink;
                node.target = e.link_name_bytes().map(|b| b.into_owned());
            }
            EntryKind::Fifo => node.kind = Kind::Fifo,
            EntryKind::Char | EntryKind::Block => {
                node.kind = if kind == EntryKind::Char { Kind::Char } else { Kind::Block };
                node.rdev =
                    Some((h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0)));
            }
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(unreadable)?;
                node.size = data.len() as u64;
                let d = sha2::Sha256::digest(&data);
                node.sha256 = Some(tree::short_hex(&d));
            }
        }
        tree.nodes.insert(p, node);
    }
    Ok(())
}

/// Exports `upper`, applies the layer onto the union of `lowers`, and compares
/// the result with the merged view: `Some` difference, or `None` when they agree.
/// An upper with redirects or metacopy files is exported with a naive diff of
/// `merged_dir`; sockets, which no layer holds, are left out of the comparison.
pub fn roundtrip(
    upper: &Path,
    lowers: &[PathBuf],
    merged: &Tree,
    merged_dir: &Path,
) -> Result<Option<String>, OciError> {
    let mut buf = Vec::new();
    let mut opts = ExportOptions { lowers: lowers.to_vec(), mtime_clamp: Some(0), naive_diff: None };
    if let Err(OciError::Refused(_)) = export(upper, &opts, &mut buf) {
        buf.clear();
        opts.naive_diff = Some(merged_dir.to_path_buf());
        export(upper, &opts, &mut buf)?;
    }
    let mut t = lower_union(lowers)?;
    apply_to_tree(&mut t, &buf)?;
    // The root's own metadata is not part of a layer.
    let (mut a, mut b) = (t, merged.clone());
    a.nodes.remove("/");
    b.nodes.remove("/");
    b.nodes.retain(|_, n| n.kind != Kind::Socket);
    // Nor is overlay metadata, which an export strips (fuse-overlayfs' stat
    // overrides are plain xattrs to the kernel's overlay).
    for n in b.nodes.values_mut() {
        n.xattrs.retain(|k, _| !is_overlay_xattr(k.as_bytes()));
    }
    let (a, b) = (shapes(&a), shapes(&b));
    Ok((a != b).then(|| format!("lowers + exported layer (-) against the merged view (+):\n{}", tree::diff(&a, &b))))
}
