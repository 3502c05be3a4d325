//! `ovlc report`: merge the JSON reports of a partitioned run, or list what
//! differs between kernels (and keep a README's copy of it current).

use std::path::PathBuf;

use clap::Subcommand;
use runner::error::{Error, Result, EXIT_FAIL, EXIT_PASS};
use runner::report::{differences, files, peers};

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
        ReportCmd::Differences { files, update, check } => {
            let doc = read(&files)?;
            let md = differences::markdown(&differences::between_kernels(&doc));
            let Some(path) = update.as_ref().or(check.as_ref()) else {
                print!("{md}");
                return Ok(EXIT_PASS);
            };
            let old = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
            let new = differences::splice(&old, &md).map_err(|e| Error::input(path, e))?;
            keep(path, &new, &old, check.is_some(), "ovlc report differences --update")
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
