//! `ovlc bench`: kernel overlayfs, rootless overlayfs, fuse-overlayfs and a
//! vfs-style full copy against a plain directory, on container-like
//! workloads. Every workload checks its result, so a broken driver cannot
//! look fast.

use std::path::Path;

mod container;
mod data;
mod render;
mod tally;
mod workloads;

use container::Container;
use data::io;
pub use data::{BenchDriver, BenchError, BenchJob, BenchReport, Measurement, Result, Sizes, Workload};
pub use render::{ratios, svg, table};
use tally::Tally;

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
