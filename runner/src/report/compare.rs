//! Comparing two runs (`ovlc report compare BASE.json NEW.json`): per
//! target, the regressions, fixes, other status changes, new and removed
//! instances and changed skips between a base run and a new one, with the
//! target pairing that lets a patched kernel (`vm:custom`) be compared with
//! the last good run of another (`vm:7.3`). Computed from the reports alone,
//! rendered as text or a small HTML page.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{Failure, Outcome, RunReport, Status};

/// `--as BASE_TARGET=NEW_TARGET`: NEW's target is compared with BASE's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pairing {
    pub base: String,
    pub new: String,
}

impl std::str::FromStr for Pairing {
    type Err = CompareError;

    fn from_str(s: &str) -> Result<Pairing, CompareError> {
        match s.split_once('=') {
            Some((b, n)) if !b.trim().is_empty() && !n.trim().is_empty() => {
                Ok(Pairing { base: b.trim().to_string(), new: n.trim().to_string() })
            }
            _ => Err(CompareError::BadPairing(s.to_string())),
        }
    }
}

/// Why two reports cannot be compared as asked: usage errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("{0:?} is not BASE_TARGET=NEW_TARGET")]
    BadPairing(String),
    #[error("--as {pairing}: the {side} report has no target {target} (it has {known})")]
    UnknownTarget { pairing: String, side: &'static str, target: String, known: String },
    #[error("--as pairs the new target {0} twice")]
    PairedTwice(String),
    #[error("{side} report version {version} (this ovlc reads version 1)")]
    Version { side: &'static str, version: u32 },
}

/// What one side of a comparison says about an instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    pub status: Status,
    /// Why it was skipped, or what went wrong (`error`, `crash`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The first failed expectation or result (`fail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Side {
    fn of(o: &Outcome) -> Side {
        Side { status: o.status, reason: o.reason.clone(), failure: o.failures.first().cloned() }
    }

    /// One line: `fail: line 7 read /f: expected "upper", got "lower"`.
    pub fn line(&self) -> String {
        let mut s = self.status.name().to_string();
        if let Some(f) = &self.failure {
            let at = if f.line > 0 { format!("line {} ", f.line) } else { String::new() };
            s.push_str(&format!(
                ": {at}{}: expected {}, got {}",
                f.step,
                first_line(&f.expected),
                first_line(&f.actual)
            ));
        } else if let Some(r) = &self.reason {
            s.push_str(&format!(": {}", first_line(r)));
        }
        s
    }
}

/// The first line of a (console excerpt, tree) text, marked when cut.
fn first_line(s: &str) -> String {
    let mut lines = s.lines();
    let first = lines.next().unwrap_or("");
    if lines.next().is_some() {
        format!("{first} [...]")
    } else {
        first.to_string()
    }
}

/// One instance whose result is not the same in both runs (or that is in
/// one run only: `base` or `new` is then absent).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Side>,
}

/// How many instances fell in each category.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Instances in both runs.
    pub compared: usize,
    pub unchanged: usize,
    pub regressions: usize,
    pub fixes: usize,
    pub changed: usize,
    pub new: usize,
    pub removed: usize,
    pub skips: usize,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.compared += o.compared;
        self.unchanged += o.unchanged;
        self.regressions += o.regressions;
        self.fixes += o.fixes;
        self.changed += o.changed;
        self.new += o.new;
        self.removed += o.removed;
        self.skips += o.skips;
    }

    /// `2 regressions, 1 fix, 0 changed, 3 new, 0 removed, 1 changed skip; 400 unchanged`.
    pub fn line(&self) -> String {
        let n = |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        format!(
            "{}, {}, {} changed, {} new, {} removed, {}; {} unchanged",
            n(self.regressions, "regression", "regressions"),
            n(self.fixes, "fix", "fixes"),
            self.changed,
            self.new,
            self.removed,
            n(self.skips, "changed skip", "changed skips"),
            self.unchanged
        )
    }
}

