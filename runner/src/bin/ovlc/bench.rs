//! `ovlc bench`: kernel overlayfs, rootless overlayfs, fuse-overlayfs and a
//! full copy against a plain directory, on the host or in a VM.

use std::io::IsTerminal;
use std::path::PathBuf;

use runner::bench::{self, BenchDriver, BenchReport, Sizes, Workload};
use runner::error::{Error, Result, EXIT_FAIL, EXIT_PASS};
use runner::sys::programs;
use runner::targets::vm::bench::{bench_vm, VmBenchJob};
use runner::targets::vm::VmTarget;

/// What `ovlc bench` was asked.
pub struct BenchArgs {
    pub drivers: Vec<BenchDriver>,
    pub workloads: Vec<Workload>,
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub target: String,
}

/// The drivers to measure: those asked (all by default), plain always, in
/// the canonical order.
fn drivers(asked: &[BenchDriver]) -> Vec<BenchDriver> {
    let mut drivers = if asked.is_empty() { BenchDriver::ALL.to_vec() } else { asked.to_vec() };
    if !drivers.contains(&BenchDriver::Plain) {
        drivers.insert(0, BenchDriver::Plain);
    }
    drivers.sort_by_key(|d| BenchDriver::ALL.iter().position(|x| x == d));
    drivers.dedup();
    drivers
}

pub fn bench(a: BenchArgs) -> Result<u8> {
    runner::sys::cleanup::on_interrupt_clean_up();
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot("ovlc bench mounts file systems (and boots VMs)"));
    }
    let vm_target = match a.target.as_str() {
        "host" => None,
        t => Some(VmTarget::parse(t).ok_or_else(|| Error::Usage(format!("unknown target {t} (host, or vm:KERNEL)")))?),
    };
    let mut drivers = drivers(&a.drivers);
    let workloads = if a.workloads.is_empty() { Workload::ALL.to_vec() } else { a.workloads.clone() };
    let sizes = if a.quick { Sizes::quick() } else { Sizes::full() };
    let report = match &vm_target {
        Some(v) => {
            if drivers.contains(&BenchDriver::Fuse) {
                eprintln!("note: fuse-overlayfs is not available in VM guests yet: leaving out the fuse driver");
                drivers.retain(|d| *d != BenchDriver::Fuse);
            }
            in_vm(v, &drivers, sizes, &workloads)?
        }
        None => match on_host(&drivers, sizes, &workloads, &a.target)? {
            Some(r) => r,
            None => return Ok(EXIT_FAIL),
        },
    };
    output(&report, &drivers, a.json, a.svg)
}

fn in_vm(v: &VmTarget, drivers: &[BenchDriver], sizes: Sizes, workloads: &[Workload]) -> Result<BenchReport> {
    let job = VmBenchJob { drivers: drivers.to_vec(), sizes, workloads: workloads.to_vec() };
    let (mut results, notes, release) = bench_vm(v, &job, &vm::kernels::CatalogSource::Builtin)?;
    bench::ratios(&mut results);
    Ok(BenchReport {
        version: 1,
        kernel: release,
        target: v.name(),
        sizes,
        data_dir: "/tmp/bench (the guest's tmpfs)".into(),
        results,
        notes,
    })
}

/// Measures on this machine; `None` when a driver failed (told on stderr).
fn on_host(drivers: &[BenchDriver], sizes: Sizes, workloads: &[Workload], target: &str) -> Result<Option<BenchReport>> {
    if let Some(why) = drivers.contains(&BenchDriver::Fuse).then(|| programs::fuse_unavailable(None)).flatten() {
        return Err(Error::Infrastructure(format!("{why} (or leave out --drivers fuse)")));
    }
    let dir = runner::sys::cleanup::TempDir::new(runner::sys::cleanup::BENCH)
        .map_err(|source| Error::Io { what: "cannot create a temporary directory".into(), source })?;
    let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let bar = indicatif::ProgressBar::new((drivers.len() * (sizes.reps + 1)) as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for d in drivers {
        bar.set_message(d.name());
        match bench::measure_host(*d, dir.path(), &sizes, workloads, || bar.inc(1)) {
            Ok(m) => {
                for w in workloads.iter().filter(|w| !m.iter().any(|x| x.workload == **w)) {
                    notes.push(format!("{} {}: not measured (the caches could not be dropped)", d.name(), w.name()));
                }
                results.extend(m);
            }
            Err(e) => {
                bar.finish_and_clear();
                eprintln!("error: {}: {e}", d.name());
                return Ok(None);
            }
        }
    }
    bar.finish_and_clear();
    bench::ratios(&mut results);
    notes.push(format!(
        "data on {} (the TMPDIR file system), one repetition of warm-up then {} measured",
        dir.path().display(),
        sizes.reps
    ));
    Ok(Some(BenchReport {
        version: 1,
        kernel: runner::sys::kernel_release().0,
        target: target.to_string(),
        sizes,
        data_dir: dir.path().display().to_string(),
        results,
        notes,
    }))
}

fn output(report: &BenchReport, drivers: &[BenchDriver], json: Option<PathBuf>, svg: Option<PathBuf>) -> Result<u8> {
    print!("{}", bench::table(report, drivers));
    for n in &report.notes {
        println!("note: {n}");
    }
    if let Some(j) = json {
        let text = serde_json::to_string_pretty(report).unwrap_or_default();
        std::fs::write(&j, text).map_err(Error::io(&j))?;
    }
    if let Some(sv) = svg {
        std::fs::write(&sv, bench::svg(report, drivers)).map_err(Error::io(&sv))?;
    }
    if report.results.is_empty() {
        return Err(Error::Infrastructure("nothing was measured".into()));
    }
    Ok(EXIT_PASS)
}
