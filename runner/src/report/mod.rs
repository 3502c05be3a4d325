//! Reports of a run: the human text (`human`), JUnit XML (`junit`), a static
//! HTML page (`html`), the differences between kernels (`differences`), a
//! narrated instance (`explain`), merging partitioned runs (`merge`),
//! comparing two runs (`compare`), and reading and writing report files
//! (`files`). The JSON report is the `model::RunReport` itself.

pub mod compare;
pub mod differences;
pub mod explain;
pub mod files;
pub mod html;
mod human;
pub mod junit;
pub mod matrix;
mod merge;
pub mod peers;

pub use human::{coverage, failure, lines};
pub use merge::{merge, missing_partitions};
