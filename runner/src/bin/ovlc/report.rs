//! `ovlc report`: merge the JSON reports of a partitioned run, compare two
//! runs, or list what differs between kernels (and keep a README's copy of
//! it current).

use std::path::PathBuf;

use clap::Subcommand;
use runner::error::{Error, Result, EXIT_FAIL, EXIT_PASS};
use runner::report::{compare, differences, files, matrix, peers};

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// Merge the JSON reports of a partitioned run (`ovlc run --partition K/N --json FILE`)
    /// into one: its summary on standard output, its reports where asked.
    Merge {
        /// JSON reports of `ovlc run`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        outputs: files::Outputs,
    },
    /// What changed from one run to another: per target the regressions (passed in BASE,
    /// not in NEW), fixes, other status changes, new and removed instances and changed
    /// skips. Exit 1 when anything regressed.
    Compare {
        /// The JSON report of the earlier (known good) run.
        base: PathBuf,
        /// The JSON report of the run to check.
        new: PathBuf,
        /// Compare NEW's target NEW_TARGET with BASE's BASE_TARGET (repeatable),
        /// e.g. `--as vm:7.3=vm:custom`; other targets pair by name.
        #[arg(long = "as", value_name = "BASE_TARGET=NEW_TARGET")]
        pairings: Vec<compare::Pairing>,
        /// Also write the comparison as JSON (docs/json.md) to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the comparison as a self-contained HTML page, DIR/index.html.
        #[arg(long, value_name = "DIR")]
        html: Option<PathBuf>,
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
    /// The support matrix: every feature of overlayfs.rst (docs/features.toml,
    /// built in) on every VM target of runs' JSON reports, and each kernel's
    /// overlay module parameters, as Markdown.
    Matrix {
        /// JSON reports of `ovlc run` (several are merged first).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rewrite the part of FILE between the markers
        /// `<!-- ovlc report matrix: begin -->` and `... end -->`.
        #[arg(long, value_name = "FILE", conflicts_with = "check")]
        update: Option<PathBuf>,
        /// Exit 1 when that part of FILE is not what this run gives.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
        /// Also write the matrix as JSON (the cells with the kernel's words) to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// How much of the peer suites the language can say, from the table of
    /// what each peer test needs (docs/peer-coverage.toml), as Markdown.
    Peers {
        /// The table: each unionmount-testsuite file and xfstests test with its needs.
        table: PathBuf,
        /// Rewrite the part of FILE between `<!-- ovlc report peers: begin -->` and
        /// `... end -->` with the summary.
        #[arg(long, value_name = "FILE", conflicts_with = "check")]
        update: Option<PathBuf>,
        /// Exit 1 when that part of FILE (and the --doc file) is not what the table gives.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
        /// Write (with --check: compare) the whole table, test by test, to FILE.
        #[arg(long, value_name = "FILE")]
        doc: Option<PathBuf>,
    },
}

/// Writes `new` to `path`, or with `check` only says whether it differs;
/// the exit code.
fn keep(path: &std::path::Path, new: &str, old: &str, check: bool, how: &str) -> Result<u8> {
    if new == old {
        return Ok(EXIT_PASS);
    }
    if check {
        eprintln!("{}: not what the input gives ({how})", path.display());
        return Ok(EXIT_FAIL);
    }
    std::fs::write(path, new).map_err(Error::io(path))?;
    Ok(EXIT_PASS)
}

/// A generated section: printed, or written between the markers
/// `<!-- ovlc report NAME: begin -->` and `... end -->` of `--update FILE`,
/// or compared with them (`--check FILE`).
fn section(name: &str, md: &str, update: Option<PathBuf>, check: Option<PathBuf>) -> Result<u8> {
    let Some(path) = update.as_ref().or(check.as_ref()) else {
        print!("{md}");
        return Ok(EXIT_PASS);
    };
    let old = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
    let new = differences::splice_section(&old, name, md).map_err(|e| Error::input(path, e))?;
    keep(path, &new, &old, check.is_some(), &format!("ovlc report {name} --update"))
}

fn read(files: &[PathBuf]) -> Result<runner::model::RunReport> {
    let (doc, warning) = files::read(files)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok(doc)
}

pub fn report(cmd: ReportCmd) -> Result<u8> {
    match cmd {
        ReportCmd::Merge { files, outputs } => {
            let doc = read(&files)?;
            files::write(&doc, &outputs)?;
            println!("{} reports, {} targets: {}", files.len(), doc.targets.len(), doc.summary.line());
            Ok(doc.summary.exit_code())
        }
        ReportCmd::Compare { base, new, pairings, json, html } => {
            let (b, n) = (read(std::slice::from_ref(&base))?, read(std::slice::from_ref(&new))?);
            let c = compare::compare(&b, &n, &pairings).map_err(|e| Error::Usage(e.to_string()))?;
            if let Some(path) = &json {
                files::create_parent(path)?;
                let text = serde_json::to_string_pretty(&c).map_err(|e| Error::Infrastructure(e.to_string()))?;
                std::fs::write(path, text + "\n").map_err(Error::io(path))?;
            }
            if let Some(dir) = &html {
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
                let path = dir.join("index.html");
                std::fs::write(&path, compare::html(&c)).map_err(Error::io(&path))?;
            }
            print!("{}", compare::text(&c));
            Ok(if c.regressed() { EXIT_FAIL } else { EXIT_PASS })
        }
        ReportCmd::Differences { files, update, check } => {
            let doc = read(&files)?;
            section("differences", &differences::markdown(&differences::between_kernels(&doc)), update, check)
        }
        ReportCmd::Matrix { files, update, check, json } => {
            let doc = read(&files)?;
            let (features, interop) =
                matrix::built_in().map_err(|e| Error::Infrastructure(format!("docs/features.toml: {e}")))?;
            let m = matrix::with_interop(&doc, &features, &interop);
            if let Some(path) = &json {
                files::create_parent(path)?;
                let text = serde_json::to_string_pretty(&m).map_err(|e| Error::Infrastructure(e.to_string()))?;
                std::fs::write(path, text + "\n").map_err(Error::io(path))?;
            }
            section("matrix", &matrix::markdown(&m), update, check)
        }
        ReportCmd::Peers { table, update, check, doc } => {
            let text = std::fs::read_to_string(&table).map_err(|e| Error::input(&table, e))?;
            let mut c = peers::Coverage::parse(&text).map_err(|e| Error::input(&table, e))?;
            // The library beside the table's directory (docs/ -> scenarios).
            let root = table.parent().and_then(std::path::Path::parent).unwrap_or(std::path::Path::new(""));
            c.ported = peers::Ported::read(&root.join("scenarios"), "scenarios");
            let how = "ovlc report peers --update --doc";
            let mut code = EXIT_PASS;
            if let Some(path) = &doc {
                let old = std::fs::read_to_string(path).unwrap_or_default();
                code = code.max(keep(path, &peers::document(&c), &old, check.is_some(), how)?);
            }
            let Some(path) = update.as_ref().or(check.as_ref()) else {
                if doc.is_none() {
                    print!("{}", peers::summary(&c));
                }
                return Ok(code);
            };
            let old = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
            let new =
                differences::splice_section(&old, "peers", &peers::summary(&c)).map_err(|e| Error::input(path, e))?;
            Ok(code.max(keep(path, &new, &old, check.is_some(), how)?))
        }
    }
}
