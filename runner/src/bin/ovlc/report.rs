//! `ovlc report`: merge the JSON reports of a partitioned run, or list what
//! differs between kernels (and keep a README's copy of it current).

use std::path::PathBuf;

use clap::Subcommand;
use runner::error::{Error, Result, EXIT_FAIL, EXIT_PASS};
use runner::report::{differences, files};

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
            if check.is_some() {
                if new == old {
                    return Ok(EXIT_PASS);
                }
                eprintln!(
                    "{}: the differences between kernels are not those of this run (ovlc report differences --update)",
                    path.display()
                );
                return Ok(EXIT_FAIL);
            }
            if new != old {
                std::fs::write(path, new).map_err(Error::io(path))?;
            }
            Ok(EXIT_PASS)
        }
    }
}
