//! The kernel catalog (`vm/kernels.toml`), its lock file (`vm/kernels.lock`:
//! exact packages, versions and SHA256 sums), and the verified cache of
//! downloaded and extracted kernels.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::debian::{self, Package};
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
/// file is discarded and the download retried, never used.
pub fn fetch_deb(mirror: &str, p: &Package, cache: &Path) -> Result<PathBuf, VmError> {
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(|e| VmError::Io { what: dir.display().to_string(), source: e })?;
    let path = dir.join(format!("{}.deb", p.sha256));
    if let Ok(data) = std::fs::read(&path) {
        if debian::sha256_hex(&data) == p.sha256 {
            return Ok(path);
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
                let tmp = dir.join(format!("{}.partial-{}", p.sha256, std::process::id()));
                std::fs::write(&tmp, &data).map_err(|e| VmError::Io { what: tmp.display().to_string(), source: e })?;
                std::fs::rename(&tmp, &path)
                    .map_err(|e| VmError::Io { what: path.display().to_string(), source: e })?;
                return Ok(path);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| VmError::Fetch { url, why: "failed".into() }))
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

/// Downloads, verifies and extracts a locked kernel into the cache (once).
pub fn fetch_kernel(mirror: &str, k: &LockedKernel, cache: &Path) -> Result<KernelFiles, VmError> {
    let _lock = CacheLock::acquire(cache)?;
    let dir = cache.join("kernels").join(&k.release);
    let files = KernelFiles {
        release: k.release.clone(),
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules").join(&k.release),
    };
    if cached(k, cache) {
        return Ok(files);
    }
    let want = stamp(k);
    let tmp = cache.join("kernels").join(format!(".{}.partial-{}", k.release, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| VmError::Io { what: tmp.display().to_string(), source: e })?;
    for p in &k.packages {
        let deb = fetch_deb(mirror, p, cache)?;
        let data = std::fs::read(&deb).map_err(|e| VmError::Io { what: deb.display().to_string(), source: e })?;
        let tar_bytes = debian::deb_data(&data)?;
        let mut ar = tar::Archive::new(tar_bytes.as_slice());
        for e in ar.entries().map_err(|e| VmError::Deb(e.to_string()))? {
            let mut e = e.map_err(|e| VmError::Deb(e.to_string()))?;
            let name = e.path().map_err(|e| VmError::Deb(e.to_string()))?.to_string_lossy().into_owned();
            let Some(rel) = kernel_member(&name, &k.release) else { continue };
            if rel.split('/').any(|c| c == "..") {
                return Err(VmError::Deb(format!("{name}: climbs out")));
            }
            let dest = tmp.join(&rel);
            let et = e.header().entry_type();
            if et.is_dir() {
                std::fs::create_dir_all(&dest)
                    .map_err(|err| VmError::Io { what: dest.display().to_string(), source: err })?;
            } else if et.is_file() {
                if let Some(d) = dest.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|err| VmError::Io { what: d.display().to_string(), source: err })?;
                }
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map_err(|err| VmError::Deb(err.to_string()))?;
                std::fs::write(&dest, buf)
                    .map_err(|err| VmError::Io { what: dest.display().to_string(), source: err })?;
            }
            // Symlinks (build/, source/) point into headers we do not need.
        }
    }
    let t = KernelFiles {
        release: k.release.clone(),
        vmlinuz: tmp.join("vmlinuz"),
        modules: tmp.join("modules").join(&k.release),
    };
    // modules.dep is written by depmod at install time, not shipped: the
    // closure is computed from each module's .modinfo (see crate::modules).
    if !t.vmlinuz.is_file() || !t.modules.join("modules.order").is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(VmError::Deb(format!(
            "{}: the packages hold no vmlinuz or no modules.order for {}",
            k.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
            k.release
        )));
    }
    std::fs::write(tmp.join("complete"), &want).map_err(|e| VmError::Io { what: "stamp".into(), source: e })?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| VmError::Io { what: dir.display().to_string(), source: e })?;
    Ok(files)
}

/// What `complete` holds once a kernel is extracted: its packages' sums.
fn stamp(k: &LockedKernel) -> String {
    k.packages.iter().map(|p| format!("{} {}\n", p.sha256, p.name)).collect()
}

/// Is a locked kernel already extracted in the cache?
pub fn cached(k: &LockedKernel, cache: &Path) -> bool {
    std::fs::read_to_string(cache.join("kernels").join(&k.release).join("complete")).is_ok_and(|s| s == stamp(k))
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
