//! What `ovlc run` prints: one line per instance, the failures in detail,
//! and a summary as the last line; or the whole run as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exec::{Outcome, Status};

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
    /// VM targets: the machine died (kernel panic) while the instance ran.
    pub crashed: usize,
    /// VM targets: the instance did not finish in time.
    pub timed_out: usize,
}

impl Summary {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            match o.status {
                Status::Pass => s.passed += 1,
                Status::Fail => s.failed += 1,
                Status::Skip => s.skipped += 1,
                Status::Error => s.errors += 1,
                Status::Crash => s.crashed += 1,
                Status::Timeout => s.timed_out += 1,
            }
        }
        s
    }

    pub fn line(&self) -> String {
        let mut l = format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped);
        let errors = if self.errors == 1 { "error" } else { "errors" };
        for (n, what) in [(self.crashed, "crashed"), (self.timed_out, "timed out"), (self.errors, errors)] {
            if n > 0 {
                l.push_str(&format!(", {n} {what}"));
            }
        }
        l
    }

    /// 3 when the machinery failed, 1 when a scenario failed (a kernel
    /// panic or hang while it ran counts as a failure), else 0.
    pub fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            3
        } else if self.failed + self.crashed + self.timed_out > 0 {
            1
        } else {
            0
        }
    }
}

/// The JSON document of a run (schema in docs/json.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub version: u32,
    /// The host's kernel release.
    pub kernel: String,
    pub targets: Vec<String>,
    /// `K/N` when the run was one partition of a larger one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub summary: Summary,
    /// What each scenario of the results is: title, tags, file.
    #[serde(default)]
    pub scenarios: BTreeMap<String, ScenarioInfo>,
    pub results: Vec<Outcome>,
    /// `--repeat`/`--seed`: the rounds, their seed, and what differed between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<crate::repeat::RepeatReport>,
}

/// A scenario as reports show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScenarioInfo {
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub about: String,
    /// The scenario file, as given to `ovlc run`.
    #[serde(default)]
    pub file: String,
}

impl ScenarioInfo {
    pub fn of(s: &dsl::Scenario, file: &std::path::Path) -> ScenarioInfo {
        ScenarioInfo {
            title: s.title(),
            tags: s.tags(),
            about: s.about().unwrap_or_default(),
            file: file.display().to_string(),
        }
    }
}

/// The area of a scenario id: its first path component (`lab/02-copy-up` → `lab`).
/// The area of an instance: the first directory of its id (`lab/copy-up`
/// is in `lab`); files named at the top of the run are in `.`.
pub fn area(id: &str) -> &str {
    match id.split_once('/') {
        Some((a, _)) => a,
        None => ".",
    }
}

/// What a set of partition reports lacks: `None` when they are whole (or
/// no report is a partition), else a sentence naming the missing parts.
pub fn missing_partitions(reports: &[(String, RunReport)]) -> Option<String> {
    let parts: Vec<(usize, usize)> =
        reports.iter().filter_map(|(_, r)| r.partition.as_deref().and_then(|p| parse_partition(p).ok())).collect();
    let &(_, n) = parts.first()?;
    if parts.iter().any(|&(_, m)| m != n) {
        return Some("the reports come from runs split in different numbers of partitions".into());
    }
    let missing: Vec<String> =
        (1..=n).filter(|k| !parts.iter().any(|&(j, _)| j == *k)).map(|k| format!("{k}/{n}")).collect();
    let (word, verb) = if missing.len() == 1 { ("partition", "is") } else { ("partitions", "are") };
    (!missing.is_empty())
        .then(|| format!("{word} {} {verb} missing: the merged report covers part of the run", missing.join(", ")))
}

/// Merges the reports of a partitioned run into one: results in instance
/// order then target order, as one run would list them. The same instance
/// on the same target in two reports is an error.
pub fn merge(reports: Vec<(String, RunReport)>) -> Result<RunReport, String> {
    let mut targets: Vec<String> = Vec::new();
    let mut scenarios = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut results = Vec::new();
    let mut kernel = String::new();
    for (name, r) in reports {
        if r.version != 1 {
            return Err(format!("{name}: report version {} (this ovlc reads version 1)", r.version));
        }
        for t in &r.targets {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        if kernel.is_empty() {
            kernel = r.kernel.clone();
        }
        scenarios.extend(r.scenarios);
        for o in &r.results {
            if !targets.contains(&o.target) {
                targets.push(o.target.clone());
            }
        }
        for o in r.results {
            if let Some(first) = seen.insert((o.id.clone(), o.target.clone()), name.clone()) {
                return Err(format!("{} on {} is in both {first} and {name}", o.id, o.target));
            }
            results.push(o);
        }
    }
    // The order of the run the partitions split: by instance position, then
    // target (reports without positions: by id).
    let order = |t: &str| targets.iter().position(|x| x == t).unwrap_or(usize::MAX);
    results.sort_by(|a, b| {
        a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)).then(order(&a.target).cmp(&order(&b.target)))
    });
    Ok(RunReport {
        version: 1,
        kernel,
        summary: Summary::of(&results),
        targets,
        partition: None,
        scenarios,
        results,
        repeat: None,
    })
}

