//! Reports: JUnit validated against the schema (xmllint), partitioned runs
//! merged back into the run they split, and the HTML report opened in
//! headless Chromium. Needs root (host targets), `xmllint` (libxml2-utils)
//! and `chromium`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn ovlc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).current_dir(repo()).env("NO_COLOR", "1").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn validate(xml: &Path) {
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(repo().join("runner/tests/data/junit.xsd"))
        .arg(xml)
        .output()
        .expect("xmllint is needed: apt-get install -y libxml2-utils");
    assert!(out.status.success(), "{} does not validate: {}", xml.display(), text(&out.stderr));
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A report holding every kind of result, as a VM run would give them.
fn every_status_report() -> Value {
    let base = |id: &str, status: &str| {
        serde_json::json!({
            "id": id, "scenario": id, "target": "vm:6.1", "status": status, "kernel": "6.1.0-50-cloud-amd64",
            "steps": [{"line": 3, "text": "mount l", "syscall": "mount(2)", "result": "ok", "ok": true}],
            "failures": [], "millis": 12, "upper": "/ dir 0755 0:0\n"
        })
    };
    let mut fail = base("lab/fail", "fail");
    fail["failures"] =
        serde_json::json!([{"line": 7, "step": "read /f", "expected": "\"upper\"", "actual": "\"lower\""}]);
    let mut skip = base("lab/skip", "skip");
    skip["reason"] = "requires kernel >= 6.5 (kernel 6.1.0-50-cloud-amd64, driver kernel)".into();
    let mut crash = base("lab/crash", "crash");
    crash["reason"] =
        "the machine died while the instance ran; kernel: Kernel panic - not syncing: sysrq triggered crash; \
                       last console lines:\n[ 3.1] \u{1b}[0mKernel panic - not syncing: sysrq triggered crash\n"
            .into();
    let mut hang = base("lab/hang", "timeout");
    hang["reason"] = "no progress for 20 s (the instance hung); last console lines:\nOVLC-START 4\n".into();
    let mut error = base("lab/error", "error");
    error["reason"] = "fuse-overlayfs is not installed".into();
    let mut other = base("lab/pass", "pass");
    other["target"] = "vm:7.3".into();
    serde_json::json!({
        "version": 1, "kernel": "host", "targets": ["vm:6.1", "vm:7.3"],
        "summary": {"passed": 2, "failed": 1, "skipped": 1, "errors": 1, "crashed": 1, "timed_out": 1},
        "results": [base("lab/pass", "pass"), fail, skip, crash, hang, error, other]
    })
}

