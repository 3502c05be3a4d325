//! Property: for generated lower layers and operation sequences, the upper
//! exported as an OCI layer and applied onto the lowers gives the merged view
//! (`ovlc run --layer-roundtrip`), on all three host targets. Needs root.
//!
//! A scenario is generated from a seed (`scenario`). The seeds:
//! - `PROPTEST_CASES` of them (default 64, at most 400) derived from the
//!   fixed `BASE_SEED`: every run generates the same scenarios;
//! - always, the seeds in `roundtrip-regressions.txt` beside this file, each
//!   of which once failed (one per line, a `#` comment saying what it found);
//! - `OVLC_ROUNDTRIP_EXPLORE=1` replaces the fixed seeds by as many derived
//!   from a random base, to look for new failures; it prints the base and the
//!   seeds, and `OVLC_ROUNDTRIP_EXPLORE=BASE` (decimal or 0x-hex) repeats
//!   them. A seed that fails belongs in the regressions file.
//!
//! `OVLC_ROUNDTRIP_KEEP=DIR` keeps the generated scenarios in
//! DIR/scenarios/roundtrip (host, host-rootless) and
//! DIR/scenarios/roundtrip-fuse (host-fuse), to study a failure.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// The base of the fixed seeds.
const BASE_SEED: u64 = 0x6f76_6c63_2d72_7431;

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

/// One lower layer: every path (parents included) and the symlinks' targets.
#[derive(Default)]
struct Layer {
    entries: BTreeMap<String, K>,
    targets: BTreeMap<String, &'static str>,
}

/// Why a scenario is not run on fuse-overlayfs (1.10, Debian's package).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum FuseBug {
    /// A lower directory over a lower symlink that loops, at any depth below
    /// it (`dirs_over_looping_symlinks`), with a subdirectory or a mkdir in
    /// it: scenarios/drivers/dir-over-symlink.ovl and
    /// dir-over-file-over-symlink.ovl.
    LoopingSymlinkUnderDir,
    /// A hard link to a lower file over another lower entry
    /// (`covers_lower_entry`), then a change through one of its names.
    SplitHardLink,
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

/// Whether following the symlink at `p` inside `layer` loops (ELOOP). Only
/// targets without a `/` can loop: "/etc" leaves the layer for the host's
/// /etc, and "../x" names an `x` that the generator never makes.
fn loops(layer: &Layer, p: &str) -> bool {
    let mut cur = p.to_string();
    for _ in 0..40 {
        match (layer.entries.get(&cur), layer.targets.get(&cur)) {
            (Some(K::Link), Some(t)) if !t.contains('/') => cur = child(parent(&cur), t),
            _ => return false,
        }
    }
    true
}

/// Directories of the merged lowers that fuse-overlayfs mishandles. Kernel
/// overlayfs merges a directory from the layers that have a directory there,
/// uppermost first, up to the first layer with a non-directory at the path
/// (or at a parent: the layers of a directory are among its parent's).
/// fuse-overlayfs goes on past that first non-directory, and a symlink there
/// that loops fails (ELOOP, answered as ENOMEM) its check for the whiteout of
/// a subdirectory's name in that layer: listing the parent of a directory
/// that has a subdirectory fails, and so does mkdir in it. A symlink that
/// does not loop is harmless. (Checked against the kernel driver on every
/// stack of three layers of /c and /c/a shapes.)
fn dirs_over_looping_symlinks(layers: &[Layer]) -> BTreeSet<String> {
    let mut broken = BTreeSet::new();
    let mut todo = vec![("/".to_string(), (0..layers.len()).collect::<Vec<_>>())];
    while let Some((dir, span)) = todo.pop() {
        let names: BTreeSet<&String> =
            span.iter().flat_map(|&i| layers[i].entries.keys().filter(|p| parent(p) == dir)).collect();
        for p in names {
            let here: Vec<(usize, K)> =
                span.iter().filter_map(|&i| layers[i].entries.get(p).map(|k| (i, *k))).collect();
            if here[0].1 != K::Dir {
                continue;
            }
            if here[1..].iter().any(|&(i, k)| k == K::Link && loops(&layers[i], p)) {
                broken.insert(p.clone());
            }
            let merged: Vec<usize> = here.iter().take_while(|(_, k)| *k == K::Dir).map(|(i, _)| *i).collect();
            todo.push((p.clone(), merged));
        }
    }
    broken
}

