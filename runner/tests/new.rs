//! `ovlc new` as an author runs it: every template gives a scenario that
//! checks, is in the canonical layout and passes on this machine's kernel
//! through the very commands `new` prints (running it needs root, as CI
//! runs the tests); titles, refusals and exit codes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const TEMPLATES: [&str; 4] = ["lab", "kernel-difference", "cve", "container"];

fn ovlc(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).current_dir(cwd).env("NO_COLOR", "1").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// The commands `ovlc new` printed after `next:`, as argument lists without
/// the leading `ovlc` and the trailing `# ...` comments.
fn next_commands(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| *l != "next:")
        .skip(1)
        .map(|l| {
            let l = l.split(" #").next().unwrap().trim();
            let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            assert_eq!(words.first().map(String::as_str), Some("ovlc"), "{stdout}");
            words[1..].to_vec()
        })
        .collect()
}

fn title_line(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().lines().find(|l| l.starts_with("scenario ")).unwrap().to_string()
}

#[test]
fn every_template_checks_is_canonical_and_passes_on_the_host_through_the_printed_commands() {
    assert!(is_root(), "ovlc run --target host mounts file systems: run the tests as root (CI does)");
    for t in TEMPLATES {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("scenarios/new")).unwrap();
        let name = format!("scenarios/new/01-{t}-example");
        let out = ovlc(&["new", &name, "--template", t], d);
        assert_eq!(out.status.code(), Some(0), "{t}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let file = format!("{name}.ovl");
        assert!(stdout.starts_with(&format!("wrote {file} ")), "{stdout}");
        assert!(stdout.contains(&format!("({t} template: ")), "{stdout}");

        let commands = next_commands(&stdout);
        let expected: Vec<Vec<String>> = [
            vec!["check", &file],
            vec!["run", "--target", "host", "--snapshots", "update", &file],
            vec!["run", "--target", "host", &file],
        ]
        .iter()
        .map(|c| c.iter().map(|w| w.to_string()).collect())
        .collect();
        assert_eq!(commands, expected, "{stdout}");
        assert!(stdout.contains(&format!("snapshots/host/new/01-{t}-example.snap")), "{stdout}");

        let out = ovlc(&["fmt", "--check", &file], d);
        assert_eq!(out.status.code(), Some(0), "{t}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "{t}");

        for c in &commands {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            let out = ovlc(&args, d);
            let stdout = text(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{t}: ovlc {}:\n{stdout}{}", c.join(" "), text(&out.stderr));
            let want = if c[0] == "check" { "1 scenario, 0 errors" } else { "1 passed, 0 failed, 0 skipped" };
            assert_eq!(stdout.lines().last(), Some(want), "{t}: ovlc {}:\n{stdout}", c.join(" "));
        }
        assert!(d.join(format!("snapshots/host/new/01-{t}-example.snap")).is_file(), "{t}");
    }
}

#[test]
fn the_title_comes_from_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("scenarios/lab")).unwrap();
    for (args, file, title) in [
        (&["new", "scenarios/lab/11-my-step"][..], "scenarios/lab/11-my-step.ovl", "My step"),
        (&["new", "copy_up_twice.ovl"][..], "copy_up_twice.ovl", "Copy up twice"),
        (
            &["new", "cve-2023-0386-unmapped-owner", "--template", "cve", "--dir", "scenarios/lab"][..],
            "scenarios/lab/cve-2023-0386-unmapped-owner.ovl",
            "CVE-2023-0386: unmapped owner",
        ),
        (&["new", "say \"hi\"", "--template", "container"][..], "say \"hi\".ovl", "Say \"hi\""),
    ] {
        let out = ovlc(args, d);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        let escaped = title.replace('"', "\\\"");
        assert_eq!(title_line(&d.join(file)), format!("scenario \"{escaped}\""), "{args:?}");
        let out = ovlc(&["list", "--long", file], d);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).split('\t').nth(1), Some(title), "{args:?}");
    }
    assert!(!d.join("copy_up_twice.ovl.ovl").exists());
}

#[test]
fn an_existing_file_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = d.join("mine.ovl");
    std::fs::write(&f, "scenario \"mine\"\n").unwrap();
    let out = ovlc(&["new", "mine", "--template", "cve"], d);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mine.ovl exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "scenario \"mine\"\n");

    let out = ovlc(&["new", "mine", "--template", "cve", "--force"], d);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(title_line(&f), "scenario \"Mine\"");
    assert!(std::fs::read_to_string(&f).unwrap().contains("tags security, cve"));
    let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["mine.ovl"], "no temporary file left beside it");

    std::fs::create_dir(d.join("adir.ovl")).unwrap();
    let out = ovlc(&["new", "adir", "--force"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("adir.ovl is a directory"), "{}", text(&out.stderr));
}

#[test]
fn a_missing_directory_is_named_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, missing) in [
        (&["new", "scenarios/lab/11-my-step"][..], "scenarios/lab"),
        (&["new", "x", "--dir", "elsewhere"][..], "elsewhere"),
    ] {
        let out = ovlc(args, d);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("the directory {missing} does not exist")), "{stderr}");
        assert_eq!(text(&out.stdout), "");
    }
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing created");

    std::fs::write(d.join("plain"), "").unwrap();
    let out = ovlc(&["new", "plain/x"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the directory plain is not a directory"), "{}", text(&out.stderr));
}

#[test]
fn bad_names_and_templates_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ovlc(&["new", "x", "--template", "lib"], d);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("lab, kernel-difference, cve, container"), "{stderr}");
    let out = ovlc(&["new", ""], d);
    assert_eq!(out.status.code(), Some(2));
    for name in ["sub/", ".", "sub/.."] {
        let out = ovlc(&["new", name], d);
        assert_eq!(out.status.code(), Some(2), "{name:?}");
        assert!(text(&out.stderr).contains("names no file"), "{name:?}: {}", text(&out.stderr));
    }
    let out = ovlc(&["new"], d);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing created");
}

#[test]
fn hidden_names_symlinks_and_an_absolute_name_with_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [vec!["new", ".ovl", "--dir", d], vec!["new", "/tmp/x", "--dir", d]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("l.ovl")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["new", "l", "--dir", d, "--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symlink"));
    assert!(!dir.path().join("nowhere").exists());
}