/// Is instance `index` (of a run's instances in order) in partition `k` of `n` (1-based)?
/// Round robin: partitions differ in size by at most one instance.
pub fn in_partition(index: usize, k: usize, n: usize) -> bool {
    n > 0 && index % n == k - 1
}

/// Reads `K/N` (1 <= K <= N).
pub fn parse_partition(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--partition {s}: expected K/N with 1 <= K <= N, such as 2/4");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// One line for an outcome: `ok   lab/copy-up  host  3 ms`.
pub fn line(o: &Outcome) -> String {
    let tag = match o.status {
        Status::Pass => "ok   ",
        Status::Fail => "FAIL ",
        Status::Skip => "skip ",
        Status::Error => "ERROR",
        Status::Crash => "CRASH",
        Status::Timeout => "HANG ",
    };
    let mut l = format!("{tag} {} on {}", o.id, o.target);
    match o.status {
        Status::Skip | Status::Error => {
            if let Some(r) = &o.reason {
                l.push_str(&format!(": {r}"));
            }
        }
        // The console excerpt follows with the failures.
        Status::Crash | Status::Timeout => {
            if let Some(r) = &o.reason {
                l.push_str(&format!(": {}", r.split("; last console lines").next().unwrap_or(r)));
            }
        }
        _ => l.push_str(&format!(" ({} ms)", o.millis)),
    }
    l
}

/// One line per outcome ([`line`]), except that an error many instances
/// share (a kernel that cannot be fetched, a missing program) is told once,
/// after the lines, with the number of instances it stopped.
pub fn lines(outcomes: &[Outcome]) -> String {
    let mut shared: Vec<(&str, usize)> = Vec::new();
    for r in outcomes.iter().filter(|o| o.status == Status::Error).filter_map(|o| o.reason.as_deref()) {
        match shared.iter_mut().find(|(x, _)| *x == r) {
            Some((_, n)) => *n += 1,
            None => shared.push((r, 1)),
        }
    }
    shared.retain(|(_, n)| *n > 1);
    let mut s = String::new();
    for o in outcomes {
        let common = (o.status == Status::Error)
            .then_some(o.reason.as_deref())
            .flatten()
            .and_then(|r| shared.iter().position(|(x, _)| *x == r));
        match common {
            Some(k) => s.push_str(&format!("ERROR {} on {}: error [{}] below\n", o.id, o.target, k + 1)),
            None => {
                s.push_str(&line(o));
                s.push('\n');
            }
        }
    }
    if !shared.is_empty() {
        s.push_str("\nerrors shared by several instances:\n");
        for (k, (reason, n)) in shared.iter().enumerate() {
            s.push_str(&format!("[{}] {n} instances: {reason}\n", k + 1));
        }
    }
    s
}

/// The detail of a failed instance: each failed step with its line, expected
/// and actual result, the upper tree, and the snapshot difference.
pub fn failure(o: &Outcome) -> String {
    let mut s = format!(
        "--- {} on {} (kernel {}, {})\n",
        o.id,
        o.target,
        o.kernel,
        o.mount_api.as_deref().unwrap_or("not mounted")
    );
    if matches!(o.status, Status::Crash | Status::Timeout) {
        s.push_str(&indent(o.reason.as_deref().unwrap_or(""), "  "));
    }
    for f in &o.failures {
        if f.line > 0 {
            s.push_str(&format!("  line {}: {}\n", f.line, f.step));
        } else {
            s.push_str(&format!("  {}\n", f.step));
        }
        s.push_str(&format!("    expected: {}\n", f.expected));
        s.push_str(&indent(&format!("actual:   {}", f.actual), "    "));
    }
    if let Some(d) = &o.snapshot_diff {
        s.push_str("  the upper tree or step results differ from the snapshot (- snapshot, + this run):\n");
        s.push_str(&indent(d, "    "));
    } else if let Some(u) = &o.upper {
        s.push_str("  upper tree:\n");
        s.push_str(&indent(u, "    "));
    }
    s
}

/// The coverage table `ovlc run` prints: one row per area, one column per
/// target, each cell `passed/failed/skipped/errors` (failed counts crashes
/// and hangs too: the kernel's trouble; errors are the machinery's).
pub fn coverage(outcomes: &[Outcome]) -> String {
    let mut targets: Vec<&str> = Vec::new();
    let mut areas: Vec<&str> = Vec::new();
    for o in outcomes {
        if !targets.contains(&o.target.as_str()) {
            targets.push(&o.target);
        }
        if !areas.contains(&area(&o.id)) {
            areas.push(area(&o.id));
        }
    }
    areas.sort();
    let cell = |a: &str, t: &str| {
        let (mut p, mut f, mut s, mut e) = (0, 0, 0, 0);
        for o in outcomes.iter().filter(|o| o.target == t && area(&o.id) == a) {
            match o.status {
                Status::Pass => p += 1,
                Status::Skip => s += 1,
                Status::Error => e += 1,
                Status::Fail | Status::Crash | Status::Timeout => f += 1,
            }
        }
        if p + f + s + e == 0 {
            "-".to_string()
        } else {
            format!("{p}/{f}/{s}/{e}")
        }
    };
    let first = areas.iter().map(|a| a.len()).max().unwrap_or(4).max("area".len());
    let widths: Vec<usize> =
        targets.iter().map(|t| areas.iter().map(|a| cell(a, t).len()).max().unwrap_or(1).max(t.len())).collect();
    let mut s = format!("{:<first$}", "area");
    for (t, w) in targets.iter().zip(&widths) {
        s.push_str(&format!("  {t:>w$}"));
    }
    s.push('\n');
    for a in &areas {
        s.push_str(&format!("{a:<first$}"));
        for (t, w) in targets.iter().zip(&widths) {
            s.push_str(&format!("  {:>w$}", cell(a, t)));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(id: &str, target: &str, status: &str) -> Outcome {
        serde_json::from_value(serde_json::json!({
            "id": id, "scenario": id, "target": target, "status": status, "kernel": "k",
            "steps": [], "failures": [], "millis": 1
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn coverage_counts_per_area_and_target() {
        let t = coverage(&[
            o("lab/a", "host", "pass"),
            o("lab/b", "host", "skip"),
            o("lab/a", "vm:5.10", "crash"),
            o("basics/x", "host", "fail"),
            o("basics/y", "host", "error"),
            o("mine", "host", "pass"),
        ]);
        assert_eq!(
            t,
            "area       host  vm:5.10\n.       1/0/0/0        -\nbasics  0/1/0/1        -\nlab     1/0/1/0  0/1/0/0\n"
        );
    }

    #[test]
    fn an_error_shared_by_many_instances_is_told_once() {
        let mut outs = Vec::new();
        for id in ["a", "b", "c"] {
            let mut x = o(id, "vm:6.12", "error");
            x.reason = Some("vm/kernels.lock: No such file or directory".into());
            outs.push(x);
        }
        let mut lone = o("d", "host", "error");
        lone.reason = Some("only mine".into());
        outs.push(lone);
        outs.push(o("e", "host", "pass"));
        let text = lines(&outs);
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(
            text.starts_with("ERROR a on vm:6.12: error [1] below\nERROR b on vm:6.12: error [1] below\n"),
            "{text}"
        );
        assert!(text.contains("ERROR d on host: only mine\nok    e on host (1 ms)\n"), "{text}");
        assert!(
            text.ends_with(
                "\nerrors shared by several instances:\n[1] 3 instances: vm/kernels.lock: No such file or directory\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_merge_of_some_partitions_says_which_are_missing() {
        let r = |p: Option<&str>| {
            let mut doc = merge(vec![]).unwrap_or_else(|e| panic!("{e}"));
            doc.partition = p.map(str::to_string);
            ("f".to_string(), doc)
        };
        assert_eq!(missing_partitions(&[r(Some("1/3")), r(Some("2/3")), r(Some("3/3"))]), None);
        assert_eq!(missing_partitions(&[r(None), r(None)]), None);
        assert_eq!(
            missing_partitions(&[r(Some("1/3")), r(Some("3/3"))]).as_deref(),
            Some("partition 2/3 is missing: the merged report covers part of the run")
        );
        assert!(missing_partitions(&[r(Some("1/2")), r(Some("2/3"))]).is_some_and(|m| m.contains("different numbers")));
    }

    #[test]
    fn partitions_are_round_robin() {
        assert_eq!(parse_partition("2/3"), Ok((2, 3)));
        assert!(parse_partition("0/3").is_err() && parse_partition("4/3").is_err() && parse_partition("x").is_err());
        let mine: Vec<usize> = (0..7).filter(|&i| in_partition(i, 2, 3)).collect();
        assert_eq!(mine, [1, 4]);
    }
}
