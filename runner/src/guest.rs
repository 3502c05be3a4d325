//! The guest agent: PID 1 of a VM target's initramfs (a static build of
//! `ovlc`). Mounts what the instances need, runs the batch's plans (or the
//! benchmark) and writes framed results to the serial console, then powers
//! the machine off. The host side lives in `targets::vm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{Outcome, Plan};
use crate::sys;
use crate::targets::vm::bench::VmBenchJob;
use crate::targets::vm::wire::{self, BENCH, BENCH_ERROR, DISKS_WORD, DONE, RESULT, START};

/// The guest's PID 1: mount the pseudo file systems, load the modules, run
/// every plan of `/plans.json`, print the results, power off.
pub fn guest_main() -> ! {
    let mnt = |src: &str, dst: &str, fs: &str| {
        let _ = std::fs::create_dir_all(dst);
        let _ = sys::mount_legacy(src, Path::new(dst), fs, 0, "");
    };
    mnt("proc", "/proc", "proc");
    mnt("sysfs", "/sys", "sysfs");
    mnt("devtmpfs", "/dev", "devtmpfs");
    mnt("tmpfs", "/tmp", "tmpfs");
    // The kernel gave PID 1 no console without /dev/console in the archive: take ttyS0.
    if let Ok(tty) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ttyS0") {
        use std::os::fd::AsRawFd;
        unsafe {
            libc::dup2(tty.as_raw_fd(), 1);
            libc::dup2(tty.as_raw_fd(), 2);
        }
    }
    let order = std::fs::read_to_string("/modules/order").unwrap_or_default();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for m in order.lines().filter(|l| !l.is_empty()) {
        if let Ok(f) = std::fs::File::open(format!("/modules/{m}")) {
            use std::os::fd::AsRawFd;
            // The kernel applies `MODULE.NAME=VALUE` of its command line to
            // built-in modules only; for a loaded one, the loader passes them
            // (as modprobe does): a target's `?NAME=VALUE`.
            // The initramfs names them `NN-NAME.ko`, in loading order.
            let file = m.split('.').next().unwrap_or("");
            let name = file.split_once('-').map_or(file, |(_, n)| n);
            let params = std::ffi::CString::new(module_params(&cmdline, name)).unwrap_or_default();
            let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
            if r != 0 && nix::errno::Errno::last() != nix::errno::Errno::EEXIST {
                println!("ovlc guest: loading {m}: {}", nix::errno::Errno::last());
            }
        }
    }
    mount_disks();
    let mut out = std::io::stdout();
    if let Some(job) = std::fs::read("/bench.json").ok().and_then(|b| serde_json::from_slice::<VmBenchJob>(&b).ok()) {
        let dir = Path::new("/tmp/bench");
        let _ = std::fs::create_dir_all(dir);
        for d in &job.drivers {
            let line = match crate::bench::measure_host(*d, dir, &job.sizes, &job.workloads, || {}) {
                Ok(m) => {
                    let json = serde_json::to_string(&m).unwrap_or_default();
                    wire::frame(BENCH, &json)
                }
                Err(e) => format!("{BENCH_ERROR}{} {}", d.name(), e.to_string().replace('\n', " ")),
            };
            let _ = writeln!(out, "\n{line}");
            let _ = out.flush();
        }
        power_off(&mut out);
    }
    // Test support for `ovlc repro`: run the reproducer scripts, not plans.
    if let Some(job) = std::fs::read("/repro.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::targets::vm::repro::ReproJob>(&b).ok())
    {
        crate::targets::vm::repro::guest_run(&job, &mut out);
        power_off(&mut out);
    }
    let plans: Vec<Plan> =
        std::fs::read("/plans.json").ok().and_then(|b| crate::model::plans_from_json(&b).ok()).unwrap_or_default();
    for (i, plan) in plans.iter().enumerate() {
        let _ = writeln!(out, "\n{START}{i} {}", boot_millis());
        let _ = out.flush();
        match plan.fault {
            Some(crate::model::Fault::Panic) => {
                // Crash the kernel as a bug would: sysrq `c` dereferences NULL.
                let _ = std::fs::write("/proc/sysrq-trigger", "c");
            }
            Some(crate::model::Fault::Hang) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Some(crate::model::Fault::Flaky | crate::model::Fault::KernelWarning) | None => {}
        }
        let ws = crate::targets::host::Workspace::new();
        let outcome = match ws {
            Ok(ws) => crate::targets::host::run(&ws, plan, crate::targets::host::HostTarget::of(plan.driver)),
            Err(e) => Outcome::error(plan, &crate::sys::kernel_release().0, format!("guest workspace: {e}")),
        };
        PEAK_USED.fetch_max(memory_used().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let json = serde_json::to_string(&outcome).unwrap_or_default();
        let _ = writeln!(out, "\n{}", wire::frame(RESULT, &json));
        let _ = out.flush();
    }
    power_off(&mut out);
}

/// The parameters the kernel command line gives module `name`
/// (`overlay.index=1 overlay.xino_auto=1` → `index=1 xino_auto=1`).
pub fn module_params(cmdline: &str, name: &str) -> String {
    let name = name.replace('-', "_");
    cmdline
        .split_whitespace()
        .filter_map(|w| w.split_once('.').filter(|(m, _)| m.replace('-', "_") == name).map(|(_, p)| p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds since the guest's kernel booted (CLOCK_BOOTTIME): the
/// guest's own clock for the host's measures, free of the console's polling.
fn boot_millis() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Mounts the scratch disks the command line names at `/disks/<fs>` and tells
/// the host target (which gives each instance its directory) where they are.
fn mount_disks() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let names: Vec<&str> = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(DISKS_WORD))
        .map(|l| l.split(',').filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    let mut disks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(backing) = dsl::ast::Backing::ALL.into_iter().find(|b| b.name() == *name) else { continue };
        let dev = PathBuf::from(format!("/dev/vd{}", (b'a' + i as u8) as char));
        let dir = PathBuf::from(format!("/disks/{name}"));
        // virtio disks are probed asynchronously after the module loads.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !dev.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mounted = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| sys::mount_legacy(&dev.display().to_string(), &dir, name, 0, "").map_err(|e| e.to_string()))
            .map(|()| dir.clone())
            .map_err(|e| format!("mounting the {name} scratch disk {} in the guest: {e}", dev.display()));
        if let Err(e) = &mounted {
            println!("ovlc guest: {e}");
        }
        disks.push((backing, mounted));
    }
    crate::targets::host::set_disk_backings(disks);
    crate::sys::set_disposable();
}

/// The most memory in use seen after an instance (KiB).
static PEAK_USED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// MemTotal - MemAvailable, in KiB.
fn memory_used() -> Option<u64> {
    Some(sys::meminfo_kib("MemTotal:")?.saturating_sub(sys::meminfo_kib("MemAvailable:")?))
}

/// Says `OVLC-DONE`, syncs and powers the machine off (QEMU then exits).
fn power_off(out: &mut std::io::Stdout) -> ! {
    let used = PEAK_USED.load(std::sync::atomic::Ordering::Relaxed).max(memory_used().unwrap_or(0));
    let _ = writeln!(out, "\n{DONE} mem_used_kib={used}");
    let _ = out.flush();
    nix::unistd::sync();
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_module_gets_its_own_words_of_the_command_line() {
        let cmdline = "console=ttyS0 overlay.permit_mounts_in_userns=1 ovlc.disks=ext4 overlay.index=1 fuse.x=2";
        assert_eq!(super::module_params(cmdline, "overlay"), "permit_mounts_in_userns=1 index=1");
        assert_eq!(super::module_params(cmdline, "virtio_blk"), "");
    }
}
