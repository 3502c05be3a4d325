//! The benchmark's plain data: drivers, workloads, sizes, one driver's
//! measurements and the whole report (docs/bench.md), the rootless agent's
//! job, and why a driver could not be measured.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BenchDriver {
    /// A plain directory: the baseline and the physical limit.
    Plain,
    /// Kernel overlayfs mounted by root.
    Kernel,
    /// Kernel overlayfs in a user namespace with `userxattr`.
    Rootless,
    /// fuse-overlayfs.
    Fuse,
    /// A full copy of the lower (vfs-style: no copy-on-write).
    Copy,
}

impl BenchDriver {
    pub const ALL: [BenchDriver; 5] =
        [BenchDriver::Plain, BenchDriver::Kernel, BenchDriver::Rootless, BenchDriver::Fuse, BenchDriver::Copy];
    pub fn name(self) -> &'static str {
        match self {
            BenchDriver::Plain => "plain",
            BenchDriver::Kernel => "kernel",
            BenchDriver::Rootless => "rootless",
            BenchDriver::Fuse => "fuse",
            BenchDriver::Copy => "copy",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Build an N-file layer and make it usable (mount, or copy for `copy`).
    LayerCreate,
    /// First write to a large lower file: the copy-up.
    CopyUp,
    /// Sequential write of a new large file.
    SeqWrite,
    /// Small random writes into the large file after its copy-up.
    RandomWrite,
    /// Read every small file, caches warm.
    ReadWarm,
    /// Read every small file after dropping the caches.
    ReadCold,
    /// lstat every path of the tree.
    Stat,
    /// Read every directory of the tree.
    Readdir,
    /// Export the changes as an OCI layer.
    Commit,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::LayerCreate,
        Workload::CopyUp,
        Workload::SeqWrite,
        Workload::RandomWrite,
        Workload::ReadWarm,
        Workload::ReadCold,
        Workload::Stat,
        Workload::Readdir,
        Workload::Commit,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Workload::LayerCreate => "layer-create",
            Workload::CopyUp => "copy-up",
            Workload::SeqWrite => "seq-write",
            Workload::RandomWrite => "random-write",
            Workload::ReadWarm => "read-warm",
            Workload::ReadCold => "read-cold",
            Workload::Stat => "stat",
            Workload::Readdir => "readdir",
            Workload::Commit => "commit",
        }
    }
}

/// Sizes of the workloads.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sizes {
    /// Small files in the layer (in directories of 100).
    pub files: usize,
    pub small_bytes: usize,
    /// The large file (copy-up, sequential and random writes).
    pub large_bytes: u64,
    pub random_writes: usize,
    /// Measured repetitions (after one warm-up repetition).
    pub reps: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes { files: 10_000, small_bytes: 1024, large_bytes: 256 << 20, random_writes: 2_000, reps: 5 }
    }
    pub fn quick() -> Sizes {
        Sizes { files: 2_000, small_bytes: 1024, large_bytes: 16 << 20, random_writes: 200, reps: 3 }
    }
}

/// One workload on one driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub driver: BenchDriver,
    pub workload: Workload,
    /// What one run moves: bytes (for MiB/s) and operations (for ops/s).
    pub bytes: u64,
    pub ops: u64,
    pub times_ms: Vec<f64>,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    /// MiB/s when the workload moves data, else operations per second.
    pub throughput: f64,
    pub unit: String,
    /// Median time relative to the plain directory's in the same run (1.0 = as fast).
    pub ratio_to_plain: Option<f64>,
}

/// A whole benchmark run (schema: docs/bench.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub version: u32,
    pub kernel: String,
    pub target: String,
    pub sizes: Sizes,
    pub data_dir: String,
    pub results: Vec<Measurement>,
    pub notes: Vec<String>,
}

/// What the rootless agent is asked to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchJob {
    pub sizes: Sizes,
    pub workloads: Vec<Workload>,
    pub dir: PathBuf,
}

/// Why a benchmark could not measure a driver.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::errno::Errno },
    /// A workload's result is wrong: the driver is broken, not slow.
    #[error("{0}")]
    Wrong(String),
    #[error("commit: {0}")]
    Layer(#[from] crate::oci::OciError),
    /// The rootless agent failed.
    #[error(transparent)]
    Agent(#[from] crate::error::Error),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

pub(super) fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io { what: what.to_string(), source }
}
