//! Verdicts that do not depend on what else the machine is doing: no
//! instance sees (or keeps alive) another's mounts, and a path walk the
//! kernel asks to retry is retried, not reported. Needs root, as CI runs it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use runner::sys;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// An overlay with `index=on` on a fresh tmpfs at `dir`; returns the merged path.
fn mount_indexed_overlay(dir: &Path) -> PathBuf {
    sys::mount_legacy("t", dir, "tmpfs", 0, "size=16m").unwrap();
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(dir.join(d)).unwrap();
    }
    remount_indexed_overlay(dir).unwrap();
    dir.join("m")
}

fn remount_indexed_overlay(dir: &Path) -> Result<(), nix::errno::Errno> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=on",
        dir.join("l").display(),
        dir.join("u").display(),
        dir.join("w").display()
    );
    sys::mount_legacy("overlay", &dir.join("m"), "overlay", 0, &opts)
}

/// The kernel's proof, as ovlc's instances meet it: an `index=on` upper is
/// "in use" until its superblock goes, and a mount namespace created while
/// the overlay is mounted keeps a copy that pins the superblock. Instance A
/// mounts; instance B starts a process that makes a namespace of its own
/// (as the rootless agent does); A unmounts and mounts again: that must work,
/// because B's namespace never held A's mounts.
#[test]
fn an_instance_never_holds_another_instances_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    std::fs::create_dir(&a_dir).unwrap();
    let (to_b, b_rx) = mpsc::channel::<()>();
    let (to_a, a_rx) = mpsc::channel::<Option<bool>>();
    let a_dir2 = a_dir.clone();
    let a = std::thread::spawn(move || {
        let _ns = sys::InstanceNamespace::enter().unwrap();
        let merged = mount_indexed_overlay(&a_dir2);
        to_b.send(()).unwrap();
        // B has its process running with a namespace of its own.
        let b_saw_a = a_rx.recv().unwrap();
        sys::umount(&merged, 0).unwrap();
        let again = remount_indexed_overlay(&a_dir2);
        let _ = sys::umount(&merged, libc::MNT_DETACH);
        let _ = sys::umount(&a_dir2, libc::MNT_DETACH);
        (b_saw_a, again)
    });
    let b_dir = a_dir.clone();
    let b = std::thread::spawn(move || {
        b_rx.recv().unwrap();
        let _ns = sys::InstanceNamespace::enter().unwrap();
        let saw = sys::is_mountpoint(&b_dir.join("m")) || sys::is_mountpoint(&b_dir);
        let mut child = Command::new("unshare").args(["-m", "--propagation", "private", "sleep", "3"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        to_a.send(Some(saw)).unwrap();
        let _ = child.kill();
        let _ = child.wait();
    });
    b.join().unwrap();
    let (b_saw_a, again) = a.join().unwrap();
    assert_eq!(b_saw_a, Some(false), "instance B saw instance A's mounts");
    assert_eq!(again, Ok(()), "A's index=on upper stayed in use after its umount (a copy of its mount elsewhere)");
    // Nothing leaked into the namespace the test runs in.
    assert!(!sys::is_mountpoint(&a_dir));
}

/// A thread that enters and leaves instance namespaces comes back where it
/// was: relative paths (scenario files) still resolve afterwards.
#[test]
fn leaving_an_instance_namespace_restores_the_working_directory() {
    let before = std::env::current_dir().unwrap();
    let t = std::thread::spawn(|| {
        let here = std::fs::canonicalize(".").unwrap();
        for _ in 0..3 {
            let ns = sys::InstanceNamespace::enter().unwrap();
            drop(ns);
        }
        (here, std::fs::canonicalize(".").unwrap())
    });
    let (here, after) = t.join().unwrap();
    assert_eq!(here, after);
    assert_eq!(std::env::current_dir().unwrap(), before);
}

/// Reads through `..` while renames happen elsewhere on the system: the
/// kernel answers `openat2(RESOLVE_IN_ROOT)` with EAGAIN now and then, which
/// must be retried, never reported as the read's result.
#[test]
fn reads_through_dotdot_hold_while_other_work_renames() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "scenario \"reads through a symlink that walks ..\"\nlayer l {\n  file /a/foo \"x\"\n  symlink /a/s -> \"../a/foo\"\n}\nmount l\n",
    );
    for _ in 0..1500 {
        text.push_str("read /a/s => \"x\"\n");
    }
    std::fs::write(dir.path().join("dotdot.ovl"), text).unwrap();
    // Churn: renames in another directory, for as long as the run lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let churn_dir = tempfile::tempdir().unwrap();
    let (stop2, cd) = (stop.clone(), churn_dir.path().to_path_buf());
    let churn = std::thread::spawn(move || {
        let (p, q) = (cd.join("p"), cd.join("q"));
        std::fs::write(&p, "").unwrap();
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            std::fs::rename(&p, &q).unwrap();
            std::fs::rename(&q, &p).unwrap();
            n += 2;
        }
        n
    });
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "host,host-fuse", "-j", "2"])
        .arg(dir.path())
        .current_dir(repo())
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let renames = churn.join().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(renames > 1000, "the churn did not run ({renames} renames)");
    for r in doc["results"].as_array().unwrap() {
        let eagain = r["steps"].as_array().unwrap().iter().filter(|s| s["result"] == "EAGAIN").count();
        assert_eq!(eagain, 0, "{} on {}: {eagain} reads reported EAGAIN", r["id"], r["target"]);
        assert_eq!(r["status"], "pass", "{r:#}");
    }
}

