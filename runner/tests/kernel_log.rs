//! Kernel trouble (a warning, an oops) in the shared kernel log is charged
//! to the instance that caused it. In a test binary of its own: the
//! deliberate warning it writes would reach any ovlc run beside it. Needs
//! root, as CI runs it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// Kernel trouble logged while instances run side by side is charged to the
/// instance that causes it, not to its neighbours: each instance that saw it
/// runs again alone.
#[test]
fn kernel_trouble_is_charged_to_the_instance_that_causes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("layer l {\n    file /f \"x\"\n}\nmount l\n");
    for _ in 0..300 {
        body.push_str("drop-caches\n");
    }
    for name in ["noisy", "quiet"] {
        std::fs::write(dir.path().join(format!("{name}.ovl")), format!("scenario \"{name}\"\n{body}")).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "host", "-j", "2"])
        .arg(dir.path())
        .env("OVLC_FAULTS", "kmsg:noisy")
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let r = |id: &str| doc["results"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(r("quiet")["status"], "pass", "{:#}", r("quiet"));
    let noisy = r("noisy");
    assert_eq!(noisy["status"], "fail", "{noisy:#}");
    let f = &noisy["failures"][0];
    assert!(f["step"].as_str().unwrap().contains("run again alone"), "{noisy:#}");
    assert!(f["actual"].as_str().unwrap().contains("a deliberate warning"), "{noisy:#}");
}
