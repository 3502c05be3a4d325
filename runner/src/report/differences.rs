//! What differs between kernels: for each instance and VM driver (`vm:KERNEL`,
//! `vm:KERNEL/fuse`, `vm:KERNEL/rootless`), the step results, statuses and
//! upper-tree lines that are not the same on every kernel that ran it.
//! Computed from a run's results, rendered as Markdown (the README's section)
//! or shown in the HTML report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::RunReport;
use crate::model::{Outcome, Status};
use crate::plan::{Target, TargetSpec};
use crate::targets::vm::VmTarget;

/// One thing that is not the same on every kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The instance id.
    pub instance: String,
    /// The targets compared, with the kernel as `KERNEL`: `vm:KERNEL/rootless`.
    pub family: String,
    /// What differs: `status`, `line N: TEXT`, or `upper PATH`.
    pub what: String,
    /// Each value seen, with the kernels that gave it, oldest kernel first.
    pub values: Vec<(String, Vec<String>)>,
}

/// `vm:6.1/rootless+ext4` → (`vm:KERNEL/rootless`, `6.1 (ext4)`); host targets have no kernel series.
pub(crate) fn family_of(target: &str) -> Option<(String, String)> {
    let spec = TargetSpec::parse(target).ok()?;
    let Target::Vm(vm) = spec.target else { return None };
    let mut label = match spec.backing {
        Some(b) => format!("{} ({})", vm.kernel, b.name()),
        None => vm.kernel.clone(),
    };
    label.push_str(&vm.query());
    Some((VmTarget { kernel: "KERNEL".into(), driver: vm.driver, params: vec![] }.name(), label))
}

