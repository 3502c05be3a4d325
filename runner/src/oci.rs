//! OCI image layers (image-spec `layer.md`): exporting an overlay upper
//! directory as a layer tarball, and applying a layer tarball to a directory
//! in overlay form (whiteouts as 0/0 character devices, opaque directories as
//! xattrs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::sys;
use crate::tree::{self, Dialect, Kind, Node, Tree};

/// A problem with a layer: what and where.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
    let what = what.into();
    move |source| OciError::Io { what, source }
}

/// The whiteout prefix and the opaque marker of the image spec.
pub const WHITEOUT: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The lower layers, uppermost first: whiteouts and opaque markers are only
    /// written for paths that exist in one of them. Without lowers, all are written.
    pub lowers: Vec<PathBuf>,
    /// Clamp every mtime to at most this many seconds since the epoch
    /// (`SOURCE_DATE_EPOCH` style), for reproducible layers.
    pub mtime_clamp: Option<u64>,
    /// Compare the lowers with this merged view instead of reading overlay
    /// metadata, which an upper with redirects or metacopy files needs.
    pub naive_diff: Option<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Member names in order, as a tar lister shows them.
    pub members: Vec<String>,
    pub bytes: u64,
    pub notes: Vec<String>,
}

/// One member to write.
#[derive(Debug, Clone)]
enum Item {
    Whiteout(String),
    Opaque(String),
    Entry { path: String, node: Node, source: PathBuf },
    Hardlink { path: String, target: String, node: Node },
}

/// The member for a file: the first path of its hard-link group in member
/// order carries the data, the others link to it.
fn entry_or_link(first: &mut HashMap<u32, String>, path: &str, node: Node, source: PathBuf) -> Item {
    if let Some(g) = node.link_group {
        if let Some(t0) = first.get(&g) {
            return Item::Hardlink { path: path.to_string(), target: t0.clone(), node };
        }
        first.insert(g, path.to_string());
    }
    Item::Entry { path: path.to_string(), node, source }
}

/// The union of lower layers as the overlay shows it (uppermost wins,
/// whiteouts delete, opaque directories hide what is below).
pub fn lower_union(lowers: &[PathBuf]) -> Result<Tree, OciError> {
    let mut union = Tree::default();
    for dir in lowers.iter().rev() {
        let t = tree::capture(dir, Dialect::Fuse).map_err(OciError::Refused)?;
        for (p, n) in t.ordered() {
            let (p, n) = (p.clone(), n.clone());
            if n.kind == Kind::Whiteout {
                remove_subtree(&mut union, &p);
                continue;
            }
            // A non-directory, an opaque directory, or a directory over a
            // non-directory replaces whatever was below.
            let replaces =
                n.kind != Kind::Dir || n.has_word("opaque") || union.nodes.get(&p).is_some_and(|o| o.kind != Kind::Dir);
            if replaces {
                remove_subtree(&mut union, &p);
            }
            let mut n = n;
            n.words.clear();
            n.overlay_xattrs.clear();
            union.nodes.insert(p, n);
        }
    }
    union.nodes.entry("/".into()).or_insert_with(|| Node {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 2,
        content: None,
        sha256: None,
        target: None,
        rdev: None,
        words: Vec::new(),
        xattrs: BTreeMap::new(),
        overlay_xattrs: BTreeMap::new(),
        link_group: None,
        ino: (0, 0),
        mtime: (0, 0),
    });
    Ok(union)
}

