//! Canonical trees: a directory captured as one line per path, with overlay
//! metadata decoded into words whatever its dialect, and every value that
//! changes from run to run replaced by a stable placeholder.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys;

/// Which overlay xattrs and whiteout forms a driver writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Kernel overlayfs as root: `trusted.overlay.*`, 0/0 character devices.
    Trusted,
    /// Kernel overlayfs with `userxattr`: `user.overlay.*`.
    User,
    /// fuse-overlayfs: `user.fuseoverlayfs.*` (and the kernel's names), `.wh.` files.
    Fuse,
    /// A plain directory (a lower layer as built): nothing decoded.
    Plain,
}

impl Dialect {
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            Dialect::Trusted => &["trusted.overlay."],
            Dialect::User => &["user.overlay."],
            Dialect::Fuse => &["user.fuseoverlayfs.", "trusted.overlay.", "user.overlay."],
            Dialect::Plain => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
    Whiteout,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Socket => "socket",
            Kind::Whiteout => "whiteout",
        }
    }
}

/// One path of a captured tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    /// Regular files: the content when at most [`KEEP_CONTENT`] bytes.
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
    /// Regular files: the first 16 hex digits of the content's SHA-256.
    pub sha256: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    /// Decoded overlay metadata, in a fixed order (`opaque`, `redirect="x"`, ...).
    pub words: Vec<String>,
    /// Other xattrs, by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The overlay xattrs decoded into `words` (or into the whiteout kind),
    /// by their on-disk name with their raw value: what `xattr NAME` checks
    /// find them by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overlay_xattrs: BTreeMap<String, Vec<u8>>,
    /// Hard-link group number (1, 2, ...), for files linked within the tree.
    pub link_group: Option<u32>,
    #[serde(skip)]
    pub ino: (u64, u64),
    #[serde(skip)]
    pub mtime: (i64, i64),
    /// st_blocks, in 512-byte units.
    #[serde(skip)]
    pub blocks: u64,
    /// Inode flags (FS_IOC_GETFLAGS) of files and directories; 0 where unknown.
    #[serde(skip)]
    pub flags: u32,
}

impl Node {
    /// A node of `kind` owned by 0:0, with nothing else known (mode 0, one link).
    pub fn new(kind: Kind) -> Node {
        Node {
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 1,
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
            blocks: 0,
            flags: 0,
        }
    }

    pub fn has_word(&self, w: &str) -> bool {
        self.words.iter().any(|x| x == w)
    }

    /// An xattr by its on-disk name, whether the tree shows it as itself or
    /// decoded into a word (`trusted.overlay.opaque`, `trusted.overlay.overlay.x`).
    pub fn xattr(&self, name: &str) -> Option<&[u8]> {
        self.xattrs.get(name).or_else(|| self.overlay_xattrs.get(name)).map(Vec::as_slice)
    }
}

/// Contents up to this size are kept (and shown inline when printable).
pub const KEEP_CONTENT: u64 = 1 << 16;

/// Files larger than this get a digest of their non-zero blocks
/// ([`data_digest`]) instead of a SHA-256 of every byte: a 900 GiB sparse
/// file is hashed in the time its data takes, not its size.
pub const LARGE_FILE: u64 = 64 << 20;

/// How a data digest is marked in [`Node::sha256`] (rendered `data-sha256=`).
const DATA_DIGEST: &str = "data:";