fn repeat_run(dir: &Path, faults: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host", "-j", "3", "--repeat", "3", "--seed", "42"])
        .arg(dir)
        .env("OVLC_FAULTS", faults)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--repeat N` runs the selection N times in shuffled orders (the seed is
/// printed and replayable) and fails naming an instance whose result differs.
#[test]
fn repeated_rounds_must_agree_and_a_difference_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(
            dir.path().join(format!("{name}.ovl")),
            format!("scenario \"{name}\"\nlayer l {{\n  file /f \"1\"\n}}\nmount l\nwrite /f \"{name}\"\nread /f => \"{name}\"\n"),
        )
        .unwrap();
    }
    let (code, stdout, stderr) = repeat_run(dir.path(), "");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("3 rounds in shuffled order, seed 42 (replay with --seed 42)"), "{stderr}");
    assert!(stdout.contains("all 3 rounds agree (seed 42)"), "{stdout}");
    assert!(stdout.ends_with("3 passed, 0 failed, 0 skipped\n"), "{stdout}");

    // An instance that fails every other run: rounds 1 and 3 pass, round 2 fails.
    let (code, stdout, _) = repeat_run(dir.path(), "flaky:b");
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("results that differ between rounds (replay with --seed 42):"), "{stdout}");
    assert!(stdout.contains("  b on host, round 2 vs round 1: status: pass -> fail; "), "{stdout}");
    assert!(!stdout.contains("round 3 vs"), "{stdout}");
    assert!(!stdout.contains("  a on host, round"), "{stdout}");
    assert!(stdout.ends_with("3 passed, 0 failed, 0 skipped, 1 result differs between rounds\n"), "{stdout}");
}

/// A walk that cannot look at an entry readdir listed names the entry (a
/// directory its reader may list but not search gives that shape).
#[test]
fn a_tree_walk_names_the_entry_it_could_not_look_at() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("x"), "x").unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = std::thread::spawn(move || {
        let _id = sys::Identity::assume(65534, 65534).unwrap();
        runner::tree::capture(dir.path(), runner::tree::Dialect::Plain).unwrap_err().to_string()
    })
    .join()
    .unwrap();
    assert!(err.contains(": lstat /d/x (an entry readdir listed): EACCES"), "{err}");
}
