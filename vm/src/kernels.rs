//! The kernel catalog (`vm/kernels.toml`), its lock file (`vm/kernels.lock`:
//! exact packages, versions and SHA256 sums), and the verified cache of
//! downloaded and extracted kernels: `debs/<sha256>.deb`, and
//! `kernels/<release>/` with `vmlinuz`, `modules/<release>/` and the
//! `manifest` its files are checked against (see [`crate::manifest`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::debian::{self, Package};
use crate::manifest::{self, Manifest};
pub use crate::manifest::{Depth, Problem};
use crate::VmError;

/// One catalog entry: a kernel series from a Debian suite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The series and the target name: `5.10`, `7.3`.
    pub name: String,
    pub suite: String,
    #[serde(default = "default_flavour")]
    pub flavour: String,
}

fn default_flavour() -> String {
    "cloud-amd64".into()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(rename = "kernel")]
    pub kernels: Vec<CatalogEntry>,
}

/// How a kernel is packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `linux-image-REL-FLAVOUR-unsigned`: `/boot/vmlinuz-REL` and `/lib/modules/REL`.
    Unsigned,
    /// `linux-binary-REL-FLAVOUR` (vmlinuz under `/usr/lib/modules/REL/`), `linux-modules-REL-FLAVOUR`
    /// and `linux-base-REL-FLAVOUR` (modules.order, modules.builtin).
    Split,
}

/// A resolved kernel: exactly which packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedKernel {
    pub name: String,
    pub suite: String,
    /// The kernel release (`uname -r`), e.g. `5.10.0-32-cloud-amd64`.
    pub release: String,
    pub version: String,
    pub layout: Layout,
    #[serde(rename = "package")]
    pub packages: Vec<Package>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Lock {
    #[serde(rename = "kernel", default)]
    pub kernels: Vec<LockedKernel>,
}

/// The catalog and lock ovlc was built with (`vm/kernels.toml`,
/// `vm/kernels.lock`), so that an installed `ovlc` needs no checkout.
const BUILTIN_CATALOG: &str = include_str!("../kernels.toml");
const BUILTIN_LOCK: &str = include_str!("../kernels.lock");

/// Where the kernel catalog and its lock come from: the ones built into
/// ovlc, or a user's catalog file with its lock beside it (`kernels.lock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogSource {
    Builtin,
    File(PathBuf),
}

impl CatalogSource {
    /// `--catalog FILE`, or the built-in one without it.
    pub fn from_arg(file: Option<&Path>) -> CatalogSource {
        file.map_or(CatalogSource::Builtin, |f| CatalogSource::File(f.to_path_buf()))
    }

    pub fn catalog(&self) -> Result<Catalog, VmError> {
        match self {
            CatalogSource::Builtin => parse_toml(BUILTIN_CATALOG, "the built-in catalog"),
            CatalogSource::File(p) => read_catalog(p),
        }
    }

    pub fn lock(&self) -> Result<Lock, VmError> {
        match self {
            CatalogSource::Builtin => parse_toml(BUILTIN_LOCK, "the built-in lock"),
            CatalogSource::File(p) => read_lock(&p.with_file_name("kernels.lock")),
        }
    }

    /// The lock file `ovlc kernels update` writes (none for the built-in catalog).
    pub fn lock_path(&self) -> Option<PathBuf> {
        match self {
            CatalogSource::Builtin => None,
            CatalogSource::File(p) => Some(p.with_file_name("kernels.lock")),
        }
    }
}

fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, VmError> {
    toml::from_str(text).map_err(|e| VmError::Catalog(format!("{what}: {e}")))
}

pub fn read_catalog(path: &Path) -> Result<Catalog, VmError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| VmError::Io { what: path.display().to_string(), source: e })?;
    toml::from_str(&text).map_err(|e| VmError::Catalog(format!("{}: {e}", path.display())))
}

pub fn read_lock(path: &Path) -> Result<Lock, VmError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| VmError::Io { what: path.display().to_string(), source: e })?;
    toml::from_str(&text).map_err(|e| VmError::Catalog(format!("{}: {e}", path.display())))
}

