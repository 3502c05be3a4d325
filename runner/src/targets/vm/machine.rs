//! A VM target's machine: the kernel (from the catalog or the user's own),
//! its modules and the guest agent, prepared once per batch; the QEMU
//! accelerator, memory and watchdogs for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use dsl::ast::Driver;

/// A VM target: `vm:<kernel>`, `vm:<kernel>/rootless`, `vm:<kernel>/fuse`,
/// each optionally with overlay module parameters set on the guest's kernel
/// command line: `vm:5.10/rootless?permit_mounts_in_userns=1` boots with
/// `overlay.permit_mounts_in_userns=1` (more with more `?NAME=VALUE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmTarget {
    pub kernel: String,
    pub driver: Driver,
    pub params: Vec<(String, String)>,
}

/// A module parameter's name and value, as the kernel command line takes
/// them: nothing that could end the word or start another.
fn module_param(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let value_ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    (name_ok && value_ok).then(|| (k.to_string(), v.to_string()))
}

impl VmTarget {
    pub fn parse(s: &str) -> Option<VmTarget> {
        let mut parts = s.split('?');
        let s = parts.next()?;
        let params = parts.map(module_param).collect::<Option<Vec<_>>>()?;
        let rest = s.strip_prefix("vm:")?;
        let (kernel, driver) = match rest.split_once('/') {
            Some((k, "rootless")) => (k, Driver::Rootless),
            Some((k, "fuse")) => (k, Driver::Fuse),
            Some(_) => return None,
            None => (rest, Driver::Kernel),
        };
        (!kernel.is_empty()).then(|| VmTarget { kernel: kernel.to_string(), driver, params })
    }

    pub fn name(&self) -> String {
        let base = match self.driver {
            Driver::Kernel => format!("vm:{}", self.kernel),
            Driver::Rootless => format!("vm:{}/rootless", self.kernel),
            Driver::Fuse => format!("vm:{}/fuse", self.kernel),
        };
        base + &self.query()
    }

    /// `?NAME=VALUE` for each module parameter, or nothing.
    pub fn query(&self) -> String {
        self.params.iter().map(|(k, v)| format!("?{k}={v}")).collect()
    }

    /// The guest kernel command line's words for the module parameters.
    pub fn kernel_words(&self) -> Vec<String> {
        self.params.iter().map(|(k, v)| format!("overlay.{k}={v}")).collect()
    }
}

/// What every machine of a target boots: the kernel, where its modules are,
/// and the agent.
pub(crate) struct Prepared {
    pub(crate) files: vm::kernels::KernelFiles,
    /// `lib/modules/<release>`, when the kernel has modules.
    pub(crate) modules: Option<PathBuf>,
    pub(crate) agent: PathBuf,
    /// SHA256 of what every initramfs of this machine holds: the agent's
    /// bytes, the release, the module tree's files. Computed once per batch,
    /// not per boot.
    pub(crate) digest: [u8; 32],
}

/// A file's path, size and mtime: what says it changed without reading it.
pub(crate) fn file_identity(p: &Path) -> String {
    let m = std::fs::symlink_metadata(p);
    let (len, mtime) = m.map_or((0, 0), |m| (m.len(), std::os::unix::fs::MetadataExt::mtime(&m)));
    format!("{} {len} {mtime}\n", p.display())
}

impl Prepared {
    fn new(files: vm::kernels::KernelFiles, modules: Option<PathBuf>, agent: PathBuf) -> Result<Prepared> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"ovlc initramfs base 2\n");
        h.update(std::fs::read(&agent).map_err(Error::io(&agent))?);
        h.update(files.release.as_bytes());
        if let Some(dir) = &modules {
            let mut paths: Vec<PathBuf> =
                walkdir::WalkDir::new(dir).into_iter().flatten().map(|e| e.into_path()).collect();
            paths.sort();
            for p in paths {
                h.update(file_identity(&p).as_bytes());
            }
        }
        Ok(Prepared { files, modules, agent, digest: h.finalize().into() })
    }

    /// A machine booting this kernel with `archive` as its initramfs (written
    /// into `dir`), under KVM where it works, else TCG.
    pub(crate) fn describe(
        &self,
        dir: &Path,
        archive: Vec<u8>,
        memory_mib: u32,
        append: Vec<String>,
        disks: Vec<PathBuf>,
    ) -> Result<vm::qemu::Machine> {
        let initrd = dir.join("initramfs.cpio");
        std::fs::write(&initrd, archive).map_err(Error::io(&initrd))?;
        let accel = accel(&self.files.vmlinuz, &initrd);
        Ok(vm::qemu::Machine { kernel: self.files.vmlinuz.clone(), initrd, memory_mib, cpus: 1, accel, append, disks })
    }
}

/// The target name of a kernel of one's own: `vm:custom`.
pub const CUSTOM: &str = "custom";

