//! OCI image layers (image-spec `layer.md`): exporting an overlay upper
//! directory as a layer tarball, and applying a layer tarball to a directory
//! in overlay form (whiteouts as 0/0 character devices, opaque directories as
//! xattrs).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

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

/// Overlay metadata of every dialect: the kernel's (`trusted.overlay.*`, and
/// `user.overlay.*` with `userxattr`) and fuse-overlayfs' (`user.fuseoverlayfs.*`,
/// and the stat overrides it honours: `security.fuseoverlayfs.override_stat`,
/// `user.containers.override_stat`, with `user.containers.override_*` also its
/// encoding of the other names). An export strips these; an apply refuses them.
/// (fuse-overlayfs has no `trusted.fuseoverlayfs.*`.)
pub const OVERLAY_XATTR_PREFIXES: &[&str] = &[
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "security.fuseoverlayfs.",
    "user.containers.override_",
];

fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// A name or path from a layer or a directory, for a message: control
/// characters and bytes that are not UTF-8 escaped, never echoed raw.
fn show(b: &[u8]) -> String {
    dsl::text::escape(b)
}

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
    Entry { path: String, node: Node },
    Hardlink { path: String, target: String, node: Node },
}

/// The member for a file: the first path of its hard-link group in member
/// order carries the data, the others link to it.
fn entry_or_link(first: &mut HashMap<u32, String>, path: &str, node: Node) -> Item {
    if let Some(g) = node.link_group {
        if let Some(t0) = first.get(&g) {
            return Item::Hardlink { path: path.to_string(), target: t0.clone(), node };
        }
        first.insert(g, path.to_string());
    }
    Item::Entry { path: path.to_string(), node }
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
    let (items, mut names) = match &opts.naive_diff {
        Some(merged) => (
            naive_items(merged, &opts.lowers)?,
            Names { entries: RawNames::new(vec![merged.clone()]), removed: RawNames::new(opts.lowers.clone()) },
        ),
        None => (
            upper_items(upper, &opts.lowers)?,
            Names {
                entries: RawNames::new(vec![upper.to_path_buf()]),
                removed: RawNames::whiteouts(upper.to_path_buf()),
            },
        ),
    };
    write_items(&items, opts, &mut names, out)
}

// ------------------------------------------------------------------ raw names

/// The tree capture keys paths by lossy UTF-8 (a name that is not UTF-8 reads
/// with U+FFFD in it), but a member name must be the bytes on disk: these turn
/// a tree path back into them. Paths without U+FFFD are their own bytes, so
/// only those with it cost a directory listing (cached).
struct RawNames {
    /// The directories to look in, in order (a removed path: any of the lowers).
    roots: Vec<PathBuf>,
    /// Whether the last component may be a whiteout in fuse-overlayfs' form
    /// (`.wh.NAME`, which the tree shows as NAME).
    whiteout_forms: bool,
    listed: HashMap<(usize, Vec<u8>), Option<Vec<Name>>>,
}

/// A name, or an xattr's name or value, as bytes.
type Name = Vec<u8>;

/// Where an export finds the bytes of its names.
struct Names {
    /// Entries: the upper, or the merged view for a naive diff.
    entries: RawNames,
    /// Removed paths (whiteout members): the upper, or the lowers for a naive diff.
    removed: RawNames,
}

impl RawNames {
    fn new(roots: Vec<PathBuf>) -> RawNames {
        RawNames { roots, whiteout_forms: false, listed: HashMap::new() }
    }

    fn whiteouts(root: PathBuf) -> RawNames {
        RawNames { roots: vec![root], whiteout_forms: true, listed: HashMap::new() }
    }

    /// The names in `dir` (relative bytes) below root `i`; `None` when it is no directory there.
    fn list(&mut self, i: usize, dir: &[u8]) -> Result<Option<&Vec<Name>>, OciError> {
        use nix::fcntl::OFlag;
        let key = (i, dir.to_vec());
        if !self.listed.contains_key(&key) {
            let p = self.roots[i].join(sys::os(dir));
            let names = match nix::fcntl::open(
                &p,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(tree::list_dir(&fd).map_err(|e| OciError::Io {
                    what: format!("listing {}", show(p.as_os_str().as_bytes())),
                    source: e.into(),
                })?),
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => None,
                Err(e) => {
                    return Err(OciError::Io {
                        what: format!("opening {}", show(p.as_os_str().as_bytes())),
                        source: e.into(),
                    })
                }
            };
            self.listed.insert(key.clone(), names);
        }
        Ok(self.listed.get(&key).and_then(Option::as_ref))
    }

