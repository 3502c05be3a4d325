//! Property: for generated lower layers and operation sequences, the upper
//! exported as an OCI layer and applied onto the lowers gives the merged view
//! (`ovlc run --layer-roundtrip`), on all three host targets. Needs root.
//! `PROPTEST_CASES` sets how many scenarios are generated (default 64).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// A splitmix64 generator: a failing scenario is reproduced from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum K {
    Dir,
    File,
    Link,
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A scenario whose every operation must succeed, tracked on a model of the
/// merged view; and whether a lower directory covers a lower symlink, which
/// fuse-overlayfs mishandles (scenarios/drivers/dir-over-symlink.ovl).
fn scenario(seed: u64) -> (String, bool) {
    let mut g = Gen(seed);
    let names = ["a", "b", "c", "etc", "var", "x.log", "d1", "d2"];
    let mut model: BTreeMap<String, K> = BTreeMap::new();
    model.insert("/".into(), K::Dir);
    let mut s = format!("scenario \"round trip {seed}\"\n");
    let layers = 1 + g.below(3);
    let mut lnames = Vec::new();
    for l in 0..layers {
        s.push_str(&format!("layer l{l} {{\n"));
        let mut here: BTreeMap<String, K> = BTreeMap::new();
        for _ in 0..g.below(8) {
            let depth = 1 + g.below(3);
            let mut p = String::new();
            for _ in 0..depth {
                p.push('/');
                let n: &str = names[g.below(names.len())];
                p.push_str(n);
            }
            // Parents in this layer and in the model must be directories.
            let mut ok = true;
            let mut cur = parent(&p).to_string();
            while cur != "/" {
                if here.get(&cur).is_some_and(|k| *k != K::Dir) || model.get(&cur).is_some_and(|k| *k != K::Dir) {
                    ok = false;
                }
                cur = parent(&cur).to_string();
            }
            if !ok || here.contains_key(&p) || model.get(&p).is_some_and(|k| *k == K::Dir) {
                continue;
            }
            if here.keys().any(|k| k.starts_with(&format!("{p}/"))) {
                continue;
            }
            let kind = match g.below(4) {
                0 => {
                    s.push_str(&format!("    dir {p} mode 07{}5\n", g.pick(&["5", "7", "0"])));
                    K::Dir
                }
                1 => {
                    s.push_str(&format!("    symlink {p} -> \"{}\"\n", g.pick(&["a", "/etc", "../x"])));
                    K::Link
                }
                _ => {
                    s.push_str(&format!(
                        "    file {p} \"{}\" xattr user.k=\"{}\"\n",
                        g.pick(&["1", "two", ""]),
                        g.below(3)
                    ));
                    K::File
                }
            };
            let mut cur = parent(&p).to_string();
            while cur != "/" {
                here.entry(cur.clone()).or_insert(K::Dir);
                cur = parent(&cur).to_string();
            }
            here.insert(p, kind);
        }
        s.push_str("}\n");
        // Lower layers stack uppermost first; build the model bottom-up later.
        lnames.push((format!("l{l}"), here));
    }
    // The merged view of the lowers: l0 is uppermost.
    let mut dir_over_symlink = false;
    for (_, here) in lnames.iter().rev() {
        for (p, k) in here {
            if *k == K::Dir && model.get(p) == Some(&K::Link) {
                dir_over_symlink = true;
            }
            if *k != K::Dir {
                let prefix = format!("{p}/");
                model.retain(|q, _| !q.starts_with(&prefix));
            }
            model.insert(p.clone(), *k);
        }
    }
    let order: Vec<String> = lnames.iter().map(|(n, _)| n.clone()).collect();
    s.push_str(&format!("mount {}\n", order.join(", ")));
    let mut fresh = 0;
    for _ in 0..g.below(14) {
        let files: Vec<String> = model.iter().filter(|(_, k)| **k == K::File).map(|(p, _)| p.clone()).collect();
        let dirs: Vec<String> = model.iter().filter(|(_, k)| **k == K::Dir).map(|(p, _)| p.clone()).collect();
        let empty_dirs: Vec<String> = dirs
            .iter()
            .filter(|d| *d != "/" && !model.keys().any(|k| k.starts_with(&format!("{d}/"))))
            .cloned()
            .collect();
        fresh += 1;
        let new_name = child(g.pick(&dirs).as_str(), &format!("n{fresh}"));
        match g.below(10) {
            0 => {
                s.push_str(&format!("write {new_name} \"new\"\n"));
                model.insert(new_name, K::File);
            }
            1 if !files.is_empty() => s.push_str(&format!("append {} \"+\"\n", g.pick(&files))),
            2 if !files.is_empty() => {
                let f = g.pick(&files).clone();
                s.push_str(&format!("unlink {f}\n"));
                model.remove(&f);
            }
            3 => {
                s.push_str(&format!("mkdir {new_name}\n"));
                model.insert(new_name, K::Dir);
            }
            4 if !empty_dirs.is_empty() => {
                let d = g.pick(&empty_dirs).clone();
                s.push_str(&format!("rmdir {d}\n"));
                model.remove(&d);
            }
            5 if !files.is_empty() => {
                let f = g.pick(&files).clone();
                s.push_str(&format!("rename {f} {new_name}\n"));
                model.remove(&f);
                model.insert(new_name, K::File);
            }
            6 if !files.is_empty() => {
                s.push_str(&format!("link {} {new_name}\n", g.pick(&files)));
                model.insert(new_name, K::File);
            }
            7 if !files.is_empty() || dirs.len() > 1 => {
                let all: Vec<String> = files.iter().chain(dirs.iter().filter(|d| *d != "/")).cloned().collect();
                if let Some(p) = all.get(g.below(all.len().max(1))) {
                    s.push_str(&format!("chmod {p} 0{}\n", g.pick(&["700", "755", "644", "4755"])));
                }
            }
            8 if !files.is_empty() => s.push_str(&format!("setxattr {} user.new \"v\"\n", g.pick(&files))),
            _ => {
                s.push_str(&format!("symlink {new_name} -> \"target\"\n"));
                model.insert(new_name, K::Link);
            }
        }
    }
    (s, dir_over_symlink)
}