fn remove_subtree(t: &mut Tree, p: &str) {
    let prefix = if p == "/" { "/".to_string() } else { format!("{p}/") };
    t.nodes.retain(|k, _| k != p && !k.starts_with(&prefix));
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn name_of(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn rel(p: &str) -> &str {
    p.trim_start_matches('/')
}

/// Exports `upper` as an OCI layer to `out`.
pub fn export(upper: &Path, opts: &ExportOptions, out: impl Write) -> Result<ExportReport, OciError> {
    let items = match &opts.naive_diff {
        Some(merged) => naive_items(merged, &opts.lowers)?,
        None => upper_items(upper, &opts.lowers)?,
    };
    write_items(&items, opts, out)
}

fn upper_items(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Item>, OciError> {
    let t = tree::capture_with(upper, Dialect::Fuse, false).map_err(OciError::Refused)?;
    let special: Vec<String> = t
        .ordered()
        .into_iter()
        .filter(|(_, n)| n.has_word("metacopy") || n.words.iter().any(|w| w.starts_with("redirect=")))
        .map(|(p, _)| p.clone())
        .collect();
    if !special.is_empty() {
        return Err(OciError::Refused(format!(
            "the upper has redirect or metacopy entries ({}): their data lives in the lower layers, so the upper alone is not a layer; \
             export with --naive-diff MERGED_DIR (and --lower for each lower) to compare the merged view with the lowers instead",
            special.join(", ")
        )));
    }
    let below: Option<HashSet<String>> = if lowers.is_empty() {
        None
    } else {
        let mut s = HashSet::new();
        for l in lowers {
            s.extend(tree::capture_with(l, Dialect::Fuse, false).map_err(OciError::Refused)?.nodes.into_keys());
        }
        Some(s)
    };
    let exists_below = |p: &str| below.as_ref().is_none_or(|b| b.contains(p));
    let mut items = Vec::new();
    let mut first: HashMap<u32, String> = HashMap::new();
    for (p, n) in t.ordered() {
        if p == "/" {
            continue;
        }
        match n.kind {
            Kind::Whiteout => {
                if exists_below(p) {
                    items.push(Item::Whiteout(p.clone()));
                }
            }
            _ => {
                items.push(entry_or_link(&mut first, p, n.clone(), upper.join(rel(p))));
                if n.kind == Kind::Dir && n.has_word("opaque") && exists_below(p) {
                    items.push(Item::Opaque(p.clone()));
                }
            }
        }
    }
    Ok(items)
}

/// Compares node content and metadata, not identity.
fn same(a: &Node, b: &Node) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && (a.uid, a.gid) == (b.uid, b.gid)
        && a.size == b.size
        && a.sha256 == b.sha256
        && a.target == b.target
        && a.rdev == b.rdev
        && a.xattrs == b.xattrs
}

/// The diff of a merged view against the union of its lowers.
fn naive_items(merged: &Path, lowers: &[PathBuf]) -> Result<Vec<Item>, OciError> {
    let m = tree::capture(merged, Dialect::Plain).map_err(OciError::Refused)?;
    let l = lower_union(lowers)?;
    let mut changed: HashSet<String> = HashSet::new();
    for (p, n) in &m.nodes {
        match l.nodes.get(p) {
            Some(o) if same(o, n) => {}
            _ => {
                changed.insert(p.clone());
            }
        }
    }
    // Parents of changed paths are written too (the spec's parent inclusion).
    let mut with_parents = changed.clone();
    for p in &changed {
        let mut cur = p.as_str();
        while cur != "/" {
            cur = parent_of(cur);
            with_parents.insert(cur.to_string());
        }
    }
    let mut removed: Vec<String> =
        l.nodes.keys().filter(|p| !m.nodes.contains_key(*p) && m.nodes.contains_key(parent_of(p))).cloned().collect();
    removed.sort();
    for r in &removed {
        let mut cur = r.as_str();
        while cur != "/" {
            cur = parent_of(cur);
            with_parents.insert(cur.to_string());
        }
    }
    let mut all: Vec<(String, Option<Node>)> =
        with_parents.iter().filter(|p| *p != "/").map(|p| (p.clone(), m.nodes.get(p).cloned())).collect();
    all.extend(removed.iter().map(|p| (p.clone(), None)));
    all.sort_by(|a, b| tree::component_key(&a.0).cmp(&tree::component_key(&b.0)));
    let mut items = Vec::new();
    let mut first: HashMap<u32, String> = HashMap::new();
    for (p, n) in all {
        match n {
            None => items.push(Item::Whiteout(p)),
            Some(n) => {
                // A directory that replaced a non-directory is written as opaque.
                let opaque = n.kind == Kind::Dir && l.nodes.get(&p).is_some_and(|o| o.kind != Kind::Dir);
                let source = merged.join(rel(&p));
                items.push(entry_or_link(&mut first, &p, n, source));
                if opaque {
                    items.push(Item::Opaque(p));
                }
            }
        }
    }
    Ok(items)
}

fn header(kind: tar::EntryType, n: Option<&Node>, clamp: Option<u64>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    match n {
        Some(n) => {
            h.set_mode(n.mode);
            h.set_uid(n.uid.into());
            h.set_gid(n.gid.into());
            let mtime = n.mtime.0.max(0) as u64;
            h.set_mtime(clamp.map_or(mtime, |c| mtime.min(c)));
        }
        None => {
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
        }
    }
    h.set_size(0);
    h
}

/// A member name: relative, directories with a trailing `/`.
fn member_name(p: &str, dir: bool) -> String {
    if dir {
        format!("{}/", rel(p))
    } else {
        rel(p).to_string()
    }
}

/// Opens a file through a descriptor of its directory, kept while consecutive
/// members share it (members come sorted, so siblings follow each other).
fn open_cached(cache: &mut Option<(PathBuf, std::os::fd::OwnedFd)>, path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    let parent = path.parent().unwrap_or(Path::new("/"));
    if cache.as_ref().is_none_or(|(p, _)| p != parent) {
        let fd = nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        *cache = Some((parent.to_path_buf(), fd));
    }
    let Some((_, dir)) = cache.as_ref() else { return Err(std::io::ErrorKind::NotFound.into()) };
    let name = path.file_name().unwrap_or_default();
    let fd = nix::fcntl::openat(dir, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    Ok(std::fs::File::from(fd))
}

fn write_items(items: &[Item], opts: &ExportOptions, out: impl Write) -> Result<ExportReport, OciError> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let mut report = ExportReport::default();
    let mut parent_dir: Option<(PathBuf, std::os::fd::OwnedFd)> = None;
    for it in items {
        match it {
            Item::Whiteout(p) => {
                let name = format!("{}{WHITEOUT}{}", member_name(parent_of(p), parent_of(p) != "/"), name_of(p));
                let mut h = header(tar::EntryType::Regular, None, opts.mtime_clamp);
                b.append_data(&mut h, &name, std::io::empty()).map_err(io(format!("writing {name}")))?;
                report.members.push(name);
            }
            Item::Opaque(p) => {
                let name = format!("{}{OPAQUE}", member_name(p, true));
                let mut h = header(tar::EntryType::Regular, None, opts.mtime_clamp);
                b.append_data(&mut h, &name, std::io::empty()).map_err(io(format!("writing {name}")))?;
                report.members.push(name);
            }
            Item::Hardlink { path, target, node } => {
                let name = member_name(path, false);
                let mut h = header(tar::EntryType::Link, Some(node), opts.mtime_clamp);
                b.append_link(&mut h, &name, rel(target)).map_err(io(format!("writing {name}")))?;
                report.members.push(name);
            }
            Item::Entry { path, node, source } => {
                if node.kind == Kind::Socket {
                    report.notes.push(format!("{path}: a socket, skipped (a layer cannot hold one)"));
                    continue;
                }
                let xattrs: Vec<(String, Vec<u8>)> =
                    node.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
                if !xattrs.is_empty() {
                    b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(io(format!("writing xattrs of {path}")))?;
                }
                let dir = node.kind == Kind::Dir;
                let name = member_name(path, dir);
                match node.kind {
                    Kind::Dir => {
                        let mut h = header(tar::EntryType::Directory, Some(node), opts.mtime_clamp);
                        b.append_data(&mut h, &name, std::io::empty())
                    }
                    Kind::File => {
                        let f = open_cached(&mut parent_dir, source)
                            .map_err(io(format!("reading {}", source.display())))?;
                        let mut h = header(tar::EntryType::Regular, Some(node), opts.mtime_clamp);
                        h.set_size(node.size);
                        report.bytes += node.size;
                        b.append_data(&mut h, &name, f)
                    }
                    Kind::Symlink => {
                        let mut h = header(tar::EntryType::Symlink, Some(node), opts.mtime_clamp);
                        let t = node.target.clone().unwrap_or_default();
                        b.append_link(&mut h, &name, sys::os(&t))
                    }
                    Kind::Fifo | Kind::Char | Kind::Block => {
                        let kind = match node.kind {
                            Kind::Fifo => tar::EntryType::Fifo,
                            Kind::Char => tar::EntryType::Char,
                            _ => tar::EntryType::Block,
                        };
                        let mut h = header(kind, Some(node), opts.mtime_clamp);
                        let (ma, mi) = node.rdev.unwrap_or((0, 0));
                        let _ = h.set_device_major(ma);
                        let _ = h.set_device_minor(mi);
                        b.append_data(&mut h, &name, std::io::empty())
                    }
                    Kind::Whiteout | Kind::Socket => Ok(()),
                }
                .map_err(io(format!("writing {name}")))?;
                report.members.push(name);
            }
        }
    }
    b.finish().map_err(io("finishing the tar"))?;
    Ok(report)
}

// ------------------------------------------------------------------ apply

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The opaque xattr to write (`trusted.overlay.opaque`, or `user.overlay.opaque` for rootless).
    pub opaque_xattr: String,
    /// Refuse a layer whose files add up to more than this.
    pub max_bytes: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { opaque_xattr: "trusted.overlay.opaque".into(), max_bytes: 8 << 30 }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub entries: usize,
    pub whiteouts: usize,
    pub opaque_dirs: usize,
    pub bytes: u64,
}

/// A member path made relative and checked: no `..`, not absolute, not empty.
fn member_path(raw: &Path) -> Result<PathBuf, OciError> {
    let bytes = raw.as_os_str().as_bytes();
    if bytes.starts_with(b"/") {
        return Err(OciError::Refused(format!("member {} is an absolute path", raw.display())));
    }
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(OciError::Refused(format!("member {} climbs out of the layer with `..`", raw.display())))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(OciError::Refused(format!("member {} is an absolute path", raw.display())))
            }
        }
    }
    Ok(out)
}