pub fn write_lock(path: &Path, lock: &Lock) -> Result<(), VmError> {
    let body = toml::to_string_pretty(lock).map_err(|e| VmError::Catalog(e.to_string()))?;
    let text = format!(
        "# Written by `ovlc kernels update`: the exact Debian packages of each VM kernel.\n\
         # `ovlc kernels fetch` downloads these and checks their SHA256 sums.\n\n{body}"
    );
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text).map_err(|e| VmError::Io { what: tmp.display().to_string(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| VmError::Io { what: path.display().to_string(), source: e })
}

/// Does `rel` belong to the series `name` (`6.1` takes `6.1.0-10`, not `6.12.3`)?
fn in_series(rel: &str, name: &str) -> bool {
    rel.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-', '+', '~']))
}

/// The newest kernel of a catalog entry in a suite's index, in either layout.
pub fn resolve(entry: &CatalogEntry, index: &[Package]) -> Result<LockedKernel, VmError> {
    let f = &entry.flavour;
    let mut candidates: Vec<LockedKernel> = Vec::new();
    for p in index {
        if let Some(rel) = p.name.strip_prefix("linux-image-").and_then(|r| r.strip_suffix(&format!("-{f}-unsigned"))) {
            if in_series(rel, &entry.name) {
                candidates.push(LockedKernel {
                    name: entry.name.clone(),
                    suite: entry.suite.clone(),
                    release: format!("{rel}-{f}"),
                    version: p.version.clone(),
                    layout: Layout::Unsigned,
                    packages: vec![p.clone()],
                });
            }
        }
        if let Some(rel) = p.name.strip_prefix("linux-binary-").and_then(|r| r.strip_suffix(&format!("-{f}"))) {
            if !in_series(rel, &entry.name) {
                continue;
            }
            // The split layout: the image, the modules, and linux-base with
            // modules.order and modules.builtin.
            let find = |n: String| index.iter().find(|m| m.name == n && m.version == p.version).cloned();
            if let (Some(m), Some(b)) =
                (find(format!("linux-modules-{rel}-{f}")), find(format!("linux-base-{rel}-{f}")))
            {
                candidates.push(LockedKernel {
                    name: entry.name.clone(),
                    suite: entry.suite.clone(),
                    release: format!("{rel}-{f}"),
                    version: p.version.clone(),
                    layout: Layout::Split,
                    packages: vec![p.clone(), m, b],
                });
            }
        }
    }
    candidates.sort_by(|a, b| debian::compare_versions(&b.version, &a.version).then_with(|| b.release.cmp(&a.release)));
    candidates.into_iter().next().ok_or_else(|| {
        VmError::Index(format!(
            "no {f} kernel of series {} in {} (neither linux-image-*-{f}-unsigned nor linux-binary-*-{f})",
            entry.name, entry.suite
        ))
    })
}

/// The mirror: `OVLC_DEBIAN_MIRROR`, else the machine's apt configuration.
pub fn mirror() -> Result<String, VmError> {
    if let Ok(m) = std::env::var(debian::MIRROR_ENV) {
        if !m.is_empty() {
            return Ok(m.trim_end_matches('/').to_string());
        }
    }
    debian::mirror_from_apt(Path::new("/")).ok_or_else(|| {
        VmError::Catalog(format!(
            "no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/: set {}=http://... to one",
            debian::MIRROR_ENV
        ))
    })
}

/// Resolves every catalog entry against the mirror's current indexes.
pub fn update(catalog: &Catalog, mirror: &str) -> Result<Lock, VmError> {
    let mut lock = Lock::default();
    let mut indexes: Vec<(String, Vec<Package>)> = Vec::new();
    for e in &catalog.kernels {
        if !indexes.iter().any(|(s, _)| *s == e.suite) {
            indexes.push((e.suite.clone(), debian::suite_packages(mirror, &e.suite)?));
        }
        let idx = indexes.iter().find(|(s, _)| *s == e.suite).map(|(_, i)| i.as_slice()).unwrap_or(&[]);
        lock.kernels.push(resolve(e, idx)?);
    }
    Ok(lock)
}

/// The cache directory: `$XDG_CACHE_HOME/ovlc`, else `~/.cache/ovlc`.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("ovlc");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/ovlc")
}

/// An exclusive lock on the cache, so that parallel runs share it safely.
pub struct CacheLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

impl std::fmt::Debug for CacheLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheLock")
    }
}

impl CacheLock {
    pub fn acquire(cache: &Path) -> Result<CacheLock, VmError> {
        std::fs::create_dir_all(cache).map_err(|e| VmError::Io { what: cache.display().to_string(), source: e })?;
        let p = cache.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| VmError::Io { what: p.display().to_string(), source: e })?;
        let flock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| VmError::Io { what: p.display().to_string(), source: e.into() })?;
        Ok(CacheLock { _flock: flock })
    }
}

/// A kernel ready to boot: its image and its module tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFiles {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `.../modules/<release>`, holding `modules.order`, `modules.builtin` and `kernel/`.
    pub modules: PathBuf,
}

/// Downloads (once) a verified `.deb` into the cache; a partial or corrupt
/// file is discarded and the download retried, never used. Call it under
/// [`CacheLock`].
pub fn fetch_deb(mirror: &str, p: &Package, cache: &Path) -> Result<PathBuf, VmError> {
    get_deb(mirror, p, cache).map(|(path, _)| path)
}

