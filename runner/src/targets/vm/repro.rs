//! Test support for `ovlc repro`: running generated reproducer scripts
//! inside a VM of a catalog kernel. The guest has no shell and no Python of
//! its own, so the host's `dash` (as `/bin/sh`), the coreutils and
//! util-linux programs a script calls and `python3` with the standard
//! library modules the scripts import go into the initramfs with their
//! shared libraries; the agent (PID 1) finds `/repro.json`, runs each
//! script with `/bin/sh` and sends its output and exit code back as a
//! checksummed console frame (`OVLC-REPRO <sha256> <json>`), as results
//! come back from instances.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dsl::ast::Driver;
use serde::{Deserialize, Serialize};

use super::initramfs::{manifest, program_closure};
use super::machine::{module_closure, prepare, VmTarget};
use super::wire;
use crate::error::{Error, Result};

/// The console frame of one script's run.
pub const REPRO: &str = "OVLC-REPRO ";

/// What the guest is asked to run: scripts by instance id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReproJob {
    pub scripts: Vec<(String, String)>,
}

/// One script's run in the guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScriptRun {
    pub id: String,
    /// The exit code (`None`: killed by a signal, or the script never ran).
    pub code: Option<i32>,
    /// Standard output, then standard error.
    pub output: String,
}

/// The programs a reproducer runs besides `sh` and `python3`.
const PROGRAMS: &[&str] = &[
    "id", "mktemp", "mkdir", "rm", "mknod", "chown", "chmod", "ln", "yes", "head", "truncate", "mount", "umount",
    "unshare",
];

/// The modules a reproducer's Python imports (the runtime and the shell's helpers).
const PY_IMPORTS: &str = "import ctypes, hashlib, json, mmap, os, stat, struct, sys, time";

fn find(program: &str) -> Result<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Infrastructure(format!("{program} not found in /usr/bin, /bin, /usr/sbin or /sbin")))
}

