//! The executor on this machine's kernel, through `ovlc run` as a user runs it.
//! These tests need root (CI runs as root) and mount only inside ovlc's own
//! private mount namespace.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ovlc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).current_dir(repo()).env("NO_COLOR", "1").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `ovlc run --format json` and returns the exit code and the document.
fn run_json(paths: &[&str], targets: &str, extra: &[&str]) -> (i32, Value) {
    run_json_env(paths, targets, extra, &[])
}

fn run_json_env(paths: &[&str], targets: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovlc"));
    cmd.args(["run", "--format", "json", "--snapshots", "ignore", "--target", targets]);
    cmd.args(extra).args(paths).current_dir(repo()).envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); stderr:\n{}\nstdout:\n{}", text(&out.stderr), text(&out.stdout)));
    (out.status.code().unwrap(), doc)
}

/// Runs one scenario given as text (a file of its own in a temporary
/// directory) on `targets`.
fn run_text(text: &str, targets: &str) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.ovl");
    std::fs::write(&f, text).unwrap();
    run_json(&[f.to_str().unwrap()], targets, &[])
}

fn result<'a>(doc: &'a Value, id: &str, target: &str) -> &'a Value {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id && r["target"] == target)
        .unwrap_or_else(|| panic!("no result for {id} on {target} in {doc:#}"))
}