/// Refuses a path whose parents, inside `root`, include a symlink (writing
/// through it could land outside the layer).
fn no_symlink_parents(root: &Path, rel: &Path) -> Result<(), OciError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&cur) {
            if m.file_type().is_symlink() {
                return Err(OciError::Refused(format!(
                    "member {} goes through the symlink {}",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )));
            }
        }
    }
    Ok(())
}

fn mkdir_parents(root: &Path, rel: &Path) -> Result<(), OciError> {
    if let Some(parent) = rel.parent() {
        let p = root.join(parent);
        if !p.exists() {
            std::fs::create_dir_all(&p).map_err(io(format!("mkdir {}", p.display())))?;
        }
    }
    Ok(())
}

/// Opens a layer file, undoing gzip or zstd compression (recognised by magic bytes).
pub fn open_layer(path: &Path) -> Result<Box<dyn Read>, OciError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io(format!("reading {}", path.display())))?;
    let f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::Decoder::new(f).map_err(io("zstd"))?),
        _ => Box::new(f),
    })
}

/// Applies a layer into `root` (an existing directory, normally empty, owned by
/// the caller). Stops at the first refused member; the caller decides what
/// becomes of `root` ([`apply_to`] keeps the target untouched).
pub fn apply_into(layer: impl Read, root: &Path, opts: &ApplyOptions) -> Result<ApplyReport, OciError> {
    let mut ar = tar::Archive::new(layer);
    let root_user = nix::unistd::geteuid().is_root();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut report = ApplyReport::default();
    for entry in ar.entries().map_err(io("reading the layer"))? {
        let mut entry = entry.map_err(io("reading the layer"))?;
        let raw = entry.path().map_err(io("a member's path"))?.into_owned();
        let relp = member_path(&raw)?;
        if relp.as_os_str().is_empty() {
            continue; // "./", the root
        }
        if !seen.insert(relp.clone()) {
            return Err(OciError::Refused(format!(
                "member {} appears twice (the spec forbids duplicates)",
                relp.display()
            )));
        }
        no_symlink_parents(root, &relp)?;
        mkdir_parents(root, &relp)?;
        let name = relp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dest = root.join(&relp);
        if name == OPAQUE {
            let d = dest.parent().unwrap_or(root).to_path_buf();
            if !d.exists() {
                std::fs::create_dir_all(&d).map_err(io(format!("mkdir {}", d.display())))?;
            }
            sys::setxattr(
                &sys::path_c(&d).map_err(|e| OciError::Refused(e.to_string()))?,
                opts.opaque_xattr.as_bytes(),
                b"y",
                false,
            )
            .map_err(|e| OciError::Refused(format!("marking {} opaque ({}): {e}", d.display(), opts.opaque_xattr)))?;
            report.opaque_dirs += 1;
            continue;
        }
        if let Some(real) = name.strip_prefix(WHITEOUT) {
            let p = dest.with_file_name(real);
            nix::sys::stat::mknod(&p, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
                OciError::Refused(format!("creating the whiteout {}: {e} (whiteouts need CAP_MKNOD)", p.display()))
            })?;
            report.whiteouts += 1;
            continue;
        }
        let h = entry.header().clone();
        let et = h.entry_type();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mut is_link = false;
        if et.is_dir() {
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(OciError::Refused(format!(
                        "member {} is a directory over a non-directory",
                        relp.display()
                    )))
                }
                Err(_) => std::fs::create_dir(&dest).map_err(io(format!("mkdir {}", dest.display())))?,
            }
        } else if et.is_file() {
            report.bytes += entry.size();
            if report.bytes > opts.max_bytes {
                return Err(OciError::Refused(format!(
                    "the layer's files add up to more than {} bytes",
                    opts.max_bytes
                )));
            }
            let mut f = std::fs::File::create(&dest).map_err(io(format!("creating {}", dest.display())))?;
            std::io::copy(&mut entry, &mut f).map_err(io(format!("writing {}", dest.display())))?;
        } else if et.is_symlink() {
            let t = entry.link_name().map_err(io("a link name"))?.unwrap_or_default().into_owned();
            symlink(&t, &dest).map_err(io(format!("symlink {}", dest.display())))?;
            is_link = true;
        } else if et.is_hard_link() {
            let t = entry.link_name().map_err(io("a link name"))?.unwrap_or_default().into_owned();
            let t = member_path(&t)?;
            no_symlink_parents(root, &t)?;
            let target = root.join(&t);
            match std::fs::symlink_metadata(&target) {
                Ok(m) if m.file_type().is_symlink() || m.is_dir() => {
                    return Err(OciError::Refused(format!(
                        "hard link {} -> {}: the target is not a file",
                        relp.display(),
                        t.display()
                    )))
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(OciError::Refused(format!(
                        "hard link {} -> {}: no such member before it",
                        relp.display(),
                        t.display()
                    )))
                }
            }
            std::fs::hard_link(&target, &dest).map_err(io(format!("link {}", dest.display())))?;
            report.entries += 1;
            continue;
        } else if et.is_character_special() || et.is_block_special() || et.is_fifo() {
            if !et.is_fifo() && !root_user {
                return Err(OciError::Refused(format!(
                    "member {} is a device file, which only root may create",
                    relp.display()
                )));
            }
            let kind = if et.is_fifo() {
                SFlag::S_IFIFO
            } else if et.is_character_special() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            let dev = nix::sys::stat::makedev(
                h.device_major().ok().flatten().unwrap_or(0).into(),
                h.device_minor().ok().flatten().unwrap_or(0).into(),
            );
            nix::sys::stat::mknod(&dest, kind, Mode::from_bits_truncate(mode), dev)
                .map_err(|e| OciError::Refused(format!("mknod {}: {e}", dest.display())))?;
        } else {
            continue; // PAX and GNU metadata members are read by the tar crate
        }
        if root_user {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &dest,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| OciError::Refused(format!("chown {}: {e}", dest.display())))?;
        }
        if !is_link {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", dest.display())))?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            let c = sys::path_c(&dest).map_err(|e| OciError::Refused(e.to_string()))?;
            for ext in exts.flatten() {
                if let Some(xname) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    sys::setxattr(&c, xname, ext.value_bytes(), false)
                        .map_err(|e| OciError::Refused(format!("setxattr on {}: {e}", dest.display())))?;
                }
            }
        }
        report.entries += 1;
    }
    Ok(report)
}

