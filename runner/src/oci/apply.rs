//! Applying an OCI layer to a directory in overlay form (whiteouts as 0/0
//! character devices, opaque directories as xattrs), refusing what a stranger's
//! layer may not say: forged overlay metadata, escapes, truncation, unknown
//! member types.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::member::{self, EntryKind, Marker};
use super::sparse::{check_sparse_map, pax_sparse, read_sparse_map_v1, PaxSparse};
use super::spec::{io, is_overlay_xattr, show, PAX_XATTR, WHITEOUT};
use super::stream::{copy_exact, open_layer, ReadFail, Stream, Tracked, HEADER_BUDGET};
use crate::error::OciError;
use crate::sys;

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
        ApplyOptions { opaque_xattr: crate::tree::OPAQUE_TRUSTED.into(), max_bytes: 8 << 30, allow_capabilities: false }
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
    match crate::sys::bad_parent(root, rel) {
        Some((at, true)) => Err(OciError::Refused(format!("{} goes through the symlink {}", what(), shown(&at)))),
        Some((at, false)) => {
            Err(OciError::Refused(format!("{} goes through {}, which is not a directory", what(), shown(&at))))
        }
        None => Ok(()),
    }
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
    /// Parent directories checked (no symlink, a directory) and made.
    dirs: HashSet<PathBuf>,
    /// Directories and their modes, set last (deepest first), so that a
    /// read-only directory can still receive its members.
    dir_modes: Vec<(PathBuf, u32, Option<TimeSpec>)>,
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

    /// Applies one member: its records checked, its path checked, then a
    /// marker (whiteout, opaque) or an entry of its type, with its owner,
    /// mode and xattrs.
    fn member<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), OciError> {
        self.members += 1;
        let h = entry.header().clone();
        let et = h.entry_type();
        let mut raw: Vec<u8> = entry.path_bytes().into_owned();
        let mut m = show(&raw);
        let (pax, xattrs) = self.records(&mut entry, &m)?;
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
        let Some(relp) = self.place(&raw, &m, et)? else { return Ok(()) };
        let dest = self.root.join(&relp);
        let regular = matches!(et, tar::EntryType::Regular | tar::EntryType::Continuous);
        let name = relp.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        if let Some(marked) = member::marker(&name) {
            if !regular {
                let what = if marked == Marker::Opaque { "an opaque marker" } else { "a whiteout" };
                return Err(self.refuse(&m, format_args!("is {what} but not a regular file")));
            }
            return self.marker(marked, &relp, &dest, &m);
        }
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
        let exists = std::fs::symlink_metadata(&dest);
        if !et.is_dir() && exists.is_ok() {
            return Err(self.refuse(&m, "comes after members inside it (its path is already a directory)"));
        }
        match member::entry_kind(et) {
            EntryKind::Dir => {
                match exists {
                    Ok(md) if md.is_dir() => {}
                    Ok(_) => return Err(self.refuse(&m, "is a directory over a non-directory")),
                    Err(_) => std::fs::create_dir(&dest).map_err(io(format!("mkdir {m}")))?,
                }
                self.dir_modes.push((dest.clone(), mode, mtime(&pax, &h)));
            }
            EntryKind::File => self.file(&mut entry, &dest, sparse.as_ref(), et.is_gnu_sparse(), &m)?,
            EntryKind::Symlink => {
                let t = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if t.is_empty() {
                    return Err(self.refuse(&m, "is a symlink to nothing"));
                }
                symlink(sys::os(&t), &dest).map_err(io(format!("symlink {m}")))?;
            }
            EntryKind::HardLink => return self.hard_link(&entry, &relp, &dest, &m),
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => self.device(&h, &dest, mode, &m)?,
            EntryKind::Global | EntryKind::Other(_) => {
                let t = et.as_byte();
                let t = if t.is_ascii_graphic() { format!("'{}'", t as char) } else { format!("{t}") };
                return Err(self.refuse(&m, format_args!("has the tar type {t}, which a layer cannot hold")));
            }
        }
        self.attributes(&dest, (uid, gid), mode, et, &xattrs, &m)?;
        if !et.is_dir() {
            set_mtime(&dest, mtime(&pax, &h))
                .map_err(|e| self.refuse(&m, format_args!("could not get its time: {e}")))?;
        }
        self.report.entries += 1;
        Ok(())
    }

    /// A member's PAX records, and the xattrs among them. Forged overlay
    /// metadata is refused on any member, even where it would be ignored.
    #[allow(clippy::type_complexity)]
    fn records<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        m: &str,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>), OciError> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        match entry.pax_extensions() {
            Ok(Some(exts)) => {
                for x in exts {
                    let x = x.map_err(|_| self.refuse(m, "has a malformed PAX record"))?;
                    pax.push((x.key_bytes().to_vec(), x.value_bytes().to_vec()));
                }
            }
            Ok(None) => {}
            Err(e) => return Err(self.stream_error(&e, Some(m))),
        }
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            pax.iter().filter_map(|(k, v)| k.strip_prefix(PAX_XATTR).map(|n| (n.to_vec(), v.clone()))).collect();
        for (name, _) in &xattrs {
            if let Some(why) = xattr_refusal(name, self.opts.allow_capabilities) {
                return Err(
                    self.refuse(m, format_args!("has the xattr {} (a PAX SCHILY.xattr record): {why}", show(name)))
                );
            }
        }
        Ok((pax, xattrs))
    }

    /// The member's path inside the root, checked (no `..`, no symlink or
    /// whiteout on the way, not twice, not whited out) with its parents
    /// made; `None` for the root itself, whose metadata a layer does not carry.
    fn place(&mut self, raw: &[u8], m: &str, et: tar::EntryType) -> Result<Option<PathBuf>, OciError> {
        let what = || format!("member {m}");
        let relp = member_path(raw, &what)?;
        if relp.as_os_str().is_empty() {
            if !et.is_dir() {
                return Err(self.refuse(m, "names the layer's root but is not a directory"));
            }
            return Ok(None);
        }
        let comps: Vec<&[u8]> = relp.iter().map(|c| c.as_bytes()).collect();
        if let Some(c) = comps[..comps.len() - 1].iter().find(|c| c.starts_with(WHITEOUT.as_bytes())) {
            return Err(self.refuse(
                m,
                format_args!("is inside {}, a whiteout name (fuse-overlayfs would read it as one)", show(c)),
            ));
        }
        if self.whited.contains(&relp) {
            return Err(self.refuse(m, "names a path the same layer whites out"));
        }
        if !self.seen.insert(relp.clone()) {
            return Err(self.refuse(m, "appears twice (the spec forbids duplicates)"));
        }
        // Parents are checked and made once: a directory this apply has
        // checked stays one (no member replaces or removes anything).
        let parent = relp.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && !self.dirs.contains(parent) {
            no_symlink_parents(self.root, &relp, &what)?;
            mkdir_parents(self.root, &relp)?;
            for a in parent.ancestors().take_while(|a| !a.as_os_str().is_empty()) {
                if !self.dirs.insert(a.to_path_buf()) {
                    break;
                }
            }
        }
        Ok(Some(relp))
    }

    /// An opaque marker (its directory gets the opaque xattr) or a whiteout
    /// (a 0/0 character device in place of the name).
    fn marker(&mut self, marked: Marker<'_>, relp: &Path, dest: &Path, m: &str) -> Result<(), OciError> {
        let real = match marked {
            Marker::Opaque => {
                let d = dest.parent().unwrap_or(self.root);
                let c = sys::path_c(d).map_err(|e| self.refuse(m, e))?;
                sys::setxattr(&c, self.opts.opaque_xattr.as_bytes(), b"y", false).map_err(|e| {
                    self.refuse(
                        m,
                        format_args!("could not mark its directory opaque ({}): {e}", self.opts.opaque_xattr),
                    )
                })?;
                self.report.opaque_dirs += 1;
                return Ok(());
            }
            Marker::Whiteout(real) => real,
        };
        if real.is_empty() || real == b"." || real == b".." {
            return Err(self.refuse(m, "whites out no name"));
        }
        let target = relp.with_file_name(sys::os(real));
        if self.seen.contains(&target) || !self.whited.insert(target.clone()) {
            return Err(self.refuse(m, "whites out a path the same layer also holds"));
        }
        let p = self.root.join(&target);
        nix::sys::stat::mknod(&p, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
            if e == nix::errno::Errno::EEXIST {
                self.refuse(m, "whites out a path the same layer also holds")
            } else {
                self.refuse(m, format_args!("could not be made a whiteout: {e} (whiteouts need CAP_MKNOD)"))
            }
        })?;
        self.report.whiteouts += 1;
        Ok(())
    }

    /// A regular file's data: whole, expanded (GNU sparse `S`: the tar crate
    /// fills the holes), or chunk by chunk (PAX sparse: only the chunks are
    /// stored), within the layer's byte budget.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dest: &Path,
        sparse: Option<&PaxSparse>,
        gnu_sparse: bool,
        m: &str,
    ) -> Result<(), OciError> {
        let size = match sparse {
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
            .open(dest)
            .map_err(io(format!("creating {m}")))?;
        // The data may be large: no header budget while reading it.
        self.st.limit.set(u64::MAX);
        let writing = |e: std::io::Error| OciError::Io { what: format!("writing {m}"), source: e };
        let fail = |this: &Self, r: Result<ReadFail, std::io::Error>| match r {
            Ok(f) => this.read_fail(f, m),
            Err(e) => writing(e),
        };
        match sparse {
            None => copy_exact(entry, &mut f, size, gnu_sparse).map_err(|r| fail(self, r))?,
            Some(s) => {
                let stored = entry.size();
                let (map, used) = match &s.map {
                    Some(map) => (map.clone(), 0),
                    None => read_sparse_map_v1(entry, stored).map_err(|r| self.read_fail(r, m))?,
                };
                check_sparse_map(&map, s.size, stored - used).map_err(|why| self.refuse(m, why))?;
                for (off, len) in map {
                    f.seek(std::io::SeekFrom::Start(off)).map_err(writing)?;
                    copy_exact(entry, &mut f, len, false).map_err(|r| fail(self, r))?;
                }
            }
        }
        if sparse.is_some() || gnu_sparse {
            f.set_len(size).map_err(writing)?;
        }
        Ok(())
    }

    /// A hard link to a member before it (a file of this layer, not whited out).
    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        relp: &Path,
        dest: &Path,
        m: &str,
    ) -> Result<(), OciError> {
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
        std::fs::hard_link(&target, dest).map_err(io(format!("link {m}")))?;
        self.report.entries += 1;
        Ok(())
    }

    /// A fifo, or a device node (root only; never the overlay's 0/0 whiteout).
    fn device(&self, h: &tar::Header, dest: &Path, mode: u32, m: &str) -> Result<(), OciError> {
        let et = h.entry_type();
        let (raw_major, raw_minor) = match (h.as_ustar(), h.as_gnu()) {
            (Some(u), _) => (u.dev_major.to_vec(), u.dev_minor.to_vec()),
            (_, Some(g)) => (g.dev_major.to_vec(), g.dev_minor.to_vec()),
            _ => (Vec::new(), Vec::new()),
        };
        let major = numeric(h.device_major().map(|d| d.unwrap_or(0).into()), &raw_major)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| self.refuse(m, "has a device major that is not a number"))?;
        let minor = numeric(h.device_minor().map(|d| d.unwrap_or(0).into()), &raw_minor)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| self.refuse(m, "has a device minor that is not a number"))?;
        if et.is_character_special() && (major, minor) == (0, 0) {
            return Err(self.refuse(
                m,
                "is a 0/0 character device, the overlay's whiteout: a layer whites out only with a .wh.NAME member",
            ));
        }
        if !et.is_fifo() && !self.root_user {
            return Err(self.refuse(m, "is a device file, which only root may create"));
        }
        let kind = if et.is_fifo() {
            SFlag::S_IFIFO
        } else if et.is_character_special() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        let dev = nix::sys::stat::makedev(major.into(), minor.into());
        nix::sys::stat::mknod(dest, kind, Mode::from_bits_truncate(mode), dev)
            .map_err(|e| self.refuse(m, format_args!("could not be made: mknod: {e}")))
    }

    /// The owner (as root), the mode (directories get theirs at the end) and
    /// the xattrs of an entry just made.
    fn attributes(
        &self,
        dest: &Path,
        (uid, gid): (u32, u32),
        mode: u32,
        et: tar::EntryType,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        m: &str,
    ) -> Result<(), OciError> {
        if self.root_user {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                dest,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.refuse(m, format_args!("could not be given {uid}:{gid}: chown: {e}")))?;
        }
        if !et.is_symlink() && !et.is_dir() {
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).map_err(io(format!("chmod {m}")))?;
        }
        if !xattrs.is_empty() {
            let c = sys::path_c(dest).map_err(|e| self.refuse(m, e))?;
            for (xname, value) in xattrs {
                sys::setxattr(&c, xname, value, false).map_err(|e| {
                    self.refuse(m, format_args!("could not get the xattr {}: setxattr: {e}", show(xname)))
                })?;
            }
        }
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
        // Directories last: every entry made in one changed its times.
        for (d, mode, t) in self.dir_modes.iter().rev() {
            let m = shown(d.strip_prefix(self.root).unwrap_or(d));
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode)).map_err(io(format!("chmod {m}")))?;
            set_mtime(d, *t).map_err(|e| OciError::Refused(format!("member {m} could not get its time: {e}")))?;
        }
        Ok(())
    }
}

