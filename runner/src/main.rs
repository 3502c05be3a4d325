//! `ovlc`: the command line of the OverlayFS conformance suite.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use runner::discover::{self, Loaded};
use runner::exec::{Outcome, Plan, Status};
use runner::host::{HostTarget, Workspace};
use runner::report::{self, Summary};
use runner::snapshot::{self, SnapshotMode};

/// Exit codes (see the README): 0 all passed, 1 a scenario failed (or `fmt --check`
/// found a file to reformat), 2 bad input or usage, 3 infrastructure failed.
const EXIT_FAIL: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INFRA: u8 = 3;

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
        /// How to print errors: `human` (snippets) or `short` (one line each).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
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
    /// Reports of runs: merge partitions, list the differences between kernels.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
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

#[derive(Subcommand, Debug)]
enum ReportCmd {
    /// Merge the JSON reports of a partitioned run (`ovlc run --partition K/N --json FILE`)
    /// into one: its summary on standard output, its reports where asked.
    Merge {
        /// JSON reports of `ovlc run`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        outputs: Outputs,
    },
    /// What differs between kernels in runs' JSON reports, as Markdown.
    Differences {
        /// JSON reports of `ovlc run` (several are merged first).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rewrite the part of FILE between the markers
        /// `<!-- ovlc report differences: begin -->` and `... end -->`.
        #[arg(long, value_name = "FILE", conflicts_with = "check")]
        update: Option<PathBuf>,
        /// Exit 1 when that part of FILE is not what this run gives.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KernelsCmd {
    /// Each kernel of the catalog: its locked release and version, and the state of its cache:
    /// cached, not cached, outdated, or damaged (and how). The check is quick: every file of the
    /// kernel's manifest present at its size, the SHA256 of vmlinuz and of files whose mtime moved.
    List {
        /// Check every file's SHA256 against the manifest, as `fetch` does.
        #[arg(long)]
        full: bool,
    },
    /// Download, verify and extract locked kernels (default: all) into the cache. A cached kernel
    /// is checked in full (every file's SHA256 against its manifest, no stray files) and extracted
    /// again if damaged: from its cached .deb when that verifies, else downloaded.
    Fetch { names: Vec<String> },
    /// Resolve every catalog entry to the newest package of its series and rewrite the lock.
    Update,
}

#[derive(Subcommand, Debug)]
enum LayerCmd {
    /// Write an overlay upper directory as an OCI layer tar (.tar, .tar.gz, .tar.zst, or - for stdout).
    Export {
        /// The upper directory (any overlay xattr dialect).
        upper: PathBuf,
        /// A lower layer, uppermost first (repeatable): whiteouts and opaque markers are
        /// written only for paths that exist in one.
        #[arg(long = "lower")]
        lowers: Vec<PathBuf>,
        /// The layer file; its extension picks the compression.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Clamp mtimes to at most this many seconds since the epoch (reproducible layers).
        #[arg(long)]
        mtime_clamp: Option<u64>,
        /// Diff this merged view against the lowers instead of reading the upper's
        /// overlay metadata (needed for uppers with redirects or metacopy files).
        #[arg(long, value_name = "MERGED_DIR")]
        naive_diff: Option<PathBuf>,
    },
    /// Unpack an OCI layer tar into a new directory, in overlay form.
    Apply {
        /// The layer file (.tar, gzip or zstd, recognised by content).
        file: PathBuf,
        /// The directory to create (it must not exist, or be empty).
        dir: PathBuf,
        /// Mark opaque directories with user.overlay.opaque (for rootless overlays).
        #[arg(long)]
        userxattr: bool,
        /// Refuse layers whose files add up to more than this many bytes.
        #[arg(long, default_value_t = 8 << 30)]
        max_bytes: u64,
        /// Keep file capabilities (security.capability xattrs); a layer holding one is refused otherwise.
        #[arg(long)]
        allow_capabilities: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MessageFormat {
    Human,
    Short,
}

fn main() -> ExitCode {
    // In a VM's initramfs, ovlc is /init.
    if std::process::id() == 1 {
        runner::guest::guest_main();
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { paths, message_format } => check(&paths, message_format),
        Command::Fmt { check, paths } => fmt(&paths, check),
        Command::List { tags, long, paths } => list(&paths, &tags, long),
        Command::Run(a) => run(*a),
        Command::Report { cmd } => report_cmd(cmd),
        Command::Explain { scenario, target, fuse_overlayfs } => explain(&scenario, &target, fuse_overlayfs),
        Command::Layer { cmd } => {
            runner::cleanup::on_interrupt_clean_up();
            layer(cmd)
        }
        Command::Kernels { cmd, catalog } => kernels(cmd, catalog.as_deref()),
        Command::Bench { drivers, workloads, quick, json, svg, target } => {
            runner::cleanup::on_interrupt_clean_up();
            bench(drivers, workloads, quick, json, svg, &target)
        }
        Command::Agent { mode, dir } => return ExitCode::from(runner::host::agent(&mode, &dir) as u8),
    };
    ExitCode::from(code)
}

/// Reads and merges run reports; bad files are bad input.
fn read_reports(files: &[PathBuf]) -> Result<report::RunReport, String> {
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let r: report::RunReport = serde_json::from_str(&text)
            .map_err(|e| format!("{}:{}:{}: not an ovlc run report: {e}", f.display(), e.line(), e.column()))?;
        reports.push((f.display().to_string(), r));
    }
    if let Some(w) = report::missing_partitions(&reports) {
        eprintln!("warning: {w}");
    }
    report::merge(reports)
}

fn report_cmd(cmd: ReportCmd) -> u8 {
    match cmd {
        ReportCmd::Merge { files, outputs } => {
            let doc = match read_reports(&files) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_BAD_INPUT;
                }
            };
            if let Err(e) = write_outputs(&doc, &outputs) {
                eprintln!("error: {e}");
                return EXIT_INFRA;
            }
            println!("{} reports, {} targets: {}", files.len(), doc.targets.len(), doc.summary.line());
            doc.summary.exit_code()
        }
        ReportCmd::Differences { files, update, check } => {
            let doc = match read_reports(&files) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_BAD_INPUT;
                }
            };
            let md = runner::differences::markdown(&runner::differences::between_kernels(&doc));
            let Some(path) = update.as_ref().or(check.as_ref()) else {
                print!("{md}");
                return 0;
            };
            let old = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_BAD_INPUT;
                }
            };
            let new = match runner::differences::splice(&old, &md) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_BAD_INPUT;
                }
            };
            if check.is_some() {
                if new == old {
                    return 0;
                }
                eprintln!(
                    "{}: the differences between kernels are not those of this run (ovlc report differences --update)",
                    path.display()
                );
                return 1;
            }
            if new != old {
                if let Err(e) = std::fs::write(path, new) {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_INFRA;
                }
            }
            0
        }
    }
}