    /// The bytes of a tree path, relative (no leading `/`).
    fn resolve(&mut self, key: &str) -> Result<Vec<u8>, OciError> {
        const LOSSY: char = char::REPLACEMENT_CHARACTER;
        if !key.contains(LOSSY) {
            return Ok(rel(key).as_bytes().to_vec());
        }
        let comps: Vec<&str> = key.split('/').filter(|c| !c.is_empty()).collect();
        'roots: for i in 0..self.roots.len() {
            let mut raw: Vec<u8> = Vec::new();
            for (k, c) in comps.iter().enumerate() {
                let name = if c.contains(LOSSY) {
                    let wh = self.whiteout_forms && k + 1 == comps.len();
                    let Some(names) = self.list(i, &raw)? else { continue 'roots };
                    let mut found: Vec<&[u8]> = names
                        .iter()
                        .filter_map(|n| {
                            if String::from_utf8_lossy(n) == *c {
                                Some(n.as_slice())
                            } else if wh {
                                n.strip_prefix(WHITEOUT.as_bytes()).filter(|r| String::from_utf8_lossy(r) == *c)
                            } else {
                                None
                            }
                        })
                        .collect();
                    found.sort();
                    found.dedup();
                    match found.as_slice() {
                        [] => continue 'roots,
                        [one] => one.to_vec(),
                        many => {
                            let list: Vec<String> = many.iter().map(|n| show(n)).collect();
                            return Err(OciError::Refused(format!(
                                "cannot export the names {} in /{}: they differ only in bytes that are not UTF-8, \
                                 which the tree capture (paths as lossy UTF-8) reads as one path; rename all but one",
                                list.join(", "),
                                show(&raw)
                            )));
                        }
                    }
                } else {
                    c.as_bytes().to_vec()
                };
                if !raw.is_empty() {
                    raw.push(b'/');
                }
                raw.extend_from_slice(&name);
            }
            return Ok(raw);
        }
        Err(OciError::Refused(format!(
            "{}: no name on disk reads as this path (did the directory change during the export?)",
            show(key.as_bytes())
        )))
    }
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
                items.push(entry_or_link(&mut first, p, n.clone()));
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
                items.push(entry_or_link(&mut first, &p, n));
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

/// A member name: relative bytes, directories with a trailing `/`.
fn member_name(raw: &[u8], dir: bool) -> Vec<u8> {
    let mut n = raw.to_vec();
    if dir {
        n.push(b'/');
    }
    n
}

/// Appends a PAX extended header with these records (as the tar crate's
/// `append_pax_extensions` does, with names as bytes: an xattr name need not
/// be UTF-8).
fn append_pax(b: &mut tar::Builder<impl Write>, records: &[(Vec<u8>, &[u8])]) -> std::io::Result<()> {
    let mut data: Vec<u8> = Vec::new();
    for (key, value) in records {
        let rest_len = 3 + key.len() + value.len();
        let (mut len_len, mut max_len) = (1, 10);
        while rest_len + len_len >= max_len {
            len_len += 1;
            max_len *= 10;
        }
        data.extend_from_slice(format!("{} ", rest_len + len_len).as_bytes());
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    if data.is_empty() {
        return Ok(());
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    b.append(&h, data.as_slice())
}

/// The xattrs of an entry to write: the tree's, or, when one of their names
/// was not UTF-8 (the tree shows it with U+FFFD), read again by their bytes.
/// Overlay metadata of every dialect is left out.
fn export_xattrs(node: &Node, source: &Path) -> Result<Vec<(Name, Name)>, OciError> {
    if !node.xattrs.keys().any(|k| k.contains(char::REPLACEMENT_CHARACTER)) {
        return Ok(node
            .xattrs
            .iter()
            .filter(|(k, _)| !is_overlay_xattr(k.as_bytes()))
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect());
    }
    let shown = show(source.as_os_str().as_bytes());
    let c = sys::path_c(source).map_err(|e| OciError::Io { what: format!("xattrs of {shown}"), source: e.into() })?;
    let names =
        sys::llistxattr(&c).map_err(|e| OciError::Io { what: format!("xattrs of {shown}"), source: e.into() })?;
    let mut out = Vec::new();
    for n in names {
        if is_overlay_xattr(&n) {
            continue;
        }
        match sys::lgetxattr(&c, &n) {
            Ok(v) => out.push((n, v)),
            Err(nix::errno::Errno::ENODATA) => {}
            Err(e) => return Err(OciError::Io { what: format!("xattr {} of {shown}", show(&n)), source: e.into() }),
        }
    }
    out.sort();
    Ok(out)
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

fn write_items(
    items: &[Item],
    opts: &ExportOptions,
    names: &mut Names,
    out: impl Write,
) -> Result<ExportReport, OciError> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let mut report = ExportReport::default();
    let mut parent_dir: Option<(PathBuf, std::os::fd::OwnedFd)> = None;
    let source_root = names.entries.roots[0].clone();
    for it in items {
        let wrote =
            |report: &mut ExportReport, name: &[u8]| report.members.push(String::from_utf8_lossy(name).into_owned());
        let writing = |name: &[u8]| io(format!("writing {}", show(name)));
        match it {
            Item::Whiteout(p) => {
                let parent = parent_of(p);
                let dir = names.entries.resolve(parent)?;
                let raw = names.removed.resolve(p)?;
                let base = raw.rsplit(|&c| c == b'/').next().unwrap_or(&raw);
                let mut name = if dir.is_empty() { Vec::new() } else { member_name(&dir, true) };
                name.extend_from_slice(WHITEOUT.as_bytes());
                name.extend_from_slice(base);
                let mut h = header(tar::EntryType::Regular, None, opts.mtime_clamp);
                b.append_data(&mut h, sys::os(&name), std::io::empty()).map_err(writing(&name))?;
                wrote(&mut report, &name);
            }
            Item::Opaque(p) => {
                let mut name = member_name(&names.entries.resolve(p)?, true);
                name.extend_from_slice(OPAQUE.as_bytes());
                let mut h = header(tar::EntryType::Regular, None, opts.mtime_clamp);
                b.append_data(&mut h, sys::os(&name), std::io::empty()).map_err(writing(&name))?;
                wrote(&mut report, &name);
            }
            Item::Hardlink { path, target, node } => {
                let name = member_name(&names.entries.resolve(path)?, false);
                let target = names.entries.resolve(target)?;
                let mut h = header(tar::EntryType::Link, Some(node), opts.mtime_clamp);
                b.append_link(&mut h, sys::os(&name), sys::os(&target)).map_err(writing(&name))?;
                wrote(&mut report, &name);
            }
            Item::Entry { path, node } => {
                if node.kind == Kind::Socket {
                    report.notes.push(format!("{path}: a socket, skipped (a layer cannot hold one)"));
                    continue;
                }
                let raw = names.entries.resolve(path)?;
                let source = source_root.join(sys::os(&raw));
                let xattrs = export_xattrs(node, &source)?;
                if !xattrs.is_empty() {
                    let records: Vec<(Vec<u8>, &[u8])> =
                        xattrs.iter().map(|(k, v)| ([b"SCHILY.xattr.".as_slice(), k].concat(), v.as_slice())).collect();
                    append_pax(&mut b, &records).map_err(io(format!("writing xattrs of {}", show(&raw))))?;
                }
                let dir = node.kind == Kind::Dir;
                let name = member_name(&raw, dir);
                let np = sys::os(&name);
                match node.kind {
                    Kind::Dir => {
                        let mut h = header(tar::EntryType::Directory, Some(node), opts.mtime_clamp);
                        b.append_data(&mut h, np, std::io::empty())
                    }
                    Kind::File => {
                        let f = open_cached(&mut parent_dir, &source)
                            .map_err(io(format!("reading {}", show(source.as_os_str().as_bytes()))))?;
                        let mut h = header(tar::EntryType::Regular, Some(node), opts.mtime_clamp);
                        h.set_size(node.size);
                        report.bytes += node.size;
                        b.append_data(&mut h, np, f)
                    }
                    Kind::Symlink => {
                        let mut h = header(tar::EntryType::Symlink, Some(node), opts.mtime_clamp);
                        let t = node.target.clone().unwrap_or_default();
                        b.append_link(&mut h, np, sys::os(&t))
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
                        b.append_data(&mut h, np, std::io::empty())
                    }
                    Kind::Whiteout | Kind::Socket => Ok(()),
                }
                .map_err(writing(&name))?;
                wrote(&mut report, &name);
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
    /// Refuse a layer whose files add up to more than this (sparse files count
    /// their apparent size).
    pub max_bytes: u64,
    /// Keep `security.capability` records (file capabilities); without this a
    /// layer holding one is refused. Scenario layers never allow them.
    pub allow_capabilities: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { opaque_xattr: "trusted.overlay.opaque".into(), max_bytes: 8 << 30, allow_capabilities: false }
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

/// Why a layer may not set this xattr, or `None` when it may. Kept: `user.*`
/// and `trusted.*` (but overlay metadata of every dialect), `security.selinux`,
/// POSIX ACLs, and `security.capability` when allowed. Refused: overlay
/// metadata (what the overlay trusts: a layer says whiteout and opaque only
/// in their OCI form), file capabilities unless allowed, every other
/// `security.*` (labels and signatures the kernel trusts at exec or access:
/// SMACK64EXEC, IMA, EVM, ...), and every other namespace.
fn xattr_refusal(name: &[u8], allow_capabilities: bool) -> Option<&'static str> {
    if name.is_empty() || name.contains(&0) || name.len() > 255 {
        return Some("not a valid xattr name");
    }
    if is_overlay_xattr(name) {
        return Some(
            "overlay metadata, which a layer may not forge (it says whiteout only as .wh.NAME and opaque only as .wh..wh..opq)",
        );
    }
    if name == b"security.capability" {
        return (!allow_capabilities)
            .then_some("file capabilities, refused unless allowed (ovlc layer apply --allow-capabilities)");
    }
    if name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || name == b"security.selinux"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
    {
        return None;
    }
    if name.starts_with(b"security.") {
        return Some(
            "a security label or signature the kernel trusts (of security.*, only security.selinux is kept, and security.capability when allowed)",
        );
    }
    Some("in no namespace a layer may set (user.*, trusted.*, security.selinux, POSIX ACLs)")
}

/// A member path made relative and checked: no `..`, not absolute.
/// `what` names it in messages ("member x", "hard link l -> x").
fn member_path(raw: &[u8], what: &dyn Fn() -> String) -> Result<PathBuf, OciError> {
    if raw.starts_with(b"/") {
        return Err(OciError::Refused(format!("{} is an absolute path", what())));
    }
    let mut out = PathBuf::new();
    for c in Path::new(sys::os(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(OciError::Refused(format!("{} climbs out of the layer with `..`", what())))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(OciError::Refused(format!("{} is an absolute path", what())))
            }
        }
    }
    Ok(out)
}

fn shown(p: &Path) -> String {
    show(p.as_os_str().as_bytes())
}

/// Refuses a path whose parents, inside `root`, include a symlink (writing
/// through it could land outside the layer) or a non-directory.
fn no_symlink_parents(root: &Path, rel: &Path, what: &dyn Fn() -> String) -> Result<(), OciError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&cur) {
            let inside = shown(cur.strip_prefix(root).unwrap_or(&cur));
            if m.file_type().is_symlink() {
                return Err(OciError::Refused(format!("{} goes through the symlink {inside}", what())));
            }
            if !m.is_dir() {
                return Err(OciError::Refused(format!("{} goes through {inside}, which is not a directory", what())));
            }
        }
    }
    Ok(())
}

/// Creates the missing parents of a member (`mkdir -p`, after [`no_symlink_parents`]).
fn mkdir_parents(root: &Path, rel: &Path) -> Result<(), OciError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match std::fs::create_dir(&cur) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            r => r.map_err(io(format!("mkdir {}", shown(cur.strip_prefix(root).unwrap_or(&cur)))))?,
        }
    }
    Ok(())
}

