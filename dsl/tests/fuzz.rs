//! Fuzzing on fixed seeds: files made by mutating the library's scenarios
//! (`scenarios/**/*.ovl`) with byte flips, deletions, duplications, lines
//! spliced from other files, huge repeats, deep nesting, long lines, NUL and
//! invalid UTF-8. Scenario files come from strangers and `ovlc` runs them as
//! root, so for every mutant:
//! - `dsl::parse` returns, without a panic, within [`TIMEOUT`] (each case
//!   runs on a worker thread with the 2 MiB stack of `ovlc check`'s threads);
//! - an error is located: every diagnostic has a span inside the text, on
//!   character boundaries, `short()` gives it a `file:line:col` with a line
//!   of the file, and `render(false, 80)` draws it with that same
//!   `file:line:col`, without an escape character; a file reports at most
//!   `MAX_ERRORS` errors and one more;
//! - a file that parses formats to a text that parses to the same tree, and
//!   formatting that changes nothing; it has at most `MAX_INSTANCES` instances.
//!
//! The cases: `PROPTEST_CASES` of them (at least 2000, the default) from the
//! fixed `BASE_SEED`, so that every run is the same. `OVLC_DSL_FUZZ_EXPLORE=1`
//! takes a random base instead, to look for new failures, and prints it;
//! `OVLC_DSL_FUZZ_EXPLORE=BASE` (decimal or 0x-hex) repeats a base. A failing
//! case names its seed and leaves its file in the temporary directory.

#![allow(clippy::unwrap_used)]

mod common;

use common::Gen;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The base of the fixed seeds ("ovl-fuzz").
const BASE_SEED: u64 = 0x6f76_6c2d_6675_7a7a;
/// The fewest cases a run makes.
const MIN_CASES: usize = 2000;
/// The longest one case may take (parse, render, format) before the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Gen {
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn library() -> Vec<Vec<u8>> {
    let out: Vec<Vec<u8>> = common::library_files().iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(out.len() >= 8, "the library has {} files", out.len());
    out
}

/// Bytes that are not UTF-8, or are but mean trouble.
const ODD_BYTES: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\x80",
    b"\xe2\x82",
    b"\r",
    b"\r\n",
    b"\x1b[31m",
    "\u{feff}".as_bytes(),
    "\u{202e}".as_bytes(),
    "\u{85}".as_bytes(),
];

/// Pieces of the language, right and wrong.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "\"",
    "\"\"\"",
    "=>",
    "->",
    "\\",
    "\\x",
    "\\xzz",
    "\t",
    "#",
    ",",
    "|",
    "::",
    " not ",
    " or ",
    " and ",
    "/",
    "//",
    "/..",
    "/.",
    " ",
    "\n",
    "layer",
    "layer l {",
    "mount",
    "mount l",
    "umount",
    "remount",
    "vary",
    "vary a=1|2",
    "readonly",
    "upper from",
    "upper u",
    "work w",
    " as m",
    "m:/",
    "m:/d",
    "on m {",
    "umount m",
    "expect upper u {",
    "expect work {",
    "expect merged on m {",
    "entries /d 2",
    "options \"lowerdir+=x\"",
    "reconfigure with ro",
    "handle /a as h",
    "driver fuse",
    "chattr /a +i -a",
    "attrs /a +i",
    "sleep 10ms",
    "expect upper u raw {",
    "sleep 99s",
    "l:/d",
    "setacl /a \"u::rw-,g::r--,o::---\"",
    "acl /d default \"u::rwx,g::r-x,m::rwx,o::---\"",
    "open-handle h as f rdonly",
    "filesystem f tmpfs",
    "layer l on f {",
    "upper u on f",
    "expect mountinfo {",
    "not contains \"x\"",
    "layer \"a:b\" {",
    "mount \"a:b\"",
    "expect layer {",
    "expect upper exactly {",
    "expect merged {",
    "else",
    "} else {",
    "if kernel >= 5.10 {",
    "as 1000:1000 {",
    "0644",
    "07777",
    "99999999999999999999999",
    "4GiB",
    "16777216GiB",
    "E2BIG",
    "ENOENT",
    "EWHATEVER",
    "size 1",
    "xattr user.a=\"b\"",
    "owner 0:0",
    "mode 0755",
    "4294967295:0",
    "4095:1048575",
    "4096:0",
    "=> ok",
    "=> [a, b]",
    "=> \"x\"",
    "same-inode /a s",
    "stat /a as s",
    "scenario \"t\"",
    "about \"\"\"\n",
    "tags a, b",
    "requires kernel > 1",
    "backing ext4",
    "backing zfs",
    "opaque",
    "not opaque",
    "whiteout",
    "hardlink /h -> /a",
    "symlink /s -> \"\"",
    "file /a",
    "dir /a",
    "é",
    "日本",
    "\u{1F600}",
];