fn default_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        paths.to_vec()
    }
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Loads every file under `paths`, printing errors as it goes.
/// Returns the valid scenarios and the number of errors.
/// What `load_all` found: the valid scenarios with their files, how many files, how many errors.
type Library = (Vec<(PathBuf, dsl::Scenario)>, usize, usize);

fn load_all(paths: &[PathBuf], format: MessageFormat) -> Result<Library, u8> {
    let files = match discover::files(&default_paths(paths)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_BAD_INPUT);
        }
    };
    let mut valid = Vec::new();
    let mut errors = 0;
    let stderr = std::io::stderr();
    // Parse in parallel, report in file order.
    let loaded: Vec<Loaded> = {
        use rayon::prelude::*;
        files.par_iter().map(discover::load_found).collect()
    };
    for (f, l) in files.iter().zip(loaded) {
        match l {
            Loaded::Valid(s) => valid.push((f.path.clone(), s)),
            Loaded::Invalid(fail) => {
                errors += fail.diags.len();
                let text = match format {
                    MessageFormat::Human => fail.render(color(), 100),
                    MessageFormat::Short => fail.short(),
                };
                let _ = stderr.lock().write_all(text.as_bytes());
            }
            Loaded::Unreadable(msg) => {
                errors += 1;
                eprintln!("error: {msg}");
            }
        }
    }
    Ok((valid, files.len(), errors))
}

fn check(paths: &[PathBuf], format: MessageFormat) -> u8 {
    let (_, n, errors) = match load_all(paths, format) {
        Ok(x) => x,
        Err(code) => return code,
    };
    println!("{n} scenario{}, {errors} error{}", plural(n), plural(errors));
    if errors > 0 {
        EXIT_BAD_INPUT
    } else {
        0
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn fmt(paths: &[PathBuf], check_only: bool) -> u8 {
    let (valid, _, errors) = match load_all(paths, MessageFormat::Human) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut changed = 0;
    for (path, s) in &valid {
        let new = dsl::format(s);
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if new == old {
            continue;
        }
        changed += 1;
        if check_only {
            println!("would reformat {}", path.display());
        } else if let Err(e) = write_atomically(path, new.as_bytes()) {
            eprintln!("error: {}: {e}", path.display());
            return EXIT_BAD_INPUT;
        } else {
            println!("reformatted {}", path.display());
        }
    }
    if errors > 0 {
        eprintln!("{errors} error{}: files with errors were left as they are", plural(errors));
        return EXIT_BAD_INPUT;
    }
    if check_only && changed > 0 {
        return EXIT_FAIL;
    }
    0
}

/// Writes beside the file and renames over it, so a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ovlc-fmt.{}", std::process::id()));
    let perms = std::fs::metadata(path)?.permissions();
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, perms)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn list(paths: &[PathBuf], tags: &[String], long: bool) -> u8 {
    let (valid, _, errors) = match load_all(paths, MessageFormat::Human) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    for (_, s) in &valid {
        let stags = s.tags();
        if !tags.is_empty() && !tags.iter().any(|t| stags.contains(t)) {
            continue;
        }
        for inst in dsl::instances(s) {
            let line = if long {
                format!("{}\t{}\t[{}]\n", inst.id, s.title(), stags.join(", "))
            } else {
                format!("{}\n", inst.id)
            };
            if out.write_all(line.as_bytes()).is_err() {
                return 0; // stdout closed (`ovlc list | head`): not an error
            }
        }
    }
    if errors > 0 {
        EXIT_BAD_INPUT
    } else {
        0
    }
}

/// Outcomes with the index of their plan.
type Numbered = Vec<(usize, Outcome)>;

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Files or directories; default `scenarios`.
    paths: Vec<PathBuf>,
    /// Targets, comma-separated: host, host-rootless, host-fuse, vm:KERNEL,
    /// vm:KERNEL/rootless, vm:KERNEL/fuse (KERNEL from vm/kernels.toml, or custom).
    /// Default: the host targets that can run here and every catalog kernel
    /// with the kernel driver.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// The backing filesystem of scenarios without a `backing` statement:
    /// tmpfs (default), or ext4, xfs, btrfs on VM targets. Targets then read
    /// TARGET+BACKING, snapshots too; a target may also name its own
    /// (`--target vm:6.1/rootless+ext4`).
    #[arg(long, value_parser = parse_backing)]
    backing: Option<dsl::ast::Backing>,
    /// Only scenarios with this tag (repeatable: any of them).
    #[arg(long = "tag", short = 't')]
    tags: Vec<String>,
    /// Instances run in parallel (default: one per CPU).
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// `human` (one line per instance, failures, summary) or `json`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    format: OutputFormat,
    /// Compare with stored snapshots, rewrite them, or neither.
    #[arg(long, value_enum, default_value_t = SnapshotMode::Check)]
    snapshots: SnapshotMode,
    /// Where snapshots live.
    #[arg(long, default_value = "snapshots")]
    snapshot_dir: PathBuf,
    /// The fuse-overlayfs binary for host-fuse (default: found on PATH).
    #[arg(long)]
    fuse_overlayfs: Option<PathBuf>,
    /// Also check each instance's layer round trip: the upper exported as a
    /// layer and applied onto the lowers gives the merged view.
    #[arg(long)]
    layer_roundtrip: bool,
    /// A kernel of one's own for the target vm:custom (a bzImage).
    #[arg(long)]
    kernel_image: Option<PathBuf>,
    /// Its modules (lib/modules/<release>); without it overlay must be built in.
    #[arg(long, requires = "kernel_image")]
    modules: Option<PathBuf>,
    /// A kernel catalog of one's own (its lock file is kernels.lock beside
    /// it); default: the one built into ovlc (vm/kernels.toml and .lock).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Run only partition K of N (1-based) of the instances, for a CI job
    /// matrix; `ovlc report merge` joins the partitions' JSON reports.
    #[arg(long, value_name = "K/N", value_parser = report::parse_partition)]
    partition: Option<(usize, usize)>,
    /// Run the selection N times, each round in a shuffled order, and fail
    /// when any instance's result or trees differ between rounds.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// The seed of the shuffled orders (printed by every shuffled run), to replay one.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    #[command(flatten)]
    outputs: Outputs,
}