/// Opens a layer file, undoing gzip or zstd compression (recognised by magic bytes).
pub fn open_layer(path: &Path) -> Result<Box<dyn Read>, OciError> {
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OciError::Refused(format!("{name}: no such file")),
        _ => OciError::Io { what: format!("opening {name}"), source: e },
    })?;
    if f.metadata().map_err(io(format!("stat {name}")))?.is_dir() {
        return Err(OciError::Refused(format!("{name} is a directory, not a layer file")));
    }
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let magic = r.fill_buf().map_err(io(format!("reading {name}")))?;
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::GzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::Decoder::with_buffer(r).map_err(io("zstd"))?),
        _ => Box::new(r),
    })
}

/// Bytes the tar reader may consume to reach the next member (headers, PAX
/// records, long names, the data of members it skips) before the layer is
/// refused: the tar crate reads such records whole into memory.
const HEADER_BUDGET: u64 = 64 << 20;

/// What the layer stream did, shared between the reader the tar crate pulls
/// from and the applier (which cannot reach that reader while it iterates).
#[derive(Default)]
struct Stream {
    /// Bytes read (of the tar stream, after decompression).
    pos: Cell<u64>,
    /// Reads past this fail (see [`HEADER_BUDGET`]).
    limit: Cell<u64>,
    over_budget: Cell<bool>,
    /// The stream ended.
    eof: Cell<bool>,
    /// The system's error reading the file: infrastructure, not the layer's fault.
    os_error: Cell<Option<i32>>,
    /// The decompressor's error: corrupt gzip or zstd data.
    decode_error: Cell<bool>,
    /// Whether the first block carries the ustar magic (a tar header, even
    /// when it fails its checksum).
    ustar_magic: Cell<bool>,
}

