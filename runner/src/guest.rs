//! VM targets: the guest agent (PID 1 in the initramfs, a static build of
//! `ovlc`) and the host side that builds the initramfs, boots the kernel under
//! QEMU, and reads the framed results from the serial console.

use std::io::Write;
use std::path::{Path, PathBuf};
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
    catalog: &Path,
) -> Result<(Vec<crate::bench::Measurement>, Vec<String>, String), String> {
    let (files, modules, agent) = prepare(&VmTarget { driver: Driver::Kernel, ..target.clone() }, catalog)?;
    let mut entries = manifest(&agent, &modules, b"[]".to_vec());
    entries.push(vm::initramfs::Entry::File {
        path: "/bench.json".into(),
        mode: 0o644,
        data: serde_json::to_vec(job).map_err(|e| e.to_string())?,
    });
    let archive = vm::initramfs::write(&entries).map_err(|e| format!("initramfs: {e}"))?;
    let dir = tempfile::Builder::new().prefix("ovlc-vm-").tempdir().map_err(|e| e.to_string())?;
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, archive).map_err(|e| e.to_string())?;
    let accel = accel(&files.vmlinuz, &initrd);
    // The data lives on the guest's tmpfs: give it room.
    let memory_mib = 1024 + ((job.sizes.large_bytes * 3) >> 20) as u32 + 512;
    let m = vm::qemu::Machine { kernel: files.vmlinuz.clone(), initrd, memory_mib, cpus: 1, accel, append: Vec::new() };
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
    if c.timed_out {
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
    Ok((results, notes, files.release))
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
        std::fs::read("/plans.json").ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    for (i, plan) in plans.iter().enumerate() {
        let _ = writeln!(out, "\n{START}{i}");
        let _ = out.flush();
        let ws = crate::host::Workspace::new();
        let outcome = match ws {
            Ok(ws) => crate::host::run(&ws, plan, host_target(plan.driver)),
            Err(e) => Outcome::error(plan, &exec::kernel_release().0, format!("guest workspace: {e}")),
        };
        let json = serde_json::to_string(&outcome).unwrap_or_default();
        let _ = writeln!(out, "\n{RESULT}{} {json}", sha(&json));
        let _ = out.flush();
    }
    power_off(&mut out);
}

/// Says `OVLC-DONE`, syncs and powers the machine off (QEMU then exits).
fn power_off(out: &mut std::io::Stdout) -> ! {
    let _ = writeln!(out, "\n{DONE}");
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

/// The static `ovlc` built for guests: `OVLC_GUEST_BINARY`, else
/// `target/guest/x86_64-unknown-linux-gnu/release/ovlc` beside this binary's target dir.
pub fn guest_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("OVLC_GUEST_BINARY") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe.parent().and_then(Path::parent).ok_or("no target directory")?;
    let p = target.join("guest/x86_64-unknown-linux-gnu/release/ovlc");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no static guest build of ovlc at {}: build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
             --bin ovlc --target x86_64-unknown-linux-gnu --target-dir target/guest (scripts/suite.sh does)",
            p.display()
        ))
    }
}