/// Report files a run (or a merge) writes besides its standard output.
#[derive(clap::Args, Debug, Default)]
struct Outputs {
    /// Also write the JSON report (docs/json.md) to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report: one testsuite per target, one testcase per instance.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a static HTML report (a matrix of instances and targets) into DIR.
    #[arg(long, value_name = "DIR")]
    html: Option<PathBuf>,
    /// Benchmark results (`ovlc bench --format json`) to show in the HTML report.
    #[arg(long, value_name = "FILE")]
    bench_results: Option<PathBuf>,
}

/// Writes the report files asked for; an error names the file.
fn write_outputs(doc: &report::RunReport, o: &Outputs) -> Result<(), String> {
    for file in [&o.json, &o.junit].into_iter().flatten() {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
    }
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &o.junit {
        let xml = runner::junit::write(doc).map_err(|e| e.to_string())?;
        std::fs::write(path, xml).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(dir) = &o.html {
        let bench = match &o.bench_results {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display())).and_then(|t| {
                serde_json::from_str::<serde_json::Value>(&t).map_err(|e| format!("{}: {e}", p.display()))
            })?),
            None => None,
        };
        runner::html::write(doc, bench.as_ref(), dir)?;
    }
    Ok(())
}

/// A target of `ovlc run`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Host(HostTarget),
    Vm(runner::guest::VmTarget),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Host(h) => h.name().to_string(),
            Target::Vm(v) => v.name(),
        }
    }
    fn driver(&self) -> dsl::ast::Driver {
        match self {
            Target::Host(h) => h.driver(),
            Target::Vm(v) => v.driver,
        }
    }
}

fn parse_backing(s: &str) -> Result<dsl::ast::Backing, String> {
    dsl::ast::Backing::ALL
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| format!("unknown backing {s} (tmpfs, ext4, xfs, btrfs)"))
}

/// Without `--target`: the host targets that can run here, and every catalog
/// kernel with the kernel driver.
fn default_targets(catalog: &vm::kernels::CatalogSource) -> Vec<String> {
    let mut t = vec!["host".to_string(), "host-rootless".to_string()];
    if runner::host::which(Path::new("fuse-overlayfs")).is_some() && Path::new("/dev/fuse").exists() {
        t.push("host-fuse".into());
    }
    if let Ok(c) = catalog.catalog() {
        t.extend(c.kernels.iter().map(|k| format!("vm:{}", k.name)));
    }
    t
}

/// `OVLC_FAULTS="panic:ID;hang:ID"`: instances whose guest agent crashes the
/// kernel or hangs instead of running them (to test recovery).
fn faults() -> Vec<(String, runner::exec::Fault)> {
    let spec = std::env::var("OVLC_FAULTS").unwrap_or_default();
    spec.split(';')
        .filter_map(|f| {
            let (kind, id) = f.trim().split_once(':')?;
            let fault = match kind {
                "panic" => runner::exec::Fault::Panic,
                "hang" => runner::exec::Fault::Hang,
                "flaky" => runner::exec::Fault::Flaky,
                "kmsg" => runner::exec::Fault::KernelWarning,
                _ => return None,
            };
            Some((id.to_string(), fault))
        })
        .collect()
}

/// Targets with the backing each asks for (`vm:6.1/rootless+ext4`).
fn parse_targets(names: &[String]) -> Result<Vec<(Target, Option<dsl::ast::Backing>)>, String> {
    let mut out = Vec::new();
    for n in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (n, backing) = match n.split_once('+') {
            Some((t, b)) => (t, Some(parse_backing(b)?)),
            None => (n, None),
        };
        let t = match (HostTarget::parse(n), runner::guest::VmTarget::parse(n)) {
            (Some(h), _) => Target::Host(h),
            (None, Some(v)) => Target::Vm(v),
            _ => {
                return Err(format!(
                    "unknown target {n} (host, host-rootless, host-fuse, vm:KERNEL, vm:KERNEL/rootless, vm:KERNEL/fuse)"
                ))
            }
        };
        if !out.contains(&(t.clone(), backing)) {
            out.push((t, backing));
        }
    }
    if out.is_empty() {
        return Err("no target given".into());
    }
    Ok(out)
}

