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
fn family_of(target: &str) -> Option<(String, String)> {
    let spec = TargetSpec::parse(target).ok()?;
    let Target::Vm(vm) = spec.target else { return None };
    let label = match spec.backing {
        Some(b) => format!("{} ({})", vm.kernel, b.name()),
        None => vm.kernel,
    };
    Some((VmTarget { kernel: "KERNEL".into(), driver: vm.driver }.name(), label))
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
        let statuses = group(runs.iter().map(|(k, o)| (status_word(o), k.clone())).collect());
        if statuses.len() > 1 {
            push("status".into(), statuses);
        }
        // Results and trees are compared where the scenario passed: a failure
        // is told once, by its status.
        let ran: Vec<&(String, &Outcome)> = runs.iter().filter(|(_, o)| o.status == Status::Pass).collect();
        if ran.len() < 2 {
            continue;
        }
        // Steps by (line, text), in line order.
        let mut keys: Vec<(u32, String)> = Vec::new();
        for (_, o) in &ran {
            for st in &o.steps {
                let key = (st.line, st.text.clone());
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        for (line, text) in keys {
            let values = group(
                ran.iter()
                    .map(|(k, o)| {
                        let r = o
                            .steps
                            .iter()
                            .find(|s| s.line == line && s.text == text)
                            .map_or_else(|| "(not run)".to_string(), |s| s.result.clone());
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

/// The differences as Markdown: per driver, one bullet per difference with
/// the instances that show it (the same difference in many instances is
/// told once).
pub fn markdown(diffs: &[Difference]) -> String {
    if diffs.is_empty() {
        return "No differences between kernels in this run.\n".into();
    }
    type Key<'a> = (&'a str, &'a str, &'a [(String, Vec<String>)]);
    let mut groups: Vec<(Key<'_>, Vec<&str>)> = Vec::new();
    for d in diffs {
        let key = (d.family.as_str(), d.what.as_str(), d.values.as_slice());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ids)) => ids.push(&d.instance),
            None => groups.push((key, vec![&d.instance])),
        }
    }
    groups.sort_by(|a, b| a.0 .0.cmp(b.0 .0));
    let mut s = String::new();
    let mut family = "";
    for ((fam, what, values), ids) in groups {
        if fam != family {
            if !family.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!("On `{fam}`:\n\n"));
            family = fam;
        }
        let values: Vec<String> = values
            .iter()
            .map(|(v, ks)| {
                let v = if v == "(absent)" || v == "(not run)" { v.clone() } else { code(v) };
                format!("{v} on {}", ks.join(", "))
            })
            .collect();
        let what = match what.split_once(": ") {
            Some((line, text)) if what.starts_with("line ") => format!("{line} {}", code(text)),
            _ => match what.strip_prefix("upper ") {
                Some(path) => format!("upper {}", code(path)),
                None => what.to_string(),
            },
        };
        let ids =
            if ids.len() > 3 { format!("{}, and {} more", ids[..3].join(", "), ids.len() - 3) } else { ids.join(", ") };
        s.push_str(&format!("- {ids}: {what}: {}\n", values.join("; ")));
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
        assert!(md.contains("- kernels/x: line 3 `mount l`: `EPERM` on 5.10; `ok` on 6.1 (ext4), 6.12, 7.3\n"), "{md}");
        assert!(md.contains("- kernels/x: upper `/`: `/ dir 0755 0:0` on 5.10, 6.1 (ext4); "), "{md}");
        const BEGIN: &str = "<!-- ovlc report differences: begin -->";
        const END: &str = "<!-- ovlc report differences: end -->";
        let spliced = splice(&format!("a\n{BEGIN}\nold\n{END}\nz\n"), "new\n").unwrap();
        assert_eq!(spliced, format!("a\n{BEGIN}\nnew\n{END}\nz\n"));
        assert!(splice("no markers", "x").is_err());
    }
}
