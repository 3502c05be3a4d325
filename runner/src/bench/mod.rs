//! `ovlc bench`: kernel overlayfs, rootless overlayfs, fuse-overlayfs and a
//! vfs-style full copy against a plain directory, on container-like
//! workloads. Every workload checks its result, so a broken driver cannot
//! look fast.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod container;
mod workloads;

use container::Container;

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

type Result<T, E = BenchError> = std::result::Result<T, E>;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io { what: what.to_string(), source }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The small files' paths, relative: `d000/f000` ...
fn small_paths(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{:03}/f{:03}", i / 100, i % 100)).collect()
}

fn small_content(i: usize, size: usize) -> Vec<u8> {
    let b = (i % 251) as u8;
    vec![b; size]
}

/// The times of every measured repetition, and what one run moves, per workload.
struct Tally {
    times: Vec<Vec<f64>>,
    amounts: Vec<(u64, u64)>,
}

impl Tally {
    fn new() -> Tally {
        Tally { times: vec![Vec::new(); Workload::ALL.len()], amounts: vec![(0, 0); Workload::ALL.len()] }
    }

    fn index(w: Workload) -> usize {
        Workload::ALL.iter().position(|x| *x == w).unwrap_or(0)
    }

    fn record(&mut self, w: Workload, d: Duration, bytes: u64, ops: u64) {
        self.times[Self::index(w)].push(ms(d));
        self.amounts[Self::index(w)] = (bytes, ops);
    }

    /// One measurement per workload asked for and timed: median, range, throughput.
    fn measurements(&self, driver: BenchDriver, workloads: &[Workload]) -> Vec<Measurement> {
        let mut out = Vec::new();
        for w in Workload::ALL {
            let i = Self::index(w);
            if !workloads.contains(&w) || self.times[i].is_empty() {
                continue;
            }
            let mut t = self.times[i].clone();
            t.sort_by(f64::total_cmp);
            let (bytes, ops) = self.amounts[i];
            let median = t[t.len() / 2];
            let (throughput, unit) = if bytes > 0 {
                (bytes as f64 / (1 << 20) as f64 / (median / 1e3), "MiB/s".to_string())
            } else {
                (ops as f64 / (median / 1e3), "ops/s".to_string())
            };
            out.push(Measurement {
                driver,
                workload: w,
                bytes,
                ops,
                times_ms: self.times[i].clone(),
                min_ms: t[0],
                median_ms: median,
                max_ms: t[t.len() - 1],
                throughput,
                unit,
                ratio_to_plain: None,
            });
        }
        out
    }
}

/// Runs every repetition of the workloads on one driver, here (for rootless:
/// inside the agent's user namespace). The first repetition warms up and is
/// not counted.
pub fn measure(
    driver: BenchDriver,
    dir: &Path,
    sizes: &Sizes,
    workloads: &[Workload],
    mut tick: impl FnMut(),
) -> Result<Vec<Measurement>> {
    let mut tally = Tally::new();
    for rep in 0..=sizes.reps {
        let (c, create) = Container::create(driver, &dir.join(format!("{}-{rep}", driver.name())), sizes)?;
        let mut this = Tally::new();
        this.record(Workload::LayerCreate, create, (sizes.files * sizes.small_bytes) as u64, sizes.files as u64);
        let result = workloads::run(&c, sizes, workloads, &mut this);
        c.teardown();
        result?;
        if rep > 0 {
            for (i, t) in this.times.into_iter().enumerate() {
                tally.times[i].extend(t);
            }
            for (i, a) in this.amounts.into_iter().enumerate().filter(|(_, a)| *a != (0, 0)) {
                tally.amounts[i] = a;
            }
        }
        tick();
    }
    Ok(tally.measurements(driver, workloads))
}

/// Measures one driver on the host: in this process, or for rootless in the agent.
pub fn measure_host(
    driver: BenchDriver,
    dir: &Path,
    sizes: &Sizes,
    workloads: &[Workload],
    tick: impl FnMut(),
) -> Result<Vec<Measurement>> {
    if driver != BenchDriver::Rootless {
        return measure(driver, dir, sizes, workloads, tick);
    }
    let sub = dir.join("rootless");
    std::fs::create_dir_all(&sub).map_err(io("mkdir"))?;
    let job = BenchJob { sizes: *sizes, workloads: workloads.to_vec(), dir: sub.clone() };
    let payload = serde_json::to_vec(&job).map_err(|e| BenchError::Wrong(format!("encoding the job: {e}")))?;
    let r = crate::sys::userns::spawn_agent("rootless-bench", &sub, &payload, true);
    let _ = std::fs::remove_dir_all(&sub);
    let m: Vec<Measurement> =
        serde_json::from_str(&r?).map_err(|e| BenchError::Wrong(format!("decoding the measurements: {e}")))?;
    let mut tick = tick;
    for _ in 0..=sizes.reps {
        tick();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_throughput_come_from_the_measured_repetitions() {
        let mut t = Tally::new();
        for ms in [30, 10, 20] {
            t.record(Workload::CopyUp, Duration::from_millis(ms), 2 << 20, 1);
            t.record(Workload::Stat, Duration::from_millis(ms), 0, 100);
        }
        let m = t.measurements(BenchDriver::Kernel, &[Workload::CopyUp, Workload::Stat, Workload::Readdir]);
        assert_eq!(m.len(), 2, "readdir was asked for but not timed");
        assert_eq!((m[0].workload, m[0].min_ms, m[0].median_ms, m[0].max_ms), (Workload::CopyUp, 10.0, 20.0, 30.0));
        assert_eq!(m[0].times_ms, [30.0, 10.0, 20.0], "in the order they ran");
        assert!((m[0].throughput - 100.0).abs() < 1e-9 && m[0].unit == "MiB/s", "2 MiB in 20 ms");
        assert!((m[1].throughput - 5000.0).abs() < 1e-9 && m[1].unit == "ops/s", "100 stats in 20 ms");
        assert!(t.measurements(BenchDriver::Kernel, &[Workload::Stat]).len() == 1, "only what was asked");
    }

    #[test]
    fn small_files_go_a_hundred_to_a_directory() {
        let p = small_paths(201);
        assert_eq!(
            (p[0].as_str(), p[99].as_str(), p[100].as_str(), p[200].as_str()),
            ("d000/f000", "d000/f099", "d001/f000", "d002/f000")
        );
        assert_eq!(small_content(252, 3), [1, 1, 1]);
    }
}

mod render;

pub use render::{ratios, svg, table};