/// Every `vm:KERNEL` target names a kernel of the catalog (or `custom`).
fn known_kernels(
    targets: &[(Target, Option<dsl::ast::Backing>)],
    catalog: &vm::kernels::CatalogSource,
) -> Result<(), String> {
    let wanted: Vec<&str> = targets
        .iter()
        .filter_map(|(t, _)| match t {
            Target::Vm(v) if v.kernel != runner::guest::CUSTOM => Some(v.kernel.as_str()),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let c = catalog.catalog().map_err(|e| e.to_string())?;
    let names: Vec<&str> = c.kernels.iter().map(|k| k.name.as_str()).collect();
    match wanted.iter().find(|k| !names.contains(k)) {
        Some(k) => Err(format!("unknown kernel {k} in vm:{k} (the catalog has {}, and custom)", names.join(", "))),
        None => Ok(()),
    }
}

/// Splits the largest batches in two while machines would otherwise leave
/// cores idle (a boot costs a few seconds under TCG: never below 4 instances).
fn split_batches(
    mut batches: Vec<(runner::guest::VmTarget, Vec<usize>)>,
    jobs: usize,
) -> Vec<(runner::guest::VmTarget, Vec<usize>)> {
    while batches.len() < jobs {
        let Some(k) = (0..batches.len()).max_by_key(|&k| batches[k].1.len()) else { break };
        if batches[k].1.len() < 8 {
            break;
        }
        let half = batches[k].1.len() / 2;
        let rest = batches[k].1.split_off(half);
        let target = batches[k].0.clone();
        batches.push((target, rest));
    }
    batches
}

/// Enters a private mount namespace (root only), before any thread starts;
/// then arranges for an interrupt to remove the run's temporary paths, and
/// removes those of runs that were killed.
fn isolate() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        runner::sys::private_mount_namespace().map_err(|e| format!("cannot create a private mount namespace: {e}"))?;
    }
    runner::cleanup::on_interrupt_clean_up();
    let swept = runner::cleanup::sweep_dead_runs();
    if !swept.is_empty() {
        eprintln!(
            "note: removed {} temporary director{} left by killed runs in {}",
            swept.len(),
            if swept.len() == 1 { "y" } else { "ies" },
            std::env::temp_dir().display()
        );
    }
    Ok(())
}

fn run(a: RunArgs) -> u8 {
    if let Err(e) = isolate() {
        eprintln!("error: {e}");
        return EXIT_INFRA;
    }
    let catalog = vm::kernels::CatalogSource::from_arg(a.catalog.as_deref());
    let names = if a.target.is_empty() { default_targets(&catalog) } else { a.target.clone() };
    let targets = match parse_targets(&names) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(e) = known_kernels(&targets, &catalog) {
        eprintln!("error: {e}");
        return EXIT_BAD_INPUT;
    }
    // Every target mounts: one message, before any work, for a user who is not root.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("error: ovlc run mounts file systems and boots VMs: run it as root");
        return EXIT_INFRA;
    }
    if let Err(e) = runner::host::backing_size() {
        eprintln!("error: {e}");
        return EXIT_BAD_INPUT;
    }
    let wants_custom = targets.iter().any(|(t, _)| matches!(t, Target::Vm(v) if v.kernel == runner::guest::CUSTOM));
    let custom = a.kernel_image.clone().map(|image| runner::guest::CustomKernel { image, modules: a.modules.clone() });
    if wants_custom != custom.is_some() {
        eprintln!("error: --kernel-image goes with the target vm:custom (and vm:custom needs --kernel-image)");
        return EXIT_BAD_INPUT;
    }
    let (valid, _, errors) = match load_all(&a.paths, MessageFormat::Human) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if errors > 0 {
        eprintln!("{errors} error{} in scenario files: nothing was run", plural(errors));
        return EXIT_BAD_INPUT;
    }
    let faults = faults();
    let mut plans: Vec<(Plan, Target)> = Vec::new();
    let mut plan_index: Vec<usize> = Vec::new();
    let mut scenarios = std::collections::BTreeMap::new();
    let mut index = 0;
    for (path, s) in &valid {
        let stags = s.tags();
        if !a.tags.is_empty() && !a.tags.iter().any(|t| stags.contains(t)) {
            continue;
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for inst in dsl::instances(s) {
            index += 1;
            if let Some((k, n)) = a.partition {
                if !report::in_partition(index - 1, k, n) {
                    continue;
                }
            }
            scenarios.entry(inst.scenario.clone()).or_insert_with(|| report::ScenarioInfo::of(s, path));
            for (t, target_backing) in &targets {
                // A backing chosen for the run (not by the scenario) is part of the target's name.
                let backing = target_backing.or(a.backing);
                let target = match backing {
                    Some(b) if s.declared_backing().is_none() && b != dsl::ast::Backing::Tmpfs => {
                        format!("{}+{}", t.name(), b.name())
                    }
                    _ => t.name(),
                };
                plans.push((
                    Plan {
                        instance: inst.clone(),
                        scenario: s.clone(),
                        target,
                        driver: t.driver(),
                        scenario_dir: dir.clone(),
                        explain: false,
                        fuse_binary: a.fuse_overlayfs.clone(),
                        roundtrip: a.layer_roundtrip,
                        backing,
                        fault: faults.iter().find(|(id, _)| *id == inst.id).map(|(_, f)| *f),
                    },
                    t.clone(),
                ));
                plan_index.push(index - 1);
            }
        }
    }
    if plans.is_empty() {
        let why = if valid.is_empty() {
            "no scenario files (.ovl) under the paths given".to_string()
        } else {
            format!("no scenario has any of the tags {}", a.tags.join(", "))
        };
        eprintln!("error: nothing to run: {why}");
        return EXIT_BAD_INPUT;
    }
    let ws = match Workspace::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return EXIT_INFRA;
        }
    };
    let jobs = a.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let ctx = RoundContext {
        ws: &ws,
        jobs,
        human: a.format == OutputFormat::Human,
        catalog: &catalog,
        custom: custom.as_ref(),
    };
    // --repeat: every round in its own shuffled order; the first round's
    // outcomes are the report, later rounds must agree with it.
    let rounds = a.repeat.max(1) as usize;
    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
    let shuffled = rounds > 1 || a.seed.is_some();
    if shuffled {
        eprintln!("{rounds} round{} in shuffled order, seed {seed} (replay with --seed {seed})", plural(rounds));
    }
    let mut outcomes = Vec::new();
    let mut disagreements = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..plans.len()).collect();
        if shuffled {
            fastrand::Rng::with_seed(seed.wrapping_add(round as u64)).shuffle(&mut order);
        }
        let got = match execute_round(&ctx, &plans, &order) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INFRA;
            }
        };
        if round == 0 {
            outcomes = got;
        } else {
            disagreements.extend(runner::repeat::disagreements(&outcomes, &got, round + 1));
        }
    }
    for (o, i) in outcomes.iter_mut().zip(&plan_index) {
        o.index = Some(*i);
        apply_snapshot(o, a.snapshots, &a.snapshot_dir);
    }
    let summary = Summary::of(&outcomes);
    let doc = report::RunReport {
        version: 1,
        kernel: runner::exec::kernel_release().0,
        targets: names.clone(),
        partition: a.partition.map(|(k, n)| format!("{k}/{n}")),
        summary,
        scenarios,
        results: outcomes,
        repeat: shuffled.then_some(runner::repeat::RepeatReport { rounds, seed, disagreements }),
    };
    if let Err(e) = write_outputs(&doc, &a.outputs) {
        eprintln!("error: {e}");
        return EXIT_INFRA;
    }
    let outcomes = &doc.results;
    match a.format {
        OutputFormat::Json => match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INFRA;
            }
        },
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", report::lines(outcomes));
            let failed: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| matches!(o.status, Status::Fail | Status::Crash | Status::Timeout))
                .collect();
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
            let mut last = summary.line();
            if let Some(n) = doc.repeat.as_ref().map(|r| r.disagreements.len()).filter(|&n| n > 0) {
                last.push_str(&format!(", {n} result{} between rounds", if n == 1 { " differs" } else { "s differ" }));
            }
            let _ = writeln!(out, "{last}");
        }
    }
    match &doc.repeat {
        Some(r) if !r.disagreements.is_empty() => EXIT_FAIL.max(summary.exit_code()),
        _ => summary.exit_code(),
    }
}

