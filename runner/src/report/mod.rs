//! Reports of a run: the human text (`human`), JUnit XML (`junit`), a static
//! HTML page (`html`), the differences between kernels (`differences`), a
//! narrated instance (`explain`), and merging partitioned runs (`merge`).
//! The JSON report is the `model::RunReport` itself.

pub mod differences;
pub mod explain;
pub mod files;
pub mod html;
mod human;
pub mod junit;
mod merge;

pub use human::{coverage, failure, line, lines};
pub use merge::{merge, missing_partitions};

/// The area of a scenario id: its first path component (`lab/02-copy-up` → `lab`).
/// The area of an instance: the first directory of its id (`lab/copy-up`
/// is in `lab`); files named at the top of the run are in `.`.
pub fn area(id: &str) -> &str {
    match id.split_once('/') {
        Some((a, _)) => a,
        None => ".",
    }
}
