//! Executor cost on the host kernel (needs root).
//!
//! `cargo bench -p runner --bench host` prints:
//! - the cost of one instance of a 10-entry scenario on `host` (build 10
//!   entries, mount, 4 operations, 2 expectations, capture, unmount, verify
//!   the lower), as min / median / max over 200 runs; target < 5 ms median;
//! - the wall time of `ovlc run` over the whole library, on `host` and on all
//!   three host targets, and its cost per checked step; target < 2 s.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runner::model::{Plan, Status};
use runner::targets::host::{HostTarget, Workspace};

const TEN_ENTRIES: &str = r##"scenario "ten entries"
layer base {
    dir /etc mode 0755
    file /etc/hosts "127.0.0.1 localhost\n" mode 0644
    file /etc/motd "hello\n"
    symlink /etc/localtime -> "/usr/share/zoneinfo/UTC"
    dir /var/log
    file /var/log/old.log size 4KiB
    file /var/log/keep.log "keep\n" owner 1000:1000
    fifo /run/pipe
    file /bin/sh "#!" mode 0755
    file /home/user/.profile "export A=1\n" xattr user.k="v"
}
mount base
append /etc/hosts "10.0.0.1 db\n"
unlink /var/log/old.log
mkdir /srv
write /srv/new "n"
expect merged {
    file /etc/hosts "127.0.0.1 localhost\n10.0.0.1 db\n"
    absent /var/log/old.log
}
expect upper {
    whiteout /var/log/old.log
}
"##;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("host benchmark skipped: it mounts file systems and needs root");
        return;
    }
    runner::sys::private_mount_namespace().unwrap();
    let s = dsl::parse("bench/ten.ovl", "bench/ten", TEN_ENTRIES.as_bytes()).unwrap();
    let inst = dsl::instances(&s).remove(0);
    let ws = Workspace::new().unwrap();
    let plan = Plan::new(inst, s, "host".into(), dsl::ast::Driver::Kernel);
    for _ in 0..20 {
        assert_eq!(runner::targets::host::run(&ws, &plan, HostTarget::Kernel).status, Status::Pass);
    }
    let mut times = Vec::new();
    let mut steps = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let o = runner::targets::host::run(&ws, &plan, HostTarget::Kernel);
        times.push(t.elapsed());
        assert_eq!(o.status, Status::Pass, "{:?}", o.failures);
        steps = o.steps.len();
    }
    let (min, med, max) = stats(times);
    println!("one instance of a 10-entry scenario on host ({steps} checked steps), 200 runs:");
    println!("  min {min:.2} ms, median {med:.2} ms, max {max:.2} ms (target: median < 5 ms)");
    println!("  per checked step: {:.2} ms", med / steps as f64);

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for targets in ["host", "host,host-rootless,host-fuse"] {
        let mut walls = Vec::new();
        let mut doc = serde_json::Value::Null;
        for _ in 0..5 {
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
                .args(["run", "--format", "json", "--snapshots", "ignore", "--target", targets, "scenarios"])
                .current_dir(&repo)
                .output()
                .unwrap();
            walls.push(t.elapsed());
            doc = serde_json::from_slice(&out.stdout).unwrap();
        }
        let results = doc["results"].as_array().unwrap();
        let checked: usize = results.iter().map(|r| r["steps"].as_array().map_or(0, |s| s.len())).sum();
        let (min, med, max) = stats(walls);
        println!(
            "ovlc run over the library on {targets}: {} instances, {checked} checked steps, 5 runs:",
            results.len()
        );
        println!(
            "  wall min {min:.0} ms, median {med:.0} ms, max {max:.0} ms (target < 2000 ms); {:.2} ms per checked step",
            med / checked as f64
        );
    }
}
