//! The agent side of a rootless run (`ovlc __agent MODE DIR`): enters a user
//! namespace, reads its job, runs a plan (or the benchmark's workloads) and
//! prints the result for the host.

use std::io::{Read, Write};
use std::path::Path;

use crate::exec;
use crate::model::{Outcome, Plan};
use crate::targets::host::Backing;

/// `ovlc __agent MODE DIR`: the agent side of [`crate::sys::userns::spawn_agent`]. Runs as an
/// unprivileged host user; must be called before any thread starts. `rootless`
/// runs a plan, `rootless-bench` the benchmark's workloads.
pub fn agent(mode: &str, dir: &Path) -> i32 {
    use nix::sched::{unshare, CloneFlags};
    if mode != "rootless" && mode != "rootless-bench" {
        eprintln!("unknown agent mode {mode}");
        return 2;
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        println!("unshare failed: {e}");
        return 3;
    }
    println!("unshared");
    let _ = std::io::stdout().flush();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading the job: {e}");
        return 3;
    }
    let root = c"/";
    if unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        eprintln!("making / private in the user namespace: {}", std::io::Error::last_os_error());
        return 3;
    }
    let out = if mode == "rootless-bench" {
        let job: crate::bench::BenchJob = match serde_json::from_slice(&input) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("decoding the job: {e}");
                return 3;
            }
        };
        match crate::bench::measure(crate::bench::BenchDriver::Rootless, &job.dir, &job.sizes, &job.workloads, || {}) {
            Ok(m) => serde_json::to_string(&m),
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    } else {
        let plan: Plan = match crate::model::plans_from_json(&input) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("decoding the plan: {e}");
                return 3;
            }
        };
        serde_json::to_string(&rootless_outcome(&plan, dir))
    };
    match out {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("encoding the result: {e}");
            3
        }
    }
}

fn rootless_outcome(plan: &Plan, dir: &Path) -> Outcome {
    let (release, _) = crate::sys::kernel_release();
    // On a disk, the directory (owned by the agent's root) is the backing;
    // the host side removes it.
    let backing = if plan.backing() == dsl::ast::Backing::Tmpfs {
        match Backing::mount(dir.to_path_buf()) {
            Ok(b) => Some(b),
            Err(e) => return Outcome::error(plan, &release, format!("{e} (inside the user namespace)")),
        }
    } else {
        None
    };
    let work = dir.join("w");
    if let Err(e) = std::fs::create_dir(&work) {
        return Outcome::error(plan, &release, format!("mkdir {}: {e}", work.display()));
    }
    let out = exec::run(plan, &work);
    drop(backing);
    out
}
