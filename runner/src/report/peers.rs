//! What the peer suites (unionmount-testsuite, xfstests' overlay tests) need
//! of the language, test by test (`docs/peer-coverage.toml`), counted
//! against the features the language has: the share each suite can say
//! exactly, per run mode, and what the rest still needs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Coverage {
    pub features: Features,
    pub unionmount: Unionmount,
    pub xfstests: Xfstests,
    /// What the scenario library ports, read from its files (not the table).
    #[serde(skip)]
    pub ported: Ported,
}

/// Peer tests ported to the library, read from the scenarios' comments: a
/// first line `# peer: unionmount-testsuite tests/FILE.py` or `# peer:
/// xfstests tests/overlay/NNN`, `# subtest N: ...` before each subtest's
/// statements, and `# approximated: REASON` where a port cannot say exactly
/// what the peer checks (after a `# subtest` line for that subtest, before
/// any for the whole file).
#[derive(Debug, Default)]
pub struct Ported {
    /// Peer file -> its port.
    pub unionmount: BTreeMap<String, UmPort>,
    /// Test number -> the scenarios that port it.
    pub xfstests: BTreeMap<String, Vec<Port>>,
}

/// A unionmount-testsuite file's port: the scenario, and each subtest it
/// says with the reason it is approximated, if it is.
#[derive(Debug, Default)]
pub struct UmPort {
    /// The scenario nearest the library's top (the file's port in the
    /// peer's default modes); `also` holds the others (another mode's port).
    pub scenario: String,
    pub also: Vec<String>,
    pub subtests: BTreeMap<u32, Option<String>>,
    /// The run modes its scenarios have (their `param mode=A|B` values), in
    /// first-seen order, each with the subtests said in it.
    pub modes: Vec<(String, BTreeSet<u32>)>,
}

/// A scenario porting a peer test, and why it is approximated, if it is.
#[derive(Debug)]
pub struct Port {
    pub scenario: String,
    pub approximated: Option<String>,
}

/// Joins two reasons given for one port.
fn also(old: &mut Option<String>, reason: &str) {
    match old {
        Some(o) => {
            o.push_str("; ");
            o.push_str(reason);
        }
        None => *old = Some(reason.to_string()),
    }
}

impl Ported {
    /// Reads every `.ovl` file below `dir` (a missing directory ports
    /// nothing); `shown` is the directory as the table names it.
    pub fn read(dir: &std::path::Path, shown: &str) -> Ported {
        let mut p = Ported::default();
        for f in crate::discover::files(&[dir.to_path_buf()]).unwrap_or_default() {
            let below = f.path.strip_prefix(dir).unwrap_or(&f.path).to_string_lossy().into_owned();
            if let Ok(text) = std::fs::read_to_string(&f.path) {
                p.add(&text, &format!("{shown}/{below}"));
            }
        }
        p
    }

