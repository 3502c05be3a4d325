//! The workloads, one function each, on a container. Each checks what it
//! did (content, sizes, counts), so that a broken driver cannot look fast.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::container::{small_paths, write_large, Container};
use super::data::{io, BenchDriver, BenchError, Result, Sizes, Workload};
use super::tally::Tally;

/// Drops the page, dentry and inode caches. Inside the rootless agent, whose
/// user namespace may not, it asks the host (see [`crate::sys::userns::spawn_agent`]).
fn drop_caches() -> bool {
    nix::unistd::sync();
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        return true;
    }
    crate::sys::userns::ask_host("drop-caches")
}

fn read_all(root: &Path, sizes: &Sizes) -> Result<u64> {
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(sizes.small_bytes);
    for (i, p) in small_paths(sizes.files).iter().enumerate() {
        buf.clear();
        std::fs::File::open(root.join(p)).and_then(|mut f| f.read_to_end(&mut buf)).map_err(io("read"))?;
        if buf.len() != sizes.small_bytes || buf.first() != Some(&((i % 251) as u8)) {
            return Err(BenchError::Wrong(format!("{p}: wrong content")));
        }
        total += buf.len() as u64;
    }
    Ok(total)
}

/// Runs the workloads asked for on one container, in a fixed order (reads
/// before the writes that change what they read).
pub(super) fn run(c: &Container, sizes: &Sizes, workloads: &[Workload], tally: &mut Tally) -> Result<()> {
    let want = |w: Workload| workloads.contains(&w);
    let root = c.root.as_path();
    if want(Workload::ReadWarm) {
        read_all(root, sizes)?;
        let t = Instant::now();
        let n = read_all(root, sizes)?;
        tally.record(Workload::ReadWarm, t.elapsed(), n, sizes.files as u64);
    }
    if want(Workload::ReadCold) && drop_caches() {
        let t = Instant::now();
        let n = read_all(root, sizes)?;
        tally.record(Workload::ReadCold, t.elapsed(), n, sizes.files as u64);
    }
    if want(Workload::Stat) {
        stat(root, sizes, tally)?;
    }
    if want(Workload::Readdir) {
        readdir(root, sizes, tally)?;
    }
    if want(Workload::CopyUp) || want(Workload::RandomWrite) {
        copy_up(root, sizes, tally)?;
    }
    if want(Workload::RandomWrite) {
        random_write(root, sizes, tally)?;
    }
    if want(Workload::SeqWrite) {
        let p = root.join("new.bin");
        let t = Instant::now();
        write_large(&p, sizes.large_bytes)?;
        tally.record(Workload::SeqWrite, t.elapsed(), sizes.large_bytes, 1);
        if std::fs::metadata(&p).map_err(io("stat"))?.len() != sizes.large_bytes {
            return Err(BenchError::Wrong("new.bin has the wrong size".into()));
        }
    }
    if want(Workload::Commit) {
        commit(c, want(Workload::CopyUp), tally)?;
    }
    Ok(())
}

fn stat(root: &Path, sizes: &Sizes, tally: &mut Tally) -> Result<()> {
    let t = Instant::now();
    let mut n = 0u64;
    for p in small_paths(sizes.files) {
        let st =
            nix::sys::stat::lstat(&root.join(&p)).map_err(|errno| BenchError::Sys { what: "lstat".into(), errno })?;
        if st.st_size as usize != sizes.small_bytes {
            return Err(BenchError::Wrong(format!("{p}: wrong size")));
        }
        n += 1;
    }
    tally.record(Workload::Stat, t.elapsed(), 0, n);
    Ok(())
}

fn readdir(root: &Path, sizes: &Sizes, tally: &mut Tally) -> Result<()> {
    let t = Instant::now();
    let mut n = 0usize;
    for d in 0..sizes.files.div_ceil(100) {
        n += std::fs::read_dir(root.join(format!("d{d:03}"))).map_err(io("readdir"))?.count();
    }
    if n != sizes.files {
        return Err(BenchError::Wrong(format!("readdir saw {n} entries, expected {}", sizes.files)));
    }
    tally.record(Workload::Readdir, t.elapsed(), 0, n as u64);
    Ok(())
}

/// The first write to the large lower file: one appended byte.
fn copy_up(root: &Path, sizes: &Sizes, tally: &mut Tally) -> Result<()> {
    let large = root.join("large.bin");
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new().append(true).open(&large).map_err(io("open large"))?;
    f.write_all(b"!").map_err(io("append"))?;
    drop(f);
    tally.record(Workload::CopyUp, t.elapsed(), sizes.large_bytes, 1);
    let len = std::fs::metadata(&large).map_err(io("stat"))?.len();
    if len != sizes.large_bytes + 1 {
        return Err(BenchError::Wrong(format!("large.bin is {len} bytes after the append")));
    }
    Ok(())
}

/// 4 KiB writes at pseudo-random offsets of the copied-up large file.
fn random_write(root: &Path, sizes: &Sizes, tally: &mut Tally) -> Result<()> {
    let large = root.join("large.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&large).map_err(io("open large"))?;
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
        f.write_all_at(&block, off).map_err(io("pwrite"))?;
    }
    f.sync_data().ok();
    tally.record(Workload::RandomWrite, t.elapsed(), (sizes.random_writes * 4096) as u64, sizes.random_writes as u64);
    let mut back = [0u8; 4096];
    f.read_exact_at(&mut back, first)
        .or_else(|_| {
            let mut r = std::fs::File::open(&large)?;
            r.seek(SeekFrom::Start(first))?;
            r.read_exact(&mut back)
        })
        .map_err(io("read back"))?;
    if back != block[..] {
        return Err(BenchError::Wrong("a random write did not land".into()));
    }
    Ok(())
}

/// Exports the container's changes as an OCI layer (`ovlc layer export`).
fn commit(c: &Container, copied_up: bool, tally: &mut Tally) -> Result<()> {
    let out = c.base.join("commit.tar");
    let root = c.root.clone();
    let (src, opts) = match c.driver {
        BenchDriver::Plain => (root, crate::oci::ExportOptions::default()),
        BenchDriver::Copy => (
            root.clone(),
            crate::oci::ExportOptions { lowers: vec![c.lower.clone()], naive_diff: Some(root), mtime_clamp: None },
        ),
        _ => (c.upper.clone(), crate::oci::ExportOptions { lowers: vec![c.lower.clone()], ..Default::default() }),
    };
    let t = Instant::now();
    let r = crate::oci::export_to(&src, &opts, &out)?;
    tally.record(Workload::Commit, t.elapsed(), r.bytes, r.members.len() as u64);
    if copied_up && !r.members.iter().any(|m| m == "large.bin" || m.ends_with("/large.bin")) {
        return Err(BenchError::Wrong(format!(
            "the committed layer lacks large.bin: {:?}",
            r.members.iter().take(5).collect::<Vec<_>>()
        )));
    }
    Ok(())
}
