//! `ovlc run`: the command line of a run. Parses the options, loads the
//! scenarios, hands them to the engine with a progress renderer, and prints
//! the report.

use std::io::Write;
use std::path::PathBuf;

use runner::engine::{self, RunOptions};
use runner::error::{Error, Result, EXIT_BAD_INPUT};
use runner::model::{Outcome, RunReport, Status};
use runner::plan::{self, PlanOptions, Selection};
use runner::report;
use runner::snapshot::SnapshotMode;

use crate::progress::Progress;
use crate::scenarios::{load_all, plural, MessageFormat};

/// How a run reports on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Files or directories; default `scenarios`.
    pub paths: Vec<PathBuf>,
    /// Targets, comma-separated: host, host-rootless, host-fuse, vm:KERNEL,
    /// vm:KERNEL/rootless, vm:KERNEL/fuse (KERNEL from vm/kernels.toml, or custom).
    /// Default: the host targets that can run here and every catalog kernel
    /// with the kernel driver.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// The backing filesystem of scenarios without a `backing` statement:
    /// tmpfs (default), or ext4, xfs, btrfs on VM targets. Targets then read
    /// TARGET+BACKING, snapshots too; a target may also name its own
    /// (`--target vm:6.1/rootless+ext4`).
    #[arg(long, value_parser = runner::plan::parse_backing)]
    pub backing: Option<dsl::ast::Backing>,
    /// Only scenarios with this tag (repeatable: any of them).
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// Instances run in parallel (default: one per CPU).
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// `human` (one line per instance, failures, summary) or `json`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// Compare with stored snapshots, rewrite them, or neither.
    #[arg(long, value_enum, default_value_t = SnapshotMode::Check)]
    pub snapshots: SnapshotMode,
    /// Where snapshots live.
    #[arg(long, default_value = "snapshots")]
    pub snapshot_dir: PathBuf,
    /// The fuse-overlayfs binary for host-fuse (default: found on PATH).
    #[arg(long)]
    pub fuse_overlayfs: Option<PathBuf>,
    /// Also check each instance's layer round trip: the upper exported as a
    /// layer and applied onto the lowers gives the merged view.
    #[arg(long)]
    pub layer_roundtrip: bool,
    /// A kernel of one's own for the target vm:custom (a bzImage).
    #[arg(long)]
    pub kernel_image: Option<PathBuf>,
    /// Its modules (lib/modules/<release>); without it overlay must be built in.
    #[arg(long, requires = "kernel_image")]
    pub modules: Option<PathBuf>,
    /// A kernel catalog of one's own (its lock file is kernels.lock beside
    /// it); default: the one built into ovlc (vm/kernels.toml and .lock).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Run only partition K of N (1-based) of the instances, for a CI job
    /// matrix; `ovlc report merge` joins the partitions' JSON reports.
    #[arg(long, value_name = "K/N", value_parser = runner::plan::parse_partition)]
    pub partition: Option<(usize, usize)>,
    /// Run the selection N times, each round in a shuffled order, and fail
    /// when any instance's result or trees differ between rounds.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// The seed of the shuffled orders (printed by every shuffled run), to replay one.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Exit codes for `git bisect run`: 0 passed, 1 failed (a kernel panic
    /// or hang too), 125 when the kernel could not be tested (it did not
    /// boot, an instance could not run), 128 on bad input (stops the bisection).
    #[arg(long)]
    pub bisect: bool,
    #[command(flatten)]
    pub outputs: report::files::Outputs,
}

/// The engine's options from the command line's.
pub fn options(a: &RunArgs) -> Result<RunOptions> {
    let catalog = vm::kernels::CatalogSource::from_arg(a.catalog.as_deref());
    let target_names = if a.target.is_empty() { plan::default_targets(&catalog) } else { a.target.clone() };
    let targets = plan::parse_targets(&target_names)?;
    Ok(RunOptions {
        targets,
        target_names,
        selection: Selection { tags: a.tags.clone(), partition: a.partition },
        plan: PlanOptions {
            backing: a.backing,
            fuse_binary: a.fuse_overlayfs.clone(),
            roundtrip: a.layer_roundtrip,
            faults: runner::settings::get().faults.clone(),
            explain: false,
        },
        jobs: a.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        snapshots: a.snapshots,
        snapshot_dir: a.snapshot_dir.clone(),
        catalog,
        custom: a
            .kernel_image
            .clone()
            .map(|image| runner::targets::vm::CustomKernel { image, modules: a.modules.clone() }),
        repeat: a.repeat,
        seed: a.seed,
    })
}

pub fn run(a: &RunArgs) -> Result<u8> {
    if !a.bisect {
        return run_once(a);
    }
    let code = run_once(a).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        e.exit_code()
    });
    let bisect = runner::error::bisect_exit_code(code);
    eprintln!(
        "exit {bisect} for git bisect run ({})",
        match bisect {
            0 => "good",
            1 => "bad",
            125 => "cannot be tested: skip",
            _ => "bad input: stop",
        }
    );
    Ok(bisect)
}

fn run_once(a: &RunArgs) -> Result<u8> {
    let swept = engine::isolate()?;
    if !swept.is_empty() {
        eprintln!(
            "note: removed {} temporary director{} left by killed runs in {}",
            swept.len(),
            if swept.len() == 1 { "y" } else { "ies" },
            std::env::temp_dir().display()
        );
    }
    let opts = options(a)?;
    engine::preflight(&opts)?;
    let lib = load_all(&a.paths, MessageFormat::Human)?;
    if lib.errors > 0 {
        eprintln!("{} error{} in scenario files: nothing was run", lib.errors, plural(lib.errors));
        return Ok(EXIT_BAD_INPUT);
    }
    let doc = engine::run(&opts, &lib.valid, &Progress::new(a.format == OutputFormat::Human))?;
    report::files::write(&doc, &a.outputs)?;
    match a.format {
        OutputFormat::Json => {
            let s = serde_json::to_string_pretty(&doc).map_err(|e| Error::Infrastructure(e.to_string()))?;
            println!("{s}");
        }
        OutputFormat::Human => print_human(&doc),
    }
    Ok(doc.exit_code())
}

/// The human report: a line per instance, the failures, the coverage, what
/// differed between rounds, and the summary last.
fn print_human(doc: &RunReport) {
    let outcomes = &doc.results;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", report::lines(outcomes));
    let failed: Vec<&Outcome> =
        outcomes.iter().filter(|o| matches!(o.status, Status::Fail | Status::Crash | Status::Timeout)).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailures:");
        for o in failed {
            let _ = write!(out, "{}", report::failure(o));
        }
    }
    let _ = writeln!(out, "\ncoverage (passed/failed/skipped/errors):\n{}", report::coverage(outcomes));
    if let Some(r) = &doc.repeat {
        if r.disagreements.is_empty() {
            let _ = writeln!(out, "all {} rounds agree (seed {})", r.rounds, r.seed);
        } else {
            let _ = writeln!(out, "results that differ between rounds (replay with --seed {}):", r.seed);
            for d in &r.disagreements {
                let _ = writeln!(out, "  {}", d.line());
            }
        }
    }
    let mut last = doc.summary.line();
    if let Some(n) = doc.repeat.as_ref().map(|r| r.disagreements.len()).filter(|&n| n > 0) {
        last.push_str(&format!(", {n} result{} between rounds", if n == 1 { " differs" } else { "s differ" }));
    }
    let _ = writeln!(out, "{last}");
}