/// The first 16 hex digits of a SHA-256 over every 4 KiB block of the file
/// that holds a non-zero byte, each preceded by its offset. Holes (found
/// with SEEK_DATA/SEEK_HOLE and never read) and zero blocks count alike, so
/// the digest does not depend on how sparsely a filesystem stored the file.
///
/// `None` (the file shows its size only) where the work would be unbounded:
/// a file mostly holes on a filesystem that cannot say where they are
/// (fuse-overlayfs' merged view reports all of it as data), or more than
/// [`DIGEST_BUDGET`] bytes of data.
fn data_digest(f: &OwnedFd, size: i64, blocks: i64) -> Result<Option<String>, Errno> {
    const BLOCK: i64 = 4096;
    let allocated = blocks.saturating_mul(512);
    let mut budget = DIGEST_BUDGET;
    let raw = f.as_raw_fd();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut at: i64 = 0;
    loop {
        let data = unsafe { libc::lseek(raw, at, libc::SEEK_DATA) };
        if data < 0 {
            match Errno::last() {
                Errno::ENXIO => break, // no data past `at`
                e => return Err(e),
            }
        }
        let hole = unsafe { libc::lseek(raw, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(Errno::last());
        }
        let extent = hole - data;
        if extent > allocated.saturating_mul(2).max(LARGE_FILE as i64) && extent > size / 2 || extent > budget {
            return Ok(None);
        }
        budget -= extent;
        // Whole blocks: a hole's edge need not be block-aligned.
        let (mut pos, end) = (data / BLOCK * BLOCK, (hole + BLOCK - 1) / BLOCK * BLOCK);
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = nix::sys::uio::pread(f, &mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            for (k, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    hasher.update((pos as u64 + (k as u64) * BLOCK as u64).to_le_bytes());
                    hasher.update(block);
                }
            }
            pos += n as i64;
        }
        at = end.max(hole);
    }
    Ok(Some(short_hex(&hasher.finalize())))
}

/// The most data [`data_digest`] reads from one file.
const DIGEST_BUDGET: i64 = 4 << 30;
const INLINE: usize = 64;

/// A captured tree: path → node, paths absolute inside the tree (`/` is the root).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    /// The overlay xattr prefixes decoded into words (the capture's dialect).
    #[serde(skip)]
    pub decoded: &'static [&'static str],
}

/// Sorts paths by components, so that `/a/b` comes before `/a-b`.
pub fn component_key(p: &str) -> Vec<&str> {
    p.split('/').filter(|c| !c.is_empty()).collect()
}

/// The order of [`component_key`], without allocating.
pub fn by_components(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').filter(|c| !c.is_empty()).cmp(b.split('/').filter(|c| !c.is_empty()))
}

impl Tree {
    /// Paths in canonical order: root first, then by components.
    pub fn ordered(&self) -> Vec<(&String, &Node)> {
        let mut v: Vec<(&String, &Node)> = self.nodes.iter().collect();
        v.sort_by(|a, b| by_components(a.0, b.0));
        v
    }

    /// The canonical text: one line per path.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (p, n) in self.ordered() {
            out.push_str(&render_line(p, n, false));
            out.push('\n');
        }
        out
    }

    /// Like [`Tree::render`], with full content hashes and times, to prove a tree unchanged.
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        for (p, n) in self.ordered() {
            out.push_str(&render_line(p, n, true));
            out.push('\n');
        }
        out
    }
}

fn render_line(path: &str, n: &Node, exact: bool) -> String {
    let mut s = quote_path(path);
    if n.kind == Kind::Whiteout {
        s.push_str(" whiteout");
    } else {
        s.push_str(&format!(" {} {:04o} {}:{}", n.kind.name(), n.mode, n.uid, n.gid));
    }
    match n.kind {
        Kind::File => {
            s.push_str(&format!(" size={}", n.size));
            match &n.content {
                Some(c)
                    if c.len() <= INLINE
                        && std::str::from_utf8(c)
                            .is_ok_and(|t| !t.chars().any(|ch| ch.is_control() && ch != '\n' && ch != '\t')) =>
                {
                    s.push_str(&format!(" {}", dsl::text::quote(c)));
                }
                _ if n.size > 0 => match n.sha256.as_deref().map(|h| h.strip_prefix(DATA_DIGEST).ok_or(h)) {
                    Some(Ok(h)) => s.push_str(&format!(" data-sha256={h}")),
                    Some(Err(h)) => s.push_str(&format!(" sha256={h}")),
                    None => {}
                },
                _ => {}
            }
        }
        Kind::Symlink => {
            if let Some(t) = &n.target {
                s.push_str(&format!(" -> {}", dsl::text::quote(t)));
            }
        }
        Kind::Char | Kind::Block => {
            if let Some((a, b)) = n.rdev {
                s.push_str(&format!(" {a}:{b}"));
            }
        }
        _ => {}
    }
    if let Some(g) = n.link_group {
        s.push_str(&format!(" links=#{g}"));
    }
    for w in &n.words {
        s.push(' ');
        s.push_str(w);
    }
    for (k, v) in &n.xattrs {
        s.push_str(&format!(" xattr:{k}={}", dsl::text::quote(v)));
    }
    if exact {
        s.push_str(&format!(" nlink={} mtime={}.{:09}", n.nlink, n.mtime.0, n.mtime.1));
    }
    s
}

