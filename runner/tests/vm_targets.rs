//! VM targets for real: Debian's kernels 5.10, 6.1, 6.12, 7.2 and 7.3 booted
//! under QEMU (TCG where KVM does not run guests), each running the scenario
//! library as one batch. Prepares what it needs: the locked kernels (`ovlc
//! kernels fetch`); the guest's /init is the (static) ovlc under test.
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
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["kernels", "fetch"]).current_dir(repo()).output().unwrap();
    assert!(out.status.success(), "ovlc kernels fetch: {}", String::from_utf8_lossy(&out.stderr));
}

/// The library's areas but the peer suites' ports (`scenarios/unionmount`,
/// `scenarios/xfstests`: two thirds of its instances), which the main job
/// runs on every target with their snapshots; the tests check the VM
/// targets on the rest.
fn library_but_the_peers() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "unionmount" && n != "xfstests")
        .map(|n| format!("scenarios/{n}"))
        .collect();
    v.sort();
    v
}

fn run<S: AsRef<std::ffi::OsStr>>(targets: &str, paths: &[S]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", targets])
        .args(paths)
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
    let doc = run(&targets.join(","), &library_but_the_peers());
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
        let o: runner::model::Outcome = serde_json::from_value(r.clone()).unwrap();
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
    assert_eq!(results.len(), 35);
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

/// The cached 6.12 kernel's directory and release, as a kernel of one's own.
fn cached_6_12() -> (PathBuf, String) {
    let cache = vm::kernels::cache_dir().join("kernels");
    let dir = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("6.12"))
        .unwrap();
    let release = dir.file_name().unwrap().to_string_lossy().into_owned();
    (dir, release)
}

/// A kernel of one's own: the cached 6.12 image and modules given by path.
#[test]
fn a_custom_kernel_image_runs_the_lab() {
    prepare();
    let (dir, release) = cached_6_12();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "vm:custom", "--kernel-image"])
        .arg(dir.join("vmlinuz"))
        .arg("--modules")
        .arg(dir.join("modules").join(&release))
        .arg("scenarios/lab")
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("20 passed, 0 failed"), "{stdout}");
    // vm:custom without an image is bad usage.
    let bad = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--target", "vm:custom", "scenarios/lab"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `ovlc run --bisect` gives `git bisect run` its exit codes: a kernel of
/// one's own (the cached 6.12) passing the lab step is good (0), the same
/// step with a wrong expectation is bad (1), an image that is no kernel
/// cannot be tested (125), and a path that does not exist stops (128).
#[test]
fn a_bisection_reads_good_bad_untestable_and_stop() {
    prepare();
    let (dir, release) = cached_6_12();
    let tmp = tempfile::tempdir().unwrap();
    let good = repo().join("scenarios/lab/02-copy-up.ovl");
    let text = std::fs::read_to_string(&good).unwrap();
    let wrong = text.replace("read /etc/hosts => \"127.0.0.1 localhost\\n10.0.0.1 db\\n\"", "read /etc/hosts => \"x\"");
    assert_ne!(wrong, text);
    let bad = tmp.path().join("02-copy-up.ovl");
    std::fs::write(&bad, wrong).unwrap();
    let garbage = tmp.path().join("bzImage");
    std::fs::write(&garbage, vec![0x5a_u8; 65536]).unwrap();
    let bisect = |image: &Path, modules: bool, scenario: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovlc"));
        c.args(["run", "--bisect", "--snapshots", "ignore", "--target", "vm:custom", "--kernel-image"]).arg(image);
        if modules {
            c.arg("--modules").arg(dir.join("modules").join(&release));
        }
        let out = c.arg(scenario).current_dir(repo()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let kernel = dir.join("vmlinuz");
    let (code, out) = bisect(&kernel, true, &good);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = bisect(&kernel, true, &bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL"), "{out}");
    let (code, out) = bisect(&garbage, false, &good);
    assert_eq!(code, Some(125), "{out}");
    assert!(out.contains("cannot be tested"), "{out}");
    let (code, out) = bisect(&kernel, true, &tmp.path().join("none.ovl"));
    assert_eq!(code, Some(128), "{out}");
}

/// A target sets overlay module parameters on the guest's command line:
/// Debian's 5.10 carries `permit_mounts_in_userns` (a distribution patch),
/// off by default (a rootless mount is refused with EPERM); set, the mount
/// gets past the permission check and is refused for `userxattr`, which
/// 5.10 does not know (EINVAL, in the kernel's words).
#[test]
fn a_target_sets_the_overlay_module_parameters() {
    prepare();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--format", "json", "--target"])
        .arg("vm:5.10/rootless,vm:5.10/rootless?permit_mounts_in_userns=1")
        .arg("scenarios/probes/module-parameters.ovl")
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let on = |t: &str| v["results"].as_array().unwrap().iter().find(|o| o["target"] == t).unwrap().clone();
    let (off, set) = (on("vm:5.10/rootless"), on("vm:5.10/rootless?permit_mounts_in_userns=1"));
    assert_eq!(off["module_params"]["permit_mounts_in_userns"], "N", "{off}");
    assert_eq!(set["module_params"]["permit_mounts_in_userns"], "Y", "{set}");
    assert_eq!(off["steps"][0]["result"], "EPERM", "{off}");
    assert_eq!(set["steps"][0]["result"], "EINVAL", "{set}");
    assert!(set["steps"][0]["notes"][0].as_str().unwrap().contains("userxattr"), "{set}");
}

/// A kernel panic and a hang (injected by the guest agent's test hook) are
/// charged to the instances that were running, with the console excerpt;
/// every other instance of the batch still runs, in fresh machines.
#[test]
fn a_panic_and_a_hang_are_charged_and_the_batch_goes_on() {
    prepare();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("scenarios/vm");
    std::fs::create_dir_all(&sdir).unwrap();
    for n in ["a", "b", "c", "d", "e"] {
        std::fs::write(
            sdir.join(format!("{n}.ovl")),
            format!("scenario \"{n}\"\nlayer l {{\n    file /a \"{n}\"\n}}\nmount l\nread /a => \"{n}\"\n"),
        )
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "vm:6.12"])
        .arg(&sdir)
        .env("OVLC_FAULTS", "panic:vm/b;hang:vm/d")
        .env("OVLC_INSTANCE_TIMEOUT", "20")
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let r = doc["results"].as_array().unwrap();
    let status: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["pass", "crash", "pass", "timeout", "pass"], "{doc:#}");
    let ids: Vec<&str> = r.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["vm/a", "vm/b", "vm/c", "vm/d", "vm/e"]);
    let crash = r[1]["reason"].as_str().unwrap();
    assert!(crash.contains("Kernel panic - not syncing: sysrq triggered crash"), "{crash}");
    assert!(crash.contains("last console lines"), "{crash}");
    let hang = r[3]["reason"].as_str().unwrap();
    assert!(hang.starts_with("no progress for 20 s"), "{hang}");
    // The instances after each fault ran in a machine of their own and read their own file.
    assert_eq!(r[2]["steps"][1]["result"], "\"c\"");
    assert_eq!(r[4]["steps"][1]["result"], "\"e\"");
    assert_eq!(doc["summary"]["crashed"], 1);
    assert_eq!(doc["summary"]["timed_out"], 1);
    // A panic or hang found while a scenario ran is a failure, not broken machinery.
    assert_eq!(out.status.code(), Some(1));
    // Off a terminal, progress is plain lines per machine: three machines ran.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vm:6.12 machine 1: 1/5 booting"), "{stderr}");
    assert!(stderr.contains("vm:6.12 machine 2: 3/5 vm/c"), "{stderr}");
    assert!(stderr.contains("vm:6.12 machine 3: 5/5 vm/e"), "{stderr}");
}