/// A long line: one token many times.
fn long_line(g: &mut Gen) -> Vec<u8> {
    let n = 1 << (6 + g.below(12));
    let (head, unit, tail): (&str, &str, &str) = *g.pick(&[
        ("layer l {\n    file ", "/a", " \"x\"\n}\n"),
        ("layer l {\n    dir ", "/dd", "\n}\n"),
        ("tags ", "a,", " x\n"),
        ("vary ", "x=1|2, ", "y=1\n"),
        ("requires ", "option a or ", "option b\n"),
        ("requires ", "not ", "kernel > 1\n"),
        ("requires ", "(", "kernel > 1\n"),
        ("mount ", "l, ", "l\n"),
        ("write /a \"", "é", "\"\n"),
        ("setxattr /a user.", "n", " \"v\"\n"),
        ("setxattr /a user.k \"", "v", "\"\n"),
        ("sync => E", "X", "\n"),
        ("", "x", "\n"),
        ("# ", "ü", "\n"),
    ]);
    let mut out = head.as_bytes().to_vec();
    for _ in 0..n {
        out.extend_from_slice(unit.as_bytes());
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Nesting: blocks, conditions.
fn nesting(g: &mut Gen) -> Vec<u8> {
    let n = 1 + g.below(100);
    let mut s = String::new();
    match g.below(4) {
        0 => {
            for _ in 0..n {
                s.push_str("if kernel > 1 {\n");
            }
            s.push_str("sync\n");
            for _ in 0..n {
                s.push_str("}\n");
            }
        }
        1 => {
            s.push_str("if ");
            for _ in 0..n {
                s.push_str(if g.chance(50) { "not (" } else { "(" });
            }
            s.push_str("driver == fuse");
            s.push_str(&")".repeat(n));
            s.push_str(" {\n    sync\n}\n");
        }
        2 => {
            s.push_str(&"{".repeat(n));
            s.push('\n');
        }
        _ => {
            for _ in 0..n {
                s.push_str("as 0:0 {\n");
            }
        }
    }
    s.into_bytes()
}

/// The offset of a line start in `b`.
fn line_start(g: &mut Gen, b: &[u8]) -> usize {
    let starts: Vec<usize> =
        std::iter::once(0).chain(b.iter().enumerate().filter(|(_, &c)| c == b'\n').map(|(i, _)| i + 1)).collect();
    *g.pick(&starts)
}

fn a_line<'a>(g: &mut Gen, b: &'a [u8]) -> &'a [u8] {
    let lines: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').collect();
    if lines.is_empty() {
        b
    } else {
        lines[g.below(lines.len())]
    }
}

