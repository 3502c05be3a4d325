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

/// Peer tests ported to the library: each peer file (`tests/open-plain.py`)
/// with the scenario that ports it and the subtests it says, read from the
/// scenarios' comments `# peer: unionmount-testsuite tests/FILE.py` (first
/// lines) and `# subtest N: ...` (before each subtest's statements).
#[derive(Debug, Default)]
pub struct Ported {
    pub unionmount: BTreeMap<String, (String, BTreeSet<u32>)>,
}

impl Ported {
    /// Reads `DIR/*.ovl` (a missing directory ports nothing); `shown` is
    /// the directory as the table names it.
    pub fn read(dir: &std::path::Path, shown: &str) -> Ported {
        let mut p = Ported::default();
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.extension().is_some_and(|x| x == "ovl"))
            .collect();
        files.sort();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            p.add(&text, &format!("{shown}/{name}"));
        }
        p
    }

    /// One scenario's text: its peer file and subtests, if it names one.
    pub fn add(&mut self, text: &str, scenario: &str) {
        let mut peer = None;
        let mut subtests: BTreeSet<u32> = BTreeSet::new();
        for l in text.lines().map(str::trim) {
            if let Some(rest) = l.strip_prefix("# peer: unionmount-testsuite ") {
                peer = Some(rest.trim().trim_start_matches("tests/").to_string());
            } else if let Some(rest) = l.strip_prefix("# subtest ") {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = n.parse() {
                    subtests.insert(n);
                }
            }
        }
        if let Some(peer) = peer {
            let e = self.unionmount.entry(peer).or_insert_with(|| (scenario.to_string(), BTreeSet::new()));
            e.1.extend(subtests);
        }
    }

    /// Subtests of `f` in the library (those the peer file has).
    fn count(&self, f: &UmFile) -> u32 {
        self.unionmount
            .get(&f.file)
            .map_or(0, |(_, s)| s.iter().filter(|n| **n >= 1 && **n <= f.subtests).count() as u32)
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
    let ported: u32 = c.unionmount.file.iter().map(|f| c.ported.count(f)).sum();
    let t = Tally { exact: ported, all, lacking: BTreeMap::new() };
    s.push_str(&format!(
        "| unionmount-testsuite, ported to `scenarios/unionmount/` | {ported} of {all} subtests | {} | - |\n",
        t.share()
    ));
    let t = c.xfstests();
    s.push_str(&format!(
        "| xfstests `tests/overlay`, semantic tests | {} of {} tests | {} | {} |\n",
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
         not edit by hand. A test is said exactly when the language has every feature it needs.\n\n",
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
            Some((scenario, _)) => format!("`{scenario}` ({} of {})", c.ported.count(f), f.subtests),
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
         | test | what it checks | needs | said exactly |\n|---|---|---|---|\n",
        c.xfstests.source
    ));
    for x in &c.xfstests.test {
        let lacking = c.lacking(&x.needs);
        let said = match (x.semantic, lacking.is_empty()) {
            (false, _) => "not counted".to_string(),
            (true, true) => "yes".to_string(),
            (true, false) => format!("no: {}", lacking.into_iter().collect::<Vec<_>>().join(", ")),
        };
        s.push_str(&format!("| {} | {} | {} | {said} |\n", x.test, x.title.replace('|', "\\|"), x.needs.join(", ")));
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
        assert!(document(&c).contains("| 045 | fsck | base, mounts | not counted |"));
    }

    #[test]
    fn ported_subtests_are_read_from_the_scenarios_comments() {
        let mut c = Coverage::parse(DOC).unwrap();
        let text = "# peer: unionmount-testsuite tests/a.py\nscenario \"x\"\n# subtest 1: x\nsync\n# subtest 3: y\n# subtest 9: no such\n";
        c.ported.add(text, "scenarios/unionmount/a.ovl");
        c.ported.add("scenario \"names no peer\"\n# subtest 2: z\n", "scenarios/unionmount/b.ovl");
        let s = summary(&c);
        assert!(
            s.contains("| unionmount-testsuite, ported to `scenarios/unionmount/` | 2 of 3 subtests | 67% | - |"),
            "{s}"
        );
        assert!(document(&c).contains("| a.py | 3 | 2 | 2 | mounts | `scenarios/unionmount/a.ovl` (2 of 3) |"));
    }

    #[test]
    fn unknown_features_and_missing_modes_are_errors() {
        let bad = DOC.replace("needs = [\"base\"]\n[[xfstests.test]]", "needs = [\"bsae\"]\n[[xfstests.test]]");
        assert!(matches!(Coverage::parse(&bad), Err(PeersError::UnknownFeature(f)) if f == "bsae"));
        let bad = DOC.replace("verify = []\n", "");
        assert!(matches!(Coverage::parse(&bad), Err(PeersError::UnknownMode(m)) if m == "verify"));
    }
}
