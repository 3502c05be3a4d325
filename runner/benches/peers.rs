//! unionmount-testsuite beside ovlc, on the same subtests, on the host kernel
//! (needs root).
//!
//! `cargo bench -p runner --bench peers -- PATH` (or `OVLC_PEER_UNIONMOUNT=PATH`)
//! where PATH is a checkout of unionmount-testsuite (relative to the workspace's
//! root). It runs the peer's own
//! `run --ov --samefs` over the test files ported to `scenarios/unionmount/`
//! (`rename-exdev` with `--xdev`, as the peer's run chooses it), and `ovlc run
//! --target host` over the scenarios that port them in the same mode (copies
//! whose `param mode` axis is cut to `samefs`), alternating, and prints the
//! median wall time of each and their ratio.
//!
//! The peer mounts and writes only below its UNIONMOUNT_BASEDIR and
//! UNIONMOUNT_MNTPOINT: both are set inside a tmpfs that this process mounts
//! in its own private mount namespace, so nothing of the host is touched, and
//! Python writes no bytecode into the checkout.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REPS: usize = 5;

/// A ported test file: its peer name, the scenario, its subtest count.
struct Ported {
    name: String,
    scenario: PathBuf,
    subtests: usize,
}

/// The ported files, as `ovlc report peers` reads them.
fn ported(dir: &Path) -> Vec<Ported> {
    let read = runner::report::peers::Ported::read(dir, &dir.to_string_lossy());
    read.unionmount
        .into_iter()
        .map(|(file, p)| Ported {
            name: file.strip_suffix(".py").unwrap_or(&file).to_string(),
            scenario: PathBuf::from(p.scenario),
            subtests: p.subtests.len(),
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// The peer over `names` in `flags`, inside a fresh tmpfs; Ok(wall) or the
/// peer's failure.
fn peer(checkout: &Path, scratch: &Path, runs: &[(&[&str], Vec<&str>)]) -> Result<Duration, String> {
    let t = Instant::now();
    for (flags, names) in runs {
        if names.is_empty() {
            continue;
        }
        let out = Command::new("python3")
            .arg(checkout.join("run"))
            .args(*flags)
            .args(names)
            .current_dir(checkout)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("UNIONMOUNT_BASEDIR", scratch.join("base"))
            .env("UNIONMOUNT_MNTPOINT", scratch.join("mnt"))
            .env_remove("UNIONMOUNT_LOWERDIR")
            .env_remove("UNIONMOUNT_MNTOPTIONS")
            .output()
            .map_err(|e| format!("python3: {e}"))?;
        if !out.status.success() {
            let tail: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap_or("").lines().rev().take(8).collect();
            return Err(format!(
                "{} {} exited with {}: ...{}\n{}",
                flags.join(" "),
                names.join(" "),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(t.elapsed())
}

/// `ovlc run` on `host` over `files`, with `-j JOBS` if given.
fn ovlc(repo: &Path, files: &[&Path], jobs: Option<&str>) -> (Duration, usize) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "host"])
        .args(jobs.map(|j| ["-j", j]).into_iter().flatten())
        .args(files)
        .current_dir(repo)
        .output()
        .unwrap();
    let wall = t.elapsed();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = doc["results"].as_array().unwrap();
    let passed = results.iter().filter(|r| r["status"] == "pass").count();
    assert_eq!(passed, results.len(), "ovlc: not every instance passed on host");
    (wall, results.len())
}

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let Some(checkout) = arg.or_else(|| std::env::var("OVLC_PEER_UNIONMOUNT").ok()).map(PathBuf::from) else {
        println!(
            "peer benchmark skipped: give a unionmount-testsuite checkout \
             (cargo bench -p runner --bench peers -- PATH, or OVLC_PEER_UNIONMOUNT=PATH)"
        );
        return;
    };
    // cargo runs benchmarks in the package's directory: a relative path is
    // taken from the workspace's root, where `cargo bench` is typed.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checkout = if checkout.is_relative() { repo.join(checkout) } else { checkout };
    if !checkout.join("run").is_file() || !checkout.join("tests").is_dir() {
        println!("peer benchmark skipped: {} is not a unionmount-testsuite checkout", checkout.display());
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("peer benchmark skipped: both suites mount file systems and need root");
        return;
    }
    let checkout = std::fs::canonicalize(&checkout).unwrap();
    let files = ported(&repo.join("scenarios/unionmount"));
    let subtests: usize = files.iter().map(|f| f.subtests).sum();
    let exdev: Vec<&str> = files.iter().filter(|f| f.name == "rename-exdev").map(|f| f.name.as_str()).collect();
    let rest: Vec<&str> = files.iter().filter(|f| f.name != "rename-exdev").map(|f| f.name.as_str()).collect();
    let runs: Vec<(&[&str], Vec<&str>)> = vec![(&["--ov", "--samefs"], rest), (&["--ov", "--samefs", "--xdev"], exdev)];
    // The peer runs in one mode (--samefs): so do the scenarios, copied with
    // their `param mode` axis cut to `samefs` (and the layers they read).
    let copies = tempfile::tempdir().unwrap();
    let layers = repo.join("scenarios/unionmount/layers");
    std::fs::create_dir(copies.path().join("layers")).unwrap();
    for e in std::fs::read_dir(&layers).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copies.path().join("layers").join(e.file_name())).unwrap();
    }
    let mut scenarios: Vec<PathBuf> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(&f.scenario).unwrap();
        let one: Vec<&str> =
            text.lines().map(|l| if l.starts_with("param mode=") { "param mode=samefs" } else { l }).collect();
        let copy = copies.path().join(f.scenario.file_name().unwrap());
        std::fs::write(&copy, one.join("\n") + "\n").unwrap();
        scenarios.push(copy);
    }
    let scenarios: Vec<&Path> = scenarios.iter().map(PathBuf::as_path).collect();

    runner::sys::private_mount_namespace().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tmpfs = |on: &Path| {
        nix::mount::mount(Some("peerbench"), on, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    };
    tmpfs(scratch.path());
    std::fs::create_dir(scratch.path().join("base")).unwrap();
    std::fs::create_dir(scratch.path().join("mnt")).unwrap();

    println!(
        "unionmount-testsuite ({}) beside ovlc on the host kernel: {} test files, {subtests} subtests, \
         median of {REPS} alternating runs",
        checkout.display(),
        files.len()
    );
    // Warm-up: the page cache, Python's imports, the first mounts.
    if let Err(e) = peer(&checkout, scratch.path(), &runs) {
        println!("  the peer failed on this kernel, so its time would mean nothing: {e}");
        return;
    }
    let (_, instances) = ovlc(&repo, &scenarios, Some("1"));
    let (mut p, mut o1, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        p.push(peer(&checkout, scratch.path(), &runs).unwrap());
        o1.push(ovlc(&repo, &scenarios, Some("1")).0);
        on.push(ovlc(&repo, &scenarios, None).0);
    }
    let (p, o1, on) = (median(p), median(o1), median(on));
    println!("  unionmount-testsuite run --ov --samefs: {p:.0} ms ({:.2} ms a subtest)", p / subtests as f64);
    println!(
        "  ovlc run --target host -j 1 ({instances} instances): {o1:.0} ms ({:.2} ms a subtest); \
         the peer takes {:.1}x as long",
        o1 / subtests as f64,
        p / o1
    );
    println!("  ovlc run --target host, one job per CPU: {on:.0} ms; the peer takes {:.1}x as long", p / on);
    let _ = nix::mount::umount2(scratch.path(), nix::mount::MntFlags::MNT_DETACH);
}