/// Backing filesystems on scratch disks: the backing scenarios on the oldest
/// and newest kernels ran on the filesystem they name, and the rootless
/// driver runs the whole library on 6.1 once the backing is ext4 (tmpfs on
/// 6.1 has no user xattrs).
#[test]
fn scratch_disk_backings_work_and_let_rootless_run_the_library_on_6_1() {
    prepare();
    let doc = run("vm:5.10,vm:7.3", &["scenarios/features"]);
    for fs in ["ext4", "xfs", "btrfs"] {
        let rs: Vec<&Value> =
            doc["results"].as_array().unwrap().iter().filter(|r| r["id"] == format!("features/backing-{fs}")).collect();
        assert_eq!(rs.len(), 2);
        for r in rs {
            assert_eq!(r["status"], "pass", "{r:#}");
            assert_eq!(r["backing"], fs, "{r:#}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--target", "vm:6.1/rootless", "--backing", "ext4"])
        .args(library_but_the_peers())
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert!(results.len() >= 20, "{}", results.len());
    for r in results {
        assert!(r["status"] == "pass" || r["status"] == "skip", "{r:#}");
        if r["target"] == "vm:6.1/rootless+ext4" {
            assert_eq!(r["backing"], "ext4", "{r:#}");
        }
    }
    let on_ext4 = results.iter().filter(|r| r["target"] == "vm:6.1/rootless+ext4").count();
    assert!(on_ext4 >= 18, "{on_ext4}");
    // The tmpfs-only scenario keeps its own backing; everything else ran on ext4.
    let tmpfs = results.iter().find(|r| r["id"] == "kernels/rootless-tmpfs-xattrs").unwrap();
    assert_eq!(tmpfs["backing"], "tmpfs");
    assert_eq!(tmpfs["target"], "vm:6.1/rootless");
    let lab = results.iter().find(|r| r["id"] == "lab/03-whiteout").unwrap();
    assert_eq!(lab["backing"], "ext4");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A class sees an answer change with the kernel: on 5.10 a directory made
/// through the overlay is opaque, from 6.x on it is not (lab step 7).
#[test]
fn grading_in_a_vm_shows_the_answer_that_changes_on_5_10() {
    prepare();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("layers")).unwrap();
    std::fs::copy(repo().join("scenarios/lab/layers/rootfs.tar"), tmp.path().join("layers/rootfs.tar")).unwrap();
    let f = tmp.path().join("answers.ovl");
    std::fs::copy(repo().join("scenarios/lab/exercises/07-container-tarball.ovl"), &f).unwrap();
    let ovlc =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).current_dir(repo()).output().unwrap();
    let out = ovlc(&["bless", f.to_str().unwrap(), "--target", "host", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let key = std::fs::read_to_string(&f).unwrap();
    assert!(key.contains("\n    dir /app\n"), "{key}");
    std::fs::write(&f, key.replace("\n    dir /app\n", "\n    dir /app not opaque\n")).unwrap();
    let grade = |target: &str| {
        let out = ovlc(&["grade", f.to_str().unwrap(), "--target", target]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = grade("vm:6.12");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.ends_with("score: 2/2\n"), "{text}");
    let (code, text) = grade("vm:5.10");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("expect upper exactly  -- WRONG"), "{text}");
    assert!(text.contains("`dir /app not opaque`: the directory is opaque"), "{text}");
    assert!(text.contains("the kernel: dir /app opaque\n"), "{text}");
    assert!(text.ends_with("score: 1/2\n"), "{text}");
}