    /// One scenario's text: its peer test and subtests, if it names one.
    pub fn add(&mut self, text: &str, scenario: &str) {
        enum Peer {
            Um(String),
            Xfs(String),
        }
        let mut lines = text.lines().map(str::trim);
        let peer = match lines.next().and_then(|l| l.strip_prefix("# peer: ")) {
            Some(rest) => {
                if let Some(f) = rest.strip_prefix("unionmount-testsuite tests/") {
                    Peer::Um(f.trim().to_string())
                } else if let Some(t) = rest.strip_prefix("xfstests tests/overlay/") {
                    Peer::Xfs(t.trim().to_string())
                } else {
                    return;
                }
            }
            None => return,
        };
        let mut whole: Option<String> = None;
        let mut subtests: BTreeMap<u32, Option<String>> = BTreeMap::new();
        let mut current = None;
        let mut modes = Vec::new();
        for l in lines {
            if let Some(values) = l.strip_prefix("param mode=") {
                modes = values.split('|').map(|v| v.trim().to_string()).collect();
            }
            if let Some(rest) = l.strip_prefix("# subtest ") {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                current = n.parse().ok();
                if let Some(n) = current {
                    subtests.entry(n).or_default();
                }
            } else if let Some(reason) = l.strip_prefix("# approximated:") {
                match current.and_then(|n| subtests.get_mut(&n)) {
                    Some(r) => also(r, reason.trim()),
                    None => also(&mut whole, reason.trim()),
                }
            }
        }
        match peer {
            Peer::Um(file) => {
                let e = self
                    .unionmount
                    .entry(file)
                    .or_insert_with(|| UmPort { scenario: scenario.to_string(), ..UmPort::default() });
                if e.scenario != scenario {
                    let depth = |s: &str| s.matches('/').count();
                    if depth(scenario) < depth(&e.scenario) {
                        let old = std::mem::replace(&mut e.scenario, scenario.to_string());
                        e.also.push(old);
                    } else {
                        e.also.push(scenario.to_string());
                    }
                    e.also.sort();
                }
                for m in modes {
                    let said = subtests.keys().copied();
                    match e.modes.iter_mut().find(|(n, _)| *n == m) {
                        Some((_, set)) => set.extend(said),
                        None => e.modes.push((m, said.collect())),
                    }
                }
                // A subtest another mode's port says too stays approximated
                // if either port approximates it, whichever is read first.
                for (n, mut r) in subtests {
                    if let Some(w) = &whole {
                        also(&mut r, w);
                    }
                    let kept = e.subtests.entry(n).or_default();
                    if let Some(r) = r {
                        also(kept, &r);
                    }
                }
            }
            Peer::Xfs(test) => {
                self.xfstests
                    .entry(test)
                    .or_default()
                    .push(Port { scenario: scenario.to_string(), approximated: whole });
            }
        }
    }

    /// Subtests of `f` in the library (those the peer file has), and how
    /// many of them are approximated.
    fn count(&self, f: &UmFile) -> (u32, u32) {
        self.unionmount.get(&f.file).map_or((0, 0), |p| {
            let said = p.subtests.iter().filter(|(n, _)| **n >= 1 && **n <= f.subtests);
            said.fold((0, 0), |(a, b), (_, r)| (a + 1, b + u32::from(r.is_some())))
        })
    }

    /// Every run mode of the unionmount ports, in first-seen order, with
    /// the subtests of `files` said in it.
    fn modes(&self, files: &[UmFile]) -> Vec<(&str, u32)> {
        let mut v: Vec<(&str, u32)> = Vec::new();
        for f in files {
            for (m, said) in self.unionmount.get(&f.file).map_or(&[][..], |p| &p.modes[..]) {
                let n = said.iter().filter(|n| **n >= 1 && **n <= f.subtests).count() as u32;
                match v.iter_mut().find(|(name, _)| name == m) {
                    Some((_, c)) => *c += n,
                    None => v.push((m, n)),
                }
            }
        }
        v
    }

    /// Whether xfstests' `test` is ported, and approximated.
    fn xfs(&self, test: &str) -> Option<bool> {
        self.xfstests.get(test).map(|ports| ports.iter().any(|p| p.approximated.is_some()))
    }
}

