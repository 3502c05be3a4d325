//! The guest's initramfs: the static `ovlc` as PID 1, the kernel modules it
//! needs, fuse-overlayfs with its libraries, and the batch's plans; the
//! per-kernel base archive is cached and pruned.

use std::path::{Path, PathBuf};

use dsl::ast::Driver;

use super::machine::{file_identity, module_closure, Prepared};
use crate::error::{Error, Result};

/// The part of a machine's initramfs that stays the same from batch to batch
/// (the agent, the modules, fuse-overlayfs with its libraries), cached under
/// the cache directory by a SHA256 of its inputs: the machine's digest (see
/// [`Prepared::new`]), the driver, the disks and the programs' identities.
pub(crate) fn base_archive(
    machine: &Prepared,
    driver: Driver,
    disks: &[dsl::ast::Backing],
    fs_modules: &[&str],
    programs: Vec<vm::initramfs::Entry>,
) -> Result<Vec<u8>> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(machine.digest);
    h.update(driver.name().as_bytes());
    for d in disks {
        h.update([0]);
        h.update(d.name().as_bytes());
    }
    for m in fs_modules {
        h.update([1]);
        h.update(m.as_bytes());
    }
    for p in &programs {
        h.update([0]);
        h.update(p.path().as_bytes());
        if let vm::initramfs::Entry::HostFile { from, .. } = p {
            h.update(file_identity(from).as_bytes());
        }
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let cache = vm::kernels::cache_dir().join("initramfs");
    let path = cache.join(format!("{key}.cpio"));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let modules = module_closure(machine.modules.as_deref(), driver, disks, fs_modules)?;
    let mut entries = base_manifest(&machine.agent, &modules);
    entries.extend(programs);
    let bytes = vm::initramfs::write(&entries).map_err(Error::doing("initramfs"))?;
    // Written beside, then renamed: a reader never sees half an archive.
    if std::fs::create_dir_all(&cache).is_ok() {
        let tmp = cache.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        prune(&cache, 24);
    }
    Ok(bytes)
}

/// Keeps the `keep` most recently written archives of the cache.
fn prune(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| p.extension().is_some_and(|x| x == "cpio"))
        .collect();
    files.sort();
    files.reverse();
    for (_, p) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p);
    }
}

/// The manifest of a batch's initramfs: the agent as /init, the modules in load order, the plans.
pub fn manifest(agent: &Path, modules: &[(String, Vec<u8>)], plans_json: Vec<u8>) -> Vec<vm::initramfs::Entry> {
    let mut e = base_manifest(agent, modules);
    e.push(vm::initramfs::Entry::File { path: "/plans.json".into(), mode: 0o644, data: plans_json });
    e
}

/// The agent as /init and the modules in load order.
pub fn base_manifest(agent: &Path, modules: &[(String, Vec<u8>)]) -> Vec<vm::initramfs::Entry> {
    use vm::initramfs::Entry;
    let mut e = vec![
        Entry::Dir { path: "/dev".into(), mode: 0o755 },
        Entry::Dir { path: "/proc".into(), mode: 0o555 },
        Entry::Dir { path: "/sys".into(), mode: 0o555 },
        Entry::Dir { path: "/tmp".into(), mode: 0o1777 },
        Entry::Dir { path: "/modules".into(), mode: 0o755 },
        Entry::HostFile { path: "/init".into(), mode: 0o755, from: agent.to_path_buf() },
    ];
    let mut order = String::new();
    for (i, (name, data)) in modules.iter().enumerate() {
        let f = format!("{i:02}-{name}.ko");
        order.push_str(&f);
        order.push('\n');
        e.push(Entry::File { path: format!("/modules/{f}"), mode: 0o644, data: data.clone() });
    }
    e.push(Entry::File { path: "/modules/order".into(), mode: 0o644, data: order.into_bytes() });
    e
}

/// A host program and its shared-library closure (from `ldd`), as initramfs
/// entries at the same paths, parents first.
pub fn program_closure(program: &Path) -> Result<Vec<vm::initramfs::Entry>> {
    use vm::initramfs::Entry;
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(Error::doing(format!("ldd {}", program.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files: Vec<String> = vec![program.display().to_string()];
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next().unwrap_or(""),
            None => l.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    // glibc loads libgcc_s when a thread exits (pthread_exit, cancellation),
    // which ldd does not show: threaded programs (mksquashfs) need it beside libc.
    let gcc = files
        .iter()
        .find(|f| f.ends_with("/libc.so.6"))
        .and_then(|c| Path::new(c).parent())
        .map(|d| d.join("libgcc_s.so.1"))
        .filter(|g| g.exists());
    if let Some(g) = gcc {
        let g = g.display().to_string();
        if !files.contains(&g) {
            files.push(g);
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        let mut cur = Path::new(f).parent();
        while let Some(d) = cur.filter(|d| d.as_os_str() != "/") {
            dirs.insert(d.display().to_string());
            cur = d.parent();
        }
    }
    let mut entries: Vec<Entry> = dirs.into_iter().map(|d| Entry::Dir { path: d, mode: 0o755 }).collect();
    entries.sort_by_key(|e| e.path().matches('/').count());
    for f in files {
        entries.push(Entry::HostFile { path: f.clone(), mode: 0o755, from: PathBuf::from(f) });
    }
    Ok(entries)
}