#[test]
fn exported_layers_applied_onto_the_lowers_give_the_merged_view() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64).min(400);
    let dir = tempfile::tempdir().unwrap();
    // OVLC_ROUNDTRIP_KEEP=DIR keeps the generated scenarios there, to study a failure.
    let sdir = match std::env::var_os("OVLC_ROUNDTRIP_KEEP") {
        Some(d) => Path::new(&d).join("scenarios/roundtrip"),
        None => dir.path().join("scenarios/roundtrip"),
    };
    std::fs::create_dir_all(&sdir).unwrap();
    // proptest picks the seeds; every scenario is written, then run in one go.
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let seeds: Vec<u64> = (0..cases).map(|_| any::<u64>().new_tree(&mut runner).unwrap().current()).collect();
    let fdir = sdir.with_file_name("roundtrip-fuse");
    std::fs::create_dir_all(&fdir).unwrap();
    let mut fuse_cases = 0;
    for seed in &seeds {
        let (text, dir_over_symlink) = scenario(*seed);
        dsl::parse("gen.ovl", "gen", text.as_bytes())
            .unwrap_or_else(|f| panic!("seed {seed}:\n{text}\n{}", f.render(false, 100)));
        std::fs::write(sdir.join(format!("s{seed}.ovl")), &text).unwrap();
        if !dir_over_symlink {
            std::fs::write(fdir.join(format!("s{seed}.ovl")), &text).unwrap();
            fuse_cases += 1;
        }
    }
    for (dir, targets, n) in [(&sdir, "host,host-rootless", seeds.len() * 2), (&fdir, "host-fuse", fuse_cases)] {
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
            .args(["run", "--layer-roundtrip", "--snapshots", "ignore", "--target", targets])
            .arg(dir)
            .current_dir(&repo)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let last = stdout.lines().last().unwrap();
        assert_eq!(last, format!("{n} passed, 0 failed, 0 skipped"), "{stdout}");
    }
    assert!(fuse_cases * 2 > seeds.len(), "too few scenarios for fuse-overlayfs: {fuse_cases}");
}