/// Applies a layer file to `dir`, which must not exist or be empty: the layer
/// is unpacked beside it and renamed into place only when every member was
/// accepted, so a refused layer leaves `dir` as it was.
pub fn apply_to(layer: &Path, dir: &Path, opts: &ApplyOptions) -> Result<ApplyReport, OciError> {
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(OciError::Refused(format!(
                "{} is not empty: apply a layer into a new directory",
                dir.display()
            )));
        }
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".ovlc-apply-")
        .tempdir_in(parent)
        .map_err(io(format!("creating a directory in {}", parent.display())))?;
    let report = apply_into(open_layer(layer)?, tmp.path(), opts)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).map_err(io("chmod"))?;
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io(format!("replacing {}", dir.display())))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(io(format!("renaming into {}", dir.display())))?;
    Ok(report)
}

/// Writes a layer to a file, compressed by its extension (`.tar.gz`, `.tgz`,
/// `.tar.zst`), or to standard output for `-`.
pub fn export_to(upper: &Path, opts: &ExportOptions, out: &Path) -> Result<ExportReport, OciError> {
    if out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let lock = stdout.lock();
        return export(upper, opts, lock);
    }
    let name = out.to_string_lossy().into_owned();
    let tmp = PathBuf::from(format!("{name}.ovlc-partial"));
    let f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let w = std::io::BufWriter::with_capacity(1 << 20, f);
    let result = if name.ends_with(".gz") || name.ends_with(".tgz") {
        let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::default());
        export(upper, opts, &mut enc).and_then(|r| enc.finish().map(|_| r).map_err(io("gzip")))
    } else if name.ends_with(".zst") {
        match zstd::Encoder::new(w, 3) {
            Ok(mut enc) => export(upper, opts, &mut enc).and_then(|r| enc.finish().map(|_| r).map_err(io("zstd"))),
            Err(e) => Err(OciError::Io { what: "zstd".into(), source: e }),
        }
    } else {
        let mut w = w;
        export(upper, opts, &mut w).and_then(|r| w.flush().map(|_| r).map_err(io("writing")))
    };
    match result {
        Ok(r) => {
            std::fs::rename(&tmp, out).map_err(io(format!("renaming into {}", out.display())))?;
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

// ------------------------------------------------------------------ round trip

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

/// Applies layer members to an in-memory tree with the spec's applier rules.
fn apply_to_tree(tree: &mut Tree, layer: &[u8]) -> Result<(), String> {
    use sha2::Digest;
    let mut ar = tar::Archive::new(layer);
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let raw = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        let p = format!("/{}", raw.trim_end_matches('/'));
        let name = name_of(&p).to_string();
        if name == OPAQUE {
            let d = parent_of(&p).to_string();
            let prefix = if d == "/" { "/".to_string() } else { format!("{d}/") };
            tree.nodes.retain(|k, _| !k.starts_with(&prefix) || *k == d);
            continue;
        }
        if let Some(real) = name.strip_prefix(WHITEOUT) {
            let d = parent_of(&p);
            remove_subtree(tree, &if d == "/" { format!("/{real}") } else { format!("{d}/{real}") });
            continue;
        }
        let h = e.header().clone();
        let et = h.entry_type();
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for x in exts.flatten() {
                if let Some(k) = x.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.insert(String::from_utf8_lossy(k).into_owned(), x.value_bytes().to_vec());
                }
            }
        }
        let mut node = Node {
            kind: Kind::File,
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            size: 0,
            nlink: 1,
            content: None,
            sha256: None,
            target: None,
            rdev: None,
            words: Vec::new(),
            xattrs,
            overlay_xattrs: BTreeMap::new(),
            link_group: None,
            ino: (0, 0),
            mtime: (0, 0),
        };
        if et.is_dir() {
            node.kind = Kind::Dir;
            if tree.nodes.get(&p).is_some_and(|o| o.kind != Kind::Dir) {
                remove_subtree(tree, &p);
            }
            tree.nodes.insert(p, node);
            continue;
        }
        remove_subtree(tree, &p);
        if et.is_hard_link() {
            let t = format!("/{}", e.link_name().map_err(|e| e.to_string())?.unwrap_or_default().to_string_lossy());
            let target = tree.nodes.get(&t).cloned().ok_or_else(|| format!("hard link {p} -> {t}: no such member"))?;
            tree.nodes.insert(p, target);
            continue;
        }
        if et.is_symlink() {
            node.kind = Kind::Symlink;
            node.target = e.link_name_bytes().map(|b| b.into_owned());
        } else if et.is_fifo() {
            node.kind = Kind::Fifo;
        } else if et.is_character_special() || et.is_block_special() {
            node.kind = if et.is_character_special() { Kind::Char } else { Kind::Block };
            node.rdev =
                Some((h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0)));
        } else {
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(|e| e.to_string())?;
            node.size = data.len() as u64;
            let d = sha2::Sha256::digest(&data);
            node.sha256 = Some(d.iter().take(8).map(|b| format!("{b:02x}")).collect());
        }
        tree.nodes.insert(p, node);
    }
    Ok(())
}

