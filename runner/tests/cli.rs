//! `ovlc check`, `ovlc fmt` and `ovlc list` as a user runs them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ovlc(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).current_dir(cwd).env("NO_COLOR", "1").output().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const MESSY: &str = "scenario   \"messy\"\ntags a,b\nlayer base { file /a \"a\"   mode 0644 }\nmount base\n\n\n\nexpect merged { file /a \"a\" } # trailing\n";

#[test]
fn check_accepts_the_library_and_prints_a_summary() {
    let out = ovlc(&["check"], &repo());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with("scenarios, 0 errors"), "{stdout}");
    let n: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(n >= 8);
}

#[test]
fn check_reports_every_error_with_location_and_exits_2() {
    let out = ovlc(&["check", "dsl/tests/errors/many-errors.ovl", "dsl/tests/errors/unknown-layer.ovl"], &repo());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[dsl/tests/errors/many-errors.ovl:3:22]"), "{stderr}");
    assert!(stderr.contains("did you mean `base`?"), "{stderr}");
    assert!(stderr.contains("[dsl/tests/errors/unknown-layer.ovl:5:7]"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("2 scenarios, "), "{stdout}");
    assert!(!stdout.contains(" 0 errors"), "{stdout}");
}

#[test]
fn check_short_format_is_one_line_per_error() {
    let out = ovlc(&["check", "--message-format", "short", "dsl/tests/errors/bad-mode.ovl"], &repo());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(
        stderr.lines().next().unwrap().starts_with("dsl/tests/errors/bad-mode.ovl:3:22: ovl::bad-mode:"),
        "{stderr}"
    );
}

#[test]
fn check_json_format_is_one_object_per_error_on_stdout() {
    let out = ovlc(
        &["check", "--message-format", "json", "dsl/tests/errors/bad-mode.ovl", "dsl/tests/errors/unknown-layer.ovl"],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let objs: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objs.len(), 4, "{stdout}");
    let first = &objs[0];
    assert_eq!(first["file"], "dsl/tests/errors/bad-mode.ovl");
    assert_eq!((first["line"].as_u64(), first["column"].as_u64()), (Some(3), Some(22)), "{first}");
    assert!(first["end_line"].as_u64() >= first["line"].as_u64(), "{first}");
    assert!(first["end_column"].as_u64() > first["column"].as_u64(), "{first}");
    assert_eq!(first["code"], "ovl::bad-mode");
    assert!(first["message"].as_str().unwrap().contains("mode"), "{first}");
    assert!(first.get("help").is_some(), "{first}");
    let last = &objs[3];
    assert_eq!(
        (last["file"].as_str(), last["line"].as_u64(), last["column"].as_u64()),
        (Some("dsl/tests/errors/unknown-layer.ovl"), Some(5), Some(7))
    );
    assert!(last["help"].as_str().unwrap().contains("did you mean `lower1`?"), "{last}");
    // The summary goes to stderr, so that stdout is JSON only.
    assert!(text(&out.stderr).starts_with("2 scenarios, 4 errors"), "{}", text(&out.stderr));
    // A clean file prints no JSON at all.
    let out = ovlc(&["check", "--message-format", "json", "scenarios/lab"], &repo());
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn every_malformed_input_exits_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.ovl");
    std::fs::write(&big, vec![b'#'; dsl::MAX_FILE_BYTES + 10]).unwrap();
    let latin = dir.path().join("latin.ovl");
    std::fs::write(&latin, b"scenario \"caf\xe9\"\n").unwrap();
    let empty = dir.path().join("empty.ovl");
    std::fs::write(&empty, b"").unwrap();
    for f in [&big, &latin, &empty] {
        let out = ovlc(&["check", f.to_str().unwrap()], dir.path());
        assert_eq!(out.status.code(), Some(2), "{}", f.display());
        assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    }
    let out = ovlc(&["check", "does/not/exist"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does/not/exist"));
    let out = ovlc(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_finds_missing_layer_tarballs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.ovl"), "scenario \"t\"\nlayer img from \"img.tar\"\nmount img\n").unwrap();
    let out = ovlc(&["check", "t.ovl"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("layer tarball `img.tar` does not exist"), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("img.tar"), b"").unwrap();
    assert_eq!(ovlc(&["check", "t.ovl"], dir.path()).status.code(), Some(0));
}

#[test]
fn fmt_check_then_fmt_then_fmt_again() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("scenarios/x");
    std::fs::create_dir_all(&sub).unwrap();
    let f = sub.join("messy.ovl");
    std::fs::write(&f, MESSY).unwrap();

    let out = ovlc(&["fmt", "--check"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("would reformat"), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), MESSY, "--check must not write");

    let out = ovlc(&["fmt"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let formatted = std::fs::read_to_string(&f).unwrap();
    assert_eq!(
        formatted,
        "scenario \"messy\"\ntags a, b\nlayer base {\n    file /a \"a\" mode 0644\n}\nmount base\n\nexpect merged {\n    file /a \"a\"\n} # trailing\n"
    );
    let after = dsl::load(&f).unwrap();
    assert_eq!(after, dsl::parse(&after.file, &after.id, MESSY.as_bytes()).unwrap());

    let out = ovlc(&["fmt"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), formatted, "fmt twice changes nothing");
    assert_eq!(ovlc(&["fmt", "--check"], dir.path()).status.code(), Some(0));
    // Nothing but the file itself remains in the directory (no temporary files).
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);
}

#[test]
fn fmt_leaves_invalid_files_alone_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.ovl");
    let src = "scenario \"bad\"\nlayer  base {\n  file /a \"a\" mode 999\n}\nmount base\n";
    std::fs::write(&f, src).unwrap();
    let out = ovlc(&["fmt", "bad.ovl"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), src);
}

#[test]
fn list_prints_one_line_per_instance_and_filters_by_tag() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("scenarios/features");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("index.ovl"),
        "scenario \"index\"\ntags index\nvary index=on|off, xino=on|off\nlayer l {\n    file /a \"a\"\n}\nmount l\n",
    )
    .unwrap();
    std::fs::write(sub.join("plain.ovl"), "scenario \"plain\"\ntags basic\nlayer l {\n    file /a \"a\"\n}\nmount l\n")
        .unwrap();
    let out = ovlc(&["list"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "features/index[index=on,xino=on]\nfeatures/index[index=on,xino=off]\nfeatures/index[index=off,xino=on]\nfeatures/index[index=off,xino=off]\nfeatures/plain\n"
    );
    let out = ovlc(&["list", "--tag", "basic"], dir.path());
    assert_eq!(text(&out.stdout), "features/plain\n");
    let out = ovlc(&["list", "--long", "-t", "basic"], dir.path());
    assert_eq!(text(&out.stdout), "features/plain\tplain\t[basic]\n");
}

#[test]
fn list_of_the_library_has_every_lab_scenario() {
    let out = ovlc(&["list", "--tag", "lab"], &repo());
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().count() >= 8, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("lab/")), "{stdout}");
}