/// A member's modification time: its PAX `mtime` record (seconds, maybe
/// negative, with a fraction) or else its header's; `None` when neither is a
/// number.
fn mtime(pax: &[(Vec<u8>, Vec<u8>)], h: &tar::Header) -> Option<TimeSpec> {
    let record = pax.iter().rev().find(|(k, _)| k == b"mtime").and_then(|(_, v)| std::str::from_utf8(v).ok());
    if let Some(r) = record {
        let (int, frac) = r.split_once('.').unwrap_or((r, ""));
        let secs: i64 = int.parse().ok()?;
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        let nanos: i64 = digits.parse().ok()?;
        if int.starts_with('-') && nanos > 0 {
            // -1.25 is 1.25 s before the epoch: -2 s plus 0.75 s.
            return Some(TimeSpec::new(secs.checked_sub(1)?, 1_000_000_000 - nanos));
        }
        return Some(TimeSpec::new(secs, nanos));
    }
    let secs = numeric(h.mtime(), &h.as_old().mtime)?;
    Some(TimeSpec::new(i64::try_from(secs).ok()?, 0))
}

/// Sets `path`'s access and modification times to `t` (the symlink itself,
/// not its target); nothing when `t` is `None`.
fn set_mtime(path: &Path, t: Option<TimeSpec>) -> nix::Result<()> {
    match t {
        Some(t) => nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        ),
        None => Ok(()),
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
        dirs: HashSet::new(),
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
    let _registered = staging.0.as_deref().map(crate::sys::cleanup::register);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_sets_only_the_xattrs_it_may() {
        for kept in ["user.a", "trusted.b", "security.selinux", "system.posix_acl_access", "system.posix_acl_default"] {
            assert_eq!(xattr_refusal(kept.as_bytes(), false), None, "{kept}");
        }
        for forged in
            ["trusted.overlay.opaque", "user.overlay.redirect", "user.fuseoverlayfs.x", "user.containers.override_stat"]
        {
            assert!(xattr_refusal(forged.as_bytes(), true).is_some_and(|w| w.contains("overlay metadata")), "{forged}");
        }
        assert!(xattr_refusal(b"security.capability", false).is_some());
        assert_eq!(xattr_refusal(b"security.capability", true), None);
        assert!(xattr_refusal(b"security.ima", true).is_some_and(|w| w.contains("security label")));
        assert!(xattr_refusal(b"system.other", true).is_some_and(|w| w.contains("no namespace")));
        assert!(xattr_refusal(b"", true).is_some() && xattr_refusal(b"user.\0x", true).is_some());
        assert!(xattr_refusal(&[b'u'; 256], true).is_some(), "longer than the kernel allows");
    }

    #[test]
    fn member_paths_stay_inside_the_layer() {
        let what = || "member m".to_string();
        assert_eq!(member_path(b"./a/./b/", &what).ok(), Some(PathBuf::from("a/b")));
        assert_eq!(member_path(b"./", &what).ok(), Some(PathBuf::new()), "the root itself");
        let refused = |raw: &[u8]| member_path(raw, &what).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(refused(b"/etc/passwd"), "member m is an absolute path");
        assert_eq!(refused(b"a/../../x"), "member m climbs out of the layer with `..`");
    }

    #[test]
    fn numeric_fields_may_be_empty_but_not_words() {
        assert_eq!(numeric(Ok(7), b"0000007\0"), Some(7));
        assert_eq!(numeric(Err(std::io::Error::other("x")), b"\0\0\0\0"), Some(0), "unused: all NUL");
        assert_eq!(numeric(Err(std::io::Error::other("x")), b"   \0"), Some(0), "unused: spaces");
        assert_eq!(numeric(Err(std::io::Error::other("x")), b"12x\0"), None);
    }
}