/// [`fetch_deb`], and whether it downloaded (rather than found a verified file).
fn get_deb(mirror: &str, p: &Package, cache: &Path) -> Result<(PathBuf, bool), VmError> {
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(|e| VmError::Io { what: dir.display().to_string(), source: e })?;
    let path = dir.join(format!("{}.deb", p.sha256));
    if let Ok(data) = std::fs::read(&path) {
        if debian::sha256_hex(&data) == p.sha256 {
            return Ok((path, false));
        }
        let _ = std::fs::remove_file(&path);
    }
    let url = format!("{mirror}/{}", p.filename);
    let mut last = None;
    for _ in 0..3 {
        match debian::fetch(&url) {
            Ok(data) => {
                let got = debian::sha256_hex(&data);
                if got != p.sha256 {
                    last = Some(VmError::Checksum { what: url.clone(), expected: p.sha256.clone(), got });
                    continue;
                }
                let tmp = Partial(dir.join(format!("{}.partial-{}", p.sha256, std::process::id())));
                std::fs::write(&tmp.0, &data)
                    .map_err(|e| VmError::Io { what: tmp.0.display().to_string(), source: e })?;
                std::fs::rename(&tmp.0, &path)
                    .map_err(|e| VmError::Io { what: path.display().to_string(), source: e })?;
                return Ok((path, true));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| VmError::Fetch { url, why: "failed".into() }))
}

/// A file or directory being written: removed when dropped (on success it
/// has been renamed away, or holds what it replaced).
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

fn remove_any(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
        Ok(_) => std::fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// Leftovers of fetches that died before cleaning up (`kernels/.REL.partial-PID`,
/// `debs/SHA.partial-PID`). Only a holder of the [`CacheLock`] writes them,
/// so to a holder of it every one is stale.
pub fn partials(cache: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["kernels", "debs"]
        .iter()
        .flat_map(|d| std::fs::read_dir(cache.join(d)).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Removes [`partials`]; call it under the [`CacheLock`]. Returns what it removed.
fn remove_partials(cache: &Path) -> Vec<PathBuf> {
    partials(cache).into_iter().filter(|p| remove_any(p)).collect()
}

/// Where a `.deb` member lands in the kernel directory, if anywhere.
fn kernel_member(path: &str, release: &str) -> Option<String> {
    let p = path.trim_start_matches("./");
    let p = p.strip_prefix("usr/").unwrap_or(p);
    if p == format!("boot/vmlinuz-{release}") || p == format!("lib/modules/{release}/vmlinuz") {
        return Some("vmlinuz".into());
    }
    p.strip_prefix(&format!("lib/modules/{release}/"))
        .filter(|r| !r.is_empty())
        .map(|r| format!("modules/{release}/{r}"))
}

/// What the cache holds of a locked kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheState {
    /// Extracted from the locked packages, and the files are as extracted
    /// (as closely as the check looked).
    Cached,
    /// Nothing extracted.
    Absent,
    /// A tree without a manifest: extracted by an ovlc from before
    /// manifests, or an extraction that never finished.
    NoManifest,
    /// The manifest cannot be read or is cut short.
    BadManifest(String),
    /// Extracted from other packages than the lock's (`name version` each).
    Outdated(Vec<String>),
    /// Files are missing, cut, changed or (to a full check) unexpected.
    Damaged(Vec<manifest::Problem>),
}

impl CacheState {
    pub fn is_cached(&self) -> bool {
        *self == CacheState::Cached
    }
}

impl std::fmt::Display for CacheState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheState::Cached => f.write_str("cached"),
            CacheState::Absent => f.write_str("not cached"),
            CacheState::NoManifest => {
                f.write_str("not cached: a tree without manifest (extracted by an older ovlc, or unfinished)")
            }
            CacheState::BadManifest(why) => write!(f, "damaged: the manifest is unusable ({why})"),
            CacheState::Outdated(had) => {
                write!(f, "outdated: extracted from {}, not the locked packages", had.join(", "))
            }
            CacheState::Damaged(problems) => {
                const SHOWN: usize = 3;
                f.write_str("damaged: ")?;
                for (i, p) in problems.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                if problems.len() > SHOWN {
                    write!(f, "; and {} more", problems.len() - SHOWN)?;
                }
                Ok(())
            }
        }
    }
}

/// The directory of a kernel in the cache.
fn kernel_dir(k: &LockedKernel, cache: &Path) -> PathBuf {
    cache.join("kernels").join(&k.release)
}

fn files_in(k: &LockedKernel, dir: &Path) -> KernelFiles {
    KernelFiles {
        release: k.release.clone(),
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules").join(&k.release),
    }
}

/// The manifest's record of a kernel's packages.
fn sources(k: &LockedKernel) -> Vec<manifest::Source> {
    k.packages
        .iter()
        .map(|p| manifest::Source { sha256: p.sha256.clone(), name: p.name.clone(), version: p.version.clone() })
        .collect()
}

/// Checks a kernel's tree against its manifest; with the manifest and what
/// the check found when there is one to compare with.
fn inspect(k: &LockedKernel, cache: &Path, depth: Depth) -> (CacheState, Option<(Manifest, manifest::Checked)>) {
    let dir = kernel_dir(k, cache);
    if std::fs::symlink_metadata(&dir).is_err() {
        return (CacheState::Absent, None);
    }
    let m = match Manifest::read(&dir) {
        Ok(Some(m)) => m,
        Ok(None) => return (CacheState::NoManifest, None),
        Err(why) => return (CacheState::BadManifest(why), None),
    };
    if m.release != k.release || m.packages != sources(k) {
        let had = m.packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
        return (CacheState::Outdated(had), None);
    }
    let checked = manifest::check(&dir, &m, depth);
    let state =
        if checked.problems.is_empty() { CacheState::Cached } else { CacheState::Damaged(checked.problems.clone()) };
    (state, Some((m, checked)))
}

/// What the cache holds of a locked kernel, checked to `depth`.
pub fn cache_state(k: &LockedKernel, cache: &Path, depth: Depth) -> CacheState {
    inspect(k, cache, depth).0
}

/// Is a locked kernel extracted in the cache and intact (a quick check:
/// every file present at its size, `vmlinuz` and changed files hashed)?
pub fn cached(k: &LockedKernel, cache: &Path) -> bool {
    cache_state(k, cache, Depth::Quick).is_cached()
}