/// Orders kernel labels by version (`5.10` before `6.1` before `6.12`).
fn version_key(label: &str) -> Vec<u64> {
    label.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

fn sort_kernels(k: &mut [String]) {
    k.sort_by(|a, b| version_key(a).cmp(&version_key(b)).then(a.cmp(b)));
}

/// A skip's reason without the per-kernel release it names.
fn status_word(o: &Outcome) -> String {
    match (o.status, &o.reason, o.failures.first()) {
        (Status::Skip, Some(r), _) => format!("skip: {}", r.split(" (kernel ").next().unwrap_or(r)),
        (Status::Fail, _, Some(f)) => {
            format!("fail: {} => {}", f.step, f.actual.lines().next().unwrap_or(""))
        }
        (s, _, _) => s.name().to_string(),
    }
}

/// Groups `(value, kernel)` pairs into values with their kernels, in the
/// order of each value's oldest kernel.
fn group(pairs: Vec<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (v, k) in pairs {
        by.entry(v).or_default().push(k);
    }
    let mut out: Vec<(String, Vec<String>)> = by
        .into_iter()
        .map(|(v, mut ks)| {
            sort_kernels(&mut ks);
            (v, ks)
        })
        .collect();
    out.sort_by(|a, b| version_key(&a.1[0]).cmp(&version_key(&b.1[0])));
    out
}

/// Every difference between kernels in a run.
pub fn between_kernels(report: &RunReport) -> Vec<Difference> {
    // (instance, family) → [(kernel label, outcome)]
    let mut groups: BTreeMap<(String, String), Vec<(String, &Outcome)>> = BTreeMap::new();
    for o in &report.results {
        if let Some((family, kernel)) = family_of(&o.target) {
            groups.entry((o.id.clone(), family)).or_default().push((kernel, o));
        }
    }
    let mut out = Vec::new();
    for ((instance, family), runs) in groups {
        if runs.len() < 2 {
            continue;
        }
        let mut push = |what: String, values: Vec<(String, Vec<String>)>| {
            out.push(Difference { instance: instance.clone(), family: family.clone(), what, values });
        };
        let statuses = group(runs.iter().map(|(k, o)| (general_status(&status_word(o)), k.clone())).collect());
        if statuses.len() > 1 {
            push("status".into(), statuses);
        }
        // Results and trees are compared where the scenario passed: a failure
        // is told once, by its status.
        let ran: Vec<&(String, &Outcome)> = runs.iter().filter(|(_, o)| o.status == Status::Pass).collect();
        if ran.len() < 2 {
            continue;
        }
        // Steps by their text, in order of first appearance: a step that an
        // `if kernel` branch says twice (once per branch, on different lines)
        // is one step whose result differs, not two steps each run on some
        // kernels only. A step said more than once gives its results in order.
        let mut keys: Vec<(u32, String)> = Vec::new();
        for (_, o) in &ran {
            for st in &o.steps {
                match keys.iter_mut().find(|(_, t)| *t == st.text) {
                    Some((l, _)) => *l = (*l).min(st.line),
                    None => keys.push((st.line, st.text.clone())),
                }
            }
        }
        keys.sort();
        for (line, text) in keys {
            let values = group(
                ran.iter()
                    .map(|(k, o)| {
                        let rs: Vec<&str> =
                            o.steps.iter().filter(|s| s.text == text).map(|s| s.result.as_str()).collect();
                        let r = if rs.is_empty() { "(not run)".to_string() } else { rs.join(", ") };
                        (r, k.clone())
                    })
                    .collect(),
            );
            if values.len() > 1 {
                push(format!("line {line}: {text}"), values);
            }
        }
        // The upper tree path by path: a path whose line is not the same everywhere.
        let line_of = |o: &Outcome, path: &str| -> String {
            o.upper
                .as_deref()
                .unwrap_or("")
                .lines()
                .find(|l| l.split(' ').next() == Some(path))
                .map_or_else(|| "(absent)".to_string(), str::to_string)
        };
        let mut paths: Vec<String> = Vec::new();
        for (_, o) in &ran {
            for l in o.upper.as_deref().unwrap_or("").lines() {
                let p = l.split(' ').next().unwrap_or("").to_string();
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        for p in paths {
            let values = group(ran.iter().map(|(k, o)| (line_of(o, &p), k.clone())).collect());
            if values.len() > 1 {
                push(format!("upper {p}"), values);
            }
        }
    }
    out
}

fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// One cause: the same change, told once for every instance that shows it
/// (the upper root gaining `uuid` from 6.12 is one cause in hundreds of
/// instances, not hundreds of differences).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// The targets compared, as in [`Difference::family`].
    pub family: String,
    /// What changes between kernels, in Markdown.
    pub what: String,
    /// The instances that show it, in id order.
    pub instances: Vec<String>,
    /// The steps (for a result) or upper paths (for a tree line) it was seen
    /// in, in the order first seen.
    pub examples: Vec<String>,
    /// How it was recognised (its order in a report): `tree`, `status`,
    /// `result`, `presence` or `branch`.
    pub kind: &'static str,
}

/// Kinds in the order a report tells them: what the upper tree records, what
/// runs at all, what results differ, then consequences of a scenario's own
/// `if kernel` branches.
const KINDS: [&str; 5] = ["tree", "status", "result", "presence", "branch"];

/// `values` with each value mapped by `f`, values that become equal merged.
fn regroup(values: &[(String, Vec<String>)], f: impl Fn(&str) -> String) -> Vec<(String, Vec<String>)> {
    group(values.iter().flat_map(|(v, ks)| ks.iter().map(|k| (f(v), k.clone())).collect::<Vec<_>>()).collect())
}

/// `value on K1, K2; value on K3`, each value through `show`.
fn sides(values: &[(String, Vec<String>)], show: impl Fn(&str) -> String) -> String {
    values.iter().map(|(v, ks)| format!("{} on {}", show(v), ks.join(", "))).collect::<Vec<_>>().join("; ")
}

/// A status or skip reason without what names one kernel, target or line:
/// `skip: line 31: X; this kernel is 6.1.0-50` → `skip: X`, `cannot be built
/// on vm:6.1/rootless+ext4: ...` → `cannot be built on this target: ...`.
fn general_status(s: &str) -> String {
    let s = s.split("; this kernel is ").next().unwrap_or(s);
    let mut s = match s.strip_prefix("skip: line ").and_then(|r| r.split_once(": ")) {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => format!("skip: {rest}"),
        _ => s.to_string(),
    };
    while let Some(at) = s.find(" on vm:") {
        let Some(end) = s[at + 4..].find(": ").map(|e| at + 4 + e) else { break };
        s.replace_range(at..end, " on this target");
    }
    s
}

/// The cause of one difference: its kind, what groups it with others, and
/// an example of it (the first step text or path it was seen in).
fn cause_of(d: &Difference) -> (&'static str, String, Option<String>) {
    let has = |v: &str| d.values.iter().any(|(x, _)| x == v);
    if d.what == "status" {
        return ("status", format!("status: {}", sides(&d.values, code)), None);
    }
    if let Some(text) = d.what.strip_prefix("line ").and_then(|r| r.split_once(": ")).map(|(_, t)| t) {
        // A step said in both branches of an `if kernel`, run a different
        // number of times but with the same results, differs by branch only.
        let distinct = |v: &str| -> Vec<String> {
            let mut r: Vec<String> = v.split(", ").map(str::to_string).collect();
            r.sort();
            r.dedup();
            r
        };
        let same = d.values.iter().all(|(v, _)| distinct(v) == distinct(&d.values[0].0));
        if has("(not run)") || same {
            return (
                "branch",
                "steps that only some kernels run (the scenario branches with `if kernel`)".into(),
                None,
            );
        }
        // Steps of one kind (`open`, `mount`) with the same results are one cause.
        let verb = text.split(' ').next().unwrap_or(text);
        return ("result", format!("`{verb}`: {}", sides(&d.values, code)), Some(text.to_string()));
    }
    let path = d.what.strip_prefix("upper ").unwrap_or(&d.what);
    let kind_of = |v: &str| v.split(' ').nth(1).unwrap_or("entry").to_string();
    let entry = d.values.iter().find(|(v, _)| v != "(absent)").map_or("entry".to_string(), |(v, _)| kind_of(v));
    let place = if path == "/" { "the upper root".to_string() } else { format!("an upper {entry}") };
    if has("(absent)") {
        let values = regroup(&d.values, |v| if v == "(absent)" { "absent".into() } else { "present".into() });
        return ("presence", format!("{place} {}", sides(&values, str::to_string)), None);
    }
    // The words of the entry's line that are not the same on every kernel:
    // `uuid`, `origin`, `opaque`, a size.
    let words: Vec<Vec<&str>> = d.values.iter().map(|(v, _)| v.split(' ').skip(1).collect()).collect();
    let common: Vec<&str> = words[0].iter().copied().filter(|w| words.iter().all(|ws| ws.contains(w))).collect();
    let values: Vec<(String, Vec<String>)> = words
        .iter()
        .zip(&d.values)
        .map(|(ws, (_, ks))| {
            (ws.iter().filter(|w| !common.contains(w)).copied().collect::<Vec<_>>().join(" "), ks.clone())
        })
        .collect();
    let values = regroup(&values, str::to_string);
    // The side that lacks the words says which: "without `uuid`".
    let some = values.iter().find(|(v, _)| !v.is_empty()).map_or(String::new(), |(v, _)| v.clone());
    let show = |v: &str| if v.is_empty() { format!("without {}", code(&some)) } else { code(v) };
    let example = (path != "/").then(|| path.to_string());
    ("tree", format!("{place}: {}", sides(&values, show)), example)
}

/// The differences grouped by cause, per family, in the order a report tells
/// them (kind, then the most instances first).
pub fn causes(diffs: &[Difference]) -> Vec<Cause> {
    type Seen = (std::collections::BTreeSet<String>, Vec<String>);
    let mut by: BTreeMap<(String, usize, String), Seen> = BTreeMap::new();
    for d in diffs {
        let (kind, what, example) = cause_of(d);
        let rank = KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1);
        let (ids, examples) = by.entry((d.family.clone(), rank, what)).or_default();
        ids.insert(d.instance.clone());
        if let Some(e) = example.filter(|e| !examples.contains(e)) {
            examples.push(e);
        }
    }
    let mut out: Vec<Cause> = by
        .into_iter()
        .map(|((family, rank, what), (ids, examples))| Cause {
            family,
            what,
            examples,
            instances: ids.into_iter().collect(),
            kind: KINDS[rank],
        })
        .collect();
    let rank = |c: &Cause| KINDS.iter().position(|k| *k == c.kind).unwrap_or(KINDS.len());
    out.sort_by(|a, b| {
        a.family
            .cmp(&b.family)
            .then(rank(a).cmp(&rank(b)))
            .then(b.instances.len().cmp(&a.instances.len()))
            .then(a.what.cmp(&b.what))
    });
    out
}

/// The differences as Markdown: per driver, one bullet per cause with the
/// number of instances that show it and two of them.
pub fn markdown(diffs: &[Difference]) -> String {
    if diffs.is_empty() {
        return "No differences between kernels in this run.\n".into();
    }
    let mut s = String::new();
    let mut family = String::new();
    for c in causes(diffs) {
        if c.family != family {
            if !family.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!("On `{}`:\n\n", c.family));
            family = c.family.clone();
        }
        let n = c.instances.len();
        let ids = match n {
            1 => format!("1 instance: {}", c.instances[0]),
            2 => format!("2 instances: {}, {}", c.instances[0], c.instances[1]),
            _ => format!("{n} instances, for example {}, {}", c.instances[0], c.instances[1]),
        };
        let seen = match c.examples.as_slice() {
            [] => String::new(),
            [one] => format!("; seen at {}", code(one)),
            [one, rest @ ..] => format!("; seen at {} and {} more", code(one), rest.len()),
        };
        s.push_str(&format!("- {} ({ids}{seen})\n", c.what));
    }
    s
}