struct Tracked<R> {
    inner: R,
    st: Rc<Stream>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let st = &self.st;
        let room = st.limit.get().saturating_sub(st.pos.get());
        if room == 0 {
            st.over_budget.set(true);
            return Err(std::io::Error::other("over the header budget"));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                st.eof.set(true);
                Ok(0)
            }
            Ok(n) => {
                let at = st.pos.get();
                // "ustar" at byte 257 of the first block (POSIX and GNU headers).
                if at <= 257 && at + n as u64 >= 262 {
                    let i = (257 - at) as usize;
                    st.ustar_magic.set(&buf[i..i + 5] == b"ustar");
                }
                st.pos.set(at + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                match e.raw_os_error() {
                    Some(code) => st.os_error.set(Some(code)),
                    None => st.decode_error.set(true),
                }
                Err(e)
            }
        }
    }
}

/// How a member of a PAX sparse format (GNU tar's 0.0, 0.1 and 1.0) is laid out.
struct PaxSparse {
    /// The real name (`GNU.sparse.name`), when given.
    name: Option<Vec<u8>>,
    /// `(offset, length)` of each stored chunk; `None` for 1.0, whose map
    /// starts the member's data.
    map: Option<Vec<(u64, u64)>>,
    /// The file's size.
    size: u64,
}

fn pax_number(key: &str, v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("its PAX record {key} is not a number"))
}

/// The sparse layout the PAX records describe, if any.
fn pax_sparse(pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<PaxSparse>, String> {
    if !pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
        return Ok(None);
    }
    let get = |k: &str| pax.iter().rev().find(|(key, _)| key == k.as_bytes()).map(|(_, v)| v.as_slice());
    let name = get("GNU.sparse.name").map(<[u8]>::to_vec);
    let size = |k: &str| get(k).ok_or_else(|| format!("its sparse records have no {k}")).and_then(|v| pax_number(k, v));
    match (get("GNU.sparse.major"), get("GNU.sparse.minor")) {
        (Some(b"1"), Some(b"0")) => return Ok(Some(PaxSparse { name, map: None, size: size("GNU.sparse.realsize")? })),
        (None, None) => {}
        (ma, mi) => {
            return Err(format!(
                "its sparse format {}.{} is not one GNU tar writes (0.0, 0.1, 1.0)",
                show(ma.unwrap_or(b"?")),
                show(mi.unwrap_or(b"?"))
            ))
        }
    }
    let mut map = Vec::new();
    if let Some(m) = get("GNU.sparse.map") {
        let nums: Vec<u64> =
            m.split(|&b| b == b',').map(|n| pax_number("GNU.sparse.map", n)).collect::<Result<_, _>>()?;
        if !nums.len().is_multiple_of(2) {
            return Err("its GNU.sparse.map has an odd count of numbers".into());
        }
        map.extend(nums.chunks(2).map(|c| (c[0], c[1])));
    } else {
        // 0.0: GNU.sparse.offset and GNU.sparse.numbytes records in pairs, in order.
        let mut pending = None;
        for (k, v) in pax {
            match k.as_slice() {
                b"GNU.sparse.offset" if pending.is_none() => pending = Some(pax_number("GNU.sparse.offset", v)?),
                b"GNU.sparse.numbytes" if pending.is_some() => {
                    map.push((pending.take().unwrap_or(0), pax_number("GNU.sparse.numbytes", v)?))
                }
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    return Err("its GNU.sparse.offset and GNU.sparse.numbytes records do not pair up".into())
                }
                _ => {}
            }
        }
        if pending.is_some() {
            return Err("its GNU.sparse.offset and GNU.sparse.numbytes records do not pair up".into());
        }
    }
    if let Some(n) = get("GNU.sparse.numblocks") {
        if pax_number("GNU.sparse.numblocks", n)? != map.len() as u64 {
            return Err("its GNU.sparse.numblocks does not match its map".into());
        }
    }
    Ok(Some(PaxSparse { name, map: Some(map), size: size("GNU.sparse.size")? }))
}

/// Checks a sparse map against the file's size and the data stored.
fn check_sparse_map(map: &[(u64, u64)], size: u64, stored: u64) -> Result<(), String> {
    let (mut end, mut total) = (0u64, 0u64);
    for &(off, len) in map {
        let e = off.checked_add(len).filter(|&e| off >= end && e <= size);
        end = e.ok_or("its sparse map has chunks out of order, overlapping, or past the file's size")?;
        total += len;
    }
    if total != stored {
        return Err(format!("its sparse map lists {total} bytes of data but it stores {stored}"));
    }
    Ok(())
}

