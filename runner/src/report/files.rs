//! Report files: reading the JSON reports of earlier runs (to merge them or
//! compare kernels), and writing a run's JSON, JUnit and HTML reports.

use std::path::{Path, PathBuf};

use super::merge::{merge, missing_partitions};
use crate::error::{Error, Result};
use crate::model::RunReport;

/// The report files a run (or a merge) writes besides its standard output
/// (also the command line's options: `--json`, `--junit`, `--html`, `--bench-results`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Outputs {
    /// Also write the JSON report (docs/json.md) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report: one testsuite per target, one testcase per instance.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a static HTML report (a matrix of instances and targets) into DIR.
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,
    /// Benchmark results (`ovlc bench --json FILE`) to show in the HTML report.
    #[arg(long, value_name = "FILE")]
    pub bench_results: Option<PathBuf>,
}

/// Creates the directory a report file goes into.
pub fn create_parent(file: &Path) -> Result<()> {
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(Error::io(parent)),
        None => Ok(()),
    }
}

/// Writes the report files asked for; an error names the file.
pub fn write(doc: &RunReport, o: &Outputs) -> Result<()> {
    if let Some(path) = &o.json {
        create_parent(path)?;
        let text = serde_json::to_string_pretty(doc).map_err(|e| Error::Infrastructure(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(Error::io(path))?;
    }
    if let Some(path) = &o.junit {
        create_parent(path)?;
        let xml = super::junit::write(doc).map_err(Error::io(path))?;
        std::fs::write(path, xml).map_err(Error::io(path))?;
    }
    if let Some(dir) = &o.html {
        let bench = match &o.bench_results {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(Error::io(p))?;
                Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::input(p, e))?)
            }
            None => None,
        };
        super::html::write(doc, bench.as_ref(), dir)?;
    }
    Ok(())
}

/// Reads run reports and merges them; also returns a warning when the
/// reports are partitions of a run and some are missing.
pub fn read(files: &[PathBuf]) -> Result<(RunReport, Option<String>)> {
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::input(f, e))?;
        let r: RunReport = serde_json::from_str(&text).map_err(|e| Error::At {
            path: f.clone(),
            line: e.line(),
            column: e.column(),
            message: format!("not an ovlc run report: {e}"),
        })?;
        reports.push((f.display().to_string(), r));
    }
    let warning = missing_partitions(&reports);
    let merged = merge(reports)?;
    Ok((merged, warning))
}