fn assert_root() {
    assert!(nix_is_root(), "these tests mount file systems and must run as root (CI does)");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn every_operation_and_every_check_kind_holds_on_the_host_kernel() {
    assert_root();
    let (code, doc) =
        run_json(&["runner/tests/scenarios/operations.ovl", "runner/tests/scenarios/checks.ovl"], "host", &[]);
    for id in ["operations", "checks"] {
        let r = result(&doc, id, "host");
        assert_eq!(r["status"], "pass", "{id}: {r:#}");
    }
    assert_eq!(code, 0);
    let ops = result(&doc, "operations", "host");
    // Each operation was recorded with its actual result.
    let steps = ops["steps"].as_array().unwrap();
    let find = |t: &str| {
        steps.iter().find(|s| s["text"].as_str().unwrap().starts_with(t)).unwrap_or_else(|| panic!("no step {t}"))
    };
    assert_eq!(find("read /new")["result"], "\"one+two\"");
    assert_eq!(find("rename /r3 /r4 whiteout")["result"], "EINVAL");
    assert_eq!(find("read /escape")["result"], "ENOENT", "an absolute symlink must not leave the overlay");
    assert_eq!(find("readdir /d")["result"], "[x]");
    assert_eq!(find("rename /r1 /r2 exchange")["syscall"], "renameat2(RENAME_EXCHANGE)");
    assert!(["fsconfig", "mount(2)"].contains(&ops["mount_api"].as_str().unwrap()));
    let upper = ops["upper"].as_str().unwrap();
    assert!(upper.contains("/d whiteout"), "{upper}");
    assert!(upper.contains("/r2 file 0600 1000:1000 size=4 \"mine\" links=#1 xattr:user.note=\"hello\""), "{upper}");
    assert!(upper.contains("/r2-link file 0600 1000:1000 size=4 \"mine\" links=#1"), "{upper}");
    let merged = ops["merged"].as_str().unwrap();
    assert!(merged.contains("/null char 0644 0:0 1:3"), "{merged}");
}

#[test]
fn failing_checks_name_the_line_the_check_and_what_was_found() {
    assert_root();
    let (code, doc) = run_json(&["runner/tests/scenarios/failing/checks.ovl"], "host", &[]);
    assert_eq!(code, 1);
    let r = result(&doc, "failing/checks", "host");
    assert_eq!(r["status"], "fail");
    let actual: Vec<&str> = r["failures"].as_array().unwrap().iter().map(|f| f["actual"].as_str().unwrap()).collect();
    let expect_fragments = [
        "line 22: `file /file \"other\"`: content is \"content\", expected \"other\"",
        "line 23: `file /file size 99`: size is 7, expected 99",
        "`dir /file`: found a file instead of a dir",
        "`symlink /sym -> \"elsewhere\"`: points to \"file\"",
        "`fifo /file`: found a file instead of a fifo",
        "`device /tty char 5:1`: device 5:0, expected 5:1",
        "`device /tty block 5:0`: found a char instead of a block",
        "`absent /file`: found a file",
        "`xattr /file user.a \"2\"`: user.a is \"1\", expected \"2\"",
        "`xattr /file user.zzz`: no xattr user.zzz",
        "`no xattr /file user.a`: user.a is set",
        "`mode /file 0644`: mode is 0640, expected 0644",
        "`owner /file 0:0`: owner is 1000:100, expected 0:0",
        "`nlink /file 3`: nlink is 1, expected 3",
        "`file /missing`: nothing there",
        "`entries /dir 5`: 0 entries, expected 5",
        "`blocks /file > 1000`:",
        "`xattrs /file [user.b]`: xattrs are [user.a]",
        "`attrs /file +i`: +i does not hold",
        "`acl /file \"u::rwx,g::---,o::---\"`: no ACL",
        "`whiteout /file`: nothing there",
        "`metacopy /meta`: nothing there",
        "`redirect /dir \"x\"`: nothing there",
        "`dir /new opaque`: found a file instead of a dir",
        "`exactly`: paths not named in the block: /linked (whiteout)",
    ];
    for frag in expect_fragments {
        assert!(actual.iter().any(|a| a.contains(frag)), "no failure says {frag:?}; failures: {actual:#?}");
    }
    assert_eq!(actual.len(), expect_fragments.len() + 1, "{actual:#?}"); // + `dir /file not opaque`
}

#[test]
fn wrong_results_are_reported_with_expected_and_actual() {
    assert_root();
    let out = ovlc(&["run", "--snapshots", "ignore", "--target", "host", "runner/tests/scenarios/failing/results.ovl"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for frag in [
        "line 10: mount lower with bogus_option\n    expected: ok\n    actual:   EINVAL (overlay: Unknown parameter 'bogus_option')",
        "line 12: read /f\n    expected: \"upper\"\n    actual:   \"lower\"",
        "line 13: unlink /f\n    expected: ENOENT\n    actual:   ok",
        "line 15: readdir /d\n    expected: [a]\n    actual:   ENOENT",
        "upper tree:\n    / dir 0755 0:0",
    ] {
        assert!(stdout.contains(frag), "missing {frag:?} in\n{stdout}");
    }
    assert_eq!(stdout.lines().last().unwrap(), "0 passed, 1 failed, 0 skipped");
}

#[test]
fn the_same_run_twice_gives_the_same_trees() {
    assert_root();
    let (_, a) =
        run_json(&["runner/tests/scenarios/operations.ovl", "scenarios/lab"], "host,host-rootless,host-fuse", &[]);
    let (_, b) = run_json(
        &["runner/tests/scenarios/operations.ovl", "scenarios/lab"],
        "host,host-rootless,host-fuse",
        &["-j", "1"],
    );
    let key = |d: &Value| -> Vec<(String, String, String, String)> {
        d["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                (
                    format!("{} {}", s("id"), s("target")),
                    s("upper"),
                    s("merged"),
                    serde_json::to_string(&r["steps"]).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(key(&a), key(&b));
    assert!(a["results"].as_array().unwrap().len() >= 30);
}

#[test]
fn requires_and_backing_skip_with_a_reason() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.ovl");
    std::fs::write(
        &f,
        "scenario \"old kernels only\"\nrequires kernel < 3.0\nlayer l {\n    file /a \"a\"\n}\nmount l\n",
    )
    .unwrap();
    let g = dir.path().join("ext4.ovl");
    std::fs::write(&g, "scenario \"on ext4\"\nbacking ext4\nlayer l {\n    file /a \"a\"\n}\nmount l\n").unwrap();
    let (code, doc) = run_json(&[f.to_str().unwrap(), g.to_str().unwrap()], "host", &[]);
    assert_eq!(code, 0);
    let rs = doc["results"].as_array().unwrap();
    let reason = |id: &str| {
        rs.iter().find(|r| r["id"].as_str().unwrap().ends_with(id)).unwrap()["reason"].as_str().unwrap().to_string()
    };
    assert!(reason("old").starts_with("requires kernel < 3.0 (kernel "), "{}", reason("old"));
    assert!(reason("ext4").contains("backing ext4"), "{}", reason("ext4"));
    assert_eq!(doc["summary"]["skipped"], 2);
}

#[test]
fn if_blocks_follow_the_driver_and_vary_options() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("branches.ovl");
    std::fs::write(
        &f,
        "scenario \"branches\"\nvary index=on|off\nlayer l {\n    file /a \"a\"\n}\nmount l\n\
         if option index=on {\n    write /on \"1\"\n} else {\n    write /off \"1\"\n}\n\
         if driver == rootless {\n    write /rootless \"1\"\n}\n",
    )
    .unwrap();
    let (code, doc) = run_json(&[f.to_str().unwrap()], "host,host-rootless", &[]);
    assert_eq!(code, 0, "{doc:#}");
    let upper = |id: &str, t: &str| result(&doc, id, t)["upper"].as_str().unwrap().to_string();
    let id_on = format!("{}[index=on]", dsl::scenario_id(&f, f.parent().unwrap()));
    let id_off = format!("{}[index=off]", dsl::scenario_id(&f, f.parent().unwrap()));
    assert!(upper(&id_on, "host").contains("/on file"));
    assert!(!upper(&id_on, "host").contains("/off file"));
    assert!(upper(&id_off, "host").contains("/off file"));
    assert!(upper(&id_on, "host-rootless").contains("/rootless file"));
    assert!(!upper(&id_on, "host").contains("/rootless"));
}

#[test]
fn a_missing_fuse_overlayfs_is_an_error_with_the_install_command() {
    assert_root();
    let (code, doc) =
        run_json(&["scenarios/lab/03-whiteout.ovl"], "host-fuse", &["--fuse-overlayfs", "/nonexistent/fuse-overlayfs"]);
    assert_eq!(code, 3);
    let r = result(&doc, "lab/03-whiteout", "host-fuse");
    assert_eq!(r["status"], "error");
    assert!(r["reason"].as_str().unwrap().contains("apt-get install -y fuse-overlayfs"), "{r:#}");
}

#[test]
fn unknown_targets_are_bad_usage() {
    let out = ovlc(&["run", "--target", "host,moon", "scenarios/lab"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown target moon"));
}

#[test]
fn explain_tells_copy_up_whiteout_and_opaque_in_words() {
    assert_root();
    let out = ovlc(&["explain", "lab/04-opaque-dir"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for frag in [
        "line 22: rmdir /srv/data",
        "system call: unlinkat(AT_REMOVEDIR)",
        "upper: whiteout for /srv/data/a: the lower /srv/data/a is hidden",
        "upper: whiteout for /srv/data: replaces the dir in the upper and hides the lower /srv/data",
        "upper: opaque dir /srv/data: replaces the whiteout",
        "upper: new file /srv/data/c in the upper",
        "result: pass",
    ] {
        assert!(s.contains(frag), "missing {frag:?} in\n{s}");
    }
    let out = ovlc(&["explain", "lab/02-copy-up", "--target", "host-rootless"]);
    let s = text(&out.stdout);
    assert!(s.contains("upper: copy-up of /etc/hosts (file) from a lower layer"), "{s}");
}

/// The mount tables of every thread of a process (each of ovlc's instance
/// threads is in a mount namespace of its own).
fn threads_mounts(pid: u32) -> String {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
    tasks
        .unwrap_or_default()
        .iter()
        .map(|t| std::fs::read_to_string(t.path().join("mountinfo")).unwrap_or_default())
        .collect()
}

/// Mounts exist only in ovlc's private namespace: not in ours while it runs,
/// and none are left when it is killed with SIGKILL mid-run.
#[test]
fn sigkill_mid_run_leaves_no_mount_on_the_host() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("slow.ovl");
    let mut s = String::from("scenario \"slow\"\nlayer l {\n    file /a \"a\"\n}\nmount l\n");
    for _ in 0..400 {
        s.push_str("drop-caches\nsync\n");
    }
    std::fs::write(&f, s).unwrap();
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host,host-rootless,host-fuse", "-j", "3"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until ovlc has an overlay mounted in one of its instances'
    // namespaces (each instance's thread is in its own).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let theirs = threads_mounts(pid);
        if theirs.contains(" - overlay ") || theirs.contains("fuse-overlayfs") {
            break;
        }
        assert!(Instant::now() < deadline, "ovlc never mounted an overlay");
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !during.contains(" - overlay ") && !during.contains("ovlc-run-"),
        "a mount leaked while running:\n{during}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!after.contains("ovlc-run-") && !after.contains(" - overlay "), "a mount leaked after SIGKILL:\n{after}");
    assert_eq!(before.lines().count(), after.lines().count());
    // The fuse-overlayfs daemons and the rootless agent die with ovlc (they
    // get SIGKILL from the kernel as their parent dies; give them a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|l| l.contains("fuse-overlayfs -f") || l.contains("__agent rootless"))
            .collect();
        if orphans.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left running: {orphans:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn layer_forms_data_only_layers_and_seeded_uppers() {
    assert_root();
    let (code, doc) = run_json(&["runner/tests/scenarios/layers.ovl"], "host", &[]);
    let r = result(&doc, "layers", "host");
    assert_eq!(r["status"], "pass", "{r:#}");
    assert_eq!(code, 0);
}

#[test]
fn the_legacy_mount_api_is_used_when_asked_and_gives_the_same_trees() {
    assert_root();
    let (_, legacy) =
        run_json_env(&["runner/tests/scenarios/operations.ovl"], "host", &[], &[("OVLC_MOUNT_API", "legacy")]);
    let (_, modern) = run_json(&["runner/tests/scenarios/operations.ovl"], "host", &[]);
    let (l, m) = (result(&legacy, "operations", "host"), result(&modern, "operations", "host"));
    assert_eq!(l["status"], "pass", "{l:#}");
    assert_eq!(l["mount_api"], "mount(2)");
    assert_eq!(m["mount_api"], "fsconfig");
    assert_eq!(l["upper"], m["upper"]);
}

#[test]
fn oci_tarball_layers_convert_whiteouts_on_every_host_target() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    // An image of two layers: the base, and a layer deleting and replacing in it.
    let mut base = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&mut base, "etc/", b"", tar::EntryType::Directory, 0o755);
    add(&mut base, "etc/passwd", b"root:x:0:0\n", tar::EntryType::Regular, 0o644);
    add(&mut base, "etc/shadow", b"secret\n", tar::EntryType::Regular, 0o600);
    add(&mut base, "opt/", b"", tar::EntryType::Directory, 0o755);
    add(&mut base, "opt/app/", b"", tar::EntryType::Directory, 0o755);
    add(&mut base, "opt/app/v1", b"1", tar::EntryType::Regular, 0o644);
    std::fs::write(dir.path().join("base.tar"), base.into_inner().unwrap()).unwrap();
    let mut top = tar::Builder::new(Vec::new());
    add(&mut top, "etc/", b"", tar::EntryType::Directory, 0o755);
    add(&mut top, "etc/.wh.shadow", b"", tar::EntryType::Regular, 0o644);
    add(&mut top, "opt/", b"", tar::EntryType::Directory, 0o755);
    add(&mut top, "opt/app/", b"", tar::EntryType::Directory, 0o755);
    add(&mut top, "opt/app/.wh..wh..opq", b"", tar::EntryType::Regular, 0o644);
    add(&mut top, "opt/app/v2", b"2", tar::EntryType::Regular, 0o644);
    std::fs::write(dir.path().join("top.tar"), top.into_inner().unwrap()).unwrap();
    let f = dir.path().join("image.ovl");
    std::fs::write(
        &f,
        "scenario \"two OCI layers\"\nlayer base from \"base.tar\"\nlayer top from \"top.tar\"\nmount top, base\n\
         expect merged exactly {\n    file /etc/passwd \"root:x:0:0\\n\"\n    absent /etc/shadow\n    file /opt/app/v2 \"2\"\n    absent /opt/app/v1\n}\n\
         unlink /etc/passwd\nexpect layer {\n    dir /etc\n    whiteout /etc/passwd\n}\n",
    )
    .unwrap();
    let (code, doc) = run_json(&[f.to_str().unwrap()], "host,host-rootless,host-fuse", &[]);
    for r in doc["results"].as_array().unwrap() {
        assert_eq!(r["status"], "pass", "{r:#}");
    }
    assert_eq!(code, 0);
}

#[test]
fn no_space_on_the_backing_filesystem_is_an_error_and_nothing_is_left_behind() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.ovl");
    std::fs::write(&f, "scenario \"big\"\nlayer l {\n    file /big size 16MiB\n}\nmount l\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host,host-rootless"])
        .arg(&f)
        .current_dir(repo())
        .env("OVLC_BACKING_SIZE", "4m")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no space left on the backing filesystem (ENOSPC)"), "{stdout}");
    assert!(stdout.lines().last().unwrap().ends_with("2 errors"), "{stdout}");
    // Temporary directories are removed, even after errors.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // And after a normal run.
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host", "scenarios/lab"])
        .current_dir(repo())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A scenario whose layer tarball sits in a directory only root may read
/// (a 0700 directory, as `mktemp -d` makes): the host reads it and hands it
/// to the rootless agent.
#[test]
fn a_rootless_instance_gets_tarballs_its_user_may_not_read() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "etc/motd", &b"hello"[..]).unwrap();
    std::fs::create_dir(dir.path().join("layers")).unwrap();
    std::fs::write(dir.path().join("layers/base.tar"), b.into_inner().unwrap()).unwrap();
    std::fs::set_permissions(dir.path().join("layers/base.tar"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    std::fs::write(
        dir.path().join("t.ovl"),
        "scenario \"tarball in a private directory\"\nlayer base from \"layers/base.tar\"\nmount base\nread /etc/motd => \"hello\"\n",
    )
    .unwrap();
    let (code, doc) = run_json(&[dir.path().to_str().unwrap()], "host,host-rootless", &[]);
    for t in ["host", "host-rootless"] {
        assert_eq!(result(&doc, "t", t)["status"], "pass", "{:#}", result(&doc, "t", t));
    }
    assert_eq!(code, 0);
}

/// Layers are built when a mount uses them: a layer the rootless agent may
/// not build (a device node, a trusted.* xattr) is no error when only an
/// untaken branch mounts it, and a skip with the reason when it is mounted.
#[test]
fn only_mounted_layers_are_built_and_an_unbuildable_one_is_a_skip() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = "layer plain {\n    file /f \"x\"\n}\nlayer dev {\n    device /d char 1:3\n}\nlayer trusted {\n    file /t \"t\" xattr trusted.k=\"v\"\n}\n";
    std::fs::write(
        dir.path().join("untaken.ovl"),
        format!("scenario \"untaken\"\n{layers}if driver == rootless {{\n    mount plain\n}} else {{\n    mount dev, trusted, plain\n}}\nread /f => \"x\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dev.ovl"),
        format!("scenario \"dev\"\n{layers}mount dev, plain\nread /f => \"x\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("xattr.ovl"),
        format!("scenario \"xattr\"\n{layers}mount trusted\nread /t => \"t\"\n"),
    )
    .unwrap();
    let (_, doc) = run_json(&[dir.path().to_str().unwrap()], "host,host-rootless", &[]);
    for t in ["host", "host-rootless"] {
        assert_eq!(result(&doc, "untaken", t)["status"], "pass", "{:#}", result(&doc, "untaken", t));
    }
    for id in ["dev", "xattr"] {
        assert_eq!(result(&doc, id, "host")["status"], "pass", "{:#}", result(&doc, id, "host"));
        let r = result(&doc, id, "host-rootless");
        assert_eq!(r["status"], "skip", "{r:#}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("cannot be built on host-rootless") && reason.contains("EPERM"), "{reason}");
    }
}

/// SIGINT or SIGTERM mid-run removes the run's temporary directory (exit
/// 130 or 143); after a SIGKILL, the next run removes what the dead one left.
#[test]
fn interrupted_and_killed_runs_leave_nothing_behind() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("slow.ovl");
    let mut s = String::from("scenario \"slow\"\nlayer l {\n    file /a \"a\"\n}\nmount l\n");
    for _ in 0..2000 {
        s.push_str("drop-caches\n");
    }
    std::fs::write(&f, s).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_ovlc"))
            .args(["run", "--snapshots", "ignore", "--target", "host,host-fuse", "-j", "2"])
            .arg(&f)
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_run_dir = |child: &std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if threads_mounts(child.id()).contains(" - overlay ") {
                return;
            }
            assert!(Instant::now() < deadline, "ovlc never mounted an overlay");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let child = start();
        wait_for_run_dir(&child);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "one run directory while running");
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("interrupted"), "{}", text(&out.stderr));
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    // SIGKILL: nothing can clean up, so the next run does.
    let mut child = start();
    wait_for_run_dir(&child);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "the killed run's directory");
    let quick = dir.path().join("quick");
    std::fs::create_dir(&quick).unwrap();
    std::fs::write(quick.join("q.ovl"), "scenario \"q\"\nlayer l {\n    file /a \"a\"\n}\nmount l\nread /a => \"a\"\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host"])
        .arg(&quick)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("removed 1 temporary directory left by killed runs"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A scenario as deep as the language allows (64 nested `if`s) runs on
/// every host target: the rootless agent decodes its plan without
/// serde_json's nesting limit, as the guest does.
#[test]
fn the_deepest_scenario_the_language_allows_runs_everywhere() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::from("scenario \"deep\"\nlayer l {\n    file /f \"x\"\n}\nmount l\n");
    for i in 0..64 {
        s.push_str(&format!("{}if kernel >= 1.0 {{\n", "    ".repeat(i)));
    }
    s.push_str(&format!("{}read /f => \"x\"\n", "    ".repeat(64)));
    for i in (0..64).rev() {
        s.push_str(&format!("{}}}\n", "    ".repeat(i)));
    }
    std::fs::write(dir.path().join("deep.ovl"), s).unwrap();
    let (code, doc) = run_json(&[dir.path().to_str().unwrap()], "host,host-rootless,host-fuse", &[]);
    for t in ["host", "host-rootless", "host-fuse"] {
        assert_eq!(result(&doc, "deep", t)["status"], "pass", "{:#}", result(&doc, "deep", t));
    }
    assert_eq!(code, 0);
}

/// Loop devices bound to an image of an ovlc run (a memfd named `ovlc-FS`,
/// or a file of an instance's `fs-image/FS/` as images once were).
fn loops_of_runs() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let f = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(&f) {
            if b.contains("memfd:ovlc-") || b.contains("/fs-image/") {
                out.push(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
            }
        }
    }
    out
}

#[test]
fn image_layers_are_packed_mounted_and_let_go() {
    assert_root();
    let (code, doc) = run_json(&["scenarios/mounts/images.ovl"], "host,host-fuse", &["-j", "4"]);
    assert_eq!(code, 0, "{doc:#}");
    for image in ["squashfs", "erofs"] {
        let id = format!("mounts/images[image={image}]");
        let r = result(&doc, &id, "host");
        assert_eq!(r["status"], "pass", "{r:#}");
        // The upper took the copy-up from the image; the image stayed as packed.
        assert!(r["upper"].as_str().unwrap().contains("/d/b file 0640 1000:1000 size=7 \"changed\""), "{r:#}");
    }
    let fuse = result(&doc, "mounts/images[image=squashfs]", "host-fuse");
    let steps = fuse["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["text"] == "read /d/b" && s["result"] == "EOPNOTSUPP"), "{fuse:#}");
    assert!(!loops_of_runs().iter().any(|l| l.contains("memfd:ovlc-img")), "still bound: {:?}", loops_of_runs());
}

#[test]
fn an_interrupted_run_leaves_no_loop_device_bound() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("held.ovl");
    std::fs::write(
        &f,
        "scenario \"held\"\nfilesystem held_image squashfs\nlayer base on held_image {\n    file /f \"x\"\n}\nmount base\nsleep 10s\nsleep 10s\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--snapshots", "ignore", "--target", "host"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the image is bound, then interrupt the run as a user would.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !loops_of_runs().iter().any(|l| l.contains("held_image")) {
        assert!(Instant::now() < deadline, "the image was never bound");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let deadline = Instant::now() + Duration::from_secs(5);
    while loops_of_runs().iter().any(|l| l.contains("held_image")) {
        assert!(Instant::now() < deadline, "loop devices still bound: {:?}", loops_of_runs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn disk_filesystems_per_layer_skip_on_the_host_and_images_skip_rootless() {
    assert_root();
    let (_, doc) =
        run_json(&["scenarios/mounts/disk-filesystems.ovl", "scenarios/mounts/images.ovl"], "host,host-rootless", &[]);
    let disk = result(&doc, "mounts/disk-filesystems[fs=xfs]", "host");
    assert_eq!(disk["status"], "skip");
    assert!(disk["reason"].as_str().unwrap().contains("VM targets only"), "{disk:#}");
    let rootless = result(&doc, "mounts/images[image=erofs]", "host-rootless");
    assert_eq!(rootless["status"], "skip");
    assert!(rootless["reason"].as_str().unwrap().contains("tmpfs only"), "{rootless:#}");
}

#[test]
fn a_user_namespace_block_runs_as_the_namespace_root() {
    assert_root();
    let (code, doc) = run_json(&["scenarios/features/userns-block.ovl"], "host,host-rootless,host-fuse", &[]);
    assert_eq!(code, 0, "{doc:#}");
    // The same block claiming the outside's view must fail: the ids are mapped.
    let (code, doc) = run_text(
        "scenario \"ids inside\"\nlayer l {\n    file /f \"x\" owner 1000:1000\n}\nmount l\n\
         as 1000:1000 in userns {\n    stat /f as s\n    value s uid == 1000\n    create /new => EACCES\n}\n",
        "host",
    );
    assert_eq!(code, 1, "{doc:#}");
    let r = &doc["results"][0];
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r:#}");
    assert!(failures[0]["step"].as_str().unwrap().contains("value s uid == 1000"), "{r:#}");
    assert!(failures[0]["actual"].as_str().unwrap().contains('0'), "{r:#}");
}

#[test]
fn a_user_namespace_block_out_of_time_is_killed_with_its_instance() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stuck.ovl");
    std::fs::write(
        &f,
        "scenario \"stuck\"\nlayer l {\n    file /f \"x\" mode 0666\n    fifo /p\n}\nmount l\n\
         measure /p => ENOTTY\nopen /f as a rdonly\nflock a ex\n\
         as 1000:1000 in userns {\n    open /f as b rdonly\n    flock b ex\n}\n",
    )
    .unwrap();
    let started = Instant::now();
    let (code, doc) = run_json_env(&[f.to_str().unwrap()], "host", &[], &[("OVLC_INSTANCE_TIMEOUT", "3")]);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_ne!(code, 0, "{doc:#}");
    let r = &doc["results"][0];
    assert_eq!(r["status"], "timeout", "{r:#}");
    // The measure of a FIFO answered at once; the child that blocked is gone.
    let steps = r["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["text"] == "measure /p" && s["ok"] == true), "{r:#}");
    let stuck = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| s.contains("Uid:\t1000\t") && s.lines().next().is_some_and(|l| l.contains("ovlc")))
        .count();
    assert_eq!(stuck, 0, "a child of the block outlived its instance");
}

/// A work directory named apart from its upper (`upper u on FS work w`) is
/// made on the upper's filesystem (the kernel refuses the pair otherwise),
/// and `edit work v` reaches the work directory that `upper v` implies.
#[test]
fn a_named_work_directory_goes_where_its_upper_is() {
    assert_root();
    let (code, doc) = run_text(
        "scenario \"work beside its upper\"\nfilesystem disk tmpfs\nlayer lower on disk {\n    file /f \"x\"\n}\n\
         mount lower upper u on disk work w\nwrite /f \"y\"\numount\nmount lower upper u work w\nread /f => \"y\"\n\
         umount\nmount lower upper v\numount\nedit work v {\n    attrs /work -a\n}\nmount lower upper v\n\
         expect upper u {\n    file /f \"y\"\n}\n",
        "host",
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["results"][0]["status"], "pass", "{doc:#}");
}
