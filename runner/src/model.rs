//! The plain data of a run: what one instance on one target is asked to do
//! (`Plan`), what happened (`Outcome`, `Step`, `Status`, `Failure`), the
//! snapshot verdict, and the document of a whole run (`RunReport`, with its
//! `Summary` and the rounds' `Disagreement`s). Everything here is
//! serialisable and free of behaviour that touches the system, so reports,
//! the wire protocol and the engine share it without depending on the
//! interpreter.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dsl::ast::{self, Driver};
use dsl::Instance;
use serde::{Deserialize, Serialize};

/// Everything needed to run one instance on one target; serialisable, so
/// that it can travel to an agent process or a VM guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub instance: Instance,
    pub scenario: dsl::Scenario,
    pub target: String,
    pub driver: Driver,
    /// The scenario file's directory, for `layer NAME from "x.tar"`.
    pub scenario_dir: PathBuf,
    /// Record the upper tree after every step (for `ovlc explain`).
    #[serde(default)]
    pub explain: bool,
    /// The fuse-overlayfs binary, for the fuse driver.
    #[serde(default)]
    pub fuse_binary: Option<PathBuf>,
    /// At the end, export the upper as a layer, apply it onto the lowers and
    /// check that the result is the merged view (`ovlc run --layer-roundtrip`).
    #[serde(default)]
    pub roundtrip: bool,
    /// The backing filesystem for a scenario without a `backing` statement
    /// (`ovlc run --backing`); tmpfs when unset.
    #[serde(default)]
    pub backing: Option<ast::Backing>,
    /// A fault the guest agent injects instead of running this instance, to
    /// test crash and hang recovery (`OVLC_FAULTS`; VM targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

impl Plan {
    /// A plan with nothing extra: no explanation, the fuse-overlayfs on PATH,
    /// no round trip, the scenario's own backing, no fault; the scenario's
    /// tarballs relative to the current directory.
    pub fn new(instance: Instance, scenario: dsl::Scenario, target: String, driver: Driver) -> Plan {
        Plan {
            instance,
            scenario,
            target,
            driver,
            scenario_dir: PathBuf::from("."),
            explain: false,
            fuse_binary: None,
            roundtrip: false,
            backing: None,
            fault: None,
        }
    }

    /// The filesystem under this instance's layers.
    pub fn backing(&self) -> ast::Backing {
        self.scenario.declared_backing().or(self.backing).unwrap_or(ast::Backing::Tmpfs)
    }
}

/// What the guest agent does instead of running an instance, when asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Crash the kernel (sysrq `c`).
    Panic,
    /// Never finish.
    Hang,
    /// Fail every other time it runs in this process (host targets): a
    /// deliberately unstable instance, to test `ovlc run --repeat`.
    Flaky,
    /// Write a kernel warning into the kernel log at the end (host targets,
    /// root): to test that kernel trouble is charged to whom caused it.
    KernelWarning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    Error,
    /// The machine died while the instance ran (kernel panic): VM targets.
    Crash,
    /// The instance did not finish in time (a hang): VM targets.
    Timeout,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Error => "error",
            Status::Crash => "crash",
            Status::Timeout => "timeout",
        }
    }
}

/// How an outcome compares with its stored snapshot (serialised as the
/// lower-case word, which reports and the HTML page read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// The stored snapshot and this run agree.
    Match,
    /// No snapshot was stored; one was written for review.
    New,
    /// The stored snapshot differs; the new one was written for review.
    Changed,
    /// `--snapshots update` rewrote a snapshot that differed or was missing.
    Updated,
}

