//! VM targets for real: Debian's kernels 5.10, 6.1, 6.12, 7.2 and 7.3 booted
//! under QEMU (TCG where KVM does not run guests), each running the scenario
//! library as one batch. Prepares what it needs: the static guest build
//! (scripts/build-guest.sh) and the locked kernels (`ovlc kernels fetch`).
//! Needs root, network access to Debian's archive (once) and QEMU.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const KERNELS: [&str; 5] = ["5.10", "6.1", "6.12", "7.2", "7.3"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn prepare() {
    let guest = repo().join("target/guest/x86_64-unknown-linux-gnu/release/ovlc");
    if !guest.is_file() {
        let st = Command::new("bash").arg("scripts/build-guest.sh").current_dir(repo()).status().unwrap();
        assert!(st.success(), "building the static guest failed");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["kernels", "fetch"]).current_dir(repo()).output().unwrap();
    assert!(out.status.success(), "ovlc kernels fetch: {}", String::from_utf8_lossy(&out.stderr));
}

fn run(targets: &str, paths: &[&str]) -> Value {
    let guest = repo().join("target/guest/x86_64-unknown-linux-gnu/release/ovlc");
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", targets])
        .args(paths)
        .env("OVLC_GUEST_BINARY", guest)
        .current_dir(repo())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_library_passes_on_every_default_kernel_with_kernel_and_fuse_drivers_and_matches_its_snapshots() {
    prepare();
    let mut targets: Vec<String> = KERNELS.iter().map(|k| format!("vm:{k}")).collect();
    targets.extend(KERNELS.iter().map(|k| format!("vm:{k}/fuse")));
    let doc = run(&targets.join(","), &["scenarios"]);
    let results = doc["results"].as_array().unwrap();
    let mut bad = Vec::new();
    for r in results {
        match r["status"].as_str().unwrap() {
            "pass" | "skip" => {}
            s => bad.push(format!("{} on {}: {s}: {} {:#}", r["id"], r["target"], r["reason"], r["failures"])),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for k in KERNELS {
        let kernel =
            results.iter().find(|r| r["target"] == format!("vm:{k}")).unwrap()["kernel"].as_str().unwrap().to_string();
        assert!(kernel.starts_with(k), "vm:{k} ran kernel {kernel}");
    }
    for r in results.iter().filter(|r| r["status"] == "pass") {
        let o: runner::exec::Outcome = serde_json::from_value(r.clone()).unwrap();
        let file = runner::snapshot::path_for(&repo().join("snapshots"), &o.target, &o.id);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(file.parent().unwrap());
        settings.set_prepend_module_to_snapshot(false);
        settings.set_input_file(Path::new("runner/tests/host_targets.rs"));
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        settings.bind(|| insta::assert_snapshot!(name, o.snapshot_text()));
    }
}

/// The differences between kernels that the kernels/ scenarios state hold on
/// every default kernel, for the rootless driver.
#[test]
fn rootless_kernel_differences_hold_on_every_default_kernel() {
    prepare();
    let targets: Vec<String> = KERNELS.iter().map(|k| format!("vm:{k}/rootless")).collect();
    let doc = run(&targets.join(","), &["scenarios/kernels"]);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    for r in results {
        assert!(r["status"] == "pass" || r["status"] == "skip", "{r:#}");
    }
    let mount = |k: &str| {
        results
            .iter()
            .find(|r| r["id"] == "kernels/rootless-mount" && r["target"] == format!("vm:{k}/rootless"))
            .unwrap()
    };
    assert_eq!(mount("5.10")["steps"][0]["result"], "EPERM");
    assert_eq!(mount("6.1")["steps"][0]["result"], "ok");
}

/// A kernel of one's own: the cached 6.12 image and modules given by path.
#[test]
fn a_custom_kernel_image_runs_the_lab() {
    prepare();
    let cache = vm::kernels::cache_dir().join("kernels");
    let dir = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("6.12"))
        .unwrap();
    let release = dir.file_name().unwrap().to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "vm:custom", "--kernel-image"])
        .arg(dir.join("vmlinuz"))
        .arg("--modules")
        .arg(dir.join("modules").join(&release))
        .arg("scenarios/lab")
        .env("OVLC_GUEST_BINARY", repo().join("target/guest/x86_64-unknown-linux-gnu/release/ovlc"))
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("10 passed, 0 failed"), "{stdout}");
    // vm:custom without an image is bad usage.
    let bad = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--target", "vm:custom", "scenarios/lab"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// A guest that hangs is charged to the instance that was running; the rest
/// of the batch continues in a fresh machine.
#[test]
fn a_hung_instance_is_charged_and_the_batch_goes_on() {
    prepare();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("scenarios/vm");
    std::fs::create_dir_all(&sdir).unwrap();
    // Reading a fifo with no writer blocks forever.
    std::fs::write(sdir.join("a-hang.ovl"), "scenario \"hangs\"\nlayer l {\n    fifo /p\n}\nmount l\nread /p\n")
        .unwrap();
    std::fs::write(
        sdir.join("b-after.ovl"),
        "scenario \"after\"\nlayer l {\n    file /a \"a\"\n}\nmount l\nread /a => \"a\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "vm:6.12"])
        .arg(&sdir)
        .env("OVLC_GUEST_BINARY", repo().join("target/guest/x86_64-unknown-linux-gnu/release/ovlc"))
        .env("OVLC_VM_TIMEOUT", "40")
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = doc["results"].as_array().unwrap();
    assert_eq!(r.len(), 2, "{doc:#}");
    assert_eq!(r[0]["status"], "error", "{doc:#}");
    assert!(r[0]["reason"].as_str().unwrap().contains("timed out"), "{doc:#}");
    assert_eq!(r[1]["status"], "pass", "{doc:#}");
    assert_eq!(out.status.code(), Some(3));
}
