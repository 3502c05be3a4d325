//! The benchmark in a VM: the guest measures each driver and sends the
//! measurements back as console frames.

use std::time::Duration;

use dsl::ast::Driver;

use super::initramfs::manifest;
use super::machine::{module_closure, prepare, VmTarget};
use super::wire::{self, BENCH, BENCH_ERROR};
use crate::error::{Error, Result};

/// What `ovlc bench --target vm:KERNEL` asks a guest to measure.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VmBenchJob {
    pub drivers: Vec<crate::bench::BenchDriver>,
    pub sizes: crate::bench::Sizes,
    pub workloads: Vec<crate::bench::Workload>,
}

/// Runs the benchmark in a VM and returns its measurements, with a note per driver that failed.
pub fn bench_vm(
    target: &VmTarget,
    job: &VmBenchJob,
    catalog: &vm::kernels::CatalogSource,
) -> Result<(Vec<crate::bench::Measurement>, Vec<String>, String)> {
    let machine = prepare(target, catalog)?;
    let modules = module_closure(machine.modules.as_deref(), Driver::Kernel, &[], &[])?;
    let mut entries = manifest(&machine.agent, &modules, b"[]".to_vec());
    entries.push(vm::initramfs::Entry::File {
        path: "/bench.json".into(),
        mode: 0o644,
        data: serde_json::to_vec(job).map_err(|e| Error::Infrastructure(e.to_string()))?,
    });
    let archive = vm::initramfs::write(&entries).map_err(Error::doing("initramfs"))?;
    let dir =
        crate::sys::cleanup::TempDir::new(crate::sys::cleanup::VM).map_err(Error::doing("a temporary directory"))?;
    // The data lives on the guest's tmpfs: give it room.
    let memory_mib = 1024 + ((job.sizes.large_bytes * 3) >> 20) as u32 + 512;
    let m = machine.describe(dir.path(), archive, memory_mib, Vec::new(), Vec::new())?;
    let accel = m.accel;
    let c = vm::console::boot(&m, Duration::from_secs(3600))?;
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for line in c.output.lines() {
        if let Some(json) = wire::unframe(BENCH, line) {
            if let Ok(m) = serde_json::from_str::<Vec<crate::bench::Measurement>>(json) {
                results.extend(m);
            }
        } else if let Some(rest) = line.strip_prefix(BENCH_ERROR) {
            notes.push(rest.to_string());
        }
    }
    if c.timed_out() {
        notes.push("the machine timed out".into());
    }
    if results.is_empty() {
        notes.push(format!("no measurement came back; last console lines:\n{}", c.tail(20)));
    }
    let accel_note = if accel == vm::qemu::Accel::Tcg {
        "QEMU TCG (software emulation): compare drivers within this run, not with other machines".to_string()
    } else {
        "QEMU with KVM".to_string()
    };
    notes.push(accel_note);
    Ok((results, notes, machine.files.release))
}