/// One NEW target against the BASE target it is paired with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetComparison {
    /// The NEW target's name, or BASE's when NEW has no such target.
    pub target: String,
    /// The BASE target compared (absent: NEW's target is new).
    pub base_target: Option<String>,
    /// The NEW target compared (absent: BASE's target is gone).
    pub new_target: Option<String>,
    pub counts: Counts,
    /// Passed in BASE; failed, crashed, timed out or could not run in NEW.
    pub regressions: Vec<Change>,
    /// Failed, crashed, timed out or could not run in BASE; passed in NEW.
    pub fixes: Vec<Change>,
    /// From one of fail, crash, timeout, error to another.
    pub changed: Vec<Change>,
    /// In NEW only.
    pub new: Vec<Change>,
    /// In BASE only.
    pub removed: Vec<Change>,
    /// Skipped in one run and not the other, or in both for another reason.
    pub skips: Vec<Change>,
}

/// Two runs compared (schema in docs/json.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub version: u32,
    /// The `--as` pairings.
    pub pairings: Vec<Pairing>,
    /// Every target's counts added up.
    pub counts: Counts,
    pub targets: Vec<TargetComparison>,
}

impl Comparison {
    /// Whether any instance regressed (the command exits 1).
    pub fn regressed(&self) -> bool {
        self.counts.regressions > 0
    }
}

/// The targets of a report, as listed, then those only its results name.
fn targets_of(r: &RunReport) -> Vec<String> {
    let mut t = r.targets.clone();
    for o in &r.results {
        if !t.contains(&o.target) {
            t.push(o.target.clone());
        }
    }
    t
}

/// A skip's reason without the kernel release and driver it names
/// (`requires kernel >= 6.5 (kernel 7.3.1, driver kernel)`): a patched
/// kernel's release differs from the base's, its reason does not.
fn skip_reason(s: &Side) -> Option<&str> {
    s.reason.as_deref().map(|r| r.split(" (kernel ").next().unwrap_or(r))
}

/// The results of one target by instance id (the first when an id repeats).
fn by_id<'a>(r: &'a RunReport, target: &str) -> BTreeMap<&'a str, &'a Outcome> {
    let mut m = BTreeMap::new();
    for o in r.results.iter().filter(|o| o.target == target) {
        m.entry(o.id.as_str()).or_insert(o);
    }
    m
}

fn compare_target(
    label: String,
    base_target: Option<&str>,
    new_target: Option<&str>,
    base: &RunReport,
    new: &RunReport,
) -> TargetComparison {
    let b = base_target.map(|t| by_id(base, t)).unwrap_or_default();
    let n = new_target.map(|t| by_id(new, t)).unwrap_or_default();
    let mut t = TargetComparison {
        target: label,
        base_target: base_target.map(str::to_string),
        new_target: new_target.map(str::to_string),
        counts: Counts::default(),
        regressions: Vec::new(),
        fixes: Vec::new(),
        changed: Vec::new(),
        new: Vec::new(),
        removed: Vec::new(),
        skips: Vec::new(),
    };
    // Both maps are ordered by id, so every list is too.
    let mut ids: Vec<&str> = b.keys().chain(n.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let (bs, ns) = (b.get(id).map(|o| Side::of(o)), n.get(id).map(|o| Side::of(o)));
        let list = match (&bs, &ns) {
            (None, None) => continue,
            (None, Some(_)) => &mut t.new,
            (Some(_), None) => &mut t.removed,
            (Some(x), Some(y)) => {
                t.counts.compared += 1;
                match (x.status, y.status) {
                    (Status::Skip, Status::Skip) if skip_reason(x) == skip_reason(y) => {
                        t.counts.unchanged += 1;
                        continue;
                    }
                    // A skip is no verdict: from or to one, the instance
                    // neither regressed nor was fixed, it was (not) tested.
                    (Status::Skip, _) | (_, Status::Skip) => &mut t.skips,
                    (Status::Pass, Status::Pass) => {
                        t.counts.unchanged += 1;
                        continue;
                    }
                    (Status::Pass, _) => &mut t.regressions,
                    (_, Status::Pass) => &mut t.fixes,
                    (p, q) if p == q => {
                        t.counts.unchanged += 1;
                        continue;
                    }
                    _ => &mut t.changed,
                }
            }
        };
        list.push(Change { id: id.to_string(), base: bs, new: ns });
    }
    t.counts.regressions = t.regressions.len();
    t.counts.fixes = t.fixes.len();
    t.counts.changed = t.changed.len();
    t.counts.new = t.new.len();
    t.counts.removed = t.removed.len();
    t.counts.skips = t.skips.len();
    t
}