fn quote_path(p: &str) -> String {
    if p.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
        dsl::text::quote(p.as_bytes())
    } else {
        p.to_string()
    }
}

/// The whiteout prefix and the opaque marker of the OCI image spec, which
/// fuse-overlayfs also writes on disk where it cannot make devices.
pub const WHITEOUT: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

/// The opaque-directory xattr of the kernel's overlay: as root, and with `userxattr`.
pub const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
pub const OPAQUE_USER: &str = "user.overlay.opaque";

/// A SHA-256 as trees show it: its first 8 bytes in hex (a file's content,
/// a value too long to show).
pub fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A tree that could not be captured: where, and the system's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {errno}")]
pub struct TreeError {
    pub what: String,
    pub errno: Errno,
}

/// Captures the tree under `root` without following any symlink.
pub fn capture(root: &Path, dialect: Dialect) -> Result<Tree, TreeError> {
    capture_with(root, dialect, true)
}

/// Like [`capture`]; without `contents`, files are not read (no content, no
/// hash): what a layer export needs, at the cost of a `stat` per path.
pub fn capture_with(root: &Path, dialect: Dialect, contents: bool) -> Result<Tree, TreeError> {
    let fd = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| TreeError { what: format!("open {}", root.display()), errno })?;
    let mut raw: Vec<(String, Node)> = Vec::new();
    let st =
        nix::sys::stat::fstat(&fd).map_err(|errno| TreeError { what: format!("stat {}", root.display()), errno })?;
    let root_node = node_from_stat(&st, &fd, None, dialect, contents)
        .map_err(|errno| TreeError { what: root.display().to_string(), errno })?;
    raw.push(("/".into(), root_node));
    walk(&fd, "", dialect, contents, &mut raw, 0)
        .map_err(|(what, errno)| TreeError { what: format!("walking {}: {what}", root.display()), errno })?;
    let mut tree = Tree { decoded: dialect.prefixes(), ..Tree::default() };
    // fuse-overlayfs marks opaque directories with a `.wh..wh..opq` file and a
    // `.wh..opq` whiteout (beside the xattr), and records whiteouts as
    // `.wh.NAME` files when it cannot make devices.
    let mut opaque_dirs = Vec::new();
    for (path, mut node) in raw {
        if dialect == Dialect::Fuse {
            let (parent, name) = split(&path);
            if name == OPAQUE || name == ".wh..opq" {
                opaque_dirs.push(parent.to_string());
                continue;
            }
            if let Some(real) = name.strip_prefix(WHITEOUT) {
                node.kind = Kind::Whiteout;
                let p = if parent == "/" { format!("/{real}") } else { format!("{parent}/{real}") };
                tree.nodes.insert(p, node);
                continue;
            }
        }
        tree.nodes.insert(path, node);
    }
    for d in opaque_dirs {
        if let Some(n) = tree.nodes.get_mut(&d) {
            if !n.has_word("opaque") {
                n.words.insert(0, "opaque".into());
            }
        }
    }
    assign_link_groups(&mut tree);
    Ok(tree)
}

fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(0) => ("/", &p[1..]),
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("/", p),
    }
}

const MAX_DEPTH: usize = 256;

/// A failed step of a walk: what was done, to which path of the tree.
type WalkError = (String, Errno);

fn walk(
    dir: &OwnedFd,
    prefix: &str,
    dialect: Dialect,
    contents: bool,
    out: &mut Vec<(String, Node)>,
    depth: usize,
) -> Result<(), WalkError> {
    let here = || if prefix.is_empty() { "/".to_string() } else { prefix.to_string() };
    if depth > MAX_DEPTH {
        return Err((format!("{}: deeper than {MAX_DEPTH} directories", here()), Errno::ELOOP));
    }
    let names = list_dir(dir).map_err(|e| (format!("readdir {}", here()), e))?;
    for name in names {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&name));
        let st = fstatat(dir, sys::os(&name), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| (format!("lstat {path} (an entry readdir listed)"), e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        if kind == SFlag::S_IFDIR {
            let child = nix::fcntl::openat(
                dir,
                sys::os(&name),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| (format!("open {path}"), e))?;
            let node = node_from_stat(&st, &child, None, dialect, contents).map_err(|e| (path.clone(), e))?;
            out.push((path.clone(), node));
            walk(&child, &path, dialect, contents, out, depth + 1)?;
        } else {
            let node = node_from_stat(&st, dir, Some(&name), dialect, contents).map_err(|e| (path.clone(), e))?;
            out.push((path, node));
        }
    }
    Ok(())
}

/// Entry names of a directory, sorted, without `.` and `..`.
pub fn list_dir(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = sys::getdents(dir)?;
    names.retain(|n| n != b"." && n != b"..");
    names.sort();
    Ok(names)
}

