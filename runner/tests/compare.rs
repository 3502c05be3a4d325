//! `ovlc report compare` on a real regression: a scenario run on the host,
//! then run again with one step's expected result changed so that it fails.
//! Needs root (host target); skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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

const SCENARIO: &str = r#"scenario "compare: a lower file written and read back"
tags compare

layer base {
    file /a "a"
    dir /d
}

mount base

write /a "b" => ok
read /a => "b"
mkdir /d => EEXIST
"#;

#[test]
fn a_changed_expectation_is_a_regression_one_way_and_a_fix_the_other() {
    if !is_root() {
        eprintln!("skipped: ovlc run on the host target mounts file systems (run the test as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("s")).unwrap();
    let file = d.join("s/write.ovl");
    std::fs::write(&file, SCENARIO).unwrap();
    std::fs::write(d.join("s/mkdir.ovl"), SCENARIO.replace("write /a \"b\" => ok\nread /a => \"b\"\n", "")).unwrap();
    let run = |json: &str, want: i32| {
        let out = ovlc(&["run", "--target", "host", "--snapshots", "ignore", "--json", json, "s"], d);
        assert_eq!(out.status.code(), Some(want), "{}{}", text(&out.stdout), text(&out.stderr));
    };
    run("base.json", 0);
    // The same scenario now expects what the kernel does not do.
    std::fs::write(&file, SCENARIO.replace("write /a \"b\" => ok", "write /a \"b\" => EPERM")).unwrap();
    run("new.json", 1);

    let out = ovlc(&["report", "compare", "base.json", "new.json", "--json", "c.json", "--html", "page"], d);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "host: 1 regression, 0 fixes, 0 changed, 0 new, 0 removed, 0 changed skips; 1 unchanged");
    assert!(
        lines[1].starts_with("  regression write: pass -> fail: line 11 write /a \"b\": expected EPERM, got ok"),
        "{stdout}"
    );
    assert!(lines.last().unwrap().starts_with("1 target: 1 regression, "), "{stdout}");

    let c: Value = serde_json::from_str(&std::fs::read_to_string(d.join("c.json")).unwrap()).unwrap();
    assert_eq!(c["version"], 1);
    assert_eq!(c["counts"]["regressions"], 1);
    assert_eq!(c["counts"]["compared"], 2);
    assert_eq!(c["counts"]["unchanged"], 1);
    let host = &c["targets"][0];
    assert_eq!(host["target"], "host");
    assert_eq!(host["counts"]["regressions"], 1);
    let r = &host["regressions"][0];
    assert_eq!(r["id"], "write");
    assert_eq!(r["base"]["status"], "pass");
    assert_eq!(r["new"]["status"], "fail");
    assert_eq!(r["new"]["failure"]["expected"], "EPERM");
    assert_eq!(r["new"]["failure"]["actual"], "ok");
    let page = std::fs::read_to_string(d.join("page/index.html")).unwrap();
    assert!(page.contains("<tr class=\"regression\">") && page.contains(">write</td>"), "{page}");

    // The other way round it is a fix, and nothing regressed.
    let out = ovlc(&["report", "compare", "new.json", "base.json"], d);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("\n  fix        write: fail: line 11 "), "{stdout}");
    assert!(stdout.starts_with("host: 0 regressions, 1 fix, "), "{stdout}");

    // Naming the pairing the default makes is the same comparison.
    let out = ovlc(&["report", "compare", "base.json", "new.json", "--as", "host=host"], d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&ovlc(&["report", "compare", "base.json", "new.json"], d).stdout));

    // Usage errors and bad files exit 2, naming what is wrong.
    let out = ovlc(&["report", "compare", "base.json", "new.json", "--as", "vm:7.3=host"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the base report has no target vm:7.3"), "{}", text(&out.stderr));
    let out = ovlc(&["report", "compare", "base.json", "new.json", "--as", "host"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"host\" is not BASE_TARGET=NEW_TARGET"), "{}", text(&out.stderr));
    let out = ovlc(&["report", "compare", "base.json", "missing.json"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.json"), "{}", text(&out.stderr));
    std::fs::write(d.join("bad.json"), "{\n  \"version\": 1,\n  \"results\": [ }\n").unwrap();
    let out = ovlc(&["report", "compare", "bad.json", "new.json"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad.json:3:"), "{}", text(&out.stderr));
}
