//! What a run leaves on disk, and how it goes however the run ends: each
//! temporary directory (or partial file) is registered while it exists; on
//! SIGINT, SIGTERM or SIGHUP every registered path is removed before ovlc
//! exits, and a later run removes the directories of runs that died without
//! a chance to (SIGKILL), which an owner file inside each names.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Every path to remove if the run is interrupted, with its registration number.
static PATHS: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The file inside each of ovlc's temporary directories that names the
/// process that made it: `PID STARTTIME` (the start time tells a reused pid).
pub const OWNER: &str = ".ovlc-owner";

/// The prefixes of ovlc's temporary directories in the temporary directory:
/// a run's instances, a VM's initramfs and disks, a disk probe, a benchmark.
pub const RUN: &str = "ovlc-run-";
pub const VM: &str = "ovlc-vm-";
pub const DISK: &str = "ovlc-disk-";
pub const BENCH: &str = "ovlc-bench-";
pub const PREFIXES: [&str; 4] = [RUN, VM, DISK, BENCH];

/// A registered path: removed on an interrupt while this lives (the owner
/// removes it normally; dropping this only unregisters it).
#[derive(Debug)]
pub struct Registered {
    id: u64,
}

/// Registers `path` for removal on an interrupt.
pub fn register(path: &Path) -> Registered {
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lock().push((id, path.to_path_buf()));
    Registered { id }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock().retain(|(id, _)| *id != self.id);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, PathBuf)>> {
    PATHS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A temporary directory of ovlc's: made with an owner file, registered
/// for removal on an interrupt, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    dir: tempfile::TempDir,
    _registered: Registered,
}

impl TempDir {
    /// A new directory `PREFIX*` in the temporary directory (`TMPDIR`).
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::write(dir.path().join(OWNER), owner_line(std::process::id()).unwrap_or_default())?;
        let _registered = register(dir.path());
        Ok(TempDir { dir, _registered })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `PID STARTTIME` of a live process, from `/proc/PID/stat`.
fn owner_line(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split(' ').nth(19)?;
    Some(format!("{pid} {start}\n"))
}

/// Whether the process an owner file names is gone (its pid is free or
/// belongs to a process started at another time).
fn owner_gone(owner: &str) -> bool {
    let Some(pid) = owner.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()) else { return false };
    owner_line(pid).is_none_or(|now| now.trim() != owner.trim())
}

/// Removes what dead runs left in the temporary directory: directories with
/// one of [`PREFIXES`] whose owner file names a process that is gone.
/// Returns the directories removed.
pub fn sweep_dead_runs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !PREFIXES.iter().any(|p| name.starts_with(p)) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(e.path().join(OWNER)) else { continue };
        if owner_gone(&owner) && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Removes every registered path (a few tries: threads may still be writing
/// into them). Returns the paths removed.
pub fn remove_registered() -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = lock().iter().map(|(_, p)| p.clone()).collect();
    let mut removed = Vec::new();
    for p in paths {
        for _ in 0..20 {
            let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            if r.is_ok() || !p.exists() {
                removed.push(p);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    removed
}

/// On SIGINT, SIGTERM or SIGHUP: removes every registered path, says so,
/// and exits (130, 143, 129). Installed once, before the work starts.
pub fn on_interrupt_clean_up() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let removed = remove_registered();
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprintln!(
                "\ninterrupted ({name}): removed {} temporary path{}",
                removed.len(),
                if removed.len() == 1 { "" } else { "s" }
            );
            std::process::exit(128 + sig);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_file_tells_a_live_process_from_a_dead_one() {
        let me = owner_line(std::process::id()).unwrap_or_default();
        assert!(!owner_gone(&me), "{me}");
        // The same pid started at another time: a reused pid.
        let pid = std::process::id();
        assert!(owner_gone(&format!("{pid} 1\n")));
        // A pid that no process has (above the kernel's limit).
        assert!(owner_gone("4194305 123\n"));
        assert!(!owner_gone("garbage"), "an unreadable owner is left alone");
    }

    #[test]
    fn registered_paths_are_removed_and_unregistered_ones_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(a.join("x")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&b, "b").unwrap_or_else(|e| panic!("{e}"));
        let ra = register(&a);
        let rb = register(&b);
        drop(rb);
        let removed = remove_registered();
        assert!(removed.contains(&a));
        assert!(!a.exists() && b.exists());
        drop(ra);
    }
}