/// Builds a node; `name` is `Some` for a non-directory entry of `fd`, `None`
/// when `fd` is the object itself (a directory).
fn node_from_stat(
    st: &FileStat,
    fd: &OwnedFd,
    name: Option<&[u8]>,
    dialect: Dialect,
    contents: bool,
) -> Result<Node, Errno> {
    let fmt = st.st_mode & libc::S_IFMT;
    let mut kind = match fmt {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::Char,
        libc::S_IFBLK => Kind::Block,
        _ => Kind::Socket,
    };
    let rdev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    if kind == Kind::Char && rdev == (0, 0) && dialect != Dialect::Plain {
        kind = Kind::Whiteout;
    }
    let xpath = match name {
        Some(n) => Some(sys::fd_child_path(fd.as_raw_fd(), n)?),
        None => None,
    };
    let mut xattrs = BTreeMap::new();
    let mut overlay_xattrs = BTreeMap::new();
    let mut words = Vec::new();
    let mut raw_words: Vec<(u8, String)> = Vec::new();
    if kind != Kind::Socket {
        let listed = match (&xpath, name) {
            (Some(p), Some(n)) => sys::listxattr_at(fd.as_raw_fd(), n).unwrap_or_else(|| sys::llistxattr(p)),
            (Some(p), None) => sys::llistxattr(p),
            (None, _) => sys::flistxattr(fd.as_raw_fd()),
        };
        let names = match listed {
            Ok(n) => n,
            Err(Errno::ENOTSUP) => Vec::new(),
            Err(e) => return Err(e),
        };
        for xn in names.into_iter().filter(|n| !host_label(n)) {
            let got = match &xpath {
                Some(p) => sys::lgetxattr(p, &xn),
                None => sys::fgetxattr(fd.as_raw_fd(), &xn),
            };
            let value = match got {
                Ok(v) => v,
                Err(Errno::ENODATA) => continue,
                Err(e) => return Err(e),
            };
            let xs = String::from_utf8_lossy(&xn).into_owned();
            match dialect.prefixes().iter().find_map(|p| xs.strip_prefix(p)) {
                Some(suffix) => {
                    match decode(suffix, &value) {
                        Decoded::Word(rank, w) => raw_words.push((rank, w)),
                        Decoded::Whiteout => kind = Kind::Whiteout,
                    }
                    overlay_xattrs.insert(xs, value);
                }
                None => {
                    xattrs.insert(xs, value);
                }
            }
        }
    }
    raw_words.sort();
    raw_words.dedup();
    words.extend(raw_words.into_iter().map(|(_, w)| w));
    // A regular file is opened once, for its flags and its content.
    let file = if kind == Kind::File && contents {
        let name = name.unwrap_or(b".");
        match nix::fcntl::openat(
            fd,
            sys::os(name),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(f) => Some(f),
            // A file we may not read (mode 0000 as a non-root user): shape only.
            Err(Errno::EACCES) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // Inode flags of files and directories; 0 where the filesystem has none (ENOTTY).
    let flags = match (&file, kind, name) {
        (Some(f), _, _) => sys::inode_flags(f).unwrap_or(0),
        (None, Kind::Dir, None) => sys::inode_flags(fd).unwrap_or(0),
        _ => 0,
    };
    let (content, sha256) = match &file {
        Some(f) if st.st_size as u64 > LARGE_FILE => {
            (None, data_digest(f, st.st_size, st.st_blocks)?.map(|h| format!("{DATA_DIGEST}{h}")))
        }
        Some(f) => {
            let mut hasher = Sha256::new();
            let mut kept = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = nix::unistd::read(f, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                if (kept.len() as u64) < KEEP_CONTENT {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            let h = short_hex(&hasher.finalize());
            let keep = (st.st_size as u64) <= KEEP_CONTENT;
            (keep.then_some(kept), Some(h))
        }
        None => (None, None),
    };
    let target = if kind == Kind::Symlink {
        let name = name.unwrap_or(b".");
        Some(nix::fcntl::readlinkat(fd, sys::os(name))?.as_encoded_bytes().to_vec())
    } else {
        None
    };
    Ok(Node {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: if kind == Kind::File { st.st_size as u64 } else { 0 },
        nlink: st.st_nlink,
        content,
        sha256,
        target,
        rdev: matches!(kind, Kind::Char | Kind::Block).then_some(rdev),
        words,
        xattrs,
        overlay_xattrs,
        link_group: None,
        ino: (st.st_dev, st.st_ino),
        mtime: (st.st_mtime, st.st_mtime_nsec),
        blocks: st.st_blocks as u64,
        flags,
    })
}

/// Labels the host's security modules put on every file (SELinux, Smack,
/// AppArmor, IMA, EVM): the machine's policy, not the overlay's semantics,
/// so trees leave them out and agree between hosts with and without them.
/// `security.capability` stays: file capabilities are the scenario's.
fn host_label(name: &[u8]) -> bool {
    name == b"security.selinux"
        || name.starts_with(b"security.SMACK64")
        || name == b"security.apparmor"
        || name == b"security.ima"
        || name == b"security.evm"
}

enum Decoded {
    /// A word and its rank in the fixed order of words.
    Word(u8, String),
    Whiteout,
}

/// Overlay xattr (without its dialect prefix) → word; values that change from
/// run to run (origin and uuid file handles) become bare words.
fn decode(suffix: &str, value: &[u8]) -> Decoded {
    let q = |v: &[u8]| dsl::text::quote(v);
    match suffix {
        "whiteout" => Decoded::Whiteout,
        "opaque" if value == b"y" => Decoded::Word(0, "opaque".into()),
        "opaque" => Decoded::Word(0, format!("opaque={}", q(value))),
        "redirect" => Decoded::Word(1, format!("redirect={}", q(value))),
        "metacopy" => Decoded::Word(2, metacopy_word(value)),
        "origin" => Decoded::Word(3, "origin".into()),
        "impure" => Decoded::Word(4, "impure".into()),
        // The value (the overlay's link count relative to the upper file's) is
        // rewritten at times that depend on which inodes the kernel evicted
        // (a drop of the caches, memory pressure): shown present, not valued.
        "nlink" => Decoded::Word(5, "nlink".into()),
        "upper" => Decoded::Word(6, "upper".into()),
        "uuid" => Decoded::Word(7, "uuid".into()),
        "protattr" => Decoded::Word(8, format!("protattr={}", q(value))),
        "whiteouts" => Decoded::Word(9, "whiteouts".into()),
        other => Decoded::Word(10, format!("overlay.{other}={}", q(value))),
    }
}

/// The metacopy xattr: empty, or (from 6.6, `verity=on`) version 0, its
/// length, flags and the fs-verity digest of the data file, shown as
/// `metacopy=sha256:HEX` (the digest `measure` gives).
fn metacopy_word(value: &[u8]) -> String {
    match value {
        [] => "metacopy".into(),
        [0, len, 0, algo, digest @ ..] if usize::from(*len) == value.len() && !digest.is_empty() => {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            match algo {
                1 => format!("metacopy=sha256:{hex}"),
                2 => format!("metacopy=sha512:{hex}"),
                n => format!("metacopy=algorithm-{n}:{hex}"),
            }
        }
        v => format!("metacopy={}", dsl::text::quote(v)),
    }
}

/// Files that share an inode within the tree get the same group number, in path order.
fn assign_link_groups(tree: &mut Tree) {
    let mut count: HashMap<(u64, u64), u32> = HashMap::new();
    for n in tree.nodes.values() {
        if n.kind != Kind::Dir && n.kind != Kind::Whiteout && n.nlink > 1 {
            *count.entry(n.ino).or_default() += 1;
        }
    }
    let order: Vec<String> = tree.ordered().into_iter().map(|(p, _)| p.clone()).collect();
    let mut groups: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next = 1;
    for p in order {
        let Some(n) = tree.nodes.get_mut(&p) else { continue };
        if count.get(&n.ino).copied().unwrap_or(0) > 1 {
            let g = *groups.entry(n.ino).or_insert_with(|| {
                next += 1;
                next - 1
            });
            n.link_group = Some(g);
        }
    }
}

/// The line-by-line difference of two rendered trees (`-` only in `a`, `+` only in `b`).
pub fn diff(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let Some(ops) = line_diff(&al, &bl) else {
        return format!("(trees too large to diff: {} and {} lines)\n", al.len(), bl.len());
    };
    ops.iter().map(|(c, l)| format!("{c} {l}\n")).collect()
}

/// The longest common subsequence of two texts' lines as diff operations
/// (`' '` both, `'-'` only in `a`, `'+'` only in `b`). The common head and
/// tail are taken as they are; `None` when what is left between them is too
/// large for the table (over 4 million cells).
pub fn line_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Option<Vec<(char, &'a str)>> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..].iter().rev().zip(b[head..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let (n, m) = (am.len(), bm.len());
    if n.saturating_mul(m) > 4_000_000 {
        return None;
    }
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if am[i] == bm[j] { l[i + 1][j + 1] + 1 } else { l[i + 1][j].max(l[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = a[..head].iter().map(|x| (' ', *x)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && am[i] == bm[j] {
            ops.push((' ', am[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || l[i + 1][j] >= l[i][j + 1]) {
            ops.push(('-', am[i]));
            i += 1;
        } else {
            ops.push(('+', bm[j]));
            j += 1;
        }
    }
    ops.extend(a[a.len() - tail..].iter().map(|x| (' ', *x)));
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::host_label;

    #[test]
    fn host_security_labels_are_left_out_but_capabilities_stay() {
        assert!(host_label(b"security.selinux"));
        assert!(host_label(b"security.SMACK64EXEC"));
        assert!(!host_label(b"security.capability"));
        assert!(!host_label(b"user.selinux"));
    }
}