#[derive(Debug, Deserialize)]
pub struct Features {
    pub done: Vec<String>,
    /// Each feature the language lacks, with why.
    pub missing: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct Unionmount {
    pub source: String,
    /// Each run mode, with what it needs beyond the subtests' own needs.
    pub modes: BTreeMap<String, Vec<String>>,
    pub file: Vec<UmFile>,
}

#[derive(Debug, Deserialize)]
pub struct UmFile {
    pub file: String,
    pub subtests: u32,
    pub needs: Vec<String>,
    #[serde(default)]
    pub exceptions: Vec<Exception>,
}

/// Subtests of a file that need another set than the file's.
#[derive(Debug, Deserialize)]
pub struct Exception {
    pub subtests: Vec<u32>,
    pub needs: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Xfstests {
    pub source: String,
    pub test: Vec<XfsTest>,
}

#[derive(Debug, Deserialize)]
pub struct XfsTest {
    pub test: String,
    pub title: String,
    pub semantic: bool,
    pub needs: Vec<String>,
    /// What the test does, and why it needs what it needs.
    #[serde(default)]
    pub note: String,
}

/// The modes the summary shows, in this order: the ones the issue of the
/// language names first, then the image, rotation, exdev and fuse modes.
const MODES: [&str; 13] = [
    "default", "samefs", "maxfs", "xino", "meta", "ts1", "ovov", "verify", "squashfs", "erofs", "ov_n", "xdev", "fuse",
];

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("feature `{0}` is neither done nor missing in [features]")]
    UnknownFeature(String),
    #[error("unionmount mode `{0}` is not in [unionmount.modes]")]
    UnknownMode(String),
}

impl Coverage {
    pub fn parse(text: &str) -> Result<Coverage, PeersError> {
        let c: Coverage = toml::from_str(text)?;
        let known: BTreeSet<&str> =
            c.features.done.iter().map(String::as_str).chain(c.features.missing.keys().map(String::as_str)).collect();
        let used = c
            .unionmount
            .modes
            .values()
            .flatten()
            .chain(
                c.unionmount.file.iter().flat_map(|f| f.needs.iter().chain(f.exceptions.iter().flat_map(|e| &e.needs))),
            )
            .chain(c.xfstests.test.iter().flat_map(|t| &t.needs));
        for f in used {
            if !known.contains(f.as_str()) {
                return Err(PeersError::UnknownFeature(f.clone()));
            }
        }
        for m in MODES {
            if !c.unionmount.modes.contains_key(m) {
                return Err(PeersError::UnknownMode(m.into()));
            }
        }
        Ok(c)
    }

    /// The features of `needs` the language lacks.
    fn lacking<'a>(&self, needs: impl IntoIterator<Item = &'a String>) -> BTreeSet<&'a str> {
        needs.into_iter().map(String::as_str).filter(|f| !self.features.done.iter().any(|d| d == f)).collect()
    }

    /// Each subtest of a file with its needs.
    fn subtests<'a>(&self, f: &'a UmFile) -> impl Iterator<Item = (u32, &'a Vec<String>)> {
        (1..=f.subtests)
            .map(move |n| (n, f.exceptions.iter().find(|e| e.subtests.contains(&n)).map_or(&f.needs, |e| &e.needs)))
    }

    /// unionmount-testsuite in `mode`: subtests said exactly, of all, and how
    /// many of the rest lack each feature.
    pub fn unionmount(&self, mode: &str) -> Tally {
        let extra = self.unionmount.modes.get(mode).cloned().unwrap_or_default();
        let mut t = Tally::default();
        for f in &self.unionmount.file {
            for (_, needs) in self.subtests(f) {
                t.add(self.lacking(needs.iter().chain(&extra)));
            }
        }
        t
    }

    /// xfstests' semantic overlay tests in the library; the rest by what
    /// they lack, or "not yet ported" when they lack nothing.
    pub fn xfstests_ported(&self) -> Tally {
        let mut t = Tally::default();
        for x in self.xfstests.test.iter().filter(|x| x.semantic) {
            if self.ported.xfs(&x.test).is_some() {
                t.add(BTreeSet::new());
            } else {
                let lacking = self.lacking(&x.needs);
                t.add(if lacking.is_empty() { BTreeSet::from(["not yet ported"]) } else { lacking });
            }
        }
        t
    }

    /// xfstests' semantic overlay tests.
    pub fn xfstests(&self) -> Tally {
        let mut t = Tally::default();
        for x in self.xfstests.test.iter().filter(|x| x.semantic) {
            t.add(self.lacking(&x.needs));
        }
        t
    }
}

