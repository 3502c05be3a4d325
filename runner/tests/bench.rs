//! `ovlc bench` as a smoke test: a few workloads on a few drivers, the JSON
//! and SVG outputs checked. Needs root.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn quick_bench_measures_verifies_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let svg = dir.path().join("b.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args([
            "bench",
            "--quick",
            "--drivers",
            "kernel,rootless,fuse",
            "--workloads",
            "read-warm,read-cold,stat,copy-up,commit",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("median time, and relative to plain"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let reps = doc["sizes"]["reps"].as_u64().unwrap() as usize;
    for d in ["plain", "kernel", "rootless", "fuse"] {
        for w in ["read-warm", "read-cold", "stat", "copy-up", "commit"] {
            let m = results
                .iter()
                .find(|m| m["driver"] == d && m["workload"] == w)
                .unwrap_or_else(|| panic!("no {d} {w} in {doc:#}"));
            assert_eq!(m["times_ms"].as_array().unwrap().len(), reps, "{m:#}");
            let (min, med, max) =
                (m["min_ms"].as_f64().unwrap(), m["median_ms"].as_f64().unwrap(), m["max_ms"].as_f64().unwrap());
            assert!(min <= med && med <= max && min >= 0.0, "{m:#}");
            assert!(m["throughput"].as_f64().unwrap() > 0.0, "{m:#}");
            if d == "plain" {
                assert_eq!(m["ratio_to_plain"].as_f64().unwrap(), 1.0);
            }
        }
    }
    // Nothing else was measured, and the data directory is gone.
    assert!(results.iter().all(|m| m["workload"] != "seq-write" && m["driver"] != "copy"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "only b.json and b.svg remain");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("read-cold") && svg.contains(">fuse<"), "{svg}");
}

#[test]
fn bench_refuses_unknown_targets() {
    for t in ["moon", "vm:"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["bench", "--quick", "--target", t]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{t}");
    }
}

/// The benchmark inside a VM (TCG here): the same workloads, labelled with the guest's kernel.
#[test]
fn quick_bench_runs_inside_a_vm() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st =
        Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["kernels", "fetch", "7.3"]).current_dir(&repo).status().unwrap();
    assert!(st.success());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args([
            "bench",
            "--quick",
            "--target",
            "vm:7.3",
            "--drivers",
            "kernel,rootless",
            "--workloads",
            "read-warm,stat,copy-up",
        ])
        .arg("--json")
        .arg(&json)
        .current_dir(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["target"], "vm:7.3");
    assert!(doc["kernel"].as_str().unwrap().starts_with("7.3"), "{doc:#}");
    let results = doc["results"].as_array().unwrap();
    for d in ["plain", "kernel", "rootless"] {
        for w in ["read-warm", "stat", "copy-up"] {
            assert!(results.iter().any(|m| m["driver"] == d && m["workload"] == w), "no {d} {w}: {doc:#}");
        }
    }
    assert!(stdout.contains("note: QEMU"), "{stdout}");
}