/// One mutant of a library file, a function of the seed (and the library) alone.
fn mutant(seed: u64, lib: &[Vec<u8>]) -> Vec<u8> {
    let mut g = Gen(seed);
    let mut b = g.pick(lib).clone();
    for _ in 0..1 + g.below(4) {
        let len = b.len().max(1);
        let i = g.below(len).min(b.len());
        match g.below(14) {
            0 if !b.is_empty() => {
                let (bit, at) = (g.below(8), i.min(b.len() - 1));
                b[at] ^= 1 << bit;
            }
            1 if !b.is_empty() => {
                let (byte, at) = (g.next() as u8, i.min(b.len() - 1));
                b[at] = byte;
            }
            2 => {
                let j = (i + 1 + g.below(64)).min(b.len());
                b.drain(i..j);
            }
            3 => {
                let j = (i + 1 + g.below(200)).min(b.len());
                let piece = b[i..j].to_vec();
                let at = g.below(b.len() + 1);
                b.splice(at..at, piece);
            }
            4 => {
                // A line of another file in place of one of this one.
                let other = g.pick(lib).clone();
                let line = a_line(&mut g, &other).to_vec();
                let at = line_start(&mut g, &b);
                let end = b[at..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| at + n + 1);
                b.splice(at..end, line);
            }
            5 => {
                for _ in 0..1 + g.below(5) {
                    let other = g.pick(lib).clone();
                    let line = a_line(&mut g, &other).to_vec();
                    let at = line_start(&mut g, &b);
                    b.splice(at..at, line);
                }
            }
            6 => {
                // A huge repeat of a piece or a line, from 1 KiB to past the 1 MiB limit.
                let piece = if g.chance(50) {
                    a_line(&mut g, &b).to_vec()
                } else {
                    let j = (i + 1 + g.below(40)).min(b.len());
                    b[i..j].to_vec()
                };
                if !piece.is_empty() {
                    let target = if g.chance(85) { 1usize << (10 + g.below(7)) } else { (1usize << 17) << g.below(4) };
                    let n = (target / piece.len()).max(2);
                    let mut rep = Vec::with_capacity(n * piece.len());
                    for _ in 0..n {
                        rep.extend_from_slice(&piece);
                    }
                    let at = line_start(&mut g, &b);
                    b.splice(at..at, rep);
                }
            }
            7 => {
                let n = nesting(&mut g);
                let at = line_start(&mut g, &b);
                b.splice(at..at, n);
            }
            8 => {
                let l = long_line(&mut g);
                let at = line_start(&mut g, &b);
                b.splice(at..at, l);
            }
            9 => {
                let odd = g.pick(ODD_BYTES).to_vec();
                b.splice(i..i, odd);
            }
            10 | 11 => {
                let t = g.pick(TOKENS).as_bytes().to_vec();
                b.splice(i..i, t);
            }
            12 => b.truncate(i),
            _ => {
                // Two lines swapped.
                let lines: Vec<Vec<u8>> = b.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                if lines.len() > 1 {
                    let mut lines = lines;
                    let (x, y) = (g.below(lines.len()), g.below(lines.len()));
                    lines.swap(x, y);
                    b = lines.concat();
                }
            }
        }
    }
    b
}