/// What every round of a run shares.
struct RoundContext<'a> {
    ws: &'a Workspace,
    jobs: usize,
    human: bool,
    catalog: &'a vm::kernels::CatalogSource,
    custom: Option<&'a runner::guest::CustomKernel>,
}

/// Runs every plan once, host instances and VM batches in parallel, starting
/// them in `order` (a permutation of the plans' indices); outcomes come back
/// in the plans' order.
fn execute_round(ctx: &RoundContext<'_>, plans: &[(Plan, Target)], order: &[usize]) -> Result<Vec<Outcome>, String> {
    let jobs = ctx.jobs;
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(jobs).build() {
        Ok(p) => p,
        Err(e) => return Err(e.to_string()),
    };
    // On a terminal: a bar for the run and a line per running machine;
    // otherwise plain lines for the machines (a CI log).
    let multi = (ctx.human && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
    let bar = multi.as_ref().map(|m| {
        let b = m.add(indicatif::ProgressBar::new(plans.len() as u64));
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    // Host instances run one by one in the pool; VM instances of one target
    // share one machine (a batch), batches run in parallel too.
    let mut batches: Vec<(runner::guest::VmTarget, Vec<usize>)> = Vec::new();
    for &i in order {
        if let Target::Vm(v) = &plans[i].1 {
            match batches.iter_mut().find(|(b, _)| b == v) {
                Some((_, idx)) => idx.push(i),
                None => batches.push((v.clone(), vec![i])),
            }
        }
    }
    let batches = split_batches(batches, jobs);
    // Machines at once: no more than -j, nor than the memory available holds.
    let vm_pool = match rayon::ThreadPoolBuilder::new().num_threads(runner::guest::machines_at_once(jobs)).build() {
        Ok(p) => p,
        Err(e) => return Err(e.to_string()),
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plans.len()];
    let (host_out, vm_out): (Numbered, Vec<Numbered>) = pool.install(|| {
        use rayon::prelude::*;
        rayon::join(
            || {
                order
                    .par_iter()
                    .filter_map(|&i| match &plans[i].1 {
                        Target::Host(h) => {
                            let o = runner::host::run(ctx.ws, &plans[i].0, *h);
                            if let Some(b) = &bar {
                                b.set_message(o.id.clone());
                                b.inc(1);
                            }
                            Some((i, o))
                        }
                        Target::Vm(_) => None,
                    })
                    .collect()
            },
            || {
                vm_pool.install(|| {
                    batches
                        .par_iter()
                        .map(|(v, idx)| {
                            let ps: Vec<Plan> = idx.iter().map(|&i| plans[i].0.clone()).collect();
                            let line = multi.as_ref().map(|m| {
                                let l = m.add(indicatif::ProgressBar::new_spinner());
                                l.set_style(
                                    indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                                );
                                l.enable_steady_tick(std::time::Duration::from_millis(200));
                                l
                            });
                            let started = std::time::Instant::now();
                            let done = std::sync::atomic::AtomicUsize::new(0);
                            let progress = |p: runner::guest::VmProgress| {
                                let what = p.current.as_deref().unwrap_or("booting");
                                let text = format!(
                                    "{} machine {}: {}/{} {what}",
                                    p.target,
                                    p.machine,
                                    p.position + 1,
                                    p.total
                                );
                                match &line {
                                    Some(l) => l.set_message(text),
                                    None => eprintln!("{text} ({} s)", started.elapsed().as_secs()),
                                }
                                // Every instance before the running one is done.
                                let before = done.swap(p.position, std::sync::atomic::Ordering::Relaxed);
                                if let Some(b) = &bar {
                                    b.inc(p.position.saturating_sub(before) as u64);
                                }
                            };
                            let outs = runner::guest::run_batch(v, &ps, ctx.catalog, ctx.custom, &progress);
                            if let Some(b) = &bar {
                                b.inc((idx.len() - done.load(std::sync::atomic::Ordering::Relaxed)) as u64);
                            }
                            match &line {
                                Some(l) => l.finish_and_clear(),
                                None => eprintln!(
                                    "{}: {} instances in {} s",
                                    v.name(),
                                    idx.len(),
                                    started.elapsed().as_secs()
                                ),
                            }
                            idx.iter().copied().zip(outs).collect()
                        })
                        .collect()
                })
            },
        )
    });
    // Kernel trouble logged while host instances ran side by side is charged
    // to all of them: each is run again alone, and that verdict stands.
    let shared = host_out.iter().filter(|(_, o)| runner::host::kernel_trouble_shared(o)).count();
    for (i, o) in host_out.into_iter().chain(vm_out.into_iter().flatten()) {
        outcomes[i] = Some(o);
    }
    if shared > 0 && jobs > 1 {
        for (i, slot) in outcomes.iter_mut().enumerate() {
            let (Some(o), Target::Host(h)) = (slot.as_ref(), &plans[i].1) else { continue };
            if !runner::host::kernel_trouble_shared(o) {
                continue;
            }
            let mut alone = runner::host::run(ctx.ws, &plans[i].0, *h);
            if let Some(f) = alone.failures.iter_mut().find(|f| f.step == runner::host::KERNEL_LOG_STEP) {
                f.step = format!("{} (run again alone: the trouble is this instance's)", f.step);
            }
            *slot = Some(alone);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(outcomes
        .into_iter()
        .zip(plans)
        .map(|(o, (p, _))| o.unwrap_or_else(|| Outcome::error(p, "", "not run".into())))
        .collect())
}

/// Checks, updates or ignores the snapshot of one outcome.
fn apply_snapshot(o: &mut Outcome, mode: SnapshotMode, root: &Path) {
    if !matches!(o.status, Status::Pass | Status::Fail) || mode == SnapshotMode::Ignore {
        return;
    }
    let path = snapshot::path_for(root, &o.target, &o.id);
    let text = o.snapshot_text();
    match mode {
        SnapshotMode::Ignore => {}
        SnapshotMode::Update => {
            let old = snapshot::read(&path);
            match snapshot::write(&path, &o.id, &o.target, &text, false) {
                Ok(()) => {
                    o.snapshot = Some(
                        if old.is_some_and(|s| snapshot::compare(&s, &text).is_none()) { "match" } else { "updated" }
                            .into(),
                    )
                }
                Err(e) => {
                    o.status = Status::Error;
                    o.reason = Some(format!("writing {}: {e}", path.display()));
                }
            }
        }
        SnapshotMode::Check => match snapshot::read(&path) {
            None => {
                let _ = snapshot::write(&path, &o.id, &o.target, &text, true);
                o.snapshot = Some("new".into());
                o.status = Status::Fail;
                o.failures.push(runner::exec::Failure {
                    line: 0,
                    step: format!("snapshot {}", path.display()),
                    expected: "a stored snapshot".into(),
                    actual: "none: review the new one (cargo insta review) or run with --snapshots update".into(),
                });
            }
            Some(stored) => match snapshot::compare(&stored, &text) {
                None => o.snapshot = Some("match".into()),
                Some(diff) => {
                    let _ = snapshot::write(&path, &o.id, &o.target, &text, true);
                    o.snapshot = Some("changed".into());
                    o.status = Status::Fail;
                    o.snapshot_diff = Some(diff);
                    o.failures.push(runner::exec::Failure {
                        line: 0,
                        step: format!("snapshot {}", path.display()),
                        expected: "the stored upper tree and step results".into(),
                        actual: "they differ (diff below; review with cargo insta review)".into(),
                    });
                }
            },
        },
    }
}

fn explain(scenario: &str, target: &str, fuse: Option<PathBuf>) -> u8 {
    if let Err(e) = isolate() {
        eprintln!("error: {e}");
        return EXIT_INFRA;
    }
    let Some(t) = HostTarget::parse(target) else {
        eprintln!("error: unknown target {target} (host targets: host, host-rootless, host-fuse)");
        return EXIT_BAD_INPUT;
    };
    let (base, params) = match scenario.split_once('[') {
        Some((b, p)) => (b.to_string(), Some(p.trim_end_matches(']').to_string())),
        None => (scenario.to_string(), None),
    };
    let path = if Path::new(&base).is_file() {
        PathBuf::from(&base)
    } else {
        Path::new("scenarios").join(format!("{base}.ovl"))
    };
    let s = match discover::load(&path) {
        Loaded::Valid(s) => s,
        Loaded::Invalid(f) => {
            eprint!("{}", f.render(color(), 100));
            return EXIT_BAD_INPUT;
        }
        Loaded::Unreadable(e) => {
            eprintln!("error: {e} (give a scenario file or an id under scenarios/)");
            return EXIT_BAD_INPUT;
        }
    };
    let instances = dsl::instances(&s);
    let inst = match &params {
        Some(p) => instances.iter().find(|i| i.id.ends_with(&format!("[{p}]"))),
        None => instances.first(),
    };
    let Some(inst) = inst.cloned() else {
        eprintln!(
            "error: {scenario}: no such instance; instances are: {}",
            instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        return EXIT_BAD_INPUT;
    };
    let plan = Plan {
        scenario_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        explain: true,
        fuse_binary: fuse,
        ..Plan::new(inst, s.clone(), t.name().to_string(), t.driver())
    };
    let ws = match Workspace::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return EXIT_INFRA;
        }
    };
    let o = runner::host::run(&ws, &plan, t);
    if let Some(about) = s.about() {
        println!("{}\n", about.trim_end());
    }
    print!("{}", runner::explain::narrate(&o));
    Summary::of(std::slice::from_ref(&o)).exit_code()
}

fn layer(cmd: LayerCmd) -> u8 {
    use runner::oci::{self, OciError};
    let fail = |e: OciError| -> u8 {
        eprintln!("error: {e}");
        match e {
            OciError::Refused(_) => EXIT_BAD_INPUT,
            OciError::Io { .. } => EXIT_INFRA,
        }
    };
    match cmd {
        LayerCmd::Export { upper, lowers, output, mtime_clamp, naive_diff } => {
            if !upper.is_dir() {
                eprintln!("error: {} is not a directory", upper.display());
                return EXIT_BAD_INPUT;
            }
            let opts = oci::ExportOptions { lowers, mtime_clamp, naive_diff };
            match oci::export_to(&upper, &opts, &output) {
                Ok(r) => {
                    for n in &r.notes {
                        eprintln!("note: {n}");
                    }
                    eprintln!("{} members, {} bytes of file data", r.members.len(), r.bytes);
                    0
                }
                Err(e) => fail(e),
            }
        }
        LayerCmd::Apply { file, dir, userxattr, max_bytes, allow_capabilities } => {
            let opaque_xattr = if userxattr { "user.overlay.opaque" } else { "trusted.overlay.opaque" }.to_string();
            match oci::apply_to(&file, &dir, &oci::ApplyOptions { opaque_xattr, max_bytes, allow_capabilities }) {
                Ok(r) => {
                    println!(
                        "{} entries, {} whiteouts, {} opaque directories, {} bytes",
                        r.entries, r.whiteouts, r.opaque_dirs, r.bytes
                    );
                    0
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn bench(
    drivers: Vec<runner::bench::BenchDriver>,
    workloads: Vec<runner::bench::Workload>,
    quick: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    target: &str,
) -> u8 {
    use runner::bench::{self, BenchDriver, Sizes, Workload};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("error: ovlc bench mounts file systems (and boots VMs): run it as root");
        return EXIT_INFRA;
    }
    let vm_target = if target == "host" {
        None
    } else {
        match runner::guest::VmTarget::parse(target) {
            Some(v) => Some(v),
            None => {
                eprintln!("error: unknown target {target} (host, or vm:KERNEL)");
                return EXIT_BAD_INPUT;
            }
        }
    };
    let mut drivers = if drivers.is_empty() { BenchDriver::ALL.to_vec() } else { drivers };
    if !drivers.contains(&BenchDriver::Plain) {
        drivers.insert(0, BenchDriver::Plain);
    }
    drivers.sort_by_key(|d| BenchDriver::ALL.iter().position(|x| x == d));
    drivers.dedup();
    let workloads = if workloads.is_empty() { Workload::ALL.to_vec() } else { workloads };
    if vm_target.is_some() && drivers.contains(&BenchDriver::Fuse) {
        eprintln!("note: fuse-overlayfs is not available in VM guests yet: leaving out the fuse driver");
        drivers.retain(|d| *d != BenchDriver::Fuse);
    }
    if let Some(v) = &vm_target {
        let sizes = if quick { Sizes::quick() } else { Sizes::full() };
        let job = runner::guest::VmBenchJob { drivers: drivers.clone(), sizes, workloads: workloads.clone() };
        let (mut results, notes, release) = match runner::guest::bench_vm(v, &job, &vm::kernels::CatalogSource::Builtin)
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INFRA;
            }
        };
        bench::ratios(&mut results);
        let report = bench::BenchReport {
            version: 1,
            kernel: release,
            target: v.name(),
            sizes,
            data_dir: "/tmp/bench (the guest's tmpfs)".into(),
            results,
            notes,
        };
        return bench_output(&report, &drivers, json, svg);
    }
    if drivers.contains(&BenchDriver::Fuse) && runner::host::which(Path::new("fuse-overlayfs")).is_none() {
        eprintln!(
            "error: fuse-overlayfs is not installed: apt-get install -y fuse-overlayfs (or leave out --drivers fuse)"
        );
        return EXIT_INFRA;
    }
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let dir = match runner::cleanup::TempDir::new("ovlc-bench-") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INFRA;
        }
    };
    let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let bar = indicatif::ProgressBar::new((drivers.len() * (sizes.reps + 1)) as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for d in &drivers {
        bar.set_message(d.name());
        match bench::measure_host(*d, dir.path(), &sizes, &workloads, || bar.inc(1)) {
            Ok(m) => {
                for w in &workloads {
                    if !m.iter().any(|x| x.workload == *w) {
                        notes.push(format!(
                            "{} {}: not measured (the caches could not be dropped)",
                            d.name(),
                            w.name()
                        ));
                    }
                }
                results.extend(m);
            }
            Err(e) => {
                bar.finish_and_clear();
                eprintln!("error: {}: {e}", d.name());
                return EXIT_FAIL;
            }
        }
    }
    bar.finish_and_clear();
    bench::ratios(&mut results);
    let (release, _) = runner::exec::kernel_release();
    notes.push(format!(
        "data on {} (the TMPDIR file system), one repetition of warm-up then {} measured",
        dir.path().display(),
        sizes.reps
    ));
    let report = bench::BenchReport {
        version: 1,
        kernel: release,
        target: target.to_string(),
        sizes,
        data_dir: dir.path().display().to_string(),
        results,
        notes,
    };
    bench_output(&report, &drivers, json, svg)
}

fn bench_output(
    report: &runner::bench::BenchReport,
    drivers: &[runner::bench::BenchDriver],
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> u8 {
    print!("{}", runner::bench::table(report, drivers));
    for n in &report.notes {
        println!("note: {n}");
    }
    if let Some(j) = json {
        let text = serde_json::to_string_pretty(report).unwrap_or_default();
        if let Err(e) = std::fs::write(&j, text) {
            eprintln!("error: {}: {e}", j.display());
            return EXIT_INFRA;
        }
    }
    if let Some(sv) = svg {
        if let Err(e) = std::fs::write(&sv, runner::bench::svg(report, drivers)) {
            eprintln!("error: {}: {e}", sv.display());
            return EXIT_INFRA;
        }
    }
    if report.results.is_empty() {
        eprintln!("error: nothing was measured");
        return EXIT_INFRA;
    }
    0
}

fn kernels(cmd: KernelsCmd, catalog_file: Option<&Path>) -> u8 {
    use vm::kernels as k;
    // `update` rewrites a lock file: the checkout's when run from it.
    let checkout = Path::new("vm/kernels.toml");
    let catalog_file = match (&cmd, catalog_file) {
        (KernelsCmd::Update, None) if checkout.is_file() => Some(checkout),
        (_, f) => f,
    };
    let source = k::CatalogSource::from_arg(catalog_file);
    let catalog = match source.catalog() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let cache = k::cache_dir();
    match cmd {
        KernelsCmd::List { full } => {
            let lock = source.lock().unwrap_or_default();
            let depth = if full { k::Depth::Full } else { k::Depth::Quick };
            println!("{:<6} {:<13} {:<28} {:<18} {:<9} cache", "name", "suite", "release", "version", "layout");
            for e in &catalog.kernels {
                match lock.kernels.iter().find(|l| l.name == e.name) {
                    Some(l) => {
                        let state = k::cache_state(l, &cache, depth);
                        let hint = match state {
                            k::CacheState::Cached | k::CacheState::Absent => String::new(),
                            _ => format!(" (`ovlc kernels fetch {}` repairs it)", l.name),
                        };
                        println!(
                            "{:<6} {:<13} {:<28} {:<18} {:<9} {state}{hint}",
                            e.name,
                            e.suite,
                            l.release,
                            l.version,
                            format!("{:?}", l.layout).to_lowercase(),
                        )
                    }
                    None => println!("{:<6} {:<13} (not locked: run `ovlc kernels update`)", e.name, e.suite),
                }
            }
            let leftovers = k::partials(&cache);
            if !leftovers.is_empty() {
                println!(
                    "{} leftover{} of interrupted fetches in {} (the next `ovlc kernels fetch` removes them)",
                    leftovers.len(),
                    plural(leftovers.len()),
                    cache.display()
                );
            }
            0
        }
        KernelsCmd::Update => {
            let Some(lock_path) = source.lock_path() else {
                eprintln!(
                    "error: the built-in catalog cannot be rewritten: run this from the checkout, or give \
                     --catalog FILE (its kernels.lock is written beside it)"
                );
                return EXIT_BAD_INPUT;
            };
            let mirror = match k::mirror() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_INFRA;
                }
            };
            match k::update(&catalog, &mirror).and_then(|lock| k::write_lock(&lock_path, &lock).map(|_| lock)) {
                Ok(lock) => {
                    for l in &lock.kernels {
                        println!("{:<6} {} ({}, {})", l.name, l.release, l.version, l.suite);
                    }
                    println!("wrote {}", lock_path.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_INFRA
                }
            }
        }
        KernelsCmd::Fetch { names } => {
            let lock = match source.lock() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e} (run `ovlc kernels update` to create the lock)");
                    return EXIT_BAD_INPUT;
                }
            };
            for n in &names {
                if !lock.kernels.iter().any(|l| &l.name == n) {
                    eprintln!(
                        "error: no kernel {n} in the lock (kernels: {})",
                        lock.kernels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    return EXIT_BAD_INPUT;
                }
            }
            let mirror = match k::mirror() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_INFRA;
                }
            };
            let mut failed = false;
            for l in lock.kernels.iter().filter(|l| names.is_empty() || names.contains(&l.name)) {
                match k::fetch_kernel_checked(&mirror, l, &cache, k::Depth::Full) {
                    Ok(f) => {
                        for p in &f.removed {
                            println!("removed {} (left by an interrupted fetch)", p.display());
                        }
                        let done = f.describe_extraction();
                        match &f.before {
                            k::CacheState::Cached => {
                                println!("{:<6} cached: every file's SHA256 verified against its manifest", l.name)
                            }
                            k::CacheState::Absent => println!("{:<6} fetched: {done}", l.name),
                            was => {
                                let verb = match was {
                                    k::CacheState::Damaged(_) | k::CacheState::BadManifest(_) => "repaired",
                                    _ => "extracted again",
                                };
                                println!("{:<6} {verb}: {done}\n       (it was {was})", l.name);
                            }
                        }
                        println!("       {} {}", f.files.vmlinuz.display(), f.files.modules.display());
                    }
                    Err(e @ vm::VmError::Kernel { .. }) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("error: kernel {}: {e}", l.name);
                        failed = true;
                    }
                }
            }
            if failed {
                EXIT_INFRA
            } else {
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(k: &str) -> runner::guest::VmTarget {
        runner::guest::VmTarget::parse(&format!("vm:{k}")).unwrap()
    }

    #[test]
    fn batches_split_while_cores_would_idle() {
        // One kernel of 20 instances on 4 cores: four machines of 5.
        let b = split_batches(vec![(target("6.1"), (0..20).collect())], 4);
        assert_eq!(b.iter().map(|(_, i)| i.len()).collect::<Vec<_>>(), [5, 5, 5, 5]);
        let mut all: Vec<usize> = b.iter().flat_map(|(_, i)| i.clone()).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        // Small batches stay whole (a boot costs more than it saves).
        assert_eq!(split_batches(vec![(target("6.1"), (0..7).collect())], 8).len(), 1);
        // As many batches as cores: nothing to split.
        let two = vec![(target("6.1"), (0..30).collect()), (target("7.3"), (30..60).collect())];
        assert_eq!(split_batches(two, 2).len(), 2);
    }

    #[test]
    fn targets_carry_their_backing() {
        let t = parse_targets(&["vm:6.1/rootless+ext4".into(), "host".into()]).unwrap();
        assert_eq!(t[0].1, Some(dsl::ast::Backing::Ext4));
        assert_eq!(t[0].0.name(), "vm:6.1/rootless");
        assert_eq!(t[1].1, None);
        assert!(parse_targets(&["vm:6.1+zfs".into()]).is_err());
    }
}
