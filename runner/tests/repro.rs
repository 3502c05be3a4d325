//! `ovlc repro`: the script it writes for each instance of the lab and
//! basics areas, run on the host, agrees with ovlc's own run of that
//! instance, step by step (and the final upper tree). Needs root (the
//! scripts mount); skipped, saying so, otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use runner::model::{RunReport, Status};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// One `OVLC-STEP {json}` line of a script's output.
#[derive(serde::Deserialize, Debug)]
struct ScriptStep {
    line: u32,
    text: String,
    actual: String,
    agree: Option<bool>,
}

#[derive(serde::Deserialize, Debug)]
struct ScriptUpper {
    name: String,
    tree: String,
}

#[test]
fn reproducers_agree_with_ovlc_on_the_host() {
    if !is_root() {
        eprintln!("skipped: the reproducers mount overlays and must run as root");
        return;
    }
    let ovlc = env!("CARGO_BIN_EXE_ovlc");
    let out = Command::new(ovlc)
        .args(["run", "--target", "host", "--snapshots", "ignore", "--format", "json", "scenarios/lab", "scenarios/basics"])
        .current_dir(repo())
        .output()
        .unwrap();
    let doc: RunReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let dir = tempfile::tempdir().unwrap();
    let (mut agreed, mut skipped, mut unevaluated) = (0, 0, 0);
    let mut problems = Vec::new();
    for o in doc.results.iter().filter(|o| o.target == "host") {
        if o.status == Status::Skip {
            skipped += 1;
            continue;
        }
        let script = dir.path().join("repro.sh");
        let gen = Command::new(ovlc)
            .args(["repro", &o.id, "--target", "host", "-o"])
            .arg(&script)
            .current_dir(repo())
            .output()
            .unwrap();
        if !gen.status.success() {
            problems.push(format!("{}: not generated: {}", o.id, String::from_utf8_lossy(&gen.stderr)));
            continue;
        }
        let run = Command::new("sh").arg(&script).output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        let steps: Vec<ScriptStep> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("OVLC-STEP "))
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let uppers: Vec<ScriptUpper> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("OVLC-UPPER "))
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let mut differs = Vec::new();
        if steps.len() != o.steps.len() {
            differs.push(format!("{} steps, ovlc had {}", steps.len(), o.steps.len()));
        }
        for (s, want) in steps.iter().zip(&o.steps) {
            if (s.line, s.text.as_str()) != (want.line, want.text.as_str()) {
                differs.push(format!("line {} `{}` where ovlc had line {} `{}`", s.line, s.text, want.line, want.text));
            } else if s.agree.is_none() {
                unevaluated += 1;
            } else if s.actual != want.result {
                differs.push(format!("line {} `{}`: script {:?}, ovlc {:?}", s.line, s.text, s.actual, want.result));
            }
        }
        let default_upper = uppers.iter().find(|u| u.name.is_empty()).map(|u| u.tree.as_str());
        if default_upper != o.upper.as_deref() {
            differs.push(format!("upper tree: script\n{}ovlc\n{}", default_upper.unwrap_or("-\n"), o.upper.as_deref().unwrap_or("-\n")));
        }
        if (o.status == Status::Pass) != run.status.success() {
            differs.push(format!("ovlc {:?}, script exit {:?}", o.status, run.status.code()));
        }
        if differs.is_empty() {
            agreed += 1;
        } else {
            problems.push(format!(
                "{}: {}\n--- script output\n{stdout}{}",
                o.id,
                differs.join("; "),
                String::from_utf8_lossy(&run.stderr)
            ));
        }
    }
    eprintln!(
        "repro on host: {agreed} instances agree with ovlc, {} differ, {skipped} skipped as ovlc skipped them; \
         {unevaluated} steps not evaluated by the scripts (expect layer)",
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(agreed > 50, "only {agreed} instances compared");
}
