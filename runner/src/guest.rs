//! VM targets: the guest agent (PID 1 in the initramfs, a static build of
//! `ovlc`) and the host side that builds the initramfs, boots the kernel under
//! QEMU, and reads the framed results from the serial console.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dsl::ast::Driver;

use crate::exec::{self, Outcome, Plan};
use crate::sys;

/// Console frames: `OVLC-START <n>` before instance n, `OVLC-RESULT <sha256> <json>`
/// after it, `OVLC-DONE` at the end.
pub const START: &str = "OVLC-START ";
pub const RESULT: &str = "OVLC-RESULT ";
pub const DONE: &str = "OVLC-DONE";
/// `OVLC-BENCH <sha256> <json>`: one driver's measurements; `OVLC-BENCH-ERROR <driver> <why>`.
pub const BENCH: &str = "OVLC-BENCH ";
pub const BENCH_ERROR: &str = "OVLC-BENCH-ERROR ";

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
) -> Result<(Vec<crate::bench::Measurement>, Vec<String>, String), String> {
    let machine = prepare(target, catalog)?;
    let modules = module_closure(machine.modules.as_deref(), Driver::Kernel, &[])?;
    let mut entries = manifest(&machine.agent, &modules, b"[]".to_vec());
    entries.push(vm::initramfs::Entry::File {
        path: "/bench.json".into(),
        mode: 0o644,
        data: serde_json::to_vec(job).map_err(|e| e.to_string())?,
    });
    let archive = vm::initramfs::write(&entries).map_err(|e| format!("initramfs: {e}"))?;
    let dir = crate::cleanup::TempDir::new("ovlc-vm-").map_err(|e| e.to_string())?;
    // The data lives on the guest's tmpfs: give it room.
    let memory_mib = 1024 + ((job.sizes.large_bytes * 3) >> 20) as u32 + 512;
    let m = machine.describe(dir.path(), archive, memory_mib, Vec::new(), Vec::new())?;
    let accel = m.accel;
    let c = vm::qemu::boot(&m, Duration::from_secs(3600)).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for line in c.output.lines() {
        if let Some(rest) = line.strip_prefix(BENCH) {
            if let Some((sum, json)) = rest.split_once(' ') {
                if sha(json) == sum {
                    if let Ok(m) = serde_json::from_str::<Vec<crate::bench::Measurement>>(json) {
                        results.extend(m);
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix(BENCH_ERROR) {
            notes.push(rest.to_string());
        }
    }
    if c.timed_out() {
        notes.push("the machine timed out".into());
    }
    if results.is_empty() {
        let tail: Vec<&str> = c.output.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        notes.push(format!("no measurement came back; last console lines:\n{}", tail.join("\n")));
    }
    let accel_note = if accel == vm::qemu::Accel::Tcg {
        "QEMU TCG (software emulation): compare drivers within this run, not with other machines".to_string()
    } else {
        "QEMU with KVM".to_string()
    };
    notes.push(accel_note);
    Ok((results, notes, machine.files.release))
}

fn sha(s: &str) -> String {
    vm::debian::sha256_hex(s.as_bytes())
}

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
    for m in order.lines().filter(|l| !l.is_empty()) {
        if let Ok(f) = std::fs::File::open(format!("/modules/{m}")) {
            use std::os::fd::AsRawFd;
            let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
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
                    format!("{BENCH}{} {json}", sha(&json))
                }
                Err(e) => format!("{BENCH_ERROR}{} {}", d.name(), e.replace('\n', " ")),
            };
            let _ = writeln!(out, "\n{line}");
            let _ = out.flush();
        }
        power_off(&mut out);
    }
    let plans: Vec<Plan> =
        std::fs::read("/plans.json").ok().and_then(|b| exec::plans_from_json(&b).ok()).unwrap_or_default();
    for (i, plan) in plans.iter().enumerate() {
        let _ = writeln!(out, "\n{START}{i}");
        let _ = out.flush();
        match plan.fault {
            Some(exec::Fault::Panic) => {
                // Crash the kernel as a bug would: sysrq `c` dereferences NULL.
                let _ = std::fs::write("/proc/sysrq-trigger", "c");
            }
            Some(exec::Fault::Hang) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Some(exec::Fault::Flaky | exec::Fault::KernelWarning) | None => {}
        }
        let ws = crate::host::Workspace::new();
        let outcome = match ws {
            Ok(ws) => crate::host::run(&ws, plan, host_target(plan.driver)),
            Err(e) => Outcome::error(plan, &exec::kernel_release().0, format!("guest workspace: {e}")),
        };
        PEAK_USED.fetch_max(memory_used().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let json = serde_json::to_string(&outcome).unwrap_or_default();
        let _ = writeln!(out, "\n{RESULT}{} {json}", sha(&json));
        let _ = out.flush();
    }
    power_off(&mut out);
}

/// The kernel command line word that lists the scratch disks, in order:
/// `ovlc.disks=ext4,xfs` (`/dev/vda` holds ext4, `/dev/vdb` xfs).
pub const DISKS_WORD: &str = "ovlc.disks=";

/// Mounts the scratch disks the command line names at `/disks/<fs>` and tells
/// the executor where they are.
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
    crate::host::set_disk_backings(disks);
    crate::sys::set_disposable();
}

/// The most memory in use seen after an instance (KiB).
static PEAK_USED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A field of /proc/meminfo, in KiB (`MemAvailable:`).
fn meminfo_kib(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines().find_map(|l| l.strip_prefix(field)?.trim().trim_end_matches("kB").trim().parse().ok())
}

/// MemTotal - MemAvailable, in KiB.
fn memory_used() -> Option<u64> {
    Some(meminfo_kib("MemTotal:")?.saturating_sub(meminfo_kib("MemAvailable:")?))
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

fn host_target(d: Driver) -> crate::host::HostTarget {
    match d {
        Driver::Kernel => crate::host::HostTarget::Kernel,
        Driver::Rootless => crate::host::HostTarget::Rootless,
        Driver::Fuse => crate::host::HostTarget::Fuse,
    }
}

/// A VM target: `vm:<kernel>`, `vm:<kernel>/rootless`, `vm:<kernel>/fuse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmTarget {
    pub kernel: String,
    pub driver: Driver,
}

impl VmTarget {
    pub fn parse(s: &str) -> Option<VmTarget> {
        let rest = s.strip_prefix("vm:")?;
        let (kernel, driver) = match rest.split_once('/') {
            Some((k, "rootless")) => (k, Driver::Rootless),
            Some((k, "fuse")) => (k, Driver::Fuse),
            Some(_) => return None,
            None => (rest, Driver::Kernel),
        };
        (!kernel.is_empty()).then(|| VmTarget { kernel: kernel.to_string(), driver })
    }

    pub fn name(&self) -> String {
        match self.driver {
            Driver::Kernel => format!("vm:{}", self.kernel),
            Driver::Rootless => format!("vm:{}/rootless", self.kernel),
            Driver::Fuse => format!("vm:{}/fuse", self.kernel),
        }
    }
}

/// The `ovlc` that runs as the guests' `/init`: `OVLC_GUEST_BINARY`, else
/// this very binary, which the workspace builds statically (see
/// `.cargo/config.toml`), so that one build serves host and guest and an
/// installed `ovlc` needs no checkout.
pub fn guest_binary() -> Result<PathBuf, String> {
    let (p, from) = match std::env::var_os("OVLC_GUEST_BINARY") {
        Some(p) => (PathBuf::from(p), "OVLC_GUEST_BINARY"),
        None => (std::env::current_exe().map_err(|e| format!("cannot find the ovlc binary: {e}"))?, "this ovlc"),
    };
    let head = read_head(&p).map_err(|e| format!("{} ({from}): {e}", p.display()))?;
    match elf_is_static(&head) {
        Some(true) => Ok(p),
        Some(false) => Err(format!(
            "{} ({from}) is dynamically linked and cannot run as a guest's /init: build ovlc from the \
             checkout (cargo build --release --bin ovlc, or cargo install --path runner run from the \
             checkout's root, which link it statically) or set OVLC_GUEST_BINARY to a static ovlc",
            p.display()
        )),
        None => Err(format!("{} ({from}) is not a 64-bit ELF program", p.display())),
    }
}

/// The first 64 KiB of a file: an ELF header and its program headers.
fn read_head(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(p)?.take(64 << 10).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether a 64-bit little-endian ELF image has no program interpreter (no
/// `PT_INTERP` header: static or static-pie); `None` if it is no such ELF.
pub fn elf_is_static(head: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(head.get(0x20..0x28)?.try_into().ok()?) as usize;
    let (size, count) = (u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    if size < 4 {
        return None;
    }
    for i in 0..count {
        let at = phoff.checked_add(i.checked_mul(size)?)?;
        let kind = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// The part of a machine's initramfs that stays the same from batch to batch
/// (the agent, the modules, fuse-overlayfs with its libraries), cached under
/// the cache directory by a SHA256 of its inputs: the machine's digest (see
/// [`Prepared::new`]), the driver, the disks and the programs' identities.
fn base_archive(
    machine: &Prepared,
    driver: Driver,
    disks: &[dsl::ast::Backing],
    programs: Vec<vm::initramfs::Entry>,
) -> Result<Vec<u8>, String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(machine.digest);
    h.update(driver.name().as_bytes());
    for d in disks {
        h.update([0]);
        h.update(d.name().as_bytes());
    }
    for p in &programs {
        h.update([0]);
        h.update(p.path().as_bytes());
        if let vm::initramfs::Entry::HostFile { from, .. } = p {
            h.update(file_identity(from).as_bytes());
        }
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let cache = vm::kernels::cache_dir().join("initramfs");
    let path = cache.join(format!("{key}.cpio"));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let modules = module_closure(machine.modules.as_deref(), driver, disks)?;
    let mut entries = base_manifest(&machine.agent, &modules);
    entries.extend(programs);
    let bytes = vm::initramfs::write(&entries).map_err(|e| format!("initramfs: {e}"))?;
    // Written beside, then renamed: a reader never sees half an archive.
    if std::fs::create_dir_all(&cache).is_ok() {
        let tmp = cache.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        prune(&cache, 24);
    }
    Ok(bytes)
}

/// Keeps the `keep` most recently written archives of the cache.
fn prune(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| p.extension().is_some_and(|x| x == "cpio"))
        .collect();
    files.sort();
    files.reverse();
    for (_, p) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p);
    }
}

/// The manifest of a batch's initramfs: the agent as /init, the modules in load order, the plans.
pub fn manifest(agent: &Path, modules: &[(String, Vec<u8>)], plans_json: Vec<u8>) -> Vec<vm::initramfs::Entry> {
    let mut e = base_manifest(agent, modules);
    e.push(vm::initramfs::Entry::File { path: "/plans.json".into(), mode: 0o644, data: plans_json });
    e
}

/// The agent as /init and the modules in load order.
pub fn base_manifest(agent: &Path, modules: &[(String, Vec<u8>)]) -> Vec<vm::initramfs::Entry> {
    use vm::initramfs::Entry;
    let mut e = vec![
        Entry::Dir { path: "/dev".into(), mode: 0o755 },
        Entry::Dir { path: "/proc".into(), mode: 0o555 },
        Entry::Dir { path: "/sys".into(), mode: 0o555 },
        Entry::Dir { path: "/tmp".into(), mode: 0o1777 },
        Entry::Dir { path: "/modules".into(), mode: 0o755 },
        Entry::HostFile { path: "/init".into(), mode: 0o755, from: agent.to_path_buf() },
    ];
    let mut order = String::new();
    for (i, (name, data)) in modules.iter().enumerate() {
        let f = format!("{i:02}-{name}.ko");
        order.push_str(&f);
        order.push('\n');
        e.push(Entry::File { path: format!("/modules/{f}"), mode: 0o644, data: data.clone() });
    }
    e.push(Entry::File { path: "/modules/order".into(), mode: 0o644, data: order.into_bytes() });
    e
}

/// Reads the framed results off a console; a frame whose checksum fails is dropped.
pub fn parse_console(console: &str) -> (Vec<(usize, Outcome)>, Option<usize>, bool) {
    let mut results = Vec::new();
    let mut current = None;
    let mut done = false;
    for line in console.lines() {
        let line = line.trim_start_matches(|c: char| c.is_control());
        if let Some(n) = line.strip_prefix(START) {
            current = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix(RESULT) {
            if let Some((sum, json)) = rest.split_once(' ') {
                if sha(json) == sum {
                    if let (Some(i), Ok(o)) = (current, serde_json::from_str::<Outcome>(json)) {
                        results.push((i, o));
                        current = None;
                    }
                }
            }
        } else if line.starts_with(DONE) {
            done = true;
        }
    }
    (results, current, done)
}

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
        Err(e) => return plans.iter().map(|p| Outcome::error(p, &target.kernel, e.clone())).collect(),
    };
    // A scratch disk that cannot be made fails its instances only.
    let mut broken: Vec<(dsl::ast::Backing, String)> = Vec::new();
    for p in plans {
        let b = p.backing();
        if b != dsl::ast::Backing::Tmpfs && !broken.iter().any(|(x, _)| *x == b) {
            let probe = crate::cleanup::TempDir::new("ovlc-disk-").map_err(|e| e.to_string());
            if let Err(e) = probe.and_then(|d| make_disk(d.path(), b, &machine.files.release)) {
                broken.push((b, e));
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
        .map(|(o, p)| o.unwrap_or_else(|| Outcome::error(p, &target.kernel, "no result".into())))
        .collect()
}

/// Boots one machine for `plans` (no recovery): for measurements.
pub fn boot_once(
    target: &VmTarget,
    catalog: &vm::kernels::CatalogSource,
    plans: &[Plan],
) -> Result<vm::console::Console, String> {
    boot_batch(&prepare(target, catalog)?, target.driver, plans, &|_| {})
}

/// Boots the same kernel with the agent alone and no work: it mounts the
/// pseudo file systems and powers off at once. The yardstick for boot cost.
pub fn boot_trivial(target: &VmTarget, catalog: &vm::kernels::CatalogSource) -> Result<vm::console::Console, String> {
    let machine = prepare(target, catalog)?;
    let entries = manifest(&machine.agent, &[], b"[]".to_vec());
    let archive = vm::initramfs::write(&entries).map_err(|e| format!("initramfs: {e}"))?;
    let dir = crate::cleanup::TempDir::new("ovlc-vm-").map_err(|e| e.to_string())?;
    let m = machine.describe(dir.path(), archive, guest_memory(), Vec::new(), Vec::new())?;
    vm::console::run(&m, &watchdog(m.accel, 0), |_| vm::console::Line::Output).map_err(|e| e.to_string())
}

/// The guest's memory in use (MemTotal - MemAvailable, KiB) as `OVLC-DONE` reports it.
pub fn memory_used_kib(console: &str) -> Option<u64> {
    console.lines().find_map(|l| {
        l.trim_start_matches(|c: char| c.is_control())
            .strip_prefix(DONE)?
            .trim()
            .strip_prefix("mem_used_kib=")?
            .parse()
            .ok()
    })
}

/// Boots machines until every plan has an outcome.
fn run_machines(machine: &Prepared, target: &VmTarget, plans: &[Plan], progress: &dyn Fn(VmProgress)) -> Vec<Outcome> {
    // Warnings and oopses are charged by the agent itself: it reads the
    // guest's kernel log around each instance, as on the host.
    let mut out: Vec<Option<Outcome>> = vec![None; plans.len()];
    let mut next = 0;
    let mut machines = 0;
    while next < plans.len() {
        machines += 1;
        let report = |position: usize, current: Option<String>| {
            progress(VmProgress { target: target.name(), machine: machines, position, total: plans.len(), current })
        };
        report(next, None);
        let first = next;
        let c = match boot_batch(machine, target.driver, &plans[next..], &|i| {
            if let Some(p) = plans.get(first + i) {
                report(first + i, Some(p.instance.id.clone()));
            }
        }) {
            Ok(c) => c,
            Err(e) => {
                for i in next..plans.len() {
                    out[i] = Some(Outcome::error(&plans[i], &machine.files.release, e.clone()));
                }
                break;
            }
        };
        let (results, running, _done) = parse_console(&c.output);
        let mut advanced = 0;
        for (i, o) in results.into_iter().filter(|(i, _)| next + i < plans.len()) {
            out[next + i] = Some(o);
            advanced = advanced.max(i + 1);
        }
        if next + advanced >= plans.len() {
            break;
        }
        let trouble = vm::qemu::trouble(&c.output);
        let Some(running) = running else {
            // No instance was running: the machine never got ready (or died
            // between instances). Another boot would fare no better.
            let why = c.timeout.clone().unwrap_or_else(|| "the machine stopped before running an instance".into());
            let reason = format!("{why}; last console lines:\n{}", c.tail(CONSOLE_LINES));
            for i in next + advanced..plans.len() {
                out[i] = Some(Outcome::error(&plans[i], &machine.files.release, reason.clone()));
            }
            break;
        };
        // The machine stopped while an instance ran: charge it.
        let victim = next + running;
        if victim < plans.len() && out[victim].is_none() {
            let mut o = Outcome::new(&plans[victim], &machine.files.release);
            let mut reason = match &c.timeout {
                Some(t) => {
                    o.status = exec::Status::Timeout;
                    format!("{t} (the instance hung)")
                }
                None => {
                    o.status = exec::Status::Crash;
                    "the machine died while the instance ran".to_string()
                }
            };
            if !trouble.is_empty() {
                reason.push_str(&format!("; kernel: {}", trouble.join(" / ")));
            }
            reason.push_str(&format!("; last console lines:\n{}", c.tail(CONSOLE_LINES)));
            o.reason = Some(reason);
            o.millis = 0;
            out[victim] = Some(o);
        }
        next = victim + 1;
    }
    out.into_iter()
        .zip(plans)
        .map(|(o, p)| o.unwrap_or_else(|| Outcome::error(p, &target.kernel, "no result".into())))
        .collect()
}

/// How many console lines a crash or hang report carries.
const CONSOLE_LINES: usize = 40;

/// What every machine of a target boots: the kernel, where its modules are,
/// and the agent.
struct Prepared {
    files: vm::kernels::KernelFiles,
    /// `lib/modules/<release>`, when the kernel has modules.
    modules: Option<PathBuf>,
    agent: PathBuf,
    /// SHA256 of what every initramfs of this machine holds: the agent's
    /// bytes, the release, the module tree's files. Computed once per batch,
    /// not per boot.
    digest: [u8; 32],
}

/// A file's path, size and mtime: what says it changed without reading it.
fn file_identity(p: &Path) -> String {
    let m = std::fs::symlink_metadata(p);
    let (len, mtime) = m.map_or((0, 0), |m| (m.len(), std::os::unix::fs::MetadataExt::mtime(&m)));
    format!("{} {len} {mtime}\n", p.display())
}

impl Prepared {
    fn new(files: vm::kernels::KernelFiles, modules: Option<PathBuf>, agent: PathBuf) -> Result<Prepared, String> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"ovlc initramfs base 2\n");
        h.update(std::fs::read(&agent).map_err(|e| format!("{}: {e}", agent.display()))?);
        h.update(files.release.as_bytes());
        if let Some(dir) = &modules {
            let mut paths: Vec<PathBuf> =
                walkdir::WalkDir::new(dir).into_iter().flatten().map(|e| e.into_path()).collect();
            paths.sort();
            for p in paths {
                h.update(file_identity(&p).as_bytes());
            }
        }
        Ok(Prepared { files, modules, agent, digest: h.finalize().into() })
    }

    /// A machine booting this kernel with `archive` as its initramfs (written
    /// into `dir`), under KVM where it works, else TCG.
    fn describe(
        &self,
        dir: &Path,
        archive: Vec<u8>,
        memory_mib: u32,
        append: Vec<String>,
        disks: Vec<PathBuf>,
    ) -> Result<vm::qemu::Machine, String> {
        let initrd = dir.join("initramfs.cpio");
        std::fs::write(&initrd, archive).map_err(|e| format!("{}: {e}", initrd.display()))?;
        let accel = accel(&self.files.vmlinuz, &initrd);
        Ok(vm::qemu::Machine { kernel: self.files.vmlinuz.clone(), initrd, memory_mib, cpus: 1, accel, append, disks })
    }
}

/// The target name of a kernel of one's own: `vm:custom`.
pub const CUSTOM: &str = "custom";

/// A kernel of one's own (`ovlc run --kernel-image bzImage [--modules DIR]`).
#[derive(Clone, Debug)]
pub struct CustomKernel {
    /// A bzImage, for example `arch/x86/boot/bzImage` of a kernel build tree.
    pub image: PathBuf,
    /// `lib/modules/<release>` of the build (`make modules_install INSTALL_MOD_PATH=...`);
    /// without it, overlay (and fuse) must be built in.
    pub modules: Option<PathBuf>,
}

fn prepare_custom(c: &CustomKernel) -> Result<Prepared, String> {
    if !c.image.is_file() {
        return Err(format!("--kernel-image {}: no such file", c.image.display()));
    }
    let release = c
        .modules
        .as_ref()
        .and_then(|m| m.file_name())
        .map_or_else(|| "custom".to_string(), |n| n.to_string_lossy().into_owned());
    let files =
        vm::kernels::KernelFiles { release, vmlinuz: c.image.clone(), modules: c.modules.clone().unwrap_or_default() };
    Prepared::new(files, c.modules.clone(), guest_binary()?)
}

fn prepare(target: &VmTarget, catalog: &vm::kernels::CatalogSource) -> Result<Prepared, String> {
    use vm::kernels as k;
    let lock = catalog.lock().map_err(|e| format!("{e} (run `ovlc kernels update`)"))?;
    let locked = lock.kernels.iter().find(|l| l.name == target.kernel).ok_or_else(|| {
        format!(
            "no kernel {} in the lock (kernels: {})",
            target.kernel,
            lock.kernels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })?;
    // The mirror only matters when something must be downloaded: a machine
    // without apt sources runs kernels already in the cache (one check of
    // the cache, inside fetch_kernel; a missing mirror is told on failure).
    let (mirror, no_mirror) = match k::mirror() {
        Ok(m) => (m, None),
        Err(e) => (String::new(), Some(e)),
    };
    let files = k::fetch_kernel(&mirror, locked, &k::cache_dir()).map_err(|e| match &no_mirror {
        Some(m) => format!("{e} (and no Debian mirror to download from: {m})"),
        None => e.to_string(),
    })?;
    let modules = Some(files.modules.clone());
    Prepared::new(files, modules, guest_binary()?)
}

/// The modules a machine loads, dependencies first: overlay, fuse for the
/// fuse driver, the virtio disk and file system of each scratch disk.
fn module_closure(
    modules: Option<&Path>,
    driver: Driver,
    disks: &[dsl::ast::Backing],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(dir) = modules else { return Ok(Vec::new()) };
    let tree = vm::modules::ModuleTree::open(dir).map_err(|e| e.to_string())?;
    let mut wanted = vec!["overlay"];
    if driver == Driver::Fuse {
        wanted.push("fuse");
    }
    if !disks.is_empty() {
        wanted.extend(["virtio_pci", "virtio_blk"]);
        wanted.extend(disks.iter().map(|b| b.name()));
    }
    let mut out = Vec::new();
    for (name, path) in tree.closure(&wanted).map_err(|e| e.to_string())? {
        out.push((name, vm::modules::read_module(&path).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// `major.minor` of a kernel release (`6.1.0-50-cloud-amd64` → (6, 1)).
fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// An ext4 feature set every default kernel mounts read-write, whatever the
/// host's e2fsprogs would choose (newer ones add features 5.10 lacks).
const MKE2FS_CONF: &str = "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
    \tdefault_mntopts = acl,user_xattr\n\tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\
    [fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n\t}\n";

/// The mkfs command for a scratch disk of `backing` that `release` can mount.
/// xfs takes the newest of xfsprogs' `lts_X.Y.conf` feature sets not newer
/// than the kernel.
pub fn mkfs_command(backing: dsl::ast::Backing, image: &Path, release: &str, lts_dir: &Path) -> Option<Command> {
    use dsl::ast::Backing as B;
    let mut c;
    match backing {
        B::Tmpfs => return None,
        B::Ext4 => {
            c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-t", "ext4"]);
        }
        B::Xfs => {
            c = Command::new("mkfs.xfs");
            c.args(["-q", "-f"]);
            let kernel = release_version(release);
            let mut best: Option<((u32, u32), PathBuf)> = None;
            for e in std::fs::read_dir(lts_dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(v) = name.strip_prefix("lts_").and_then(|n| n.strip_suffix(".conf")) else { continue };
                let Some(v) = release_version(v) else { continue };
                if kernel.is_some_and(|k| v <= k) && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, e.path()));
                }
            }
            if let Some((_, conf)) = best {
                c.arg("-c").arg(format!("options={}", conf.display()));
            }
        }
        B::Btrfs => {
            c = Command::new("mkfs.btrfs");
            c.args(["-q", "-f"]);
        }
    }
    c.arg(image);
    Some(c)
}

/// Creates and formats a 1 GiB sparse scratch disk image for `backing` in `dir`.
fn make_disk(dir: &Path, backing: dsl::ast::Backing, release: &str) -> Result<PathBuf, String> {
    let image = dir.join(format!("{}.img", backing.name()));
    let f = std::fs::File::create(&image).map_err(|e| format!("{}: {e}", image.display()))?;
    f.set_len(1 << 30).map_err(|e| format!("{}: {e}", image.display()))?;
    drop(f);
    let lts = Path::new("/usr/share/xfsprogs/mkfs");
    let Some(mut cmd) = mkfs_command(backing, &image, release, lts) else {
        return Ok(image);
    };
    let conf = dir.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(|e| e.to_string())?;
    cmd.env("MKE2FS_CONFIG", &conf);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let package = match backing {
        dsl::ast::Backing::Ext4 => "e2fsprogs",
        dsl::ast::Backing::Xfs => "xfsprogs",
        _ => "btrfs-progs",
    };
    if crate::host::which(Path::new(&program)).is_none() {
        return Err(format!(
            "{program} is not installed (the {} scratch disk is made on the host): apt-get install -y {package}",
            backing.name()
        ));
    }
    let mut out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() && backing == dsl::ast::Backing::Xfs {
        // Some xfsprogs ship feature files their own mkfs rejects (bookworm's
        // lts_*.conf name nrext64, which its mkfs.xfs 6.1 does not know, and
        // leaves off): its defaults then suit every default kernel.
        out =
            Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&image).output().map_err(|e| format!("{program}: {e}"))?;
    }
    if !out.status.success() {
        return Err(format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(image)
}

/// How many machines may run at once: at most `jobs`, and no more than the
/// host's available memory holds (each guest's memory plus 128 MiB for QEMU
/// and its page cache), but always one.
pub fn machines_at_once(jobs: usize) -> usize {
    let available_mib = meminfo_kib("MemAvailable:").map_or(u64::MAX, |kib| kib / 1024);
    let per = u64::from(guest_memory()) + 128;
    jobs.min(usize::try_from(available_mib / per).unwrap_or(usize::MAX)).max(1)
}

/// The guest's memory: `OVLC_VM_MEMORY` (MiB), else 256 MiB.
fn guest_memory() -> u32 {
    std::env::var("OVLC_VM_MEMORY").ok().and_then(|m| m.parse().ok()).unwrap_or(256)
}

/// The watchdogs of a batch of `n` instances. `OVLC_INSTANCE_TIMEOUT` (seconds)
/// sets the limit per instance, `OVLC_VM_TIMEOUT` the whole machine's.
pub fn watchdog(accel: vm::qemu::Accel, n: usize) -> vm::console::Watchdog {
    let secs = |var: &str| std::env::var(var).ok().and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let tcg = accel == vm::qemu::Accel::Tcg;
    // Under TCG several machines share two cores: boots and instances slow down.
    let boot = Duration::from_secs(if tcg { 120 } else { 30 });
    let per = secs("OVLC_INSTANCE_TIMEOUT").unwrap_or(Duration::from_secs(if tcg { 120 } else { 30 }));
    let total = secs("OVLC_VM_TIMEOUT").unwrap_or(boot + per * n.max(1) as u32);
    vm::console::Watchdog { boot, progress: per, silence: per, total }
}

/// Where a VM batch is: which machine of the batch (1 for the first boot,
/// more after a crash or hang), how many instances are behind it, and which
/// instance runs now (none while the machine boots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmProgress {
    pub target: String,
    pub machine: usize,
    pub position: usize,
    pub total: usize,
    pub current: Option<String>,
}

fn boot_batch(
    machine: &Prepared,
    driver: Driver,
    plans: &[Plan],
    started: &dyn Fn(usize),
) -> Result<vm::console::Console, String> {
    use vm::initramfs::Entry;
    // Tarballs travel in the initramfs, under /scenario/<n>/ for each scenario directory.
    let mut plans = plans.to_vec();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut extra: Vec<Entry> = vec![Entry::Dir { path: "/scenario".into(), mode: 0o755 }];
    let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut programs = Vec::new();
    for p in plans.iter_mut() {
        let tars: Vec<String> = p.scenario.layer_tarballs().into_iter().map(|t| t.node.clone()).collect();
        if tars.is_empty() {
            continue;
        }
        let k = match dirs.iter().position(|d| *d == p.scenario_dir) {
            Some(k) => k,
            None => {
                dirs.push(p.scenario_dir.clone());
                dirs.len() - 1
            }
        };
        let guest_dir = format!("/scenario/{k}");
        for t in tars {
            let dest = format!("{guest_dir}/{t}");
            let mut parent = String::new();
            for c in dest.trim_start_matches('/').split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                parent.push('/');
                parent.push_str(c);
                if made.insert(parent.clone()) && parent != "/scenario" {
                    extra.push(Entry::Dir { path: parent.clone(), mode: 0o755 });
                }
            }
            if made.insert(dest.clone()) {
                extra.push(Entry::HostFile { path: dest, mode: 0o644, from: p.scenario_dir.join(&t) });
            }
        }
        p.scenario_dir = PathBuf::from(guest_dir);
    }
    if plans.iter().any(|p| p.driver == Driver::Fuse) {
        let bin = crate::host::which(Path::new("fuse-overlayfs"))
            .ok_or("fuse-overlayfs is not installed on the host: apt-get install -y fuse-overlayfs (guests get the host's copy)")?;
        for p in plans.iter_mut() {
            p.fuse_binary = Some(bin.clone());
        }
        programs = program_closure(&bin)?;
    }
    let dir = crate::cleanup::TempDir::new("ovlc-vm-").map_err(|e| e.to_string())?;
    // One scratch disk per backing filesystem the batch needs, made afresh for each machine.
    let mut backings: Vec<dsl::ast::Backing> = Vec::new();
    for p in &plans {
        let b = p.backing();
        if b != dsl::ast::Backing::Tmpfs && !backings.contains(&b) {
            backings.push(b);
        }
    }
    let mut disks = Vec::new();
    for b in &backings {
        disks.push(make_disk(dir.path(), *b, &machine.files.release)?);
    }
    // The kernel unpacks concatenated archives in turn: the cached part that
    // stays the same from batch to batch, then this batch's plans and tarballs.
    let mut archive = base_archive(machine, driver, &backings, programs)?;
    let json = serde_json::to_vec(&plans).map_err(|e| e.to_string())?;
    extra.push(vm::initramfs::Entry::File { path: "/plans.json".into(), mode: 0o644, data: json });
    archive.extend(vm::initramfs::write(&extra).map_err(|e| format!("initramfs: {e}"))?);
    let mut append = Vec::new();
    if !backings.is_empty() {
        append.push(format!("{DISKS_WORD}{}", backings.iter().map(|b| b.name()).collect::<Vec<_>>().join(",")));
    }
    let m = machine.describe(dir.path(), archive, guest_memory(), append, disks)?;
    vm::console::run(&m, &watchdog(m.accel, plans.len()), |line| {
        let line = line.trim_start_matches(|c: char| c.is_control());
        if let Some(n) = line.strip_prefix(START).and_then(|n| n.trim().parse().ok()) {
            started(n);
        }
        if line.starts_with(START) || line.starts_with(RESULT) {
            vm::console::Line::Progress
        } else {
            vm::console::Line::Output
        }
    })
    .map_err(|e| e.to_string())
}

/// A host program and its shared-library closure (from `ldd`), as initramfs
/// entries at the same paths, parents first.
pub fn program_closure(program: &Path) -> Result<Vec<vm::initramfs::Entry>, String> {
    use vm::initramfs::Entry;
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("ldd {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files: Vec<String> = vec![program.display().to_string()];
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next().unwrap_or(""),
            None => l.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        let mut cur = Path::new(f).parent();
        while let Some(d) = cur.filter(|d| d.as_os_str() != "/") {
            dirs.insert(d.display().to_string());
            cur = d.parent();
        }
    }
    let mut entries: Vec<Entry> = dirs.into_iter().map(|d| Entry::Dir { path: d, mode: 0o755 }).collect();
    entries.sort_by_key(|e| e.path().matches('/').count());
    for f in files {
        entries.push(Entry::HostFile { path: f.clone(), mode: 0o755, from: PathBuf::from(f) });
    }
    Ok(entries)
}

/// KVM where `OVLC_ACCEL=kvm`, or where a probe shows it works (`OVLC_ACCEL=auto`); TCG otherwise.
fn accel(kernel: &Path, initrd: &Path) -> vm::qemu::Accel {
    use std::sync::OnceLock;
    static PROBE: OnceLock<vm::qemu::Accel> = OnceLock::new();
    *PROBE.get_or_init(|| match std::env::var("OVLC_ACCEL").as_deref() {
        Ok("kvm") => vm::qemu::Accel::Kvm,
        Ok("auto") if vm::qemu::kvm_works(kernel, initrd) => vm::qemu::Accel::Kvm,
        _ => vm::qemu::Accel::Tcg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_static_build_serves_as_the_guest() {
        // This test program is built like ovlc: statically.
        let me = read_head(&std::env::current_exe().unwrap_or_default()).unwrap_or_default();
        assert_eq!(elf_is_static(&me), Some(true));
        // A dynamically linked program has an interpreter.
        let sh = read_head(Path::new("/bin/sh")).unwrap_or_default();
        assert_eq!(elf_is_static(&sh), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(&me[..0x30]), None, "a truncated header is no ELF");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(VmTarget::parse("vm:5.10"), Some(VmTarget { kernel: "5.10".into(), driver: Driver::Kernel }));
        assert_eq!(VmTarget::parse("vm:7.3/rootless").map(|t| t.name()), Some("vm:7.3/rootless".to_string()));
        assert_eq!(VmTarget::parse("vm:7.3/other"), None);
        assert_eq!(VmTarget::parse("host"), None);
    }

    #[test]
    fn xfs_takes_the_newest_feature_set_the_kernel_knows() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["4.19", "5.10", "5.15", "6.1", "6.6"] {
            std::fs::write(dir.path().join(format!("lts_{v}.conf")), "").unwrap();
        }
        let conf = |release: &str| {
            let c = mkfs_command(dsl::ast::Backing::Xfs, Path::new("/i.img"), release, dir.path()).unwrap();
            c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        };
        assert!(conf("5.10.0-32-cloud-amd64").contains("lts_5.10.conf"));
        assert!(conf("6.1.0-50-cloud-amd64").contains("lts_6.1.conf"));
        assert!(conf("6.12.117+deb13-cloud-amd64").contains("lts_6.6.conf"));
        assert!(conf("7.3-cloud-amd64").contains("lts_6.6.conf"));
        assert_eq!(conf("custom"), "-q -f /i.img");
        let ext4 = mkfs_command(dsl::ast::Backing::Ext4, Path::new("/i.img"), "5.10", dir.path()).unwrap();
        assert_eq!(ext4.get_program(), "mkfs.ext4");
        assert!(mkfs_command(dsl::ast::Backing::Tmpfs, Path::new("/i.img"), "5.10", dir.path()).is_none());
    }

    #[test]
    fn watchdogs_scale_with_the_accelerator_and_the_batch() {
        let t = watchdog(vm::qemu::Accel::Tcg, 10);
        let k = watchdog(vm::qemu::Accel::Kvm, 10);
        assert!(t.boot > k.boot && t.progress > k.progress);
        assert_eq!(t.total, t.boot + t.progress * 10);
        assert_eq!(t.silence, t.progress);
        assert!(machines_at_once(1) == 1 && (1..=64).contains(&machines_at_once(64)));
    }

    #[test]
    fn memory_comes_back_from_the_done_frame() {
        assert_eq!(memory_used_kib("x\n\u{1b}OVLC-DONE mem_used_kib=31744\n"), Some(31744));
        assert_eq!(memory_used_kib("OVLC-DONE\n"), None);
    }

    #[test]
    fn console_frames_survive_kernel_noise_and_reject_corruption() {
        let o = r#"{"id":"a","scenario":"a","target":"vm:1","status":"pass","kernel":"k","steps":[],"failures":[],"millis":1}"#;
        let console = format!(
            "[ 0.1] boot\n{START}0\n[ 1.0] noise\n{RESULT}{} {o}\n{START}1\n{RESULT}{} {o}\n{START}2\n",
            sha(o),
            "0".repeat(64)
        );
        let (r, running, done) = parse_console(&console);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 0);
        assert_eq!(running, Some(2));
        assert!(!done);
    }
}