/// Reads the map that starts a 1.0 sparse member's data: the count of chunks,
/// then offset and length of each, one decimal number a line, padded to a
/// 512-byte block. Returns the map and the bytes it took.
fn read_sparse_map_v1(r: &mut impl Read, stored: u64) -> Result<(Vec<(u64, u64)>, u64), ReadFail> {
    const LIMIT: usize = 16 << 20;
    let mut buf: Vec<u8> = Vec::new();
    let mut block = [0u8; 512];
    loop {
        let lines = buf.iter().filter(|&&b| b == b'\n').count();
        if lines >= 1 {
            let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let count =
                pax_number("map count", first).map_err(|_| ReadFail::Bad("its sparse map is malformed".into()))?;
            if count > (LIMIT / 4) as u64 {
                return Err(ReadFail::Bad("its sparse map is malformed".into()));
            }
            if lines as u64 > 2 * count {
                let nums: Vec<u64> = buf
                    .split(|&b| b == b'\n')
                    .skip(1)
                    .take(2 * count as usize)
                    .map(|n| pax_number("map", n))
                    .collect::<Result<_, _>>()
                    .map_err(|_| ReadFail::Bad("its sparse map is malformed".into()))?;
                return Ok((nums.chunks(2).map(|c| (c[0], c[1])).collect(), buf.len() as u64));
            }
        }
        if buf.len() >= LIMIT || buf.len() as u64 + 512 > stored {
            return Err(ReadFail::Bad("its sparse map is malformed".into()));
        }
        let mut got = 0;
        while got < 512 {
            match r.read(&mut block[got..]) {
                Ok(0) => return Err(ReadFail::Short),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
        buf.extend_from_slice(&block);
    }
}

/// A failed read of a member's data.
enum ReadFail {
    /// The stream ended first.
    Short,
    Io(std::io::Error),
    Bad(String),
}

/// Copies exactly `len` bytes of a member's data into `f` at its position;
/// with `holes`, blocks of zeros are skipped (left as holes).
fn copy_exact(
    from: &mut impl Read,
    f: &mut std::fs::File,
    len: u64,
    holes: bool,
) -> Result<(), Result<ReadFail, std::io::Error>> {
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => return Err(Ok(ReadFail::Short)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Ok(ReadFail::Io(e))),
        };
        let chunk = &buf[..n];
        if holes && chunk.iter().all(|&b| b == 0) {
            f.seek(std::io::SeekFrom::Current(n as i64)).map_err(Err)?;
        } else {
            f.write_all(chunk).map_err(Err)?;
        }
        left -= n as u64;
    }
    Ok(())
}

/// A numeric header field: its value, 0 when the field is empty (all NUL or
/// spaces, as some writers leave the fields they do not use), `None` when it
/// holds something else.
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// The state of one apply.
struct Applier<'a> {
    root: &'a Path,
    opts: &'a ApplyOptions,
    st: Rc<Stream>,
    root_user: bool,
    /// Member paths seen, and paths whited out (a member may not reuse either).
    seen: HashSet<PathBuf>,
    whited: HashSet<PathBuf>,
    /// Directories and their modes, set last (deepest first), so that a
    /// read-only directory can still receive its members.
    dir_modes: Vec<(PathBuf, u32)>,
    /// The last member read, for messages.
    last: Option<String>,
    members: u64,
    report: ApplyReport,
}