/// One executed statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub line: u32,
    /// The statement as written (first line for blocks).
    pub text: String,
    /// The system call(s) it made, for `explain`.
    pub syscall: String,
    /// What happened: `ok`, an errno name, a value, or a check summary.
    pub result: String,
    pub ok: bool,
    /// The kernel's words about a rejected mount, failed checks, and so on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// A `mount` or `remount` statement: the steps the kernel log's words
    /// about a rejected mount belong to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mount: bool,
    /// The upper tree after this step (only when explaining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_after: Option<String>,
    /// For a step whose result is `?` or does not hold: what it did, as the
    /// language writes it (a result after `=>`; for `expect TREE ?`, the
    /// block's checks, one per line): what `ovlc bless` writes into the file
    /// and `ovlc grade` compares an answer with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub got: Option<String>,
}

/// A failed expectation or result, for the failure report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub line: u32,
    pub step: String,
    pub expected: String,
    pub actual: String,
}

/// The result of one instance on one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub scenario: String,
    pub target: String,
    pub status: Status,
    /// Why it was skipped, or what went wrong for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub kernel: String,
    /// `fsconfig` (the new mount API) or `mount(2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_api: Option<String>,
    pub steps: Vec<Step>,
    pub failures: Vec<Failure>,
    /// The final upper tree in the canonical format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
    /// The final trees of the named uppers (`mount ... upper NAME`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uppers: Vec<(String, String)>,
    /// The final merged tree, captured before the last unmount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<String>,
    pub millis: u64,
    /// The instance's position in its run (partitions keep the whole run's), for merging reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The file system the instance's layers and upper were on (`tmpfs`, `ext4`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// Paths present in some lower layer (only when explaining), to tell a copy-up from a new file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower_paths: Vec<String>,
    /// Snapshot comparison, filled in by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotState>,
    /// The snapshot's content when it differs, for the diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_diff: Option<String>,
    /// The overlay module's parameters (`/sys/module/overlay/parameters`)
    /// after the instance ran, for scenarios tagged `module-parameters` (the
    /// support matrix's probe): the defaults a distribution built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_params: Option<BTreeMap<String, String>>,
}

impl Outcome {
    /// Fails a passing or failing outcome on kernel bug reports seen while it ran.
    pub fn fail_on_kernel_trouble(&mut self, trouble: &[String], step: &str) {
        if trouble.is_empty() || !matches!(self.status, Status::Pass | Status::Fail) {
            return;
        }
        self.status = Status::Fail;
        self.failures.push(Failure {
            line: 0,
            step: step.to_string(),
            expected: "no warning, oops or panic".into(),
            actual: trouble.join("\n"),
        });
    }

    /// The text the snapshot of this outcome holds: step results, then the upper tree.
    pub fn snapshot_text(&self) -> String {
        let mut s = String::from("steps:\n");
        for st in &self.steps {
            s.push_str(&format!("  {:>3} {} => {}\n", st.line, st.text, st.result));
        }
        s.push_str("upper:\n");
        s.push_str(self.upper.as_deref().unwrap_or("(no upper)\n"));
        for (name, tree) in &self.uppers {
            s.push_str(&format!("upper {name}:\n{tree}"));
        }
        s
    }

    pub fn error(plan: &Plan, kernel: &str, reason: impl std::fmt::Display) -> Outcome {
        Outcome { status: Status::Error, reason: Some(reason.to_string()), ..Outcome::new(plan, kernel) }
    }

    /// A passing outcome with nothing recorded yet.
    pub fn new(plan: &Plan, kernel: &str) -> Outcome {
        Outcome {
            id: plan.instance.id.clone(),
            scenario: plan.instance.scenario.clone(),
            target: plan.target.clone(),
            status: Status::Pass,
            reason: None,
            kernel: kernel.to_string(),
            mount_api: None,
            steps: Vec::new(),
            failures: Vec::new(),
            upper: None,
            uppers: Vec::new(),
            merged: None,
            millis: 0,
            index: None,
            backing: None,
            lower_paths: Vec::new(),
            snapshot: None,
            snapshot_diff: None,
            module_params: None,
        }
    }
}

/// The area of an instance: the first directory of its id (`lab/copy-up`
/// is in `lab`); files named at the top of the run are in `.`.
pub fn area(id: &str) -> &str {
    match id.split_once('/') {
        Some((a, _)) => a,
        None => ".",
    }
}

