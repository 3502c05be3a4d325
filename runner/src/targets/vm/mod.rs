//! VM targets: a kernel from the catalog (or the user's own) booted under
//! QEMU with the guest agent as PID 1; batches of instances per machine,
//! results read back from the serial console.

use crate::model::{Outcome, Plan};

mod batch;
pub mod bench;
pub mod disks;
pub mod initramfs;
pub mod machine;
pub mod repro;
pub mod wire;

use crate::error::{Error, Result};
pub use batch::VmProgress;
use batch::{boot_batch, run_machines};
use disks::make_disk;
use initramfs::manifest;
use machine::{guest_memory, prepare, prepare_custom, watchdog};

pub use machine::{machines_at_once, CustomKernel, VmTarget, CUSTOM};

/// Runs plans on one VM target: boots as many machines as it takes (a crash
/// or hang is charged to the instance that was running; the rest continue in
/// a fresh machine). Every plan gets an outcome.
pub fn run_batch(
    target: &VmTarget,
    plans: &[Plan],
    catalog: &vm::kernels::CatalogSource,
    custom: Option<&CustomKernel>,
    progress: &dyn Fn(VmProgress),
) -> Vec<Outcome> {
    let prepared = match custom.filter(|_| target.kernel == CUSTOM) {
        Some(c) => prepare_custom(c),
        None => prepare(target, catalog),
    };
    let machine = match prepared {
        Ok(p) => p,
        Err(e) => return plans.iter().map(|p| Outcome::error(p, &target.kernel, &e)).collect(),
    };
    // A scratch disk that cannot be made fails its instances only.
    let mut broken: Vec<(dsl::ast::Backing, String)> = Vec::new();
    for p in plans {
        let b = p.backing();
        if b != dsl::ast::Backing::Tmpfs && !broken.iter().any(|(x, _)| *x == b) {
            let probe = crate::sys::cleanup::TempDir::new(crate::sys::cleanup::DISK)
                .map_err(Error::doing("a temporary directory"));
            if let Err(e) = probe.and_then(|d| make_disk(d.path(), b, &machine.files.release)) {
                broken.push((b, e.to_string()));
            }
        }
    }
    let mut out: Vec<Option<Outcome>> = vec![None; plans.len()];
    let mut runnable = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        match broken.iter().find(|(b, _)| *b == p.backing()) {
            Some((_, e)) => out[i] = Some(Outcome::error(p, &machine.files.release, e.clone())),
            None => runnable.push(i),
        }
    }
    let todo: Vec<Plan> = runnable.iter().map(|&i| plans[i].clone()).collect();
    for (i, o) in runnable.into_iter().zip(run_machines(&machine, target, &todo, progress)) {
        out[i] = Some(o);
    }
    out.into_iter()
        .zip(plans)
        .map(|(o, p)| o.unwrap_or_else(|| Outcome::error(p, &target.kernel, "no result")))
        .collect()
}

/// Boots one machine for `plans` (no recovery): for measurements.
pub fn boot_once(
    target: &VmTarget,
    catalog: &vm::kernels::CatalogSource,
    plans: &[Plan],
) -> Result<vm::console::Console> {
    boot_batch(&prepare(target, catalog)?, &target.kernel_words(), plans, &|_| {})
}

/// Boots the same kernel with the agent alone and no work: it mounts the
/// pseudo file systems and powers off at once. The yardstick for boot cost.
pub fn boot_trivial(target: &VmTarget, catalog: &vm::kernels::CatalogSource) -> Result<vm::console::Console> {
    let machine = prepare(target, catalog)?;
    let entries = manifest(&machine.agent, &[], b"[]".to_vec());
    let archive = vm::initramfs::write(&entries).map_err(Error::doing("initramfs"))?;
    let dir =
        crate::sys::cleanup::TempDir::new(crate::sys::cleanup::VM).map_err(Error::doing("a temporary directory"))?;
    let m = machine.describe(dir.path(), archive, guest_memory(), Vec::new(), Vec::new())?;
    Ok(vm::console::run(&m, &watchdog(m.accel, 0), |_| vm::console::Line::Output)?)
}