impl Applier<'_> {
    fn after(&self) -> String {
        match &self.last {
            Some(m) => format!("after member {m}"),
            None => "before the first member".into(),
        }
    }

    /// What a failed read of the layer means. The system's errors are
    /// infrastructure; everything else is the layer's fault, told in our own
    /// words (the tar crate's may quote the layer's bytes).
    fn stream_error(&self, e: &std::io::Error, data_of: Option<&str>) -> OciError {
        let st = &self.st;
        if let Some(code) = st.os_error.get() {
            return OciError::Io { what: "reading the layer".into(), source: std::io::Error::from_raw_os_error(code) };
        }
        if st.over_budget.get() {
            return OciError::Refused(format!(
                "more than {} MiB of tar headers, extension records or skipped data {}",
                HEADER_BUDGET >> 20,
                self.after()
            ));
        }
        if st.decode_error.get() {
            return OciError::Refused(format!(
                "its gzip or zstd data is corrupt or truncated ({} bytes of tar data in)",
                st.pos.get()
            ));
        }
        if st.eof.get() {
            return OciError::Refused(match data_of {
                Some(m) => format!("is truncated: it ends inside the data of member {m}"),
                None if self.members == 0 && st.pos.get() < 512 => {
                    format!("is not a tar archive ({} bytes, less than one 512-byte tar block)", st.pos.get())
                }
                None => format!("is truncated: it ends inside a member's headers {}", self.after()),
            });
        }
        let text = e.to_string();
        let checksum = text.contains("checksum") || text.contains("cksum");
        if self.members == 0 && st.pos.get() <= 512 {
            return OciError::Refused(if !st.ustar_magic.get() {
                "is not a tar archive (its first block is not a tar header)".into()
            } else if checksum {
                "has a bad checksum in its first tar header".into()
            } else {
                "has a malformed first tar header".into()
            });
        }
        let what = if checksum {
            "has a bad checksum"
        } else if text.contains("sparse") {
            "has a malformed sparse map"
        } else {
            "is malformed"
        };
        OciError::Refused(format!(
            "the tar header {} {what} (about byte {} of the tar stream)",
            self.after(),
            st.pos.get().saturating_sub(512)
        ))
    }

    fn read_fail(&self, f: ReadFail, member: &str) -> OciError {
        match f {
            ReadFail::Short => OciError::Refused(format!("is truncated: it ends inside the data of member {member}")),
            ReadFail::Io(e) => self.stream_error(&e, Some(member)),
            ReadFail::Bad(why) => OciError::Refused(format!("member {member}: {why}")),
        }
    }

    fn refuse(&self, member: &str, why: impl std::fmt::Display) -> OciError {
        OciError::Refused(format!("member {member} {why}"))
    }

    fn member<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), OciError> {
        self.members += 1;
        let h = entry.header().clone();
        let et = h.entry_type();
        let mut raw: Vec<u8> = entry.path_bytes().into_owned();
        let mut m = show(&raw);
        // PAX records: xattrs and sparse layouts. Forged overlay metadata is
        // refused on any member, even where it would be ignored.
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        match entry.pax_extensions() {
            Ok(Some(exts)) => {
                for x in exts {
                    let x = x.map_err(|_| self.refuse(&m, "has a malformed PAX record"))?;
                    pax.push((x.key_bytes().to_vec(), x.value_bytes().to_vec()));
                }
            }
            Ok(None) => {}
            Err(e) => return Err(self.stream_error(&e, Some(&m))),
        }
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            pax.iter().filter_map(|(k, v)| k.strip_prefix(b"SCHILY.xattr.").map(|n| (n.to_vec(), v.clone()))).collect();
        for (name, _) in &xattrs {
            if let Some(why) = xattr_refusal(name, self.opts.allow_capabilities) {
                return Err(
                    self.refuse(&m, format_args!("has the xattr {} (a PAX SCHILY.xattr record): {why}", show(name)))
                );
            }
        }
        if et.is_pax_global_extensions() {
            self.last = Some(m);
            return Ok(()); // records for every member; no xattr of them is applied
        }
        let sparse = pax_sparse(&pax).map_err(|why| self.refuse(&m, why))?;
        if let Some(name) = sparse.as_ref().and_then(|s| s.name.clone()) {
            raw = name;
            m = show(&raw);
        }
        self.last = Some(m.clone());
        let what = || format!("member {m}");
        let relp = member_path(&raw, &what)?;
        if relp.as_os_str().is_empty() {
            // "./", the root: its own metadata is not part of a layer.
            if !et.is_dir() {
                return Err(self.refuse(&m, "names the layer's root but is not a directory"));
            }
            return Ok(());
        }
        let comps: Vec<&[u8]> = relp.iter().map(|c| c.as_bytes()).collect();
        if let Some(c) = comps[..comps.len() - 1].iter().find(|c| c.starts_with(WHITEOUT.as_bytes())) {
            return Err(self.refuse(
                &m,
                format_args!("is inside {}, a whiteout name (fuse-overlayfs would read it as one)", show(c)),
            ));
        }
        if self.whited.contains(&relp) {
            return Err(self.refuse(&m, "names a path the same layer whites out"));
        }
        if !self.seen.insert(relp.clone()) {
            return Err(self.refuse(&m, "appears twice (the spec forbids duplicates)"));
        }
        no_symlink_parents(self.root, &relp, &what)?;
        mkdir_parents(self.root, &relp)?;
        let name = comps[comps.len() - 1];
        let dest = self.root.join(&relp);
        let regular = matches!(et, tar::EntryType::Regular | tar::EntryType::Continuous);
        if name == OPAQUE.as_bytes() {
            if !regular {
                return Err(self.refuse(&m, "is an opaque marker but not a regular file"));
            }
            let d = dest.parent().unwrap_or(self.root);
            let c = sys::path_c(d).map_err(|e| self.refuse(&m, e))?;
            sys::setxattr(&c, self.opts.opaque_xattr.as_bytes(), b"y", false).map_err(|e| {
                self.refuse(&m, format_args!("could not mark its directory opaque ({}): {e}", self.opts.opaque_xattr))
            })?;
            self.report.opaque_dirs += 1;
            return Ok(());
        }
        if let Some(real) = name.strip_prefix(WHITEOUT.as_bytes()) {
            if !regular {
                return Err(self.refuse(&m, "is a whiteout but not a regular file"));
            }
            if real.is_empty() || real == b"." || real == b".." {
                return Err(self.refuse(&m, "whites out no name"));
            }
            let target = relp.with_file_name(sys::os(real));
            if self.seen.contains(&target) || !self.whited.insert(target.clone()) {
                return Err(self.refuse(&m, "whites out a path the same layer also holds"));
            }
            let p = self.root.join(&target);
            nix::sys::stat::mknod(&p, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
                if e == nix::errno::Errno::EEXIST {
                    self.refuse(&m, "whites out a path the same layer also holds")
                } else {
                    self.refuse(&m, format_args!("could not be made a whiteout: {e} (whiteouts need CAP_MKNOD)"))
                }
            })?;
            self.report.whiteouts += 1;
            return Ok(());
        }
        let exists = std::fs::symlink_metadata(&dest);
        let old = h.as_old();
        let mode = numeric(h.mode().map(u64::from), &old.mode)
            .ok_or_else(|| self.refuse(&m, "has a mode field that is not a number"))? as u32
            & 0o7777;
        let uid = numeric(h.uid(), &old.uid).ok_or_else(|| self.refuse(&m, "has a uid field that is not a number"))?;
        let gid = numeric(h.gid(), &old.gid).ok_or_else(|| self.refuse(&m, "has a gid field that is not a number"))?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(self.refuse(&m, "has a uid or gid beyond 32 bits")),
        };
        if sparse.is_some() && !regular {
            return Err(self.refuse(&m, "has sparse records but is not a regular file"));
        }
        if !et.is_dir() && exists.is_ok() {
            return Err(self.refuse(&m, "comes after members inside it (its path is already a directory)"));
        }
        let mut is_link = false;
        if et.is_dir() {
            match exists {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return Err(self.refuse(&m, "is a directory over a non-directory")),
                Err(_) => std::fs::create_dir(&dest).map_err(io(format!("mkdir {m}")))?,
            }
            self.dir_modes.push((dest.clone(), mode));
        } else if regular || et.is_gnu_sparse() {
            // A GNU sparse member ('S') reads expanded (the tar crate fills
            // the holes); a PAX sparse one stores only its chunks.
            let size = match &sparse {
                Some(s) => s.size,
                None => entry.size(),
            };
            self.report.bytes = self.report.bytes.saturating_add(size);
            if self.report.bytes > self.opts.max_bytes {
                return Err(OciError::Refused(format!(
                    "the layer's files add up to more than {} bytes (at member {m})",
                    self.opts.max_bytes
                )));
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&dest)
                .map_err(io(format!("creating {m}")))?;
            // The data may be large: no header budget while reading it.
            self.st.limit.set(u64::MAX);
            let writing = |e: std::io::Error| OciError::Io { what: format!("writing {m}"), source: e };
            let fail = |this: &Self, r: Result<ReadFail, std::io::Error>| match r {
                Ok(f) => this.read_fail(f, &m),
                Err(e) => writing(e),
            };
            match &sparse {
                None => copy_exact(&mut entry, &mut f, size, et.is_gnu_sparse()).map_err(|r| fail(self, r))?,
                Some(s) => {
                    let stored = entry.size();
                    let (map, used) = match &s.map {
                        Some(map) => (map.clone(), 0),
                        None => read_sparse_map_v1(&mut entry, stored).map_err(|r| self.read_fail(r, &m))?,
                    };
                    check_sparse_map(&map, s.size, stored - used).map_err(|why| self.refuse(&m, why))?;
                    for (off, len) in map {
                        f.seek(std::io::SeekFrom::Start(off)).map_err(writing)?;
                        copy_exact(&mut entry, &mut f, len, false).map_err(|r| fail(self, r))?;
                    }
                }
            }
            if sparse.is_some() || et.is_gnu_sparse() {
                f.set_len(size).map_err(writing)?;
            }
        } else if et.is_symlink() {
            let t = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            if t.is_empty() {
                return Err(self.refuse(&m, "is a symlink to nothing"));
            }
            symlink(sys::os(&t), &dest).map_err(io(format!("symlink {m}")))?;
            is_link = true;
        } else if et.is_hard_link() {
            let t = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            let link = || format!("hard link {m} -> {}", show(&t));
            let tp = member_path(&t, &link)?;
            if tp.as_os_str().is_empty() || !self.seen.contains(&tp) || self.whited.contains(&tp) || tp == relp {
                return Err(OciError::Refused(format!("{}: no such member before it", link())));
            }
            no_symlink_parents(self.root, &tp, &link)?;
            let target = self.root.join(&tp);
            match std::fs::symlink_metadata(&target) {
                Ok(md) if md.file_type().is_symlink() || md.is_dir() => {
                    return Err(OciError::Refused(format!("{}: the target is not a file", link())))
                }
                Ok(_) => {}
                Err(_) => return Err(OciError::Refused(format!("{}: no such member before it", link()))),
            }
            std::fs::hard_link(&target, &dest).map_err(io(format!("link {m}")))?;
            self.report.entries += 1;
            return Ok(());
        } else if et.is_character_special() || et.is_block_special() || et.is_fifo() {
            let (raw_major, raw_minor) = match (h.as_ustar(), h.as_gnu()) {
                (Some(u), _) => (u.dev_major.to_vec(), u.dev_minor.to_vec()),
                (_, Some(g)) => (g.dev_major.to_vec(), g.dev_minor.to_vec()),
                _ => (Vec::new(), Vec::new()),
            };
            let major = numeric(h.device_major().map(|d| d.unwrap_or(0).into()), &raw_major)
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| self.refuse(&m, "has a device major that is not a number"))?;
            let minor = numeric(h.device_minor().map(|d| d.unwrap_or(0).into()), &raw_minor)
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| self.refuse(&m, "has a device minor that is not a number"))?;
            if et.is_character_special() && (major, minor) == (0, 0) {
                return Err(self.refuse(
                    &m,
                    "is a 0/0 character device, the overlay's whiteout: a layer whites out only with a .wh.NAME member",
                ));
            }
            if !et.is_fifo() && !self.root_user {
                return Err(self.refuse(&m, "is a device file, which only root may create"));
            }
            let kind = if et.is_fifo() {
                SFlag::S_IFIFO
            } else if et.is_character_special() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            let dev = nix::sys::stat::makedev(major.into(), minor.into());
            nix::sys::stat::mknod(&dest, kind, Mode::from_bits_truncate(mode), dev)
                .map_err(|e| self.refuse(&m, format_args!("could not be made: mknod: {e}")))?;
        } else {
            let t = et.as_byte();
            let t = if t.is_ascii_graphic() { format!("'{}'", t as char) } else { format!("{t}") };
            return Err(self.refuse(&m, format_args!("has the tar type {t}, which a layer cannot hold")));
        }
        if self.root_user {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &dest,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.refuse(&m, format_args!("could not be given {uid}:{gid}: chown: {e}")))?;
        }
        if !is_link && !et.is_dir() {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).map_err(io(format!("chmod {m}")))?;
        }
        if !xattrs.is_empty() {
            let c = sys::path_c(&dest).map_err(|e| self.refuse(&m, e))?;
            for (xname, value) in &xattrs {
                sys::setxattr(&c, xname, value, false).map_err(|e| {
                    self.refuse(&m, format_args!("could not get the xattr {}: setxattr: {e}", show(xname)))
                })?;
            }
        }
        self.report.entries += 1;
        Ok(())
    }

    /// After the last member: the end of the archive must be there (two zero
    /// blocks), and the directories get their modes.
    fn finish<R: Read>(&mut self, mut rest: Tracked<R>) -> Result<(), OciError> {
        let st = Rc::clone(&self.st);
        if st.pos.get() == 0 {
            return Err(OciError::Refused("is empty: not a tar archive".into()));
        }
        if st.eof.get() {
            return Err(OciError::Refused(format!(
                "is truncated: it ends {} without the two zero blocks that end a tar archive",
                self.after()
            )));
        }
        // The tar crate stopped at the first zero block: the second must follow.
        st.limit.set(u64::MAX);
        let mut block = [0u8; 512];
        let mut got = 0;
        while got < 512 {
            match rest.read(&mut block[got..]) {
                Ok(0) => {
                    return Err(OciError::Refused(format!(
                        "is truncated: it ends {} with one of the two zero blocks that end a tar archive",
                        self.after()
                    )))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(&e, None)),
            }
        }
        if block.iter().any(|&b| b != 0) {
            return Err(OciError::Refused(format!(
                "has a lone zero block {} and more after it, which tar readers disagree about (GNU tar stops there, others go on)",
                self.after()
            )));
        }
        // Read a little further, so that a compressed stream is checked to
        // its end (gzip's CRC) in the usual case of a few blocks of padding.
        if let Err(e) = std::io::copy(&mut (&mut rest).take(1 << 20), &mut std::io::sink()) {
            return Err(self.stream_error(&e, None));
        }
        for (d, mode) in self.dir_modes.iter().rev() {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode))
                .map_err(io(format!("chmod {}", shown(d.strip_prefix(self.root).unwrap_or(d)))))?;
        }
        Ok(())
    }
}