/// Why a file's generated section cannot be replaced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    #[error("no line {0}")]
    Missing(String),
    #[error("{1} comes before {0}")]
    OutOfOrder(String, String),
}

/// `text` with the part between the markers `<!-- ovlc report NAME: begin -->`
/// and `... end -->` replaced by `section`.
pub fn splice_section(text: &str, name: &str, section: &str) -> Result<String, MarkerError> {
    let (begin, end) = (format!("<!-- ovlc report {name}: begin -->"), format!("<!-- ovlc report {name}: end -->"));
    let b = text.find(&begin).ok_or_else(|| MarkerError::Missing(begin.clone()))?;
    let e = text.find(&end).ok_or_else(|| MarkerError::Missing(end.clone()))?;
    if e < b {
        return Err(MarkerError::OutOfOrder(begin, end));
    }
    Ok(format!("{}{begin}\n{section}{}", &text[..b], &text[e..]))
}

/// `text` with its differences section replaced by `section`.
pub fn splice(text: &str, section: &str) -> Result<String, MarkerError> {
    splice_section(text, "differences", section)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(target: &str, status: Status, step: &str, upper: &str) -> Outcome {
        let mut o: Outcome = serde_json::from_value(serde_json::json!({
            "id": "kernels/x", "scenario": "kernels/x", "target": target, "status": status.name(),
            "kernel": "k", "steps": [{"line": 3, "text": "mount l", "syscall": "", "result": step, "ok": true}],
            "failures": [], "millis": 1
        }))
        .unwrap();
        o.upper = Some(upper.to_string());
        o
    }

    #[test]
    fn differences_name_the_kernels_on_each_side() {
        let report = RunReport {
            version: 1,
            kernel: String::new(),
            targets: vec![],
            partition: None,
            repeat: None,
            summary: Default::default(),
            scenarios: Default::default(),
            results: vec![
                outcome("vm:6.12/rootless", Status::Pass, "ok", "/ dir 0755 0:0 uuid\n"),
                outcome("vm:5.10/rootless", Status::Pass, "EPERM", "/ dir 0755 0:0\n"),
                outcome("vm:6.1/rootless+ext4", Status::Pass, "ok", "/ dir 0755 0:0\n"),
                outcome("vm:7.3/rootless", Status::Pass, "ok", "/ dir 0755 0:0 uuid\n"),
                outcome("host", Status::Pass, "ok", "/ dir 0755 0:0\n"),
                outcome("vm:6.1", Status::Pass, "ok", "/ dir 0755 0:0\n"),
            ],
        };
        let d = between_kernels(&report);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert_eq!(d[0].what, "line 3: mount l");
        assert_eq!(
            d[0].values,
            [
                ("EPERM".to_string(), vec!["5.10".to_string()]),
                ("ok".into(), vec!["6.1 (ext4)".into(), "6.12".into(), "7.3".into()])
            ]
        );
        assert_eq!(d[1].what, "upper /");
        assert_eq!(d[1].values[0], ("/ dir 0755 0:0".to_string(), vec!["5.10".to_string(), "6.1 (ext4)".to_string()]));
        assert_eq!(d[1].values[1], ("/ dir 0755 0:0 uuid".to_string(), vec!["6.12".to_string(), "7.3".to_string()]));
        let md = markdown(&d);
        assert!(md.starts_with("On `vm:KERNEL/rootless`:\n\n"), "{md}");
        assert!(md.contains("- `mount`: `EPERM` on 5.10; `ok` on 6.1 (ext4), 6.12, 7.3 (1 instance: kernels/x; seen at `mount l`)\n"), "{md}");
        assert!(
            md.contains(
                "- the upper root: without `uuid` on 5.10, 6.1 (ext4); `uuid` on 6.12, 7.3 (1 instance: kernels/x)\n"
            ),
            "{md}"
        );
        const BEGIN: &str = "<!-- ovlc report differences: begin -->";
        const END: &str = "<!-- ovlc report differences: end -->";
        let spliced = splice(&format!("a\n{BEGIN}\nold\n{END}\nz\n"), "new\n").unwrap();
        assert_eq!(spliced, format!("a\n{BEGIN}\nnew\n{END}\nz\n"));
        assert!(splice("no markers", "x").is_err());
    }

    fn diff(instance: &str, what: &str, values: &[(&str, &[&str])]) -> Difference {
        Difference {
            instance: instance.into(),
            family: "vm:KERNEL".into(),
            what: what.into(),
            values: values.iter().map(|(v, ks)| (v.to_string(), ks.iter().map(|k| k.to_string()).collect())).collect(),
        }
    }

    #[test]
    fn differences_group_by_cause() {
        let old: &[&str] = &["5.10", "6.1"];
        let new: &[&str] = &["6.12", "7.3"];
        let d = vec![
            // The root gains `uuid` whatever else it records: one cause.
            diff("a", "upper /", &[("/ dir 0755 0:0", old), ("/ dir 0755 0:0 uuid", new)]),
            diff("b", "upper /", &[("/ dir 0755 0:0 origin impure", old), ("/ dir 0755 0:0 origin impure uuid", new)]),
            // Files gaining `origin` at different paths: one cause, the paths its examples.
            diff(
                "a",
                "upper /f",
                &[("/f file 0644 0:0 size=1 \"x\"", old), ("/f file 0644 0:0 size=1 \"x\" origin", new)],
            ),
            diff("c", "upper /d/g", &[("/d/g file 0600 0:0 size=0", old), ("/d/g file 0600 0:0 size=0 origin", new)]),
            // The same kind of step with the same results: one cause.
            diff("a", "line 3: open /x as f creat|directory", &[("EISDIR", old), ("EINVAL", new)]),
            diff("c", "line 9: open /y as g creat|directory|excl", &[("EISDIR", old), ("EINVAL", new)]),
            // A step only one branch of an `if kernel` runs, or run twice in one branch.
            diff("b", "line 4: chattr /f +i", &[("ENOTTY", old), ("(not run)", new)]),
            diff("c", "line 5: umount", &[("ok", old), ("ok, ok", new)]),
        ];
        let c = causes(&d);
        let whats: Vec<(&str, &str, usize)> = c.iter().map(|c| (c.kind, c.what.as_str(), c.instances.len())).collect();
        assert_eq!(
            whats,
            [
                ("tree", "an upper file: without `origin` on 5.10, 6.1; `origin` on 6.12, 7.3", 2),
                ("tree", "the upper root: without `uuid` on 5.10, 6.1; `uuid` on 6.12, 7.3", 2),
                ("result", "`open`: `EISDIR` on 5.10, 6.1; `EINVAL` on 6.12, 7.3", 2),
                ("branch", "steps that only some kernels run (the scenario branches with `if kernel`)", 2),
            ]
        );
        assert_eq!(c[0].examples, ["/f", "/d/g"]);
        assert_eq!(c[2].examples, ["open /x as f creat|directory", "open /y as g creat|directory|excl"]);
        let md = markdown(&d);
        assert!(md.contains("(2 instances: a, c; seen at `/f` and 1 more)"), "{md}");
        // A skip that names the target or the kernel's release is the same skip everywhere.
        assert_eq!(
            general_status(
                "skip: line 31: layer l cannot be built on vm:6.1/rootless+ext4: EPERM; this kernel is 6.1.0-50"
            ),
            "skip: layer l cannot be built on this target: EPERM"
        );
    }
}