/// What [`fetch_kernel_checked`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub files: KernelFiles,
    /// What the cache held: [`CacheState::Cached`] when nothing was done,
    /// else what the extraction replaced.
    pub before: CacheState,
    /// Packages downloaded (the others came from verified `.deb`s of the cache).
    pub downloaded: Vec<String>,
    /// How many files were extracted (0 when nothing was done).
    pub extracted: usize,
    /// Leftovers of fetches that died, removed.
    pub removed: Vec<PathBuf>,
}

/// Makes sure a locked kernel is in the cache and intact (checked to
/// `depth`): downloads, verifies and extracts it when it is not there, and
/// extracts it again (from the cached `.deb`s when they verify, else
/// downloaded) when the tree is damaged, outdated or has no manifest.
/// Leftovers of fetches that died are removed first.
pub fn fetch_kernel_checked(mirror: &str, k: &LockedKernel, cache: &Path, depth: Depth) -> Result<Fetched, VmError> {
    let _lock = CacheLock::acquire(cache)?;
    let removed = remove_partials(cache);
    let dir = kernel_dir(k, cache);
    let (before, found) = inspect(k, cache, depth);
    if before.is_cached() {
        // Files whose mtime moved were hashed and are fine: record their
        // new times, so that quick checks do not hash them each time.
        if let Some((mut m, checked)) = found.filter(|(_, c)| !c.moved_mtimes.is_empty()) {
            for &i in &checked.moved_mtimes {
                if let Ok(meta) = std::fs::symlink_metadata(dir.join(&m.files[i].path)) {
                    m.files[i].mtime = manifest::Mtime::of(&meta);
                }
            }
            let _ = m.write(&dir);
        }
        return Ok(Fetched { files: files_in(k, &dir), before, downloaded: Vec::new(), extracted: 0, removed });
    }
    match extract(mirror, k, cache) {
        Ok((extracted, downloaded)) => Ok(Fetched { files: files_in(k, &dir), before, downloaded, extracted, removed }),
        Err(e) => Err(VmError::Kernel { name: k.name.clone(), state: before.to_string(), source: Box::new(e) }),
    }
}

/// Makes sure a locked kernel is in the cache and intact, before a run: a
/// quick check (no module is hashed), and the repairs of
/// [`fetch_kernel_checked`], noted on standard error. An error says to run
/// `ovlc kernels fetch NAME`.
pub fn fetch_kernel(mirror: &str, k: &LockedKernel, cache: &Path) -> Result<KernelFiles, VmError> {
    match fetch_kernel_checked(mirror, k, cache, Depth::Quick) {
        Ok(f) => {
            if f.before != CacheState::Absent && !f.before.is_cached() {
                eprintln!("warning: kernel {}: {}; {}", k.name, f.before, f.describe_extraction());
            }
            Ok(f.files)
        }
        Err(e @ VmError::Kernel { .. }) => Err(VmError::RunFetch { name: k.name.clone(), source: Box::new(e) }),
        Err(e) => Err(e),
    }
}

impl Fetched {
    /// `extracted N files from the cached packages`, `downloaded linux-... and extracted N files`,
    /// or `nothing to do`.
    pub fn describe_extraction(&self) -> String {
        if self.extracted == 0 {
            "nothing to do".into()
        } else if self.downloaded.is_empty() {
            format!("extracted {} files from the cached packages", self.extracted)
        } else {
            format!("downloaded {} and extracted {} files", self.downloaded.join(", "), self.extracted)
        }
    }
}