/// The host's python3 and the files of the modules it loads for [`PY_IMPORTS`].
fn python_files() -> Result<(PathBuf, Vec<PathBuf>)> {
    // The distribution's python, not a shim on PATH: its standard library sits at its prefix.
    let py = std::fs::canonicalize("/usr/bin/python3").map_err(Error::doing("finding /usr/bin/python3"))?;
    let code = format!(
        "{PY_IMPORTS}\nfor m in list(sys.modules.values()):\n    f = getattr(m, '__file__', None)\n    if f: print(f)\n"
    );
    let out = std::process::Command::new(&py).args(["-c", &code]).output().map_err(Error::doing("running python3"))?;
    if !out.status.success() {
        return Err(Error::Infrastructure(format!("python3: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let files = String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).filter(|p| p.is_file()).collect();
    Ok((py, files))
}

/// Entries for `files` at their own paths, parents first, without repeating
/// what `have` holds.
fn add(entries: &mut Vec<vm::initramfs::Entry>, new: Vec<vm::initramfs::Entry>) {
    for e in new {
        if !entries.iter().any(|x| x.path() == e.path()) {
            entries.push(e);
        }
    }
}

fn file_entries(files: &[PathBuf]) -> Vec<vm::initramfs::Entry> {
    use vm::initramfs::Entry;
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        let mut cur = f.parent();
        while let Some(d) = cur.filter(|d| d.as_os_str() != "/") {
            dirs.insert(d.display().to_string());
            cur = d.parent();
        }
    }
    let mut out: Vec<Entry> = dirs.into_iter().map(|d| Entry::Dir { path: d, mode: 0o755 }).collect();
    out.sort_by_key(|e| e.path().matches('/').count());
    out.extend(files.iter().map(|f| Entry::HostFile { path: f.display().to_string(), mode: 0o644, from: f.clone() }));
    out
}

/// Boots `target`'s kernel once and runs every script in it, in order.
pub fn run_scripts(
    target: &VmTarget,
    scripts: &[(String, String)],
    catalog: &vm::kernels::CatalogSource,
) -> Result<Vec<ScriptRun>> {
    use vm::initramfs::Entry;
    let machine = prepare(target, catalog)?;
    let modules = module_closure(machine.modules.as_deref(), Driver::Kernel, &[], &[])?;
    let mut entries = manifest(&machine.agent, &modules, b"[]".to_vec());
    let dash = find("dash")?;
    add(&mut entries, program_closure(&dash)?);
    for p in PROGRAMS {
        add(&mut entries, program_closure(&find(p)?)?);
    }
    let (py, files) = python_files()?;
    add(&mut entries, program_closure(&py)?);
    let (so, py_files): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|f| f.extension().is_some_and(|x| x == "so"));
    add(&mut entries, file_entries(&py_files));
    for s in &so {
        add(&mut entries, program_closure(s)?);
    }
    // Where the scripts look for them: sh, python3 and every program on /usr/bin.
    add(&mut entries, vec![Entry::Dir { path: "/bin".into(), mode: 0o755 }]);
    add(&mut entries, vec![Entry::HostFile { path: "/bin/sh".into(), mode: 0o755, from: dash }]);
    add(&mut entries, vec![Entry::Dir { path: "/usr/bin".into(), mode: 0o755 }]);
    add(&mut entries, vec![Entry::HostFile { path: "/usr/bin/python3".into(), mode: 0o755, from: py.clone() }]);
    for p in PROGRAMS {
        let from = find(p)?;
        add(&mut entries, vec![Entry::HostFile { path: format!("/usr/bin/{p}"), mode: 0o755, from }]);
    }
    let job = ReproJob { scripts: scripts.to_vec() };
    entries.push(Entry::File {
        path: "/repro.json".into(),
        mode: 0o644,
        data: serde_json::to_vec(&job).map_err(|e| Error::Infrastructure(e.to_string()))?,
    });
    let archive = vm::initramfs::write(&entries).map_err(Error::doing("initramfs"))?;
    let dir =
        crate::sys::cleanup::TempDir::new(crate::sys::cleanup::VM).map_err(Error::doing("a temporary directory"))?;
    let m = machine.describe(dir.path(), archive, 512, Vec::new(), Vec::new())?;
    let allowance = if m.accel == vm::qemu::Accel::Kvm { 20 } else { 120 };
    let c = vm::console::boot(&m, Duration::from_secs(180 + allowance * scripts.len() as u64))?;
    let mut runs: Vec<ScriptRun> = c
        .output
        .lines()
        .filter_map(|l| wire::unframe(REPRO, l))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    if runs.len() < scripts.len() {
        let tail = c.tail(40);
        for (id, _) in &scripts[runs.len()..] {
            runs.push(ScriptRun { id: id.clone(), code: None, output: format!("no result from the guest:\n{tail}") });
        }
    }
    Ok(runs)
}

/// The guest's side: runs each script of `/repro.json` with `/bin/sh` and
/// prints its frame.
pub fn guest_run(job: &ReproJob, out: &mut impl std::io::Write) {
    let path = Path::new("/tmp/ovlc-repro.sh");
    for (id, text) in &job.scripts {
        let run = match std::fs::write(path, text) {
            Ok(()) => std::process::Command::new("/bin/sh")
                .arg(path)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("TMPDIR", "/tmp")
                .output()
                .map(|o| ScriptRun {
                    id: id.clone(),
                    code: o.status.code(),
                    output: format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
                })
                .unwrap_or_else(|e| ScriptRun { id: id.clone(), code: None, output: format!("/bin/sh: {e}") }),
            Err(e) => ScriptRun { id: id.clone(), code: None, output: format!("writing the script: {e}") },
        };
        let json = serde_json::to_string(&run).unwrap_or_default();
        let _ = writeln!(out, "\n{}", wire::frame(REPRO, &json));
        let _ = out.flush();
    }
}