#[test]
fn junit_validates_and_tells_failures_crashes_and_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("run.json");
    std::fs::write(&input, every_status_report().to_string()).unwrap();
    let xml = dir.path().join("junit.xml");
    let out = ovlc(&["report", "merge", input.to_str().unwrap(), "--junit", xml.to_str().unwrap()]);
    // A crash, a hang and an error: the merged run says so in its exit code.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    validate(&xml);
    let x = std::fs::read_to_string(&xml).unwrap();
    assert_eq!(x.matches("<testsuite ").count(), 2, "one testsuite per target: {x}");
    assert_eq!(x.matches("<testcase ").count(), 7);
    assert!(x.contains(r#"<testsuite name="vm:6.1" id="0" tests="6" failures="1" errors="3" skipped="1""#), "{x}");
    assert!(x.contains(r#"<failure message="line 7: read /f" type="fail">expected: &quot;upper&quot;"#), "{x}");
    assert!(x.contains("actual:   &quot;lower&quot;</failure>"), "{x}");
    assert!(x.contains(r#"<error message="the machine died while the instance ran; kernel: Kernel panic"#), "{x}");
    assert!(x.contains(r#"type="crash">"#) && x.contains(r#"type="timeout">"#) && x.contains(r#"type="error">"#));
    // The console's escape character cannot go into XML: it is replaced.
    assert!(!x.contains('\u{1b}') && x.contains("\u{fffd}[0mKernel panic"), "{x}");
    assert!(x.contains(r#"<skipped message="requires kernel &gt;= 6.5"#), "{x}");
    assert!(x.contains("<system-out>kernel 6.1.0-50-cloud-amd64"), "{x}");

    // A real run on the host writes the same kind of document.
    let xml = dir.path().join("host.xml");
    let out = ovlc(&[
        "run",
        "--snapshots",
        "ignore",
        "--target",
        "host,host-fuse",
        "--junit",
        xml.to_str().unwrap(),
        "scenarios/lab",
        "runner/tests/scenarios/failing/results.ovl",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    validate(&xml);
    let x = std::fs::read_to_string(&xml).unwrap();
    assert_eq!(x.matches("<testsuite ").count(), 2);
    // The lab's 20 files (its steps and their exercises) and the failing file, on two targets.
    assert_eq!(x.matches("<testcase ").count(), 42);
    assert!(x.contains("<failure "), "{x}");
}

#[test]
fn partitions_cover_the_run_once_and_merge_back_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = |extra: &[&str], json: &str| {
        let mut args = vec!["run", "--snapshots", "ignore", "--target", "host,host-rootless", "--json", json];
        args.extend_from_slice(extra);
        args.push("scenarios");
        let out = ovlc(&args);
        assert!(out.status.code() == Some(0), "{}", text(&out.stdout));
    };
    run(&[], &p("full.json"));
    for k in 1..=3 {
        run(&["--partition", &format!("{k}/3")], &p(&format!("p{k}.json")));
    }
    let key = |r: &Value| (r["id"].as_str().unwrap().to_string(), r["target"].as_str().unwrap().to_string());
    let full = read_json(&dir.path().join("full.json"));
    let mut all: Vec<(String, String)> = full["results"].as_array().unwrap().iter().map(key).collect();
    let mut sizes = Vec::new();
    let mut union = Vec::new();
    for k in 1..=3 {
        let part = read_json(&dir.path().join(format!("p{k}.json")));
        assert_eq!(part["partition"], format!("{k}/3"));
        let results = part["results"].as_array().unwrap();
        // Every instance runs on every target of its partition.
        assert_eq!(results.len() % 2, 0);
        sizes.push(results.len() / 2);
        union.extend(results.iter().map(key));
    }
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
    union.sort();
    all.sort();
    assert_eq!(union, all, "the partitions hold every result once");

    // Merged, they are the run they split: same results, same order, same summary.
    let out = ovlc(&["report", "merge", &p("p3.json"), &p("p1.json"), &p("p2.json"), "--json", &p("merged.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("3 reports, 2 targets: "), "{}", text(&out.stdout));
    let merged = read_json(&dir.path().join("merged.json"));
    let strip = |v: &Value| -> Vec<(String, String, String)> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].to_string(), r["target"].to_string(), r["upper"].to_string()))
            .collect()
    };
    assert_eq!(strip(&merged), strip(&full));
    assert_eq!(merged["summary"], full["summary"]);
    assert_eq!(merged["scenarios"], full["scenarios"]);

    // The same partition twice is refused, as are a bad partition and a file that is no report.
    let out = ovlc(&["report", "merge", &p("p1.json"), &p("p1.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is in both"), "{}", text(&out.stderr));
    let out = ovlc(&["run", "--partition", "4/3", "scenarios"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected K/N with 1 <= K <= N"), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("bad.json"), "{\n  \"version\": \"x\"\n}\n").unwrap();
    let out = ovlc(&["report", "merge", &p("bad.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad.json:2:"), "{}", text(&out.stderr));
}

/// Runs headless Chromium on a page and returns its DOM after the scripts ran.
fn chromium(args: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is needed: apt-get install -y chromium");
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_html_report_opens_a_cell_with_its_tree_and_a_diff_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report");
    let bench = dir.path().join("bench.json");
    std::fs::write(
        &bench,
        r#"{"version":1,"kernel":"k","target":"host","results":[{"driver":"kernel","workload":"stat","median_ms":2.5,"ratio_to_plain":1.25}],"notes":[]}"#,
    )
    .unwrap();
    let out = ovlc(&[
        "run",
        "--snapshots",
        "ignore",
        "--target",
        "host,host-fuse",
        "--html",
        html.to_str().unwrap(),
        "--bench-results",
        bench.to_str().unwrap(),
        "scenarios/lab",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let page = html.join("index.html");
    let url = format!("file://{}#open={}@{}&compare={}", page.display(), "lab%2F03-whiteout", "host-fuse", "host");
    let dom = chromium(&["--dump-dom"], &url);
    // The cell opened: its title, its steps, its upper tree (fuse-overlayfs's
    // whiteout decoded), and the diff against the kernel driver's tree.
    assert!(dom.contains("lab/03-whiteout on host-fuse"), "{dom}");
    assert!(dom.contains(r#"<table class="steps" id="steps">"#), "{dom}");
    let upper = dom.split(r#"<pre id="upper">"#).nth(1).unwrap().split("</pre>").next().unwrap();
    assert!(upper.contains("/var/log/old.log whiteout"), "{upper}");
    let diff = dom.split(r#"<pre id="diff">"#).nth(1).unwrap().split("</pre>").next().unwrap();
    assert!(diff.contains("--- host (kernel ") && diff.contains("+++ host-fuse (kernel "), "{diff}");
    assert!(diff.contains(r#"<div class="del">- / dir 0755 0:0 impure uuid</div>"#), "{diff}");
    assert!(diff.contains(r#"<div class="add">+ / dir 0755 0:0</div>"#), "{diff}");
    assert!(diff.contains(r#"<div class="">  /var/log/old.log whiteout</div>"#), "{diff}");
    // The open cell is marked in the matrix, which lists every lab instance on both targets.
    assert_eq!(dom.matches(r#"class="cell pass open""#).count(), 1, "{dom}");
    assert!(dom.contains(r#"title="host-fuse" data-id="lab/03-whiteout" data-target="host-fuse""#), "{dom}");
    // 20 on host, 18 on host-fuse (the redirect_dir=on step and its exercise skip there).
    assert_eq!(dom.matches(r#"class="cell pass"#).count(), 38, "{dom}");
    assert!(dom.contains("20 instances shown"), "{dom}");
    // The benchmark tab has the results given.
    assert!(dom.contains("2.5 ms (1.25x)"), "{dom}");
    // And a screenshot, for a person to look at.
    let shot = repo().join("target/report-screenshot.png");
    chromium(&["--window-size=1500,1000", &format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "{} bytes", png.len());
}
