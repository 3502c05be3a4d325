//! One repetition's container: an image (small files and a large one) made
//! usable by a driver (an overlay mount, fuse-overlayfs, a full copy, or the
//! plain directory itself), and torn down after the workloads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::data::{io, BenchDriver, BenchError, Result, Sizes};
use crate::exec::mount::{self, Mounted, Place};

/// A mounted (or copied) container: where the workloads act.
pub(super) struct Container {
    pub driver: BenchDriver,
    pub base: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub root: PathBuf,
    mounted: Option<Mounted>,
}

/// The small files' paths, relative: `d000/f000` ...
pub(super) fn small_paths(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{:03}/f{:03}", i / 100, i % 100)).collect()
}

fn small_content(i: usize, size: usize) -> Vec<u8> {
    let b = (i % 251) as u8;
    vec![b; size]
}

pub(super) fn write_large(path: &Path, bytes: u64) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(io("create large file"))?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(io("write large file"))?;
        left -= n as u64;
    }
    Ok(())
}

fn create_small(root: &Path, sizes: &Sizes) -> Result<()> {
    for (i, p) in small_paths(sizes.files).iter().enumerate() {
        let full = root.join(p);
        if i % 100 == 0 {
            if let Some(d) = full.parent() {
                std::fs::create_dir_all(d).map_err(io("mkdir"))?;
            }
        }
        std::fs::write(&full, small_content(i, sizes.small_bytes)).map_err(io("write small file"))?;
    }
    Ok(())
}

/// Recursively copies a tree (regular files, directories, symlinks), the vfs way.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io("mkdir"))?;
    for e in std::fs::read_dir(from).map_err(io("readdir"))? {
        let e = e.map_err(io("readdir"))?;
        let ft = e.file_type().map_err(io("stat"))?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).map_err(io("readlink"))?, &dst)
                .map_err(io("symlink"))?;
        } else {
            std::fs::copy(e.path(), &dst).map_err(io("copy"))?;
        }
    }
    Ok(())
}

impl Container {
    /// Builds the lower (timed: small files) and makes the container usable
    /// (timed: mount or copy); returns it with the time both took.
    pub fn create(driver: BenchDriver, base: &Path, sizes: &Sizes) -> Result<(Container, Duration)> {
        std::fs::create_dir_all(base).map_err(io("mkdir"))?;
        let (lower, upper, work, merged) =
            (base.join("lower"), base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(io("mkdir"))?;
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
            mounted: None,
        };
        let mut opts: Vec<(String, Option<String>)> = vec![
            ("lowerdir".into(), Some(lower.display().to_string())),
            ("upperdir".into(), Some(upper.display().to_string())),
            ("workdir".into(), Some(work.display().to_string())),
        ];
        let attempt = match driver {
            BenchDriver::Plain => None,
            BenchDriver::Copy => {
                copy_tree(&lower, &merged)?;
                None
            }
            BenchDriver::Kernel => Some(mount::legacy(Place { merged: &merged, layers: base }, &opts)),
            BenchDriver::Rootless => {
                opts.push(("userxattr".into(), None));
                Some(mount::legacy(Place { merged: &merged, layers: base }, &opts))
            }
            BenchDriver::Fuse => Some(mount::fuse(
                Path::new(crate::sys::programs::FUSE_OVERLAYFS),
                Place { merged: &merged, layers: base },
                &opts,
            )),
        };
        if let Some(a) = attempt {
            match a.result {
                Ok(how) => c.mounted = Some(how),
                Err(r) => {
                    let why = format!(
                        "{}: {}{}",
                        a.syscall,
                        r.errno,
                        r.notes.iter().map(|n| format!("; {n}")).collect::<String>()
                    );
                    return Err(BenchError::Wrong(format!("mount overlay: {why}")));
                }
            }
        }
        Ok((c, t.elapsed()))
    }

    pub fn teardown(mut self) {
        if let Some(mut how) = self.mounted.take() {
            let _ = mount::unmount(&self.root, &mut how);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