/// Counts: said exactly, of all, and for the rest, how many lack each feature.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub exact: u32,
    pub all: u32,
    pub lacking: BTreeMap<String, u32>,
}

impl Tally {
    fn add(&mut self, lacking: BTreeSet<&str>) {
        self.all += 1;
        if lacking.is_empty() {
            self.exact += 1;
        }
        for f in lacking {
            *self.lacking.entry(f.to_string()).or_default() += 1;
        }
    }

    fn share(&self) -> String {
        if self.all == 0 {
            return "-".into();
        }
        format!("{:.0}%", f64::from(self.exact) * 100.0 / f64::from(self.all))
    }

    fn rest(&self) -> String {
        let mut v: Vec<(&String, &u32)> = self.lacking.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let s: Vec<String> = v.iter().map(|(f, n)| format!("{f} ({n})")).collect();
        if s.is_empty() {
            "-".into()
        } else {
            s.join(", ")
        }
    }
}

fn mode_name(m: &str) -> String {
    match m {
        "default" => "default (lower and upper on separate tmpfs)".into(),
        "ts1" => "`--ts=1`".into(),
        "ov_n" => "`--ov=N` (rotation)".into(),
        "fuse" => "`--fuse` (fuse-overlayfs)".into(),
        m => format!("`--{m}`"),
    }
}

/// The summary for the README: the shares, per suite and mode.
pub fn summary(c: &Coverage) -> String {
    let mut s =
        String::from("| peer suite, mode | said exactly | share | what the rest needs (tests) |\n|---|---|---|---|\n");
    for m in MODES {
        let t = c.unionmount(m);
        s.push_str(&format!(
            "| unionmount-testsuite, {} | {} of {} subtests | {} | {} |\n",
            mode_name(m),
            t.exact,
            t.all,
            t.share(),
            t.rest()
        ));
    }
    let all: u32 = c.unionmount.file.iter().map(|f| f.subtests).sum();
    let (ported, approx) =
        c.unionmount.file.iter().map(|f| c.ported.count(f)).fold((0, 0), |(a, b), (p, x)| (a + p, b + x));
    let t = Tally { exact: ported, all, lacking: BTreeMap::new() };
    let modes = c.ported.modes(&c.unionmount.file);
    let modes = if modes.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
        format!(" (subtests per mode: {})", each.join(", "))
    };
    s.push_str(&format!(
        "| unionmount-testsuite, ported to `scenarios/unionmount/`{modes} | {ported} of {all} subtests ({approx} approximated) | {} | {} |\n",
        t.share(),
        if ported == all { "-".to_string() } else { format!("not yet ported ({})", all - ported) }
    ));
    let t = c.xfstests();
    s.push_str(&format!(
        "| xfstests `tests/overlay`, semantic tests | {} of {} tests | {} | {} |\n",
        t.exact,
        t.all,
        t.share(),
        t.rest()
    ));
    let t = c.xfstests_ported();
    let approx = c.xfstests.test.iter().filter(|x| x.semantic && c.ported.xfs(&x.test) == Some(true)).count();
    s.push_str(&format!(
        "| xfstests `tests/overlay`, ported to `scenarios/xfstests/` | {} of {} tests ({approx} approximated) | {} | {} |\n",
        t.exact,
        t.all,
        t.share(),
        t.rest()
    ));
    s
}

