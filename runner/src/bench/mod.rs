//! `ovlc bench`: kernel overlayfs, rootless overlayfs, fuse-overlayfs and a
//! vfs-style full copy against a plain directory, on container-like
//! workloads. Every workload checks its result, so a broken driver cannot
//! look fast.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sys;

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The small files' paths, relative: `d000/f000` ...
fn small_paths(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{:03}/f{:03}", i / 100, i % 100)).collect()
}

fn small_content(i: usize, size: usize) -> Vec<u8> {
    let b = (i % 251) as u8;
    vec![b; size]
}

fn write_large(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(err("create large file"))?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(err("write large file"))?;
        left -= n as u64;
    }
    Ok(())
}

fn create_small(root: &Path, sizes: &Sizes) -> Result<(), String> {
    for (i, p) in small_paths(sizes.files).iter().enumerate() {
        let full = root.join(p);
        if i % 100 == 0 {
            if let Some(d) = full.parent() {
                std::fs::create_dir_all(d).map_err(err("mkdir"))?;
            }
        }
        std::fs::write(&full, small_content(i, sizes.small_bytes)).map_err(err("write small file"))?;
    }
    Ok(())
}

/// Recursively copies a tree (regular files, directories, symlinks), the vfs way.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(err("mkdir"))?;
    for e in std::fs::read_dir(from).map_err(err("readdir"))? {
        let e = e.map_err(err("readdir"))?;
        let ft = e.file_type().map_err(err("stat"))?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).map_err(err("readlink"))?, &dst)
                .map_err(err("symlink"))?;
        } else {
            std::fs::copy(e.path(), &dst).map_err(err("copy"))?;
        }
    }
    Ok(())
}

/// One repetition's mounted container: where the workloads act.
struct Container {
    driver: BenchDriver,
    base: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    root: PathBuf,
    fuse: Option<Child>,
    mounted: bool,
}