/// Applies a layer into `root` (an existing directory, normally empty, owned by
/// the caller). Stops at the first refused member; the caller decides what
/// becomes of `root` ([`apply_to`] keeps the target untouched).
///
/// Refused (bad input): anything that is not a whole tar archive (empty,
/// truncated, corrupt headers or compression), forged overlay metadata (0/0
/// character devices, overlay xattrs of any dialect), xattrs a layer may not
/// set (see [`xattr_refusal`]), escapes through `..` or symlinks, duplicates,
/// unknown member types. I/O errors of the system are [`OciError::Io`].
pub fn apply_into(layer: impl Read, root: &Path, opts: &ApplyOptions) -> Result<ApplyReport, OciError> {
    let st = Rc::new(Stream::default());
    let mut ar = tar::Archive::new(Tracked { inner: layer, st: Rc::clone(&st) });
    let mut ap = Applier {
        root,
        opts,
        st: Rc::clone(&st),
        root_user: nix::unistd::geteuid().is_root(),
        seen: HashSet::new(),
        whited: HashSet::new(),
        dir_modes: Vec::new(),
        last: None,
        members: 0,
        report: ApplyReport::default(),
    };
    {
        let mut entries = ar.entries().map_err(|e| ap.stream_error(&e, None))?;
        loop {
            st.limit.set(st.pos.get().saturating_add(HEADER_BUDGET));
            match entries.next() {
                None => break,
                Some(Ok(entry)) => ap.member(entry)?,
                Some(Err(e)) => return Err(ap.stream_error(&e, None)),
            }
        }
    }
    ap.finish(ar.into_inner())?;
    Ok(ap.report)
}