/// An instance's id is its path under the directory named, whatever the
/// current directory: `list` and `run` agree (and the library keeps its
/// `area/name` ids from anywhere).
#[test]
fn ids_are_relative_to_the_directory_named_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for f in ["x.ovl", "sub/y.ovl"] {
        std::fs::write(dir.path().join(f), "scenario \"t\"\nlayer l { file /f \"1\" }\nmount l\nread /f => \"1\"\n")
            .unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let list = ovlc(&["list", d], Path::new("/"));
    assert_eq!(text(&list.stdout), "sub/y\nx\n");
    let run = ovlc(&["run", "--snapshots", "ignore", "--format", "json", "--target", "host", d], &repo());
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let ids: Vec<&str> = doc["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sub/y", "x"], "{}", text(&run.stderr));
    let lib = ovlc(&["list", repo().join("scenarios/lab").to_str().unwrap()], Path::new("/"));
    assert!(text(&lib.stdout).lines().all(|l| l.starts_with("lab/")), "{}", text(&lib.stdout));
}

/// Usage errors exit 2 with one clear message, before any work; a user who
/// is not root gets one message, not one per instance.
#[test]
fn usage_errors_and_a_missing_root_are_told_once_up_front() {
    let lab = repo().join("scenarios/lab");
    let lab = lab.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec!["run", "--target", "vm:9.99", lab], vec![], "unknown kernel 9.99"),
        (vec!["run", "-j", "0", "--target", "host", lab], vec![], "-j"),
        (vec!["run", "--target", "host", empty.path().to_str().unwrap()], vec![], "nothing to run: no scenario files"),
        (vec!["run", "--target", "host", "--tag", "no-such-tag", lab], vec![], "nothing to run: no scenario has"),
        (
            vec!["run", "--target", "host", lab],
            vec![("OVLC_BACKING_SIZE", "abc")],
            "OVLC_BACKING_SIZE=\"abc\" is not a size",
        ),
    ];
    for (args, env, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(&args).envs(env).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Not root: one line, exit 3, at once.
    use std::os::unix::process::CommandExt;
    for args in [vec!["run", "--target", "host,host-rootless", lab], vec!["bench", "--quick"]] {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(&args).uid(65534).gid(65534).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("run it as root"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{args:?} worked before refusing");
    }
}

/// A layer tarball is a regular file below the scenario's directory, reached
/// through no symlink: a stranger's scenario cannot make the host read any
/// other file as a layer.
#[test]
fn a_layer_tarball_behind_a_symlink_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("x.tar")).unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/y.tar"), "").unwrap();
    std::os::unix::fs::symlink("real", dir.path().join("via")).unwrap();
    std::fs::write(
        dir.path().join("t.ovl"),
        "scenario \"t\"\nlayer a from \"x.tar\"\nlayer b from \"via/y.tar\"\nlayer c from \"real\"\nmount a\n",
    )
    .unwrap();
    let out = ovlc(&["check", "--message-format", "short", dir.path().to_str().unwrap()], &repo());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":2:14: ovl::bad-tar-path: layer tarball `x.tar` goes through a symlink"), "{stderr}");
    assert!(stderr.contains(":3:14: ovl::bad-tar-path: layer tarball `via/y.tar` goes through a symlink"), "{stderr}");
    assert!(stderr.contains(":4:14: ovl::bad-tar-path: layer tarball `real` is not a regular file"), "{stderr}");
}