/// Compares NEW with BASE. Each NEW target is compared with the BASE target
/// a pairing names for it, else with BASE's target of the same name; BASE
/// targets no NEW target is compared with come last, their instances
/// removed. Targets in NEW's order, then BASE's; instances by id.
pub fn compare(base: &RunReport, new: &RunReport, pairings: &[Pairing]) -> Result<Comparison, CompareError> {
    for (side, r) in [("base", base), ("new", new)] {
        if r.version != 1 {
            return Err(CompareError::Version { side, version: r.version });
        }
    }
    let (base_targets, new_targets) = (targets_of(base), targets_of(new));
    let mut paired: BTreeMap<&str, &str> = BTreeMap::new();
    for p in pairings {
        for (side, name, known) in [("base", &p.base, &base_targets), ("new", &p.new, &new_targets)] {
            if !known.contains(name) {
                return Err(CompareError::UnknownTarget {
                    pairing: format!("{}={}", p.base, p.new),
                    side,
                    target: name.clone(),
                    known: if known.is_empty() { "none".into() } else { known.join(", ") },
                });
            }
        }
        if paired.insert(&p.new, &p.base).is_some() {
            return Err(CompareError::PairedTwice(p.new.clone()));
        }
    }
    let mut targets = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    for nt in &new_targets {
        let bt =
            paired.get(nt.as_str()).copied().or_else(|| base_targets.iter().find(|b| *b == nt).map(|b| b.as_str()));
        used.extend(bt);
        targets.push(compare_target(nt.clone(), bt, Some(nt), base, new));
    }
    for bt in base_targets.iter().filter(|b| !used.contains(&b.as_str())) {
        targets.push(compare_target(bt.clone(), Some(bt), None, base, new));
    }
    let mut counts = Counts::default();
    for t in &targets {
        counts.add(&t.counts);
    }
    Ok(Comparison { version: 1, pairings: pairings.to_vec(), counts, targets })
}

impl TargetComparison {
    /// `vm:custom (base: vm:7.3)`, or the target's name when both runs call it so.
    pub fn title(&self) -> String {
        match (&self.base_target, &self.new_target) {
            (Some(b), Some(n)) if b != n => format!("{n} (base: {b})"),
            (None, Some(n)) => format!("{n} (not in base)"),
            (Some(b), None) => format!("{b} (not in new)"),
            _ => self.target.clone(),
        }
    }