/// Decodes plans as the host encoded them, without serde_json's nesting
/// limit of 128: a scenario may nest `if` blocks 64 deep, which its syntax
/// tree takes several JSON levels each to say (the language bounds the depth,
/// so the recursion stays bounded).
pub fn plans_from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
    /// VM targets: the machine died (kernel panic) while the instance ran.
    pub crashed: usize,
    /// VM targets: the instance did not finish in time.
    pub timed_out: usize,
}

impl Summary {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            match o.status {
                Status::Pass => s.passed += 1,
                Status::Fail => s.failed += 1,
                Status::Skip => s.skipped += 1,
                Status::Error => s.errors += 1,
                Status::Crash => s.crashed += 1,
                Status::Timeout => s.timed_out += 1,
            }
        }
        s
    }

    pub fn line(&self) -> String {
        let mut l = format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped);
        let errors = if self.errors == 1 { "error" } else { "errors" };
        for (n, what) in [(self.crashed, "crashed"), (self.timed_out, "timed out"), (self.errors, errors)] {
            if n > 0 {
                l.push_str(&format!(", {n} {what}"));
            }
        }
        l
    }

    /// 3 when the machinery failed, 1 when a scenario failed (a kernel
    /// panic or hang while it ran counts as a failure), else 0.
    pub fn exit_code(&self) -> u8 {
        use crate::error::{EXIT_FAIL, EXIT_INFRA, EXIT_PASS};
        if self.errors > 0 {
            EXIT_INFRA
        } else if self.failed + self.crashed + self.timed_out > 0 {
            EXIT_FAIL
        } else {
            EXIT_PASS
        }
    }
}

/// The JSON document of a run (schema in docs/json.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub version: u32,
    /// The host's kernel release.
    pub kernel: String,
    pub targets: Vec<String>,
    /// `K/N` when the run was one partition of a larger one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub summary: Summary,
    /// What each scenario of the results is: title, tags, file.
    #[serde(default)]
    pub scenarios: BTreeMap<String, ScenarioInfo>,
    pub results: Vec<Outcome>,
    /// `--repeat`/`--seed`: the rounds, their seed, and what differed between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatReport>,
}

impl RunReport {
    /// 0 when every instance passed or was skipped and the rounds agree; 1
    /// when one failed (or rounds disagree); 3 when one could not run.
    pub fn exit_code(&self) -> u8 {
        match &self.repeat {
            Some(r) if !r.disagreements.is_empty() => crate::error::EXIT_FAIL.max(self.summary.exit_code()),
            _ => self.summary.exit_code(),
        }
    }
}

/// A scenario as reports show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScenarioInfo {
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub about: String,
    /// The scenario file, as given to `ovlc run`.
    #[serde(default)]
    pub file: String,
}

impl ScenarioInfo {
    pub fn of(s: &dsl::Scenario, file: &std::path::Path) -> ScenarioInfo {
        ScenarioInfo {
            title: s.title(),
            tags: s.tags(),
            about: s.about().unwrap_or_default(),
            file: file.display().to_string(),
        }
    }
}

/// What a repeated run found: the rounds, the seed of their orders, and
/// every instance whose result differed between rounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepeatReport {
    pub rounds: usize,
    pub seed: u64,
    pub disagreements: Vec<Disagreement>,
}

/// One instance whose outcome in `round` differs from round 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    pub id: String,
    pub target: String,
    /// 1-based; the first round is the reference.
    pub round: usize,
    /// What differs: `status: pass -> fail`, the first differing line of the
    /// steps and upper tree, and so on.
    pub what: Vec<String>,
}

impl Disagreement {
    /// One line for the human report.
    pub fn line(&self) -> String {
        format!("{} on {}, round {} vs round 1: {}", self.id, self.target, self.round, self.what.join("; "))
    }
}
