//! Parse + validate throughput over the scenario library.
//!
//! `cargo bench -p dsl --bench parse` prints the cost per 100 scenarios
//! (the library's files, repeated to make 100) as min / median / max over
//! repeated runs. Target: under 5 ms per 100 scenarios.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

fn library() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("scenarios directory") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ovl") {
                out.push((p.display().to_string(), std::fs::read(&p).expect("read scenario")));
            }
        }
    }
    out.sort();
    out
}

fn main() {
    let lib = library();
    assert!(!lib.is_empty(), "no scenarios found");
    let batch: Vec<&(String, Vec<u8>)> = lib.iter().cycle().take(100).collect();
    let bytes: usize = batch.iter().map(|(_, b)| b.len()).sum();
    let run = || {
        for (name, text) in &batch {
            let s = dsl::parse(name, "bench", text).expect("library scenario is valid");
            std::hint::black_box(s);
        }
    };
    for _ in 0..20 {
        run();
    }
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times[times.len() / 2];
    println!("parse+validate: {} library files, batch of 100 scenarios ({} KiB)", lib.len(), bytes / 1024);
    println!(
        "per 100 scenarios: min {:.3} ms, median {:.3} ms, max {:.3} ms (target < 5 ms)",
        ms(times[0]),
        ms(median),
        ms(times[times.len() - 1])
    );
    println!(
        "per scenario: median {:.1} us; throughput {:.1} MiB/s (one thread)",
        median.as_secs_f64() * 1e6 / 100.0,
        bytes as f64 / median.as_secs_f64() / (1 << 20) as f64
    );

    // `ovlc check` parses files in parallel (rayon, one thread per core).
    use rayon::prelude::*;
    let par = || {
        batch.par_iter().for_each(|(name, text)| {
            let s = dsl::parse(name, "bench", text).expect("library scenario is valid");
            std::hint::black_box(s);
        })
    };
    for _ in 0..20 {
        par();
    }
    let mut ptimes: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            par();
            t.elapsed()
        })
        .collect();
    ptimes.sort();
    println!(
        "per 100 scenarios, {} threads as `ovlc check` runs: min {:.3} ms, median {:.3} ms, max {:.3} ms",
        rayon::current_num_threads(),
        ms(ptimes[0]),
        ms(ptimes[ptimes.len() / 2]),
        ms(ptimes[ptimes.len() - 1])
    );
}