/// Downloads (what the cache lacks of) a kernel's packages and extracts
/// them into a partial directory, writes the manifest last, and puts the
/// directory in place of what was there. Returns how many files it wrote
/// and which packages it downloaded.
fn extract(mirror: &str, k: &LockedKernel, cache: &Path) -> Result<(usize, Vec<String>), VmError> {
    let dir = kernel_dir(k, cache);
    let tmp = Partial(cache.join("kernels").join(format!(".{}.partial-{}", k.release, std::process::id())));
    remove_any(&tmp.0);
    std::fs::create_dir_all(&tmp.0).map_err(|e| VmError::Io { what: tmp.0.display().to_string(), source: e })?;
    let mut files: std::collections::BTreeMap<String, manifest::Entry> = std::collections::BTreeMap::new();
    let mut downloaded = Vec::new();
    for p in &k.packages {
        let (deb, fresh) = get_deb(mirror, p, cache)?;
        if fresh {
            downloaded.push(p.name.clone());
        }
        let data = std::fs::read(&deb).map_err(|e| VmError::Io { what: deb.display().to_string(), source: e })?;
        let tar_bytes = debian::deb_data(&data).map_err(|e| VmError::Deb(format!("{}: {e}", p.name)))?;
        let mut ar = tar::Archive::new(tar_bytes.as_slice());
        let bad = |e: &dyn std::fmt::Display| VmError::Deb(format!("{}: {e}", p.name));
        for e in ar.entries().map_err(|e| bad(&e))? {
            let mut e = e.map_err(|e| bad(&e))?;
            let name = e.path().map_err(|e| bad(&e))?.to_string_lossy().into_owned();
            let Some(rel) = kernel_member(&name, &k.release) else { continue };
            // `a//b` and `a/./b` name `a/b`, as the manifest does.
            let rel: String = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/");
            if rel.split('/').any(|c| c == "..") {
                return Err(bad(&format!("{name}: climbs out")));
            }
            let dest = tmp.0.join(&rel);
            let et = e.header().entry_type();
            if et.is_dir() {
                std::fs::create_dir_all(&dest)
                    .map_err(|err| VmError::Io { what: dest.display().to_string(), source: err })?;
            } else if et.is_file() {
                if rel.contains(['\n', '\r']) {
                    return Err(bad(&format!("{name:?}: a line break in a file name")));
                }
                if let Some(d) = dest.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|err| VmError::Io { what: d.display().to_string(), source: err })?;
                }
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map_err(|err| bad(&err))?;
                let io = |err| VmError::Io { what: dest.display().to_string(), source: err };
                std::fs::write(&dest, &buf).map_err(io)?;
                let meta = std::fs::symlink_metadata(&dest).map_err(io)?;
                let entry = manifest::Entry {
                    path: rel.clone(),
                    size: buf.len() as u64,
                    sha256: debian::sha256_hex(&buf),
                    mtime: manifest::Mtime::of(&meta),
                };
                files.insert(rel, entry);
            }
            // Symlinks (build/, source/) point into headers we do not need.
        }
    }
    let t = files_in(k, &tmp.0);
    // modules.dep is written by depmod at install time, not shipped: the
    // closure is computed from each module's .modinfo (see crate::modules).
    if !t.vmlinuz.is_file() || !t.modules.join("modules.order").is_file() {
        return Err(VmError::Deb(format!(
            "{}: the packages hold no vmlinuz or no modules.order for {}",
            k.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
            k.release
        )));
    }
    // The stamp of ovlc before manifests, so that one still running takes
    // this tree as cached rather than extracting it again.
    let stamp: String = k.packages.iter().map(|p| format!("{} {}\n", p.sha256, p.name)).collect();
    std::fs::write(tmp.0.join("complete"), stamp).map_err(|e| VmError::Io { what: "stamp".into(), source: e })?;
    // The manifest last: its presence says the extraction finished.
    let m = Manifest { release: k.release.clone(), packages: sources(k), files: files.into_values().collect() };
    // A manifest that would not read back would have every check send the
    // kernel to extraction again.
    Manifest::parse(&m.render()).map_err(|why| VmError::Deb(format!("{}: the manifest: {why}", k.release)))?;
    m.write(&tmp.0)
        .map_err(|e| VmError::Io { what: tmp.0.join(manifest::FILE_NAME).display().to_string(), source: e })?;
    install(&tmp.0, &dir).map_err(|e| VmError::Io { what: dir.display().to_string(), source: e })?;
    // `tmp` now holds the tree it replaced, if any: dropping it removes that.
    Ok((m.files.len(), downloaded))
}

/// Puts the directory `new` in place of `dir`. An existing `dir` is
/// exchanged with it atomically where the file system can (a run that
/// already looked the tree up reads whole files from one tree or the other),
/// so that `new` then holds the old tree.
fn install(new: &Path, dir: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    if std::fs::symlink_metadata(dir).is_ok() {
        if renameat2(AT_FDCWD, new, AT_FDCWD, dir, RenameFlags::RENAME_EXCHANGE).is_ok() {
            return Ok(());
        }
        remove_any(dir);
    }
    std::fs::rename(new, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_and_lock_agree_with_each_other() {
        let c = CatalogSource::Builtin.catalog().unwrap_or_default();
        let l = CatalogSource::Builtin.lock().unwrap_or_default();
        let names: Vec<&str> = c.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["5.10", "6.1", "6.12", "7.2", "7.3"]);
        assert_eq!(l.kernels.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), names);
        assert_eq!(CatalogSource::Builtin.lock_path(), None);
        let f = CatalogSource::from_arg(Some(Path::new("/x/kernels.toml")));
        assert_eq!(f.lock_path(), Some(PathBuf::from("/x/kernels.lock")));
    }

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: "00".into(),
        }
    }

    #[test]
    fn resolves_the_newest_kernel_of_a_series_in_either_layout() {
        let idx = vec![
            pkg("linux-image-5.10.0-30-cloud-amd64-unsigned", "5.10.218-1"),
            pkg("linux-image-5.10.0-32-cloud-amd64-unsigned", "5.10.223-1"),
            pkg("linux-image-5.10.0-32-cloud-amd64-dbg", "5.10.223-1"),
            pkg("linux-image-5.10.0-32-amd64-unsigned", "5.10.223-1"),
            pkg("linux-binary-7.3-cloud-amd64", "7.3~rc7-1~exp1"),
            pkg("linux-modules-7.3-cloud-amd64", "7.3~rc7-1~exp1"),
            pkg("linux-base-7.3-cloud-amd64", "7.3~rc7-1~exp1"),
            pkg("linux-image-6.12.5-cloud-amd64-unsigned", "6.12.5-1"),
            pkg("linux-image-6.1.0-10-cloud-amd64-unsigned", "6.1.38-1"),
        ];
        let e = |n: &str| CatalogEntry { name: n.into(), suite: "s".into(), flavour: "cloud-amd64".into() };
        let k = resolve(&e("5.10"), &idx).unwrap();
        assert_eq!((k.release.as_str(), k.layout), ("5.10.0-32-cloud-amd64", Layout::Unsigned));
        let k = resolve(&e("7.3"), &idx).unwrap();
        assert_eq!((k.release.as_str(), k.layout, k.packages.len()), ("7.3-cloud-amd64", Layout::Split, 3));
        let k = resolve(&e("6.1"), &idx).unwrap();
        assert_eq!(k.release, "6.1.0-10-cloud-amd64", "6.1 must not take 6.12");
        assert!(resolve(&e("4.19"), &idx).is_err());
    }

    #[test]
    fn members_land_where_the_kernel_needs_them() {
        let r = "7.3-cloud-amd64";
        assert_eq!(kernel_member("./usr/lib/modules/7.3-cloud-amd64/vmlinuz", r).as_deref(), Some("vmlinuz"));
        assert_eq!(kernel_member("./boot/vmlinuz-7.3-cloud-amd64", r).as_deref(), Some("vmlinuz"));
        assert_eq!(
            kernel_member("./lib/modules/7.3-cloud-amd64/kernel/fs/overlayfs/overlay.ko.xz", r).as_deref(),
            Some("modules/7.3-cloud-amd64/kernel/fs/overlayfs/overlay.ko.xz")
        );
        assert_eq!(kernel_member("./usr/share/doc/x", r), None);
    }
}