/// A staging directory, removed (whatever its modes) unless kept.
struct Staging(Option<PathBuf>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_tree(&p);
        }
    }
}

/// `rm -rf`, making directories writable first when that is what stops it
/// (a non-root apply of a layer with read-only directories).
fn remove_tree(p: &Path) {
    if std::fs::remove_dir_all(p).is_ok() || std::fs::symlink_metadata(p).is_err() {
        return;
    }
    fn writable(p: &Path) {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    writable(&e.path());
                }
            }
        }
    }
    writable(p);
    let _ = std::fs::remove_dir_all(p);
}

/// Applies a layer file to `dir`, which must not exist or be an empty
/// directory (not a symlink): the layer is unpacked beside it and renamed
/// into place only when every member was accepted, so a refused layer leaves
/// `dir` as it was, and nothing beside it.
pub fn apply_to(layer: &Path, dir: &Path, opts: &ApplyOptions) -> Result<ApplyReport, OciError> {
    let shown_dir = dir.display();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(OciError::Refused(format!(
                "{shown_dir} is a symlink: apply a layer into a new directory, not through a link"
            )))
        }
        Ok(m) if !m.is_dir() => {
            return Err(OciError::Refused(format!("{shown_dir} exists and is not a directory")));
        }
        Ok(_) => {
            if std::fs::read_dir(dir).map_err(io(format!("reading {shown_dir}")))?.next().is_some() {
                return Err(OciError::Refused(format!("{shown_dir} is not empty: apply a layer into a new directory")));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(OciError::Io { what: format!("looking at {shown_dir}"), source: e }),
    }
    let input = open_layer(layer)?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".ovlc-apply-").tempdir_in(parent).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OciError::Refused(format!("{}: no such directory to apply into", parent.display()))
        } else {
            OciError::Io { what: format!("creating a directory in {}", parent.display()), source: e }
        }
    })?;
    let mut staging = Staging(Some(tmp.keep()));
    // An interrupt (SIGINT, SIGTERM) removes it too.
    let _registered = staging.0.as_deref().map(crate::cleanup::register);
    let named = |e: OciError| match e {
        OciError::Refused(m) => OciError::Refused(format!("{}: {m}", layer.display())),
        OciError::Io { what, source } => OciError::Io { what: format!("{}: {what}", layer.display()), source },
    };
    let report = apply_into(input, staging.path(), opts).map_err(named)?;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755)).map_err(io("chmod"))?;
    // Over an empty directory, rename replaces it in one step.
    std::fs::rename(staging.path(), dir).map_err(io(format!("renaming into {shown_dir}")))?;
    staging.0 = None;
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
    let _registered = crate::cleanup::register(&tmp);
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
    // Nor is overlay metadata, which an export strips (fuse-overlayfs' stat
    // overrides are plain xattrs to the kernel's overlay).
    for n in b.nodes.values_mut() {
        n.xattrs.retain(|k, _| !is_overlay_xattr(k.as_bytes()));
    }
    let (a, b) = (shapes(&a), shapes(&b));
    if a == b {
        Ok(())
    } else {
        Err(format!("lowers + exported layer (-) against the merged view (+):\n{}", tree::diff(&a, &b)))
    }
}
