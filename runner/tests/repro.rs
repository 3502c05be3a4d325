//! `ovlc repro`: the script it writes for each instance of the lab and
//! basics areas, run on the host and in a vm:6.12 guest, agrees with ovlc's
//! own run of that instance on that target, step by step (and the final
//! upper tree). Needs root (the scripts mount; VMs) and QEMU with the cached
//! kernel for the VM test; skipped, saying so, when not root.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use runner::model::{Outcome, RunReport, Status};

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

/// What comparing ovlc's runs with the scripts found.
#[derive(Default)]
struct Tally {
    agreed: usize,
    skipped: usize,
    unevaluated: usize,
    problems: Vec<String>,
}

/// `ovlc run --target TARGET --format json PATHS` from `cwd`.
fn ovlc_run(cwd: &Path, target: &str, paths: &[&str]) -> RunReport {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--target", target, "--snapshots", "ignore", "--format", "json"])
        .args(paths)
        .current_dir(cwd)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// `ovlc repro ID --target TARGET PATHS`: the script, or why not.
fn generate(cwd: &Path, id: &str, target: &str, paths: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["repro", id, "--target", target])
        .args(paths)
        .current_dir(cwd)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

impl Tally {
    /// Compares one script's output and exit code with ovlc's outcome of its instance.
    fn judge(&mut self, o: &Outcome, stdout: &str, code: Option<i32>) {
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
                self.unevaluated += 1;
            } else if s.actual != want.result {
                differs.push(format!("line {} `{}`: script {:?}, ovlc {:?}", s.line, s.text, s.actual, want.result));
            }
        }
        let default_upper = uppers.iter().find(|u| u.name.is_empty()).map(|u| u.tree.as_str());
        if default_upper != o.upper.as_deref() {
            differs.push(format!(
                "upper tree: script\n{}ovlc\n{}",
                default_upper.unwrap_or("-\n"),
                o.upper.as_deref().unwrap_or("-\n")
            ));
        }
        if (o.status == Status::Pass) != (code == Some(0)) {
            differs.push(format!("ovlc {:?}, script exit {code:?}", o.status));
        }
        if differs.is_empty() {
            self.agreed += 1;
        } else {
            self.problems.push(format!(
                "{} on {}: {}\n--- script output\n{stdout}",
                o.id,
                o.target,
                differs.join("; ")
            ));
        }
    }

    fn line(&self, place: &str) -> String {
        format!(
            "repro {place}: {} instances agree with ovlc, {} differ, {} skipped as ovlc skipped them; \
             {} steps not evaluated by the scripts (expect layer)",
            self.agreed,
            self.problems.len(),
            self.skipped,
            self.unevaluated
        )
    }
}

/// Runs `ovlc run --target host` on `paths` (from `cwd`), then for every
/// instance generates its script, runs it with `sh` in `cwd`, and compares
/// each step's result and the final upper tree with ovlc's.
fn compare_on_host(cwd: &Path, paths: &[&str]) -> Tally {
    let doc = ovlc_run(cwd, "host", paths);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tally::default();
    for o in doc.results.iter().filter(|o| o.target == "host") {
        if o.status == Status::Skip {
            t.skipped += 1;
            continue;
        }
        let text = match generate(cwd, &o.id, "host", paths) {
            Ok(text) => text,
            Err(e) => {
                t.problems.push(format!("{}: not generated: {e}", o.id));
                continue;
            }
        };
        let script = dir.path().join("repro.sh");
        std::fs::write(&script, text).unwrap();
        let run = Command::new("sh").arg(&script).current_dir(cwd).output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        t.judge(o, &out, run.status.code());
    }
    t
}

#[test]
fn reproducers_agree_with_ovlc_on_the_host() {
    if !is_root() {
        eprintln!("skipped: the reproducers mount overlays and must run as root");
        return;
    }
    let t = compare_on_host(&repo(), &["scenarios/lab", "scenarios/basics"]);
    eprintln!("{}", t.line("on host"));
    assert!(t.problems.is_empty(), "{}", t.problems.join("\n\n"));
    assert!(t.agreed >= 81, "only {} instances compared", t.agreed);
}

/// Names and contents full of quotes, `$(...)`, backquotes, backslashes,
/// newlines, `%` and a leading `-` go through the layers' shell commands,
/// the mount's `lowerdir=` escaping and the Python steps unchanged, and
/// nothing of them runs.
#[test]
fn hostile_names_reach_no_shell() {
    if !is_root() {
        eprintln!("skipped: the reproducers mount overlays and must run as root");
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let src = repo().join("runner/tests/scenarios/repro/hostile.ovl");
    std::fs::create_dir(cwd.path().join("scenarios")).unwrap();
    std::fs::copy(&src, cwd.path().join("scenarios/hostile.ovl")).unwrap();
    let t = compare_on_host(cwd.path(), &["scenarios/hostile.ovl"]);
    assert!(t.problems.is_empty(), "{}", t.problems.join("\n\n"));
    assert_eq!(t.agreed, 1);
    let pwned: Vec<_> = walk(cwd.path()).into_iter().filter(|p| p.ends_with("PWNED")).collect();
    assert!(pwned.is_empty(), "a name ran as a command: {pwned:?}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// The same in a VM of one default kernel (vm:6.12): ovlc's run there, and
/// every script run by the guest agent with the host's dash, coreutils,
/// util-linux and python3 copied into its initramfs
/// (`runner::targets::vm::repro`). Needs root, QEMU and the cached kernel
/// (`ovlc kernels fetch 6.12`).
#[test]
fn reproducers_agree_with_ovlc_in_a_vm() {
    if !is_root() {
        eprintln!("skipped: VM targets run as root");
        return;
    }
    const TARGET: &str = "vm:6.12";
    let fetch = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["kernels", "fetch", "6.12"]).output().unwrap();
    assert!(fetch.status.success(), "ovlc kernels fetch: {}", String::from_utf8_lossy(&fetch.stderr));
    // The guest's /init is the ovlc under test, not this test binary; KVM where it runs.
    std::env::set_var("OVLC_GUEST_BINARY", env!("CARGO_BIN_EXE_ovlc"));
    if std::env::var_os("OVLC_ACCEL").is_none() {
        std::env::set_var("OVLC_ACCEL", "auto");
    }
    let paths = ["scenarios/lab", "scenarios/basics"];
    let doc = ovlc_run(&repo(), TARGET, &paths);
    let mut t = Tally::default();
    let mut scripts = Vec::new();
    let mut ran = Vec::new();
    for o in doc.results.iter().filter(|o| o.target == TARGET) {
        if o.status == Status::Skip {
            t.skipped += 1;
            continue;
        }
        match generate(&repo(), &o.id, TARGET, &paths) {
            Ok(text) => {
                scripts.push((o.id.clone(), text));
                ran.push(o);
            }
            Err(e) => t.problems.push(format!("{}: not generated: {e}", o.id)),
        }
    }
    let target = runner::targets::vm::VmTarget::parse(TARGET).unwrap();
    let runs = runner::targets::vm::repro::run_scripts(&target, &scripts, &vm::kernels::CatalogSource::Builtin)
        .unwrap_or_else(|e| panic!("{e}"));
    for (o, r) in ran.iter().zip(&runs) {
        assert_eq!(o.id, r.id);
        t.judge(o, &r.output, r.code);
    }
    eprintln!("{}", t.line("in vm:6.12"));
    assert!(t.problems.is_empty(), "{}", t.problems.join("\n\n"));
    assert!(t.agreed >= 81, "only {} instances compared", t.agreed);
}