/// The whole table, test by test, for docs/.
pub fn document(c: &Coverage) -> String {
    let mut s = String::from(
        "# What the peer suites need of the language\n\n\
         Generated by `ovlc report peers docs/peer-coverage.toml --doc docs/peer-coverage.md` from\n\
         `docs/peer-coverage.toml`, where each peer test's needs are written down with a note; do\n\
         not edit by hand. A test is said exactly when the language has every feature it needs; \
         the library's ports are read from the scenarios' `# peer:`, `# subtest N:`, \
         `# approximated:` and `param mode=` lines.\n\n",
    );
    s.push_str(&summary(c));
    s.push_str("\n## Features the language lacks\n\n| feature | why |\n|---|---|\n");
    for (f, why) in &c.features.missing {
        s.push_str(&format!("| `{f}` | {why} |\n"));
    }
    s.push_str(&format!(
        "\n## unionmount-testsuite\n\n{}. Each file's subtests in the default mode and with \
         `--samefs`; the modes add what `[unionmount.modes]` lists.\n\n\
         | file | subtests | said exactly (default) | said exactly (`--samefs`) | lacking | in the library |\n|---|---|---|---|---|---|\n",
        c.unionmount.source
    ));
    let extra = |m: &str| c.unionmount.modes.get(m).cloned().unwrap_or_default();
    let (default, samefs) = (extra("default"), extra("samefs"));
    for f in &c.unionmount.file {
        let (mut d, mut sf) = (0, 0);
        let mut lacking: BTreeSet<&str> = BTreeSet::new();
        for (_, needs) in c.subtests(f) {
            let ld = c.lacking(needs.iter().chain(&default));
            let ls = c.lacking(needs.iter().chain(&samefs));
            d += u32::from(ld.is_empty());
            sf += u32::from(ls.is_empty());
            lacking.extend(ld);
        }
        let lacking: Vec<&str> = lacking.into_iter().collect();
        let library = match c.ported.unionmount.get(&f.file) {
            Some(p) => {
                let (n, approx) = c.ported.count(f);
                let approx = if approx > 0 { format!(", {approx} approximated") } else { String::new() };
                let also: String = p.also.iter().map(|a| format!(", `{a}`")).collect();
                format!("`{}` ({n} of {}{approx}){also}", p.scenario, f.subtests)
            }
            None => "-".to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {d} | {sf} | {} | {library} |\n",
            f.file,
            f.subtests,
            if lacking.is_empty() { "-".to_string() } else { lacking.join(", ") }
        ));
    }
    s.push_str(&format!(
        "\n## xfstests `tests/overlay`\n\n{}. Tests of the fsck.overlay tool and the wrappers that \
         run unionmount-testsuite are not semantic tests and are not counted above.\n\n\
         | test | what it checks | needs | said exactly | in the library |\n|---|---|---|---|---|\n",
        c.xfstests.source
    ));
    for x in &c.xfstests.test {
        let lacking = c.lacking(&x.needs);
        let said = match (x.semantic, lacking.is_empty()) {
            (false, _) => "not counted".to_string(),
            (true, true) => "yes".to_string(),
            (true, false) => format!("no: {}", lacking.into_iter().collect::<Vec<_>>().join(", ")),
        };
        let library = match c.ported.xfstests.get(&x.test) {
            Some(ports) => ports
                .iter()
                .map(|p| {
                    let how = if p.approximated.is_some() { "approximated" } else { "exact" };
                    format!("`{}` ({how})", p.scenario)
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => "-".to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {said} | {library} |\n",
            x.test,
            x.title.replace('|', "\\|"),
            x.needs.join(", ")
        ));
    }
    s.push_str(&reasons(c));
    s
}