/// A kernel of one's own (`ovlc run --kernel-image bzImage [--modules DIR]`).
#[derive(Clone, Debug)]
pub struct CustomKernel {
    /// A bzImage, for example `arch/x86/boot/bzImage` of a kernel build tree.
    pub image: PathBuf,
    /// `lib/modules/<release>` of the build (`make modules_install INSTALL_MOD_PATH=...`);
    /// without it, overlay (and fuse) must be built in.
    pub modules: Option<PathBuf>,
}

pub(crate) fn prepare_custom(c: &CustomKernel) -> Result<Prepared> {
    if !c.image.is_file() {
        return Err(Error::Usage(format!("--kernel-image {}: no such file", c.image.display())));
    }
    let release = c
        .modules
        .as_ref()
        .and_then(|m| m.file_name())
        .map_or_else(|| "custom".to_string(), |n| n.to_string_lossy().into_owned());
    let files =
        vm::kernels::KernelFiles { release, vmlinuz: c.image.clone(), modules: c.modules.clone().unwrap_or_default() };
    Prepared::new(files, c.modules.clone(), guest_binary()?)
}

pub(crate) fn prepare(target: &VmTarget, catalog: &vm::kernels::CatalogSource) -> Result<Prepared> {
    use vm::kernels as k;
    let lock = catalog.lock().map_err(|e| Error::Infrastructure(format!("{e} (run `ovlc kernels update`)")))?;
    let locked = lock.kernels.iter().find(|l| l.name == target.kernel).ok_or_else(|| {
        Error::Usage(format!(
            "no kernel {} in the lock (kernels: {})",
            target.kernel,
            lock.kernels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    // The mirror only matters when something must be downloaded: a machine
    // without apt sources runs kernels already in the cache (one check of
    // the cache, inside fetch_kernel; a missing mirror is told on failure).
    let (mirror, no_mirror) = match k::mirror() {
        Ok(m) => (m, None),
        Err(e) => (String::new(), Some(e)),
    };
    let files = k::fetch_kernel(&mirror, locked, &k::cache_dir()).map_err(|e| match &no_mirror {
        Some(m) => Error::Infrastructure(format!("{e} (and no Debian mirror to download from: {m})")),
        None => Error::Vm(e),
    })?;
    let modules = Some(files.modules.clone());
    Prepared::new(files, modules, guest_binary()?)
}

/// The modules a machine loads, dependencies first: overlay, fuse for the
/// fuse driver, the virtio disk and file system of each scratch disk.
pub(crate) fn module_closure(
    modules: Option<&Path>,
    driver: Driver,
    disks: &[dsl::ast::Backing],
    extra: &[&str],
) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(dir) = modules else { return Ok(Vec::new()) };
    let tree = vm::modules::ModuleTree::open(dir)?;
    let mut wanted = vec!["overlay"];
    if driver == Driver::Fuse {
        wanted.push("fuse");
    }
    if !disks.is_empty() {
        wanted.extend(["virtio_pci", "virtio_blk"]);
        wanted.extend(disks.iter().map(|b| b.name()));
    }
    wanted.extend(extra.iter().copied().filter(|m| !wanted.contains(m)).collect::<Vec<_>>());
    let mut out = Vec::new();
    for (name, path) in tree.closure(&wanted)? {
        out.push((name, vm::modules::read_module(&path)?));
    }
    Ok(out)
}

/// How many machines may run at once: at most `jobs`, and no more than the
/// host's available memory holds (each guest's memory plus 128 MiB for QEMU
/// and its page cache), but always one.
pub fn machines_at_once(jobs: usize) -> usize {
    let available_mib = crate::sys::meminfo_kib("MemAvailable:").map_or(u64::MAX, |kib| kib / 1024);
    let per = u64::from(guest_memory()) + 128;
    jobs.min(usize::try_from(available_mib / per).unwrap_or(usize::MAX)).max(1)
}

/// The guest's memory: `OVLC_VM_MEMORY` (MiB), else 256 MiB.
pub(crate) fn guest_memory() -> u32 {
    crate::settings::get().vm_memory_mib.unwrap_or(256)
}

/// The watchdogs of a batch of `n` instances. `OVLC_INSTANCE_TIMEOUT` (seconds)
/// sets the limit per instance, `OVLC_VM_TIMEOUT` the whole machine's.
pub fn watchdog(accel: vm::qemu::Accel, n: usize) -> vm::console::Watchdog {
    let settings = crate::settings::get();
    let tcg = accel == vm::qemu::Accel::Tcg;
    // Under TCG several machines share two cores: boots and instances slow down.
    let boot = Duration::from_secs(if tcg { 120 } else { 30 });
    let per = settings.instance_timeout.unwrap_or(Duration::from_secs(if tcg { 120 } else { 30 }));
    let total = settings.vm_timeout.unwrap_or(boot + per * n.max(1) as u32);
    vm::console::Watchdog { boot, progress: per, silence: per, total }
}

/// KVM where `OVLC_ACCEL=kvm`, or where a probe shows it works (`OVLC_ACCEL=auto`); TCG otherwise.
fn accel(kernel: &Path, initrd: &Path) -> vm::qemu::Accel {
    use std::sync::OnceLock;
    static PROBE: OnceLock<vm::qemu::Accel> = OnceLock::new();
    *PROBE.get_or_init(|| match crate::settings::get().accel.as_deref() {
        Some("kvm") => vm::qemu::Accel::Kvm,
        Some("auto") if vm::console::kvm_works(kernel, initrd) => vm::qemu::Accel::Kvm,
        _ => vm::qemu::Accel::Tcg,
    })
}

/// The `ovlc` that runs as the guests' `/init`: `OVLC_GUEST_BINARY`, else
/// this very binary, which the workspace builds statically (see
/// `.cargo/config.toml`), so that one build serves host and guest and an
/// installed `ovlc` needs no checkout.
pub fn guest_binary() -> Result<PathBuf> {
    let (p, from) = match &crate::settings::get().guest_binary {
        Some(p) => (p.clone(), "OVLC_GUEST_BINARY"),
        None => (std::env::current_exe().map_err(Error::doing("cannot find the ovlc binary"))?, "this ovlc"),
    };
    let head = read_head(&p).map_err(Error::doing(format!("{} ({from})", p.display())))?;
    match elf_is_static(&head) {
        Some(true) => Ok(p),
        Some(false) => Err(Error::Infrastructure(format!(
            "{} ({from}) is dynamically linked and cannot run as a guest's /init: build ovlc from the \
             checkout (cargo build --release --bin ovlc, or cargo install --path runner run from the \
             checkout's root, which link it statically) or set OVLC_GUEST_BINARY to a static ovlc",
            p.display()
        ))),
        None => Err(Error::Infrastructure(format!("{} ({from}) is not a 64-bit ELF program", p.display()))),
    }
}

/// The first 64 KiB of a file: an ELF header and its program headers.
fn read_head(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(p)?.take(64 << 10).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether a 64-bit little-endian ELF image has no program interpreter (no
/// `PT_INTERP` header: static or static-pie); `None` if it is no such ELF.
pub fn elf_is_static(head: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(head.get(0x20..0x28)?.try_into().ok()?) as usize;
    let (size, count) = (u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    if size < 4 {
        return None;
    }
    for i in 0..count {
        let at = phoff.checked_add(i.checked_mul(size)?)?;
        let kind = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_static_build_serves_as_the_guest() {
        // This test program is built like ovlc: statically.
        let me = read_head(&std::env::current_exe().unwrap_or_default()).unwrap_or_default();
        assert_eq!(elf_is_static(&me), Some(true));
        // A dynamically linked program has an interpreter.
        let sh = read_head(Path::new("/bin/sh")).unwrap_or_default();
        assert_eq!(elf_is_static(&sh), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(&me[..0x30]), None, "a truncated header is no ELF");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            VmTarget::parse("vm:5.10"),
            Some(VmTarget { kernel: "5.10".into(), driver: Driver::Kernel, params: vec![] })
        );
        let p = VmTarget::parse("vm:5.10/rootless?permit_mounts_in_userns=1").unwrap();
        assert_eq!(
            (p.driver, p.params.clone()),
            (Driver::Rootless, vec![("permit_mounts_in_userns".into(), "1".into())])
        );
        assert_eq!(p.name(), "vm:5.10/rootless?permit_mounts_in_userns=1");
        assert_eq!(p.kernel_words(), ["overlay.permit_mounts_in_userns=1"]);
        // Nothing that could smuggle another word onto the kernel command line.
        for bad in ["vm:5.10?a=1 init=/bin/sh", "vm:5.10?A=1", "vm:5.10?a=", "vm:5.10?a", "vm:5.10?a=1;b"] {
            assert_eq!(VmTarget::parse(bad), None, "{bad}");
        }
        assert_eq!(VmTarget::parse("vm:7.3/rootless").map(|t| t.name()), Some("vm:7.3/rootless".to_string()));
        assert_eq!(VmTarget::parse("vm:7.3/other"), None);
        assert_eq!(VmTarget::parse("host"), None);
    }

    #[test]
    fn watchdogs_scale_with_the_accelerator_and_the_batch() {
        let t = watchdog(vm::qemu::Accel::Tcg, 10);
        let k = watchdog(vm::qemu::Accel::Kvm, 10);
        assert!(t.boot > k.boot && t.progress > k.progress);
        assert_eq!(t.total, t.boot + t.progress * 10);
        assert_eq!(t.silence, t.progress);
        assert!(machines_at_once(1) == 1 && (1..=64).contains(&machines_at_once(64)));
    }
}
