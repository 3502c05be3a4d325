//! The scenario library on the three host targets: every instance passes (or
//! is skipped by its `requires`), and its upper tree with the step results
//! matches the snapshot under `snapshots/<target>/` (insta; review changes
//! with `cargo insta review`). Needs root, as CI runs it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

#[test]
fn the_library_passes_on_every_host_target_and_matches_its_snapshots() {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args([
            "run",
            "--format",
            "json",
            "--snapshots",
            "ignore",
            "--target",
            "host,host-rootless,host-fuse",
            "scenarios",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let results = doc["results"].as_array().unwrap();
    assert!(!results.is_empty());
    let mut bad = Vec::new();
    for r in results {
        let (id, target, status) =
            (r["id"].as_str().unwrap(), r["target"].as_str().unwrap(), r["status"].as_str().unwrap());
        match status {
            "pass" => {}
            "skip" => {
                let reason = r["reason"].as_str().unwrap();
                // A `requires` that does not hold, or what this place cannot do:
                // disk filesystems (VMs only), what a user namespace may not,
                // or a mount fuse-overlayfs cannot be given (the `via fd` probe).
                let place = reason.contains("VM targets only")
                    || (target == "host-rootless" && reason.contains("a user namespace"))
                    || (target == "host-fuse" && reason.contains("fuse-overlayfs takes its layers"));
                assert!(reason.starts_with("requires ") || place, "{id} on {target}: {r:#}")
            }
            _ => bad.push(format!("{id} on {target}: {status}: {:#}", r["failures"])),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for t in ["host", "host-rootless", "host-fuse"] {
        assert!(results.iter().any(|r| r["target"] == t && r["status"] == "pass"), "nothing passed on {t}");
    }
    // Snapshots: one per (instance, target) that ran.
    for r in results.iter().filter(|r| r["status"] == "pass") {
        let o: runner::model::Outcome = serde_json::from_value(r.clone()).unwrap();
        let file = runner::snapshot::path_for(&repo().join("snapshots"), &o.target, &o.id);
        let dir = file.parent().unwrap().to_path_buf();
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_input_file(Path::new("runner/tests/host_targets.rs"));
        settings.set_description(format!("{} on {}", o.id, o.target));
        settings.bind(|| insta::assert_snapshot!(name, o.snapshot_text()));
    }
}