/// The cache of extracted kernels, on a fake kernel: a `.deb` made here,
/// served from a `file://` mirror.
#[cfg(test)]
mod cache_tests {
    use super::*;

    const REL: &str = "9.9.0-1-cloud-amd64";

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in members {
            let h = format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", name, 0, 0, 0, 100644, body.len());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn deb(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, format!("./lib/modules/{REL}/kernel/"), std::io::empty()).unwrap();
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_slice()).unwrap();
        }
        let data = b.into_inner().unwrap();
        ar(&[("debian-binary", b"2.0\n"), ("control.tar", b""), ("data.tar", &data)])
    }

    fn members() -> Vec<(String, Vec<u8>)> {
        let m = |p: &str| format!("./lib/modules/{REL}/{p}");
        vec![
            (format!("./boot/vmlinuz-{REL}"), b"MZ a kernel image ".repeat(1000)),
            (m("modules.order"), b"kernel/fs/overlayfs/overlay.ko\nkernel/fs/fuse/fuse.ko\n".to_vec()),
            (m("modules.builtin"), Vec::new()),
            (m("kernel/fs/overlayfs/overlay.ko"), b"overlay module ".repeat(100)),
            (m("kernel/fs/fuse/fuse.ko"), b"fuse module ".repeat(100)),
            ("./usr/share/doc/linux/changelog".into(), b"not extracted".to_vec()),
        ]
    }

    /// A mirror holding one `.deb` of `files`, a cache, and the lock entry.
    struct Fake {
        mirror_dir: tempfile::TempDir,
        cache_dir: tempfile::TempDir,
        mirror: String,
        k: LockedKernel,
    }

    impl Fake {
        fn new(files: &[(String, Vec<u8>)]) -> Fake {
            let mirror_dir = tempfile::tempdir().unwrap();
            let data = deb(files);
            let filename = format!("pool/main/l/linux/linux-image-{REL}-unsigned_9.9-1_amd64.deb");
            std::fs::create_dir_all(mirror_dir.path().join("pool/main/l/linux")).unwrap();
            std::fs::write(mirror_dir.path().join(&filename), &data).unwrap();
            let k = LockedKernel {
                name: "9.9".into(),
                suite: "fake".into(),
                release: REL.into(),
                version: "9.9-1".into(),
                layout: Layout::Unsigned,
                packages: vec![Package {
                    name: format!("linux-image-{REL}-unsigned"),
                    version: "9.9-1".into(),
                    filename,
                    size: data.len() as u64,
                    sha256: debian::sha256_hex(&data),
                }],
            };
            let mirror = format!("file://{}", mirror_dir.path().display());
            Fake { mirror_dir, cache_dir: tempfile::tempdir().unwrap(), mirror, k }
        }

        fn cache(&self) -> &Path {
            self.cache_dir.path()
        }

        fn kdir(&self) -> PathBuf {
            self.cache().join("kernels").join(REL)
        }

        fn module(&self, name: &str) -> PathBuf {
            self.kdir().join(format!("modules/{REL}/kernel/fs/{name}"))
        }

        /// Takes the mirror away: only the cache's `.deb`s are left.
        fn offline(&mut self) {
            self.mirror = format!("file://{}/gone", self.mirror_dir.path().display());
        }

        fn leftovers(&self) -> Vec<String> {
            ["kernels", "debs"]
                .iter()
                .flat_map(|d| std::fs::read_dir(self.cache().join(d)).into_iter().flatten().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".partial-"))
                .collect()
        }
    }

    fn set_len(p: &Path, len: u64) {
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len).unwrap();
    }

    #[test]
    fn a_truncated_vmlinuz_is_not_cached_and_the_next_fetch_extracts_it_again() {
        let f = Fake::new(&members());
        let files = fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        assert!(cached(&f.k, f.cache()));
        let whole = std::fs::read(&files.vmlinuz).unwrap();
        set_len(&files.vmlinuz, 100);
        assert!(!cached(&f.k, f.cache()), "a cut vmlinuz passed for cached");
        let again = fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        assert_eq!(std::fs::read(&again.vmlinuz).unwrap(), whole);
        assert!(cached(&f.k, f.cache()));
    }

    #[test]
    fn a_deleted_module_is_not_cached_and_the_next_fetch_restores_it_from_the_cached_deb() {
        let mut f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        let overlay = f.module("overlayfs/overlay.ko");
        std::fs::remove_file(&overlay).unwrap();
        assert!(!cached(&f.k, f.cache()), "a tree without overlay.ko passed for cached");
        f.offline();
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        assert_eq!(std::fs::read(&overlay).unwrap(), b"overlay module ".repeat(100));
        assert!(cached(&f.k, f.cache()));
    }

    #[test]
    fn a_failed_fetch_leaves_no_partial_directory() {
        // The download fails.
        let mut f = Fake::new(&members());
        f.offline();
        assert!(fetch_kernel(&f.mirror, &f.k, f.cache()).is_err());
        assert_eq!(f.leftovers(), Vec::<String>::new());
        // The package lacks the kernel image: extraction fails at the end.
        let no_image: Vec<_> = members().into_iter().filter(|(p, _)| !p.contains("vmlinuz")).collect();
        let f = Fake::new(&no_image);
        assert!(fetch_kernel(&f.mirror, &f.k, f.cache()).is_err());
        assert_eq!(f.leftovers(), Vec::<String>::new());
        assert!(!f.kdir().exists());
    }

    #[test]
    fn a_fetch_removes_what_fetches_that_died_left_behind() {
        let f = Fake::new(&members());
        let dead = f.cache().join("kernels").join(format!(".{REL}.partial-999999"));
        std::fs::create_dir_all(dead.join("modules")).unwrap();
        std::fs::create_dir_all(f.cache().join("debs")).unwrap();
        let half = f.cache().join("debs").join(format!("{}.partial-999999", f.k.packages[0].sha256));
        std::fs::write(&half, b"half a download").unwrap();
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        assert_eq!(f.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn extraction_records_every_file_in_a_manifest_written_last() {
        let f = Fake::new(&members());
        let got = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Full).unwrap();
        assert_eq!((got.before.clone(), got.extracted), (CacheState::Absent, 5));
        assert_eq!(got.downloaded, [f.k.packages[0].name.clone()]);
        let m = Manifest::read(&f.kdir()).unwrap().unwrap();
        assert_eq!(m.release, REL);
        assert_eq!(m.packages, sources(&f.k));
        let paths: Vec<&str> = m.files.iter().map(|e| e.path.as_str()).collect();
        let mods = format!("modules/{REL}");
        assert_eq!(
            paths,
            [
                format!("{mods}/kernel/fs/fuse/fuse.ko"),
                format!("{mods}/kernel/fs/overlayfs/overlay.ko"),
                format!("{mods}/modules.builtin"),
                format!("{mods}/modules.order"),
                "vmlinuz".into(),
            ]
        );
        for e in &m.files {
            let data = std::fs::read(f.kdir().join(&e.path)).unwrap();
            assert_eq!(
                (e.size, e.sha256.as_str()),
                (data.len() as u64, debian::sha256_hex(&data).as_str()),
                "{}",
                e.path
            );
        }
        // The manifest is the newest file of the tree: nothing was written after it.
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let newest = m.files.iter().map(|e| mtime(&f.kdir().join(&e.path))).max().unwrap();
        assert!(mtime(&f.kdir().join("manifest")) >= newest);
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Full), CacheState::Cached);
    }

    #[test]
    fn states_name_what_is_wrong() {
        let f = Fake::new(&members());
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Quick), CacheState::Absent);
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        set_len(&f.kdir().join("vmlinuz"), 100);
        std::fs::remove_file(f.module("fuse/fuse.ko")).unwrap();
        let s = cache_state(&f.k, f.cache(), Depth::Quick);
        let fuse = format!("modules/{REL}/kernel/fs/fuse/fuse.ko");
        assert_eq!(
            s,
            CacheState::Damaged(vec![
                Problem::Missing(fuse.clone()),
                Problem::Size { path: "vmlinuz".into(), expected: 18000, got: 100 },
            ])
        );
        assert_eq!(s.to_string(), format!("damaged: {fuse} is missing; vmlinuz is 100 bytes, not 18000"));
        // Damage of many files is summed up.
        let many = CacheState::Damaged((0..5).map(|i| Problem::Missing(format!("f{i}"))).collect());
        assert_eq!(many.to_string(), "damaged: f0 is missing; f1 is missing; f2 is missing; and 2 more");
        // A cut manifest: damaged; none (an older ovlc's tree): not cached.
        let man = f.kdir().join("manifest");
        let text = std::fs::read_to_string(&man).unwrap();
        std::fs::write(&man, &text[..text.len() / 2]).unwrap();
        assert!(matches!(cache_state(&f.k, f.cache(), Depth::Quick), CacheState::BadManifest(_)));
        std::fs::remove_file(&man).unwrap();
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Quick), CacheState::NoManifest);
        assert!(CacheState::NoManifest.to_string().starts_with("not cached: "));
        // A lock that moved on to other packages of the same release.
        let mut newer = f.k.clone();
        newer.packages[0].sha256 = "0".repeat(64);
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        assert_eq!(
            cache_state(&newer, f.cache(), Depth::Quick),
            CacheState::Outdated(vec![format!("linux-image-{REL}-unsigned 9.9-1")])
        );
    }

    #[test]
    fn a_tree_of_an_older_ovlc_without_manifest_is_extracted_again_with_one() {
        let mut f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        std::fs::remove_file(f.kdir().join("manifest")).unwrap();
        assert!(f.kdir().join("complete").is_file(), "the old stamp is still written");
        assert!(!cached(&f.k, f.cache()));
        f.offline();
        let got = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Quick).unwrap();
        assert_eq!((got.before, got.extracted, got.downloaded.len()), (CacheState::NoManifest, 5, 0));
        assert!(cached(&f.k, f.cache()));
    }

    #[test]
    fn a_change_of_the_same_size_is_found_by_the_quick_check_when_the_mtime_moved_and_by_the_full_check_always() {
        let f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        let overlay = f.module("overlayfs/overlay.ko");
        let mtime = std::fs::metadata(&overlay).unwrap().modified().unwrap();
        let mut data = std::fs::read(&overlay).unwrap();
        data[0] ^= 1;
        std::fs::write(&overlay, &data).unwrap();
        // (Set apart explicitly: a write in the same jiffy keeps the mtime.)
        let later = mtime + std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&overlay).unwrap().set_modified(later).unwrap();
        let rel = format!("modules/{REL}/kernel/fs/overlayfs/overlay.ko");
        assert_eq!(
            cache_state(&f.k, f.cache(), Depth::Quick),
            CacheState::Damaged(vec![Problem::Content(rel.clone())])
        );
        // With its mtime put back, only hashing finds it.
        std::fs::File::options().write(true).open(&overlay).unwrap().set_modified(mtime).unwrap();
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Quick), CacheState::Cached);
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Full), CacheState::Damaged(vec![Problem::Content(rel)]));
        let got = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Full).unwrap();
        assert!(matches!(got.before, CacheState::Damaged(_)));
        assert_eq!(got.describe_extraction(), "extracted 5 files from the cached packages");
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Full), CacheState::Cached);
        // The vmlinuz is hashed by every quick check, whatever its mtime.
        let vmlinuz = f.kdir().join("vmlinuz");
        let mtime = std::fs::metadata(&vmlinuz).unwrap().modified().unwrap();
        let mut data = std::fs::read(&vmlinuz).unwrap();
        data[0] ^= 1;
        std::fs::write(&vmlinuz, &data).unwrap();
        std::fs::File::options().write(true).open(&vmlinuz).unwrap().set_modified(mtime).unwrap();
        assert!(!cached(&f.k, f.cache()));
    }

    #[test]
    fn a_file_touched_but_intact_stays_cached_and_a_fetch_records_its_new_mtime() {
        let f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        let order = f.kdir().join(format!("modules/{REL}/modules.order"));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&order).unwrap().set_modified(later).unwrap();
        let before = std::fs::read_to_string(f.kdir().join("manifest")).unwrap();
        assert!(cached(&f.k, f.cache()));
        let got = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Quick).unwrap();
        assert_eq!((got.before, got.extracted), (CacheState::Cached, 0));
        let after = std::fs::read_to_string(f.kdir().join("manifest")).unwrap();
        assert_ne!(before, after, "the new mtime is recorded");
        let (_, found) = inspect(&f.k, f.cache(), Depth::Quick);
        assert_eq!(found.unwrap().1, manifest::Checked::default());
    }

    #[test]
    fn a_full_check_finds_files_extraction_did_not_write() {
        let f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        std::fs::write(f.kdir().join(format!("modules/{REL}/kernel/stray.ko")), b"x").unwrap();
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Quick), CacheState::Cached);
        let stray = format!("modules/{REL}/kernel/stray.ko");
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Full), CacheState::Damaged(vec![Problem::Unexpected(stray)]));
        fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Full).unwrap();
        assert_eq!(cache_state(&f.k, f.cache(), Depth::Full), CacheState::Cached);
    }

    #[test]
    fn a_run_that_cannot_repair_says_what_to_run() {
        let mut f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        set_len(&f.kdir().join("vmlinuz"), 100);
        // No mirror and no cached .deb: nothing to repair from.
        f.offline();
        std::fs::remove_dir_all(f.cache().join("debs")).unwrap();
        let e = fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap_err().to_string();
        assert!(e.starts_with("kernel 9.9: damaged: vmlinuz is 100 bytes, not 18000; getting it from"), "{e}");
        assert!(e.ends_with("Run `ovlc kernels fetch 9.9` to download and repair it"), "{e}");
        assert_eq!(f.leftovers(), Vec::<String>::new());
        // `kernels fetch` itself does not send one to `kernels fetch`.
        let e = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Full).unwrap_err().to_string();
        assert!(!e.contains("Run `ovlc"), "{e}");
        // The damaged tree is left as it was: a fetch that works repairs it.
        assert!(f.kdir().join("manifest").is_file());
    }

    #[test]
    fn a_corrupt_cached_deb_is_downloaded_again() {
        let f = Fake::new(&members());
        fetch_kernel(&f.mirror, &f.k, f.cache()).unwrap();
        let deb = f.cache().join("debs").join(format!("{}.deb", f.k.packages[0].sha256));
        set_len(&deb, 10);
        std::fs::remove_file(f.kdir().join("vmlinuz")).unwrap();
        let got = fetch_kernel_checked(&f.mirror, &f.k, f.cache(), Depth::Quick).unwrap();
        assert_eq!(got.downloaded, [f.k.packages[0].name.clone()]);
        assert!(got.describe_extraction().starts_with("downloaded linux-image-"), "{}", got.describe_extraction());
        assert!(cached(&f.k, f.cache()));
    }
}
