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

pub use crate::model::area;