/// Exports `upper`, applies the layer onto the union of `lowers`, and compares
/// the result with the merged view: `Err` holds the difference.
/// An upper with redirects or metacopy files is exported with a naive diff of
/// `merged_dir`; sockets, which no layer holds, are left out of the comparison.
pub fn roundtrip(upper: &Path, lowers: &[PathBuf], merged: &Tree, merged_dir: &Path) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut opts = ExportOptions { lowers: lowers.to_vec(), mtime_clamp: Some(0), naive_diff: None };
    if let Err(OciError::Refused(_)) = export(upper, &opts, &mut buf) {
        buf.clear();
        opts.naive_diff = Some(merged_dir.to_path_buf());
        export(upper, &opts, &mut buf).map_err(|e| e.to_string())?;
    }
    let mut t = lower_union(lowers).map_err(|e| e.to_string())?;
    apply_to_tree(&mut t, &buf)?;
    // The root's own metadata is not part of a layer.
    let (mut a, mut b) = (t, merged.clone());
    a.nodes.remove("/");
    b.nodes.remove("/");
    b.nodes.retain(|_, n| n.kind != Kind::Socket);
    let (a, b) = (shapes(&a), shapes(&b));
    if a == b {
        Ok(())
    } else {
        Err(format!("lowers + exported layer (-) against the merged view (+):\n{}", tree::diff(&a, &b)))
    }
}