/// Whether a lower layer below `top` has something at `p`, or a symlink at a
/// parent of it. fuse-overlayfs looks a file up in every lower layer and
/// leaves it keyed by the inode of the lowest one that has the path, not the
/// inode it registered: a hard link made to the file once the kernel has
/// forgotten it gets a FUSE inode of its own, and a change through one name
/// leaves the other's cached size and mode stale. (Sometimes: it takes the
/// kernel's forget between the lookup and the link.)
fn covers_lower_entry(layers: &[Layer], top: usize, p: &str) -> bool {
    layers[top + 1..].iter().any(|l| {
        let mut a = p;
        let mut found = l.entries.contains_key(p);
        while !found && a != "/" {
            a = parent(a);
            found = l.entries.get(a) == Some(&K::Link);
        }
        found
    })
}

/// A scenario whose every operation must succeed, tracked on a model of the
/// merged view; and whether (and why) fuse-overlayfs would fail it.
fn scenario(seed: u64) -> (String, Option<FuseBug>) {
    let mut g = Gen(seed);
    let names = ["a", "b", "c", "etc", "var", "x.log", "d1", "d2"];
    let mut model: BTreeMap<String, K> = BTreeMap::new();
    model.insert("/".into(), K::Dir);
    let mut s = format!("scenario \"round trip {seed}\"\n");
    let nlayers = 1 + g.below(3);
    // Lower layers, uppermost (l0) first.
    let mut layers: Vec<Layer> = Vec::new();
    for l in 0..nlayers {
        s.push_str(&format!("layer l{l} {{\n"));
        let mut here = Layer::default();
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
                if here.entries.get(&cur).is_some_and(|k| *k != K::Dir) || model.get(&cur).is_some_and(|k| *k != K::Dir)
                {
                    ok = false;
                }
                cur = parent(&cur).to_string();
            }
            if !ok || here.entries.contains_key(&p) || model.get(&p).is_some_and(|k| *k == K::Dir) {
                continue;
            }
            if here.entries.keys().any(|k| k.starts_with(&format!("{p}/"))) {
                continue;
            }
            let kind = match g.below(4) {
                0 => {
                    s.push_str(&format!("    dir {p} mode 07{}5\n", g.pick(&["5", "7", "0"])));
                    K::Dir
                }
                1 => {
                    let target = *g.pick(&["a", "/etc", "../x"]);
                    s.push_str(&format!("    symlink {p} -> \"{target}\"\n"));
                    here.targets.insert(p.clone(), target);
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
                here.entries.entry(cur.clone()).or_insert(K::Dir);
                cur = parent(&cur).to_string();
            }
            here.entries.insert(p, kind);
        }
        s.push_str("}\n");
        layers.push(here);
    }
    // The merged view of the lowers, built bottom-up.
    for here in layers.iter().rev() {
        for (p, k) in &here.entries {
            if *k != K::Dir {
                let prefix = format!("{p}/");
                model.retain(|q, _| !q.starts_with(&prefix));
            }
            model.insert(p.clone(), *k);
        }
    }
    let broken = dirs_over_looping_symlinks(&layers);
    let mut bug = None;
    if model.iter().any(|(p, k)| *k == K::Dir && p != "/" && broken.contains(parent(p))) {
        bug = Some(FuseBug::LoopingSymlinkUnderDir);
    }
    // Files whose fuse-overlayfs key may be wrong (`covers_lower_entry`),
    // and the hard-link groups of files, by path.
    let mut wrong_key: BTreeSet<String> = BTreeSet::new();
    for (p, k) in &model {
        if *k == K::File {
            let top = layers.iter().position(|l| l.entries.contains_key(p)).unwrap();
            if covers_lower_entry(&layers, top, p) {
                wrong_key.insert(p.clone());
            }
        }
    }
    let mut group: BTreeMap<String, usize> =
        model.iter().filter(|(_, k)| **k == K::File).enumerate().map(|(i, (p, _))| (p.clone(), i)).collect();
    // Groups with a name linked from a file with a wrong key: a change
    // through one name may not show through the others.
    let mut split: BTreeSet<usize> = BTreeSet::new();
    let changed = |f: &str, group: &BTreeMap<String, usize>, split: &BTreeSet<usize>, bug: &mut Option<FuseBug>| {
        if group.get(f).is_some_and(|n| split.contains(n)) {
            *bug = bug.or(Some(FuseBug::SplitHardLink));
        }
    };
    let order: Vec<String> = (0..nlayers).map(|l| format!("l{l}")).collect();
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
                group.insert(new_name.clone(), usize::MAX - fresh);
                model.insert(new_name, K::File);
            }
            1 if !files.is_empty() => {
                let f = g.pick(&files);
                s.push_str(&format!("append {f} \"+\"\n"));
                changed(f, &group, &split, &mut bug);
            }
            2 if !files.is_empty() => {
                let f = g.pick(&files).clone();
                s.push_str(&format!("unlink {f}\n"));
                model.remove(&f);
            }
            3 => {
                s.push_str(&format!("mkdir {new_name}\n"));
                if broken.contains(parent(&new_name)) {
                    bug = bug.or(Some(FuseBug::LoopingSymlinkUnderDir));
                }
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
                model.insert(new_name.clone(), K::File);
                if let Some(n) = group.remove(&f) {
                    group.insert(new_name.clone(), n);
                }
                if wrong_key.remove(&f) {
                    wrong_key.insert(new_name);
                }
            }
            6 if !files.is_empty() => {
                let f = g.pick(&files).clone();
                s.push_str(&format!("link {f} {new_name}\n"));
                model.insert(new_name.clone(), K::File);
                let n = group[&f];
                group.insert(new_name.clone(), n);
                if wrong_key.contains(&f) {
                    split.insert(n);
                    wrong_key.insert(new_name);
                }
            }
            7 if !files.is_empty() || dirs.len() > 1 => {
                let all: Vec<String> = files.iter().chain(dirs.iter().filter(|d| *d != "/")).cloned().collect();
                if let Some(p) = all.get(g.below(all.len().max(1))) {
                    s.push_str(&format!("chmod {p} 0{}\n", g.pick(&["700", "755", "644", "4755"])));
                    changed(p, &group, &split, &mut bug);
                }
            }
            8 if !files.is_empty() => s.push_str(&format!("setxattr {} user.new \"v\"\n", g.pick(&files))),
            _ => {
                s.push_str(&format!("symlink {new_name} -> \"target\"\n"));
                model.insert(new_name, K::Link);
            }
        }
    }
    (s, bug)
}

