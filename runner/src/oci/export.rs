//! Exporting an overlay upper directory as an OCI layer: whiteouts and opaque
//! directories in their OCI form, overlay metadata stripped, redirects and
//! metacopy files through a naive diff of the merged view.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use super::spec::{io, is_overlay_xattr, show, OPAQUE, PAX_XATTR, WHITEOUT};
use crate::error::OciError;
use crate::sys;
use crate::tree::{self, Dialect, Kind, Node, Tree};

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
        let t = tree::capture(dir, Dialect::Fuse)?;
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
    union.nodes.entry("/".into()).or_insert_with(|| Node { mode: 0o755, nlink: 2, ..Node::new(Kind::Dir) });
    Ok(union)
}

pub(super) fn remove_subtree(t: &mut Tree, p: &str) {
    let prefix = if p == "/" { "/".to_string() } else { format!("{p}/") };
    t.nodes.retain(|k, _| k != p && !k.starts_with(&prefix));
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
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
    let t = tree::capture_with(upper, Dialect::Fuse, false)?;
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
            s.extend(tree::capture_with(l, Dialect::Fuse, false)?.nodes.into_keys());
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
    let m = tree::capture(merged, Dialect::Plain)?;
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
                        xattrs.iter().map(|(k, v)| ([PAX_XATTR, k].concat(), v.as_slice())).collect();
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
    let _registered = crate::sys::cleanup::register(&tmp);
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