/// The manifest of a batch's initramfs: the agent as /init, the modules in load order, the plans.
pub fn manifest(agent: &Path, modules: &[(String, Vec<u8>)], plans_json: Vec<u8>) -> Vec<vm::initramfs::Entry> {
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
    e.push(Entry::File { path: "/plans.json".into(), mode: 0o644, data: plans_json });
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
pub fn run_batch(target: &VmTarget, plans: &[Plan], catalog: &Path, custom: Option<&CustomKernel>) -> Vec<Outcome> {
    let prepared = match custom.filter(|_| target.kernel == CUSTOM) {
        Some(c) => prepare_custom(target, c),
        None => prepare(target, catalog),
    };
    let (files, modules, agent) = match prepared {
        Ok(p) => p,
        Err(e) => return plans.iter().map(|p| Outcome::error(p, &target.kernel, e.clone())).collect(),
    };
    // Warnings and oopses are charged by the agent itself: it reads the
    // guest's kernel log around each instance, as on the host.
    let mut out: Vec<Option<Outcome>> = vec![None; plans.len()];
    let mut next = 0;
    while next < plans.len() {
        let c = match boot_batch(&files, &modules, &agent, &plans[next..]) {
            Ok(c) => c,
            Err(e) => {
                for i in next..plans.len() {
                    out[i] = Some(Outcome::error(&plans[i], &files.release, e.clone()));
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
        // The machine stopped early: charge the instance that was running.
        let victim = next + running.unwrap_or(advanced);
        if victim < plans.len() && out[victim].is_none() {
            let why = if c.timed_out { "the machine timed out" } else { "the machine stopped (crash or panic)" };
            let trouble = vm::qemu::trouble(&c.output);
            let tail: Vec<&str> = c.output.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            let mut reason = why.to_string();
            if !trouble.is_empty() {
                reason.push_str(&format!("; kernel: {}", trouble.join(" / ")));
            }
            reason.push_str(&format!("; last console lines:\n{}", tail.join("\n")));
            out[victim] = Some(Outcome::error(&plans[victim], &files.release, reason));
        }
        next = victim + 1;
    }
    out.into_iter()
        .zip(plans)
        .map(|(o, p)| o.unwrap_or_else(|| Outcome::error(p, &target.kernel, "no result".into())))
        .collect()
}

type Prepared = (vm::kernels::KernelFiles, Vec<(String, Vec<u8>)>, PathBuf);

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

fn prepare_custom(target: &VmTarget, c: &CustomKernel) -> Result<Prepared, String> {
    if !c.image.is_file() {
        return Err(format!("--kernel-image {}: no such file", c.image.display()));
    }
    let release = c
        .modules
        .as_ref()
        .and_then(|m| m.file_name())
        .map_or_else(|| "custom".to_string(), |n| n.to_string_lossy().into_owned());
    let mut modules = Vec::new();
    if let Some(dir) = &c.modules {
        let tree = vm::modules::ModuleTree::open(dir).map_err(|e| e.to_string())?;
        let mut wanted = vec!["overlay"];
        if target.driver == Driver::Fuse {
            wanted.push("fuse");
        }
        for (name, path) in tree.closure(&wanted).map_err(|e| e.to_string())? {
            modules.push((name, vm::modules::read_module(&path).map_err(|e| e.to_string())?));
        }
    }
    let files =
        vm::kernels::KernelFiles { release, vmlinuz: c.image.clone(), modules: c.modules.clone().unwrap_or_default() };
    Ok((files, modules, guest_binary()?))
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

fn prepare(target: &VmTarget, catalog: &Path) -> Result<Prepared, String> {
    use vm::kernels as k;
    let lock = k::read_lock(&catalog.with_file_name("kernels.lock"))
        .map_err(|e| format!("{e} (run `ovlc kernels update`)"))?;
    let locked = lock.kernels.iter().find(|l| l.name == target.kernel).ok_or_else(|| {
        format!(
            "no kernel {} in the lock (kernels: {})",
            target.kernel,
            lock.kernels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })?;
    let mirror = k::mirror().map_err(|e| e.to_string())?;
    let files = k::fetch_kernel(&mirror, locked, &k::cache_dir()).map_err(|e| e.to_string())?;
    let tree = vm::modules::ModuleTree::open(&files.modules).map_err(|e| e.to_string())?;
    let mut wanted = vec!["overlay"];
    if target.driver == Driver::Fuse {
        wanted.push("fuse");
    }
    let mut modules = Vec::new();
    for (name, path) in tree.closure(&wanted).map_err(|e| e.to_string())? {
        modules.push((name, vm::modules::read_module(&path).map_err(|e| e.to_string())?));
    }
    Ok((files, modules, guest_binary()?))
}

fn boot_batch(
    files: &vm::kernels::KernelFiles,
    modules: &[(String, Vec<u8>)],
    agent: &Path,
    plans: &[Plan],
) -> Result<vm::qemu::Console, String> {
    use vm::initramfs::Entry;
    // Tarballs travel in the initramfs, under /scenario/<n>/ for each scenario directory.
    let mut plans = plans.to_vec();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut extra: Vec<Entry> = vec![Entry::Dir { path: "/scenario".into(), mode: 0o755 }];
    let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
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
        extra.extend(program_closure(&bin)?);
    }
    let json = serde_json::to_vec(&plans).map_err(|e| e.to_string())?;
    let mut entries = manifest(agent, modules, json);
    entries.extend(extra);
    let archive = vm::initramfs::write(&entries).map_err(|e| format!("initramfs: {e}"))?;
    let dir = tempfile::Builder::new().prefix("ovlc-vm-").tempdir().map_err(|e| e.to_string())?;
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, archive).map_err(|e| e.to_string())?;
    let accel = accel(&files.vmlinuz, &initrd);
    let m = vm::qemu::Machine {
        kernel: files.vmlinuz.clone(),
        initrd,
        memory_mib: 1024,
        cpus: 1,
        accel,
        append: Vec::new(),
    };
    // TCG is slow: a minute to boot, and generous time per instance.
    // OVLC_VM_TIMEOUT (seconds) replaces the whole batch's allowance.
    let per = if accel == vm::qemu::Accel::Tcg { 20 } else { 5 };
    let timeout = std::env::var("OVLC_VM_TIMEOUT")
        .ok()
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(60 + per * plans.len() as u64), Duration::from_secs);
    vm::qemu::boot(&m, timeout).map_err(|e| e.to_string())
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
    fn targets_parse() {
        assert_eq!(VmTarget::parse("vm:5.10"), Some(VmTarget { kernel: "5.10".into(), driver: Driver::Kernel }));
        assert_eq!(VmTarget::parse("vm:7.3/rootless").map(|t| t.name()), Some("vm:7.3/rootless".to_string()));
        assert_eq!(VmTarget::parse("vm:7.3/other"), None);
        assert_eq!(VmTarget::parse("host"), None);
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