/// The seeds of `roundtrip-regressions.txt`.
fn regressions() -> Vec<u64> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/roundtrip-regressions.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|e| panic!("{}: bad seed {l:?}: {e}", file.display())))
        .collect()
}

fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[test]
fn exported_layers_applied_onto_the_lowers_give_the_merged_view() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64).min(400);
    let base = match std::env::var("OVLC_ROUNDTRIP_EXPLORE").ok().filter(|v| !v.is_empty() && v != "0") {
        None => BASE_SEED,
        Some(v) => {
            let base = if v == "1" {
                let mut runner = TestRunner::new(Config { failure_persistence: None, ..Config::default() });
                any::<u64>().new_tree(&mut runner).unwrap().current()
            } else {
                parse_seed(&v).unwrap_or_else(|| panic!("OVLC_ROUNDTRIP_EXPLORE={v}: 1 or a base seed"))
            };
            eprintln!("exploring {cases} seeds from base {base:#x} (OVLC_ROUNDTRIP_EXPLORE={base:#x} repeats them)");
            base
        }
    };
    let mut g = Gen(base);
    let mut seeds: Vec<u64> = (0..cases).map(|_| g.next()).collect();
    if base != BASE_SEED {
        eprintln!("seeds: {seeds:?}");
    }
    let generated = seeds.len();
    for seed in regressions() {
        if !seeds.contains(&seed) {
            seeds.push(seed);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sdir = match std::env::var_os("OVLC_ROUNDTRIP_KEEP") {
        Some(d) => Path::new(&d).join("scenarios/roundtrip"),
        None => dir.path().join("scenarios/roundtrip"),
    };
    std::fs::create_dir_all(&sdir).unwrap();
    let fdir = sdir.with_file_name("roundtrip-fuse");
    std::fs::create_dir_all(&fdir).unwrap();
    // Every scenario is written, then run in one go.
    let (mut fuse_cases, mut fuse_generated) = (0, 0);
    let mut left_out: BTreeMap<FuseBug, usize> = BTreeMap::new();
    for (i, seed) in seeds.iter().enumerate() {
        let (text, bug) = scenario(*seed);
        dsl::parse("gen.ovl", "gen", text.as_bytes())
            .unwrap_or_else(|f| panic!("seed {seed}:\n{text}\n{}", f.render(false, 100)));
        std::fs::write(sdir.join(format!("s{seed}.ovl")), &text).unwrap();
        match bug {
            None => {
                std::fs::write(fdir.join(format!("s{seed}.ovl")), &text).unwrap();
                fuse_cases += 1;
                fuse_generated += usize::from(i < generated);
            }
            Some(b) => *left_out.entry(b).or_default() += 1,
        }
    }
    eprintln!(
        "{generated} seeds and {} regressions, {fuse_cases} on fuse-overlayfs (left out: {left_out:?})",
        seeds.len() - generated
    );
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
    // The fuse-overlayfs filter must leave most generated scenarios in.
    assert!(
        generated == 0 || fuse_generated * 2 > generated,
        "too few scenarios for fuse-overlayfs: {fuse_generated} of {generated}"
    );
}