fn check_failure(f: &dsl::Failure) -> Result<(), String> {
    let text = &f.text;
    let lines = 1 + text
        .bytes()
        .enumerate()
        .filter(|&(i, c)| c == b'\n' || (c == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n')))
        .count();
    if f.diags.is_empty() {
        return Err("a failure without diagnostics".into());
    }
    let valid = |s: usize, e: usize| s <= e && e <= text.len() && text.is_char_boundary(s) && text.is_char_boundary(e);
    for d in &f.diags {
        let Some((s, e)) = d.span else { return Err(format!("{}: no location: {}", d.kind.code(), d.message)) };
        if !valid(s, e) {
            return Err(format!("{}: span {s}..{e} outside the text ({} bytes)", d.kind.code(), text.len()));
        }
        for r in &d.related {
            if !valid(r.start, r.end) {
                return Err(format!("{}: related span {}..{} outside the text", d.kind.code(), r.start, r.end));
            }
        }
    }
    let short = f.short();
    let places: Vec<String> = short.lines().map(|l| l.to_string()).collect();
    if places.len() != f.diags.len() {
        return Err(format!("short() has {} lines for {} errors:\n{short}", places.len(), f.diags.len()));
    }
    let mut located = Vec::new();
    for (l, d) in places.iter().zip(&f.diags) {
        let rest = l.strip_prefix("fuzz.ovl:").ok_or_else(|| format!("not file:line:col: {l}"))?;
        let mut it = rest.splitn(3, ':');
        let line: usize = it.next().and_then(|x| x.parse().ok()).ok_or_else(|| format!("no line: {l}"))?;
        let col: usize = it.next().and_then(|x| x.parse().ok()).ok_or_else(|| format!("no column: {l}"))?;
        if line < 1 || col < 1 || line > lines {
            return Err(format!("{l}: line {line} col {col} outside a file of {lines} lines"));
        }
        if !it.next().is_some_and(|m| m.starts_with(&format!(" {}: ", d.kind.code()))) {
            return Err(format!("no code in {l}"));
        }
        located.push(format!("[fuzz.ovl:{line}:{col}]"));
    }
    // A file reports at most `MAX_ERRORS` + 1 errors: each is drawn alone.
    if f.diags.len() > dsl::MAX_ERRORS + 1 {
        return Err(format!("{} errors", f.diags.len()));
    }
    for i in 0..f.diags.len() {
        let one = dsl::Failure { name: f.name.clone(), text: f.text.clone(), diags: vec![f.diags[i].clone()] };
        let drawn = one.render(false, 80);
        if !drawn.contains(&located[i]) {
            return Err(format!("render does not show {} (short: {}):\n{drawn}", located[i], places[i]));
        }
        if drawn.contains('\x1b') {
            return Err(format!("render holds an escape character:\n{drawn}"));
        }
    }
    Ok(())
}

fn check_valid(s: &dsl::Scenario) -> Result<(), String> {
    let out = dsl::format(s);
    let again = dsl::parse("fuzz.ovl", "fuzz", out.as_bytes())
        .map_err(|f| format!("the formatted text does not parse:\n{out}\n{}", f.short()))?;
    if &again != s {
        return Err(format!("parse(fmt(x)) != parse(x); fmt(x):\n{out}"));
    }
    if dsl::format(&again) != out {
        return Err(format!("fmt is not idempotent on\n{out}"));
    }
    let n = dsl::instances(s).len();
    if n > dsl::MAX_INSTANCES {
        return Err(format!("{n} instances"));
    }
    Ok(())
}

/// Checks one case; says whether the file parsed.
fn check_case(bytes: &[u8]) -> Result<bool, String> {
    match dsl::parse("fuzz.ovl", "fuzz", bytes) {
        Ok(s) => check_valid(&s).map(|()| true),
        Err(f) => check_failure(&f).map(|()| false),
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn random_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[test]
fn mutated_library_files_are_parsed_safely() {
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(MIN_CASES)
        .clamp(MIN_CASES, 100_000);
    let base = match std::env::var("OVLC_DSL_FUZZ_EXPLORE").ok().filter(|v| !v.is_empty() && v != "0") {
        None => BASE_SEED,
        Some(v) => {
            let base = if v == "1" {
                random_base()
            } else {
                parse_seed(&v).unwrap_or_else(|| panic!("OVLC_DSL_FUZZ_EXPLORE={v}: 1 or a base seed"))
            };
            eprintln!("exploring {cases} cases from base {base:#x} (OVLC_DSL_FUZZ_EXPLORE={base:#x} repeats them)");
            base
        }
    };
    let mut g = Gen(base);
    let seeds: Vec<u64> = (0..cases).map(|_| g.next()).collect();
    let lib = library();
    let (tx, rx) = mpsc::channel::<(usize, usize, Duration, Result<bool, String>)>();
    let work = seeds.clone();
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(2 << 20)
        .spawn(move || {
            for (i, seed) in work.into_iter().enumerate() {
                let bytes = mutant(seed, &lib);
                let t = Instant::now();
                let r = std::panic::catch_unwind(|| check_case(&bytes)).unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panic: {msg}"))
                });
                if r.is_err() {
                    let _ = std::fs::write(std::env::temp_dir().join(format!("ovlc-fuzz-{seed:#x}.ovl")), &bytes);
                }
                if tx.send((i, bytes.len(), t.elapsed(), r)).is_err() {
                    return;
                }
            }
        })
        .unwrap();
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut parsed, mut largest, mut total) = (0, 0, 0);
    let mut slowest = (Duration::ZERO, 0);
    for i in 0..cases {
        match rx.recv_timeout(TIMEOUT) {
            Ok((j, size, took, Ok(ok))) => {
                assert_eq!(i, j);
                slowest = slowest.max((took, seeds[j]));
                parsed += usize::from(ok);
                largest = largest.max(size);
                total += size;
            }
            Ok((j, _, _, Err(e))) => {
                let seed = seeds[j];
                let mut e = e;
                if e.len() > 4000 {
                    e.truncate(e.floor_char_boundary_compat(4000));
                    e.push_str(" [...]");
                }
                failures.push(format!(
                    "case {j}, seed {seed:#x} (file ovlc-fuzz-{seed:#x}.ovl in the temporary directory): {e}"
                ));
                if failures.len() >= 5 {
                    break;
                }
            }
            Err(_) => {
                let seed = seeds[i];
                let bytes = mutant(seed, &library());
                let _ = std::fs::write(std::env::temp_dir().join(format!("ovlc-fuzz-{seed:#x}.ovl")), &bytes);
                panic!(
                    "case {i}, seed {seed:#x}: no answer in {TIMEOUT:?} for a file of {} bytes (written as ovlc-fuzz-{seed:#x}.ovl in the temporary directory)",
                    bytes.len()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n\n"));
    worker.join().unwrap();
    eprintln!(
        "{cases} mutants ({parsed} valid; {} MiB in all, the largest {} KiB) in {:.1?}; the slowest {:.1?} (seed {:#x})",
        total >> 20,
        largest >> 10,
        started.elapsed(),
        slowest.0,
        slowest.1
    );
}

/// `str::floor_char_boundary` for the toolchains that lack it.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, i: usize) -> usize {
        let mut i = i.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}
