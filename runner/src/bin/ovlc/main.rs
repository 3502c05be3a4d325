//! `ovlc`: the command line of the OverlayFS conformance suite. Parses the
//! arguments, runs one command (each in a file of its own), and turns the
//! engine's errors into exit codes (`runner::error`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod author;
mod bench;
mod explain;
mod kernels;
mod layer;
mod new;
mod progress;
mod report;
mod repro;
mod run;
mod scenarios;

use kernels::KernelsCmd;
use layer::LayerCmd;
use report::ReportCmd;
use run::RunArgs;
use runner::scaffold::Template;
use scenarios::MessageFormat;

#[derive(Parser, Debug)]
#[command(name = "ovlc", version, about = "OverlayFS conformance suite", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and validate scenario files (recursively under directories).
    Check {
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
        /// How to print errors: `human` (snippets), `short` (one line each), or
        /// `json` (one JSON object per error on standard output).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Write a starting scenario from a template: NAME.ovl, titled after NAME.
    New {
        /// The file to write (`scenarios/lab/11-my-step`: title "My step"); `.ovl` is
        /// appended when missing. Its directory must exist.
        name: PathBuf,
        /// What kind of scenario to start from.
        #[arg(long, value_enum, default_value_t = Template::Lab)]
        template: Template,
        /// The directory NAME is relative to (default: the current one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Overwrite the file when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Rewrite scenario files in the canonical layout.
    Fmt {
        /// Only report files whose layout differs (exit 1 when any does).
        #[arg(long)]
        check: bool,
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
    },
    /// Run scenarios on host and VM targets and check their expectations and snapshots.
    Run(Box<RunArgs>),
    /// Reports of runs: merge partitions, compare two runs, list the differences between kernels.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// Write what the kernel did into a scenario: the results of `=> ?` and of
    /// steps that do not hold, and the checks of `expect TREE ?` (shows the diff, asks).
    Bless {
        /// The scenario file.
        file: PathBuf,
        /// The target to run it on.
        #[arg(long, default_value = "host")]
        target: String,
        /// Write without asking (the diff is printed all the same).
        #[arg(long)]
        yes: bool,
        /// The fuse-overlayfs binary for host-fuse.
        #[arg(long)]
        fuse_overlayfs: Option<PathBuf>,
    },
    /// Print an exercise: its scenario and its questions (the `?`).
    Exercise {
        /// The exercise (a scenario file with `?`).
        file: PathBuf,
    },
    /// Grade a student's answers (a copy of an exercise with the `?` filled in) against a real run.
    Grade {
        /// The answers file.
        file: PathBuf,
        /// The target to run it on (`host`, `vm:5.10`, ...).
        #[arg(long, default_value = "host")]
        target: String,
        /// The fuse-overlayfs binary for host-fuse.
        #[arg(long)]
        fuse_overlayfs: Option<PathBuf>,
    },
    /// Tell one scenario's run step by step: system calls, results, and what changed in the upper.
    Explain {
        /// A scenario file, or an id such as `lab/copy-up` (looked up under `scenarios/`).
        scenario: String,
        /// The target to run it on.
        #[arg(long, default_value = "host")]
        target: String,
        /// The fuse-overlayfs binary for host-fuse.
        #[arg(long)]
        fuse_overlayfs: Option<PathBuf>,
    },
    /// Write a standalone shell script reproducing one instance, for a bug report.
    Repro {
        /// The instance, as `ovlc list` names it (`lab/02-copy-up`, `basics/hardlink[index=on,xino=off]`).
        id: String,
        /// The target whose kernel and driver decide `if` and `requires`.
        #[arg(long, default_value = "host")]
        target: String,
        /// Write the script to this file (mode 0755) instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// A report of `ovlc run --format json`: each step then expects the result
        /// ovlc got on the target, not the scenario's.
        #[arg(long)]
        from_run: Option<PathBuf>,
        /// Files or directories to find the instance in; default `scenarios`.
        paths: Vec<PathBuf>,
    },
    /// Benchmark kernel overlayfs, rootless overlayfs, fuse-overlayfs and a full copy against a plain directory.
    Bench {
        /// Drivers, comma-separated (default: all; plain is always measured, as the baseline).
        #[arg(long, value_enum, value_delimiter = ',')]
        drivers: Vec<runner::bench::BenchDriver>,
        /// Workloads, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        workloads: Vec<runner::bench::Workload>,
        /// Small sizes and 3 repetitions: under a minute (a smoke test).
        #[arg(long)]
        quick: bool,
        /// Write the results as JSON (schema in docs/bench.md).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a grouped bar chart as SVG.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Where to measure: host (VM targets come with the VM support).
        #[arg(long, default_value = "host")]
        target: String,
    },
    /// VM kernels: the catalog, its lock file, and the verified download cache.
    Kernels {
        #[command(subcommand)]
        cmd: KernelsCmd,
        /// A catalog of one's own; its lock file lives beside it (kernels.lock).
        /// Default: the catalog built into ovlc (`update` rewrites the
        /// checkout's vm/kernels.lock when run from the checkout).
        #[arg(long, global = true)]
        catalog: Option<PathBuf>,
    },
    /// OCI image layers: export an upper directory, apply a layer tarball.
    Layer {
        #[command(subcommand)]
        cmd: LayerCmd,
    },
    /// Internal: the rootless agent (runs inside a user namespace).
    #[command(name = "__agent", hide = true)]
    Agent { mode: String, dir: PathBuf },
    /// List scenario instances (after `vary`), one per line.
    List {
        /// Only scenarios with this tag (repeatable: any of them).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
        /// Also print each scenario's title and tags.
        #[arg(long)]
        long: bool,
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    // In a VM's initramfs, ovlc is /init.
    if std::process::id() == 1 {
        runner::guest::guest_main();
    }
    let result = match Cli::parse().command {
        Command::Check { paths, message_format } => scenarios::check(&paths, message_format),
        Command::Fmt { check, paths } => scenarios::fmt(&paths, check),
        Command::New { name, template, dir, force } => new::new(&name, template, dir.as_deref(), force),
        Command::List { tags, long, paths } => scenarios::list(&paths, &tags, long),
        Command::Run(a) => run::run(&a),
        Command::Report { cmd } => report::report(cmd),
        Command::Bless { file, target, yes, fuse_overlayfs } => author::bless(&file, &target, yes, fuse_overlayfs),
        Command::Exercise { file } => author::exercise(&file),
        Command::Grade { file, target, fuse_overlayfs } => author::grade(&file, &target, fuse_overlayfs),
        Command::Explain { scenario, target, fuse_overlayfs } => explain::explain(&scenario, &target, fuse_overlayfs),
        Command::Repro { id, target, output, from_run, paths } => {
            repro::repro(&id, &target, output.as_deref(), from_run.as_deref(), &paths)
        }
        Command::Layer { cmd } => layer::layer(cmd),
        Command::Kernels { cmd, catalog } => kernels::kernels(cmd, catalog.as_deref()),
        Command::Bench { drivers, workloads, quick, json, svg, target } => {
            bench::bench(bench::BenchArgs { drivers, workloads, quick, json, svg, target })
        }
        Command::Agent { mode, dir } => Ok(runner::targets::agent::agent(&mode, &dir) as u8),
    };
    ExitCode::from(result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        e.exit_code()
    }))
}