impl Container {
    /// Builds the lower (timed: small files) and makes the container usable (timed: mount or copy).
    fn create(driver: BenchDriver, base: &Path, sizes: &Sizes) -> Result<(Container, Duration), String> {
        std::fs::create_dir_all(base).map_err(err("mkdir"))?;
        let lower = base.join("lower");
        let upper = base.join("upper");
        let work = base.join("work");
        let merged = base.join("merged");
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(err("mkdir"))?;
        }
        // The large file is part of the image, created before timing.
        let image = if driver == BenchDriver::Plain { merged.clone() } else { lower.clone() };
        write_large(&image.join("large.bin"), sizes.large_bytes)?;
        let t = Instant::now();
        create_small(&image, sizes)?;
        let mut c = Container {
            driver,
            base: base.to_path_buf(),
            lower: lower.clone(),
            upper: upper.clone(),
            root: merged.clone(),
            fuse: None,
            mounted: false,
        };
        match driver {
            BenchDriver::Plain => {}
            BenchDriver::Copy => copy_tree(&lower, &merged)?,
            BenchDriver::Kernel | BenchDriver::Rootless => {
                let mut data =
                    format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
                if driver == BenchDriver::Rootless {
                    data.push_str(",userxattr");
                }
                sys::mount_legacy("overlay", &merged, "overlay", 0, &data).map_err(err("mount overlay"))?;
                c.mounted = true;
            }
            BenchDriver::Fuse => {
                let mut cmd = Command::new(sys::programs::FUSE_OVERLAYFS);
                cmd.arg("-f")
                    .arg("-o")
                    .arg(format!(
                        "lowerdir={},upperdir={},workdir={}",
                        lower.display(),
                        upper.display(),
                        work.display()
                    ))
                    .arg(&merged)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                crate::sys::die_with_parent(&mut cmd);
                c.fuse = Some(cmd.spawn().map_err(err("start fuse-overlayfs"))?);
                let deadline = Instant::now() + Duration::from_secs(20);
                while !sys::is_mountpoint(&merged) {
                    if Instant::now() > deadline {
                        return Err("fuse-overlayfs did not mount".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                c.mounted = true;
            }
        }
        Ok((c, t.elapsed()))
    }

    fn teardown(mut self) {
        if self.mounted {
            for _ in 0..100 {
                if sys::umount(&self.root, 0).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(mut ch) = self.fuse.take() {
            let _ = ch.wait();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Drops the page, dentry and inode caches. Inside the rootless agent, whose
/// user namespace may not, it asks the host (see [`crate::sys::userns::spawn_agent`]).
fn drop_caches() -> bool {
    nix::unistd::sync();
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        return true;
    }
    crate::sys::userns::ask_host("drop-caches")
}

fn read_all(root: &Path, sizes: &Sizes) -> Result<u64, String> {
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(sizes.small_bytes);
    for (i, p) in small_paths(sizes.files).iter().enumerate() {
        buf.clear();
        std::fs::File::open(root.join(p)).and_then(|mut f| f.read_to_end(&mut buf)).map_err(err("read"))?;
        if buf.len() != sizes.small_bytes || buf.first() != Some(&((i % 251) as u8)) {
            return Err(format!("{p}: wrong content"));
        }
        total += buf.len() as u64;
    }
    Ok(total)
}

/// Runs every repetition of the workloads on one driver, here (for rootless:
/// inside the agent's user namespace).
pub fn measure(
    driver: BenchDriver,
    dir: &Path,
    sizes: &Sizes,
    workloads: &[Workload],
    mut tick: impl FnMut(),
) -> Result<Vec<Measurement>, String> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Workload::ALL.len()];
    let mut amounts: Vec<(u64, u64)> = vec![(0, 0); Workload::ALL.len()];
    let want = |w: Workload| workloads.contains(&w);
    let idx = |w: Workload| Workload::ALL.iter().position(|x| *x == w).unwrap_or(0);
    for rep in 0..=sizes.reps {
        let (c, create) = Container::create(driver, &dir.join(format!("{}-{rep}", driver.name())), sizes)?;
        let mut record = |w: Workload, d: Duration, bytes: u64, ops: u64| {
            if rep > 0 {
                times[idx(w)].push(ms(d));
                amounts[idx(w)] = (bytes, ops);
            }
        };
        record(Workload::LayerCreate, create, (sizes.files * sizes.small_bytes) as u64, sizes.files as u64);
        let result = (|| -> Result<(), String> {
            let root = c.root.clone();
            if want(Workload::ReadWarm) {
                read_all(&root, sizes)?;
                let t = Instant::now();
                let n = read_all(&root, sizes)?;
                record(Workload::ReadWarm, t.elapsed(), n, sizes.files as u64);
            }
            if want(Workload::ReadCold) && drop_caches() {
                let t = Instant::now();
                let n = read_all(&root, sizes)?;
                record(Workload::ReadCold, t.elapsed(), n, sizes.files as u64);
            }
            if want(Workload::Stat) {
                let t = Instant::now();
                let mut n = 0u64;
                for p in small_paths(sizes.files) {
                    let st = nix::sys::stat::lstat(&root.join(&p)).map_err(err("lstat"))?;
                    if st.st_size as usize != sizes.small_bytes {
                        return Err(format!("{p}: wrong size"));
                    }
                    n += 1;
                }
                record(Workload::Stat, t.elapsed(), 0, n);
            }
            if want(Workload::Readdir) {
                let t = Instant::now();
                let mut n = 0usize;
                for d in 0..sizes.files.div_ceil(100) {
                    n += std::fs::read_dir(root.join(format!("d{d:03}"))).map_err(err("readdir"))?.count();
                }
                if n != sizes.files {
                    return Err(format!("readdir saw {n} entries, expected {}", sizes.files));
                }
                record(Workload::Readdir, t.elapsed(), 0, n as u64);
            }
            let large = root.join("large.bin");
            if want(Workload::CopyUp) || want(Workload::RandomWrite) {
                let t = Instant::now();
                let mut f = std::fs::OpenOptions::new().append(true).open(&large).map_err(err("open large"))?;
                f.write_all(b"!").map_err(err("append"))?;
                drop(f);
                record(Workload::CopyUp, t.elapsed(), sizes.large_bytes, 1);
                let len = std::fs::metadata(&large).map_err(err("stat"))?.len();
                if len != sizes.large_bytes + 1 {
                    return Err(format!("large.bin is {len} bytes after the append"));
                }
            }
            if want(Workload::RandomWrite) {
                let f = std::fs::OpenOptions::new().write(true).open(&large).map_err(err("open large"))?;
                let block = vec![0x3cu8; 4096];
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                let blocks = (sizes.large_bytes / 4096).max(1);
                let mut first = 0;
                let t = Instant::now();
                for i in 0..sizes.random_writes {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = (x % blocks) * 4096;
                    if i == 0 {
                        first = off;
                    }
                    f.write_all_at(&block, off).map_err(err("pwrite"))?;
                }
                f.sync_data().ok();
                record(
                    Workload::RandomWrite,
                    t.elapsed(),
                    (sizes.random_writes * 4096) as u64,
                    sizes.random_writes as u64,
                );
                let mut back = [0u8; 4096];
                f.read_exact_at(&mut back, first)
                    .or_else(|_| {
                        let mut r = std::fs::File::open(&large)?;
                        r.seek(SeekFrom::Start(first))?;
                        r.read_exact(&mut back)
                    })
                    .map_err(err("read back"))?;
                if back != block[..] {
                    return Err("a random write did not land".into());
                }
            }
            if want(Workload::SeqWrite) {
                let p = root.join("new.bin");
                let t = Instant::now();
                write_large(&p, sizes.large_bytes)?;
                record(Workload::SeqWrite, t.elapsed(), sizes.large_bytes, 1);
                if std::fs::metadata(&p).map_err(err("stat"))?.len() != sizes.large_bytes {
                    return Err("new.bin has the wrong size".into());
                }
            }
            if want(Workload::Commit) {
                let out = c.base.join("commit.tar");
                let (src, opts) = match c.driver {
                    BenchDriver::Plain => (root.clone(), crate::oci::ExportOptions::default()),
                    BenchDriver::Copy => (
                        root.clone(),
                        crate::oci::ExportOptions {
                            lowers: vec![c.lower.clone()],
                            naive_diff: Some(root.clone()),
                            mtime_clamp: None,
                        },
                    ),
                    _ => (
                        c.upper.clone(),
                        crate::oci::ExportOptions { lowers: vec![c.lower.clone()], ..Default::default() },
                    ),
                };
                let t = Instant::now();
                let r = crate::oci::export_to(&src, &opts, &out).map_err(|e| e.to_string())?;
                record(Workload::Commit, t.elapsed(), r.bytes, r.members.len() as u64);
                if !r.members.iter().any(|m| m == "large.bin" || m.ends_with("/large.bin")) && want(Workload::CopyUp) {
                    return Err(format!(
                        "the committed layer lacks large.bin: {:?}",
                        r.members.iter().take(5).collect::<Vec<_>>()
                    ));
                }
            }
            Ok(())
        })();
        c.teardown();
        result?;
        tick();
    }
    let mut out = Vec::new();
    for w in Workload::ALL {
        let i = idx(w);
        if !want(w) || times[i].is_empty() {
            continue;
        }
        let mut t = times[i].clone();
        t.sort_by(f64::total_cmp);
        let (bytes, ops) = amounts[i];
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
            times_ms: times[i].clone(),
            min_ms: t[0],
            median_ms: median,
            max_ms: t[t.len() - 1],
            throughput,
            unit,
            ratio_to_plain: None,
        });
    }
    Ok(out)
}

/// Measures one driver on the host: in this process, or for rootless in the agent.
pub fn measure_host(
    driver: BenchDriver,
    dir: &Path,
    sizes: &Sizes,
    workloads: &[Workload],
    tick: impl FnMut(),
) -> Result<Vec<Measurement>, String> {
    if driver != BenchDriver::Rootless {
        return measure(driver, dir, sizes, workloads, tick);
    }
    let sub = dir.join("rootless");
    std::fs::create_dir_all(&sub).map_err(err("mkdir"))?;
    let job = BenchJob { sizes: *sizes, workloads: workloads.to_vec(), dir: sub.clone() };
    let payload = serde_json::to_vec(&job).map_err(err("encoding the job"))?;
    let r = crate::sys::userns::spawn_agent("rootless-bench", &sub, &payload, true);
    let _ = std::fs::remove_dir_all(&sub);
    let m: Vec<Measurement> = serde_json::from_str(&r?).map_err(err("decoding the measurements"))?;
    let mut tick = tick;
    for _ in 0..=sizes.reps {
        tick();
    }
    Ok(m)
}

mod render;

pub use render::{ratios, svg, table};
