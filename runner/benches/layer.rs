//! Layer export throughput beside GNU tar, on the same directories in the same
//! run (needs root: the data lives on a private tmpfs, so that neither side
//! waits for a disk).
//!
//! `cargo bench -p runner --bench layer` prints, for an upper of 10,000 small
//! files and one of 1 GiB in 4 files, the median of 5 runs of
//! `ovlc layer export` (the library call) and of `tar -cf`, their throughput,
//! and the ratio (target: ovlc at least 70% of GNU tar's throughput).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(name: &str, dir: &Path, out: &Path, bytes: u64) {
    let opts = runner::oci::ExportOptions::default();
    let (mut ours, mut gnu) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let _ = std::fs::remove_file(out.join("ovlc.tar"));
        let _ = std::fs::remove_file(out.join("gnu.tar"));
        let t = Instant::now();
        runner::oci::export_to(dir, &opts, &out.join("ovlc.tar")).unwrap();
        ours.push(t.elapsed());
        let t = Instant::now();
        let st = Command::new("tar").arg("-cf").arg(out.join("gnu.tar")).arg("-C").arg(dir).arg(".").status().unwrap();
        assert!(st.success());
        gnu.push(t.elapsed());
    }
    // The first round warms the caches.
    ours.remove(0);
    gnu.remove(0);
    let (o, g) = (median(ours), median(gnu));
    let mib = bytes as f64 / (1 << 20) as f64;
    let size = |f: &str| std::fs::metadata(out.join(f)).unwrap().len();
    println!("{name}: {mib:.0} MiB of file data");
    println!(
        "  ovlc layer export: median {:.0} ms, {:.0} MiB/s ({} bytes)",
        o.as_secs_f64() * 1e3,
        mib / o.as_secs_f64(),
        size("ovlc.tar")
    );
    println!(
        "  tar -cf:           median {:.0} ms, {:.0} MiB/s ({} bytes)",
        g.as_secs_f64() * 1e3,
        mib / g.as_secs_f64(),
        size("gnu.tar")
    );
    println!("  ovlc throughput is {:.0}% of GNU tar's (target >= 70%)", g.as_secs_f64() / o.as_secs_f64() * 100.0);
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("layer benchmark skipped: it mounts a tmpfs and needs root");
        return;
    }
    runner::sys::private_mount_namespace().unwrap();
    let base = tempfile::tempdir().unwrap();
    runner::sys::mount_legacy("ovlc-bench", base.path(), "tmpfs", 0, "size=6g").unwrap();
    let out = base.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let small = base.path().join("small");
    for d in 0..100 {
        let dir = small.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:03}")), vec![(d + f) as u8; 1024]).unwrap();
        }
    }
    bench("10,000 files of 1 KiB", &small, &out, 10_000 * 1024);
    std::fs::remove_dir_all(&small).unwrap();
    if std::env::var("OVLC_BENCH_ONLY").is_ok_and(|v| v == "small") {
        return;
    }

    let large = base.path().join("large");
    std::fs::create_dir_all(&large).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for f in 0..4 {
        use std::io::Write;
        let mut w = std::fs::File::create(large.join(format!("big{f}"))).unwrap();
        for _ in 0..256 {
            w.write_all(&chunk).unwrap();
        }
    }
    bench("4 files of 256 MiB", &large, &out, 1 << 30);
    let _ = runner::sys::umount(base.path(), libc::MNT_DETACH);
}
