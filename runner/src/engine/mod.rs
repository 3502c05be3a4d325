//! The engine of `ovlc run`: from loaded scenarios and options to a run's
//! report. It plans (`crate::plan`), runs rounds (`round`: host instances and
//! VM batches in parallel, in shuffled orders with `--repeat`), compares the
//! rounds (`repeat`), judges snapshots (`crate::snapshot`), and tells its
//! progress as events. It prints nothing; the CLI renders what it returns.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::events::{Event, Subscriber};
use crate::model::{RepeatReport, RunReport, Summary};
use crate::plan::{self, PlanOptions, Selection, TargetSpec};
use crate::snapshot::{self, SnapshotMode};
use crate::targets::host::{self, Workspace};
use crate::targets::vm::CustomKernel;

mod batches;
mod repeat;
mod round;

/// Everything `ovlc run` asks for besides the scenarios.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The targets, with the backing each asks for.
    pub targets: Vec<TargetSpec>,
    /// The targets as named on the command line (for the report).
    pub target_names: Vec<String>,
    pub selection: Selection,
    pub plan: PlanOptions,
    /// Instances (and machines) at once.
    pub jobs: usize,
    pub snapshots: SnapshotMode,
    pub snapshot_dir: PathBuf,
    pub catalog: ::vm::kernels::CatalogSource,
    /// The kernel of `vm:custom`.
    pub custom: Option<CustomKernel>,
    /// Rounds; each after the first must agree with the first.
    pub repeat: u32,
    /// The seed of the shuffled orders (a random one when unset).
    pub seed: Option<u64>,
}

/// Prepares this process for a run, before any thread starts: a private
/// mount namespace (as root), removal of the run's temporary paths on an
/// interrupt. Returns the temporary directories of killed runs it removed.
pub fn isolate() -> Result<Vec<PathBuf>> {
    if nix::unistd::geteuid().is_root() {
        crate::sys::private_mount_namespace().map_err(|e| Error::Io {
            what: "cannot create a private mount namespace".into(),
            source: std::io::Error::from(e),
        })?;
    }
    crate::sys::cleanup::on_interrupt_clean_up();
    Ok(crate::sys::cleanup::sweep_dead_runs())
}

/// What can be checked before any scenario is read: the kernels exist, the
/// user is root, the settings are sane, `vm:custom` has its kernel.
pub fn preflight(opts: &RunOptions) -> Result<()> {
    if plan::unknown_kernel(&opts.targets, &[]).is_some() {
        let c = opts.catalog.catalog().map_err(|e| Error::Usage(e.to_string()))?;
        let names: Vec<&str> = c.kernels.iter().map(|k| k.name.as_str()).collect();
        if let Some(k) = plan::unknown_kernel(&opts.targets, &names) {
            return Err(Error::Usage(format!(
                "unknown kernel {k} in vm:{k} (the catalog has {}, and custom)",
                names.join(", ")
            )));
        }
    }
    // Every target mounts: one message, before any work, for a user who is not root.
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot("ovlc run mounts file systems and boots VMs"));
    }
    host::backing_size()?;
    if plan::wants_custom_kernel(&opts.targets) != opts.custom.is_some() {
        return Err(Error::Usage(
            "--kernel-image goes with the target vm:custom (and vm:custom needs --kernel-image)".into(),
        ));
    }
    Ok(())
}

/// Runs the selected instances of `library` on every target, `opts.repeat`
/// times, and returns the run's report (snapshots judged).
pub fn run(opts: &RunOptions, library: &[(PathBuf, dsl::Scenario)], events: &dyn Subscriber) -> Result<RunReport> {
    let planned = plan::build(library, &opts.targets, &opts.selection, &opts.plan);
    if planned.plans.is_empty() {
        let why = if library.is_empty() {
            "no scenario files (.ovl) under the paths given".to_string()
        } else {
            format!("no scenario has any of the tags {}", opts.selection.tags.join(", "))
        };
        return Err(Error::Usage(format!("nothing to run: {why}")));
    }
    let ws =
        Workspace::new().map_err(|source| Error::Io { what: "cannot create a temporary directory".into(), source })?;
    let round =
        round::Round { ws: &ws, jobs: opts.jobs.max(1), catalog: &opts.catalog, custom: opts.custom.as_ref(), events };
    // --repeat: every round in its own shuffled order; the first round's
    // outcomes are the report, later rounds must agree with it.
    let rounds = opts.repeat.max(1) as usize;
    let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
    let shuffled = rounds > 1 || opts.seed.is_some();
    if shuffled {
        events.event(Event::Shuffled { rounds, seed });
    }
    let mut outcomes = Vec::new();
    let mut disagreements = Vec::new();
    for r in 0..rounds {
        let mut order: Vec<usize> = (0..planned.plans.len()).collect();
        if shuffled {
            fastrand::Rng::with_seed(seed.wrapping_add(r as u64)).shuffle(&mut order);
        }
        events.event(Event::RoundStarted { round: r + 1, instances: order.len() });
        let got = round.execute(&planned.plans, &order)?;
        events.event(Event::RoundFinished { round: r + 1 });
        if r == 0 {
            outcomes = got;
        } else {
            disagreements.extend(repeat::disagreements(&outcomes, &got, r + 1));
        }
    }
    for (o, i) in outcomes.iter_mut().zip(&planned.index) {
        o.index = Some(*i);
        snapshot::apply(o, opts.snapshots, &opts.snapshot_dir);
    }
    Ok(RunReport {
        version: 1,
        kernel: crate::sys::kernel_release().0,
        targets: opts.target_names.clone(),
        partition: opts.selection.partition.map(|(k, n)| format!("{k}/{n}")),
        summary: Summary::of(&outcomes),
        scenarios: planned.scenarios,
        results: outcomes,
        repeat: shuffled.then_some(RepeatReport { rounds, seed, disagreements }),
    })
}