    /// The lists in the order they are told: regressions first.
    pub fn sections(&self) -> [(&'static str, &[Change]); 6] {
        [
            ("regression", &self.regressions),
            ("fix", &self.fixes),
            ("changed", &self.changed),
            ("new", &self.new),
            ("removed", &self.removed),
            ("skip", &self.skips),
        ]
    }
}

/// What a change says, after its id: `pass -> fail: line 7 ...`.
pub fn change_line(c: &Change) -> String {
    match (&c.base, &c.new) {
        (Some(b), Some(n)) => {
            // The side that is not a pass says why; a pass says nothing more.
            let left = if b.status == Status::Pass { b.status.name().to_string() } else { b.line() };
            let right = if n.status == Status::Pass { n.status.name().to_string() } else { n.line() };
            format!("{left} -> {right}")
        }
        (None, Some(n)) => n.line(),
        (Some(b), None) => format!("was {}", b.line()),
        (None, None) => String::new(),
    }
}

/// The comparison as text: per target a header with its counts, then its
/// changes, regressions first; a last line with the totals.
pub fn text(c: &Comparison) -> String {
    let mut s = String::new();
    for t in &c.targets {
        s.push_str(&format!("{}: {}\n", t.title(), t.counts.line()));
        for (word, list) in t.sections() {
            for ch in list {
                s.push_str(&format!("  {word:<10} {}: {}\n", ch.id, change_line(ch)));
            }
        }
    }
    let n = c.targets.len();
    s.push_str(&format!("{n} target{}: {}\n", if n == 1 { "" } else { "s" }, c.counts.line()));
    s
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0;width:100%}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.id{font-family:monospace;white-space:nowrap}\
td.why{font-family:monospace;white-space:pre-wrap;word-break:break-word}\
tr.regression td{background:#fdd}tr.regression td.kind{font-weight:bold;color:#a00}\
tr.fix td{background:#dfd}tr.changed td{background:#ffd}\
.counts{color:#555}.none{color:#777;font-style:italic}";

/// The comparison as one self-contained HTML page (no script, no network):
/// the totals, then per target a table of its changes, regressions first
/// and highlighted.
pub fn html(c: &Comparison) -> String {
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<title>ovlc report compare</title>\n");
    s.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n<h1>ovlc report compare</h1>\n"));
    let verdict = if c.regressed() { "Regressions found" } else { "No regressions" };
    s.push_str(&format!("<p><strong>{verdict}</strong>: {}</p>\n", escape(&c.counts.line())));
    if !c.pairings.is_empty() {
        let p: Vec<String> = c.pairings.iter().map(|p| format!("{} = {}", p.base, p.new)).collect();
        s.push_str(&format!("<p>Paired targets (base = new): {}</p>\n", escape(&p.join(", "))));
    }
    for t in &c.targets {
        s.push_str(&format!("<h2>{}</h2>\n<p class=\"counts\">{}</p>\n", escape(&t.title()), escape(&t.counts.line())));
        if t.sections().iter().all(|(_, l)| l.is_empty()) {
            s.push_str("<p class=\"none\">No changes.</p>\n");
            continue;
        }
        s.push_str("<table>\n<tr><th>change</th><th>instance</th><th>base</th><th>new</th></tr>\n");
        for (word, list) in t.sections() {
            for ch in list {
                let side = |x: &Option<Side>| x.as_ref().map_or_else(|| "—".to_string(), |x| escape(&x.line()));
                s.push_str(&format!(
                    "<tr class=\"{word}\"><td class=\"kind\">{word}</td><td class=\"id\">{}</td>\
                     <td class=\"why\">{}</td><td class=\"why\">{}</td></tr>\n",
                    escape(&ch.id),
                    side(&ch.base),
                    side(&ch.new)
                ));
            }
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Summary;

    fn outcome(id: &str, target: &str, status: Status) -> Outcome {
        serde_json::from_value(serde_json::json!({
            "id": id, "scenario": id, "target": target, "status": status.name(), "kernel": "k",
            "steps": [], "failures": [], "millis": 1
        }))
        .unwrap()
    }

    fn with_reason(mut o: Outcome, r: &str) -> Outcome {
        o.reason = Some(r.into());
        o
    }

    fn failing(mut o: Outcome) -> Outcome {
        o.failures = vec![
            Failure { line: 7, step: "read /f".into(), expected: "\"upper\"".into(), actual: "\"lower\"".into() },
            Failure { line: 9, step: "expect upper".into(), expected: "x".into(), actual: "y".into() },
        ];
        o
    }

    fn report(targets: &[&str], results: Vec<Outcome>) -> RunReport {
        RunReport {
            version: 1,
            kernel: "k".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            partition: None,
            summary: Summary::of(&results),
            scenarios: Default::default(),
            results,
            repeat: None,
        }
    }

    fn ids(l: &[Change]) -> Vec<&str> {
        l.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn every_category_is_told_apart() {
        use Status::*;
        let skip = |id: &str, r: &str| with_reason(outcome(id, "host", Skip), r);
        let base = report(
            &["host"],
            vec![
                outcome("a/same-pass", "host", Pass),
                outcome("a/regress", "host", Pass),
                outcome("a/crash", "host", Pass),
                outcome("a/fixed", "host", Fail),
                outcome("a/fail-crash", "host", Fail),
                outcome("a/still-fails", "host", Fail),
                outcome("a/gone", "host", Pass),
                skip("a/skip-same", "requires kernel >= 6.5 (kernel 6.1.0, driver kernel)"),
                skip("a/skip-other", "requires kernel >= 6.5 (kernel 6.1.0, driver kernel)"),
                skip("a/skip-runs", "requires kernel >= 6.5 (kernel 6.1.0, driver kernel)"),
                outcome("a/now-skips", "host", Pass),
            ],
        );
        let new = report(
            &["host"],
            vec![
                outcome("a/same-pass", "host", Pass),
                failing(outcome("a/regress", "host", Fail)),
                with_reason(outcome("a/crash", "host", Crash), "the machine died\nlast console lines:\n..."),
                outcome("a/fixed", "host", Pass),
                outcome("a/fail-crash", "host", Crash),
                outcome("a/still-fails", "host", Fail),
                outcome("a/born", "host", Fail),
                // The kernel release a skip names is no change.
                skip("a/skip-same", "requires kernel >= 6.5 (kernel 6.1.99-custom, driver kernel)"),
                skip("a/skip-other", "requires feature redirect_dir (kernel 6.1.0, driver kernel)"),
                outcome("a/skip-runs", "host", Fail),
                skip("a/now-skips", "no xfs here"),
            ],
        );
        let c = compare(&base, &new, &[]).unwrap();
        assert_eq!(c.targets.len(), 1);
        let t = &c.targets[0];
        assert_eq!(ids(&t.regressions), ["a/crash", "a/regress"]);
        assert_eq!(ids(&t.fixes), ["a/fixed"]);
        assert_eq!(ids(&t.changed), ["a/fail-crash"]);
        assert_eq!(ids(&t.new), ["a/born"]);
        assert_eq!(ids(&t.removed), ["a/gone"]);
        assert_eq!(ids(&t.skips), ["a/now-skips", "a/skip-other", "a/skip-runs"]);
        let want =
            Counts { compared: 10, unchanged: 3, regressions: 2, fixes: 1, changed: 1, new: 1, removed: 1, skips: 3 };
        assert_eq!(t.counts, want);
        assert_eq!(c.counts, want);
        assert!(c.regressed());
        // A regression says the new status and the first failure, or the reason's first line.
        let r = &t.regressions[1];
        assert_eq!(r.new.as_ref().unwrap().failure.as_ref().unwrap().line, 7);
        assert_eq!(change_line(r), "pass -> fail: line 7 read /f: expected \"upper\", got \"lower\"");
        assert_eq!(change_line(&t.regressions[0]), "pass -> crash: the machine died [...]");
        assert_eq!(change_line(&t.removed[0]), "was pass");
        assert_eq!(change_line(&t.new[0]), "fail");

        let text = text(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "host: 2 regressions, 1 fix, 1 changed, 1 new, 1 removed, 3 changed skips; 3 unchanged");
        assert!(lines[1].starts_with("  regression a/crash: pass -> crash"), "{text}");
        assert!(lines[3].starts_with("  fix        a/fixed: fail -> pass"), "{text}");
        assert_eq!(
            *lines.last().unwrap(),
            "1 target: 2 regressions, 1 fix, 1 changed, 1 new, 1 removed, 3 changed skips; 3 unchanged"
        );

        // The other way round, the regressions are fixes and the fix a regression.
        let back = compare(&new, &base, &[]).unwrap();
        assert_eq!(ids(&back.targets[0].fixes), ["a/crash", "a/regress"]);
        assert_eq!(ids(&back.targets[0].regressions), ["a/fixed"]);
        assert_eq!(ids(&back.targets[0].new), ["a/gone"]);
    }

    #[test]
    fn targets_pair_by_name_or_as_asked_in_new_order() {
        use Status::*;
        let base = report(
            &["vm:7.3", "vm:7.3/fuse", "host"],
            vec![
                outcome("b/x", "vm:7.3", Pass),
                outcome("a/x", "vm:7.3", Pass),
                outcome("a/x", "vm:7.3/fuse", Pass),
                outcome("a/x", "host", Pass),
            ],
        );
        let new = report(
            &["vm:custom", "vm:new"],
            vec![
                outcome("b/x", "vm:custom", Fail),
                outcome("a/x", "vm:custom", Pass),
                outcome("a/x", "vm:new", Pass),
                // A result whose target the list lacks still counts.
                outcome("a/x", "vm:7.3/fuse", Error),
            ],
        );
        let pairing: Pairing = "vm:7.3=vm:custom".parse().unwrap();
        let c = compare(&base, &new, std::slice::from_ref(&pairing)).unwrap();
        let names: Vec<String> = c.targets.iter().map(TargetComparison::title).collect();
        assert_eq!(names, ["vm:custom (base: vm:7.3)", "vm:new (not in base)", "vm:7.3/fuse", "host (not in new)"]);
        assert_eq!(ids(&c.targets[0].regressions), ["b/x"]);
        assert_eq!(c.targets[0].counts.unchanged, 1);
        assert_eq!(ids(&c.targets[1].new), ["a/x"]);
        assert_eq!(ids(&c.targets[2].regressions), ["a/x"]);
        assert_eq!(ids(&c.targets[3].removed), ["a/x"]);
        assert_eq!(c.counts.regressions, 2);
        assert_eq!(c.pairings, [pairing]);

        // Without the pairing, vm:custom's instances are all new.
        let c = compare(&base, &new, &[]).unwrap();
        assert_eq!(c.targets[0].counts.new, 2);
        assert!(c.targets.iter().any(|t| t.title() == "vm:7.3 (not in new)"));

        // A pairing that names a target a report lacks is refused, naming it.
        let e = compare(&base, &new, &["vm:6.1=vm:custom".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("the base report has no target vm:6.1"), "{e}");
        let e = compare(&base, &new, &["vm:7.3=vm:7.2".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("the new report has no target vm:7.2"), "{e}");
        let twice: Vec<Pairing> = vec!["vm:7.3=vm:custom".parse().unwrap(), "host=vm:custom".parse().unwrap()];
        assert_eq!(compare(&base, &new, &twice).unwrap_err(), CompareError::PairedTwice("vm:custom".into()));
        assert!("vm:7.3".parse::<Pairing>().is_err() && "=x".parse::<Pairing>().is_err());
    }

    #[test]
    fn the_order_is_the_same_whatever_the_order_of_results() {
        use Status::*;
        let results = || {
            vec![
                outcome("z/1", "host", Fail),
                outcome("a/1", "host", Fail),
                outcome("m/1", "host", Crash),
                outcome("b/1", "host-fuse", Fail),
            ]
        };
        let base =
            report(&["host", "host-fuse"], results().into_iter().map(|o| Outcome { status: Pass, ..o }).collect());
        let mut shuffled = results();
        shuffled.reverse();
        let one = compare(&base, &report(&["host-fuse", "host"], results()), &[]).unwrap();
        let two = compare(&base, &report(&["host-fuse", "host"], shuffled), &[]).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.targets[0].target, "host-fuse", "NEW's target order");
        assert_eq!(ids(&one.targets[1].regressions), ["a/1", "m/1", "z/1"]);
    }

    #[test]
    fn the_page_escapes_and_highlights_regressions() {
        let base = report(&["host"], vec![outcome("a/<x>", "host", Status::Pass)]);
        let new = report(&["host"], vec![failing(outcome("a/<x>", "host", Status::Fail))]);
        let c = compare(&base, &new, &[]).unwrap();
        let page = html(&c);
        assert!(page
            .contains("<tr class=\"regression\"><td class=\"kind\">regression</td><td class=\"id\">a/&lt;x&gt;</td>"));
        assert!(page.contains("Regressions found"));
        assert!(!page.contains("<x>") && !page.contains("http://") && !page.contains("https://"));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["counts"]["regressions"], 1);
        assert_eq!(v["targets"][0]["regressions"][0]["new"]["failure"]["step"], "read /f");
        assert_eq!(v["targets"][0]["regressions"][0]["base"]["status"], "pass");
    }
}