/// Every peer test or subtest the library approximates or leaves out, with
/// the reason.
fn reasons(c: &Coverage) -> String {
    let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    let mut s = String::from(
        "\n## Approximated, and left out\n\nWhat the library's ports say differently from the peer \
         (their `# approximated:` lines), and the peer tests not in the library, with the reason.\n\n\
         | peer test | how | why |\n|---|---|---|\n",
    );
    for f in &c.unionmount.file {
        let port = c.ported.unionmount.get(&f.file);
        let mut missing = Vec::new();
        for n in 1..=f.subtests {
            match port.and_then(|p| p.subtests.get(&n)) {
                Some(Some(why)) => s.push_str(&format!(
                    "| unionmount {} subtest {n} | approximated in `{}` | {} |\n",
                    f.file,
                    port.map_or("", |p| p.scenario.as_str()),
                    cell(why)
                )),
                Some(None) => {}
                None => missing.push(n.to_string()),
            }
        }
        if !missing.is_empty() {
            let lacking = c.lacking(&f.needs);
            let why = if lacking.is_empty() {
                "expressible, not yet ported".to_string()
            } else {
                lacking
                    .iter()
                    .map(|l| c.features.missing.get(*l).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            s.push_str(&format!("| unionmount {} subtests {} | left out | {why} |\n", f.file, missing.join(", ")));
        }
    }
    for x in c.xfstests.test.iter().filter(|x| x.semantic) {
        match c.ported.xfstests.get(&x.test) {
            Some(ports) => {
                for p in ports {
                    if let Some(why) = &p.approximated {
                        s.push_str(&format!(
                            "| xfstests overlay/{} | approximated in `{}` | {} |\n",
                            x.test,
                            p.scenario,
                            cell(why)
                        ));
                    }
                }
            }
            None => {
                let lacking = c.lacking(&x.needs);
                let how = if lacking.is_empty() {
                    "left out (expressible, not yet ported)".to_string()
                } else {
                    format!("left out: not expressible ({})", lacking.into_iter().collect::<Vec<_>>().join(", "))
                };
                s.push_str(&format!("| xfstests overlay/{} | {how} | {} |\n", x.test, cell(&x.note)));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[features]
done = ["base", "descriptors"]
[features.missing]
mounts = "later"
[unionmount]
source = "um"
[unionmount.modes]
default = ["base"]
samefs = []
maxfs = []
xino = []
meta = []
ts1 = []
ovov = ["mounts"]
verify = []
squashfs = []
erofs = []
ov_n = ["mounts"]
xdev = []
fuse = []
[[unionmount.file]]
file = "a.py"
subtests = 3
needs = ["base", "descriptors"]
exceptions = [ { subtests = [2], needs = ["base", "mounts"] } ]
[xfstests]
source = "x"
[[xfstests.test]]
test = "001"
title = "t"
semantic = true
needs = ["base"]
note = "n"
[[xfstests.test]]
test = "045"
title = "fsck"
semantic = false
needs = ["base", "mounts"]
"#;

    #[test]
    fn subtests_count_with_their_exceptions_and_the_modes_needs() {
        let c = Coverage::parse(DOC).unwrap();
        let t = c.unionmount("samefs");
        assert_eq!((t.exact, t.all), (2, 3));
        assert_eq!(t.lacking.get("mounts"), Some(&1));
        let t = c.unionmount("ovov");
        assert_eq!((t.exact, t.all), (0, 3), "the mode's needs apply to every subtest");
        let t = c.xfstests();
        assert_eq!((t.exact, t.all), (1, 1), "tests that are not semantic are not counted");
        assert!(summary(&c).contains("| unionmount-testsuite, `--samefs` | 2 of 3 subtests | 67% | mounts (1) |"));
        assert!(document(&c).contains("| 045 | fsck | base, mounts | not counted | - |"));
    }

    #[test]
    fn ported_subtests_are_read_from_the_scenarios_comments() {
        let mut c = Coverage::parse(DOC).unwrap();
        let text =
            "# peer: unionmount-testsuite tests/a.py\nscenario \"x\"\nparam mode=samefs|xino\n# subtest 1: x\nsync\n\
                    # subtest 3: y\n# approximated: no st_dev checks\n# subtest 9: no such\n";
        c.ported.add(text, "scenarios/unionmount/a.ovl");
        c.ported.add("scenario \"names no peer\"\n# subtest 2: z\n", "scenarios/unionmount/b.ovl");
        c.ported.add("scenario \"x\"\n# peer: unionmount-testsuite tests/a.py\n# subtest 2: late\n", "c.ovl");
        let s = summary(&c);
        assert!(
            s.contains(
                "| unionmount-testsuite, ported to `scenarios/unionmount/` (subtests per mode: samefs 2, xino 2) | 2 of 3 subtests (1 approximated) | 67% | not yet ported (1) |"
            ),
            "{s}"
        );
        let d = document(&c);
        assert!(
            d.contains("| a.py | 3 | 2 | 2 | mounts | `scenarios/unionmount/a.ovl` (2 of 3, 1 approximated) |"),
            "{d}"
        );
        assert!(d.contains(
            "| unionmount a.py subtest 3 | approximated in `scenarios/unionmount/a.ovl` | no st_dev checks |"
        ));
        assert!(d.contains("| unionmount a.py subtests 2 | left out | expressible, not yet ported |"), "{d}");
        // Another mode's port of the same file, read first: the file's port
        // stays the one nearest the top, the modes count what each says.
        let mut c = Coverage::parse(DOC).unwrap();
        let ts1 = "# peer: unionmount-testsuite tests/a.py\nparam mode=ts1\n# subtest 2: x\n# subtest 3: y\n";
        c.ported.add(ts1, "scenarios/unionmount/ts1/a.ovl");
        c.ported.add(text, "scenarios/unionmount/a.ovl");
        let s = summary(&c);
        assert!(
            s.contains("(subtests per mode: ts1 2, samefs 2, xino 2) | 3 of 3 subtests (1 approximated) | 100% | - |"),
            "{s}"
        );
        assert!(
            document(&c)
                .contains("`scenarios/unionmount/a.ovl` (3 of 3, 1 approximated), `scenarios/unionmount/ts1/a.ovl` |"),
            "{}",
            document(&c)
        );
        // and one read last that says subtest 3 exactly: it stays approximated
        c.ported.add(ts1, "scenarios/unionmount/ts1/b.ovl");
        assert!(summary(&c).contains("| 3 of 3 subtests (1 approximated) |"), "{}", summary(&c));
    }

    #[test]
    fn xfstests_ports_are_exact_or_approximated_and_the_rest_has_its_reason() {
        let mut c = Coverage::parse(DOC).unwrap();
        let t = c.xfstests_ported();
        assert_eq!((t.exact, t.all), (0, 1));
        assert_eq!(t.lacking.get("not yet ported"), Some(&1));
        assert!(document(&c).contains("| xfstests overlay/001 | left out (expressible, not yet ported) | n |"));
        c.ported
            .add("# peer: xfstests tests/overlay/001\n# approximated: sizes | scaled\nscenario \"x\"\n", "s/001-a.ovl");
        c.ported.add("# peer: xfstests tests/overlay/001\nscenario \"y\"\n", "s/001-b.ovl");
        let t = c.xfstests_ported();
        assert_eq!((t.exact, t.all), (1, 1));
        let s = summary(&c);
        assert!(
            s.contains("| xfstests `tests/overlay`, ported to `scenarios/xfstests/` | 1 of 1 tests (1 approximated) | 100% | - |"),
            "{s}"
        );
        let d = document(&c);
        assert!(d.contains("| 001 | t | base | yes | `s/001-a.ovl` (approximated), `s/001-b.ovl` (exact) |"), "{d}");
        assert!(d.contains("| xfstests overlay/001 | approximated in `s/001-a.ovl` | sizes \\| scaled |"), "{d}");
    }

    #[test]
    fn unknown_features_and_missing_modes_are_errors() {
        let bad = DOC.replace("needs = [\"base\"]\nnote", "needs = [\"bsae\"]\nnote");
        assert!(matches!(Coverage::parse(&bad), Err(PeersError::UnknownFeature(f)) if f == "bsae"));
        let bad = DOC.replace("verify = []\n", "");
        assert!(matches!(Coverage::parse(&bad), Err(PeersError::UnknownMode(m)) if m == "verify"));
    }
}
