//! The determinism check of `ovlc run --repeat N`: every round's outcome of
//! an instance must equal the first round's, in everything a verdict rests
//! on (status, step results, upper and merged trees, failures), whatever the
//! order the instances ran in and whatever ran beside them.

use crate::model::{Disagreement, Outcome};

/// Instance directories are numbered in the order they start, which the
/// rounds shuffle: `.../ovlc-run-XXXX/i17/...` reads `.../ovlc-run/i*/...`.
fn mask_instance_dirs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let run = crate::sys::cleanup::RUN;
    while let Some(at) = rest.find(run) {
        out.push_str(&rest[..at]);
        out.push_str("ovlc-run/i*");
        rest = &rest[at + run.len()..];
        // Skip the random suffix and the instance number: `XXXXXX/i17`.
        let end = rest.find('/').unwrap_or(rest.len());
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix("/i") {
            let digits = r.chars().take_while(char::is_ascii_digit).count();
            rest = &r[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// A line cut to a readable length.
fn shorten(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}... ({} bytes)", s.len())
}

/// The first line where `a` and `b` differ, shown as `a-line -> b-line`.
fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                return format!("line {n}: {} -> {}", shorten(x.unwrap_or("(end)")), shorten(y.unwrap_or("(end)")))
            }
        }
    }
    unreachable!("an endless iterator")
}

/// How `later` differs from `first` (the same instance on the same target),
/// in the parts a verdict rests on; empty when they agree.
pub fn compare(first: &Outcome, later: &Outcome) -> Vec<String> {
    let mut what = Vec::new();
    if first.status != later.status {
        what.push(format!("status: {} -> {}", first.status.name(), later.status.name()));
    }
    let reason = |o: &Outcome| mask_instance_dirs(o.reason.as_deref().unwrap_or(""));
    if reason(first) != reason(later) {
        what.push(format!("reason: {}", first_difference(&reason(first), &reason(later))));
    }
    let (sa, sb) = (first.snapshot_text(), later.snapshot_text());
    if sa != sb {
        what.push(format!("steps and upper: {}", first_difference(&sa, &sb)));
    }
    let merged = |o: &Outcome| o.merged.clone().unwrap_or_default();
    if merged(first) != merged(later) {
        what.push(format!("merged: {}", first_difference(&merged(first), &merged(later))));
    }
    let failures = |o: &Outcome| {
        o.failures
            .iter()
            .map(|f| {
                mask_instance_dirs(&format!(
                    "line {}: {}: expected {}, actual {}",
                    f.line, f.step, f.expected, f.actual
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    if failures(first) != failures(later) {
        what.push(format!("failures: {}", first_difference(&failures(first), &failures(later))));
    }
    what
}

/// Every instance of `later` (round `round`, 1-based) that differs from
/// `first`; both hold the same plans in the same order.
pub fn disagreements(first: &[Outcome], later: &[Outcome], round: usize) -> Vec<Disagreement> {
    first
        .iter()
        .zip(later)
        .filter_map(|(a, b)| {
            let what = compare(a, b);
            (!what.is_empty()).then(|| Disagreement { id: a.id.clone(), target: a.target.clone(), round, what })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Failure, Status, Step};

    fn outcome() -> Outcome {
        serde_json::from_value(serde_json::json!({
            "id": "basics/x", "scenario": "basics/x", "target": "host", "status": "pass",
            "kernel": "6.1.0", "steps": [], "failures": [], "millis": 3
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn step(result: &str) -> Step {
        Step {
            line: 3,
            text: "read /a/s".into(),
            syscall: "open".into(),
            result: result.into(),
            ok: result == "\"x\"",
            notes: vec![],
            upper_after: None,
            got: None,
            mount: false,
        }
    }

    #[test]
    fn equal_outcomes_agree_whatever_their_timing_and_instance_directory() {
        let mut a = outcome();
        a.status = Status::Error;
        a.reason = Some("mkdir /tmp/ovlc-run-abc123/i3/w/layers: EEXIST".into());
        let mut b = a.clone();
        b.millis = 999;
        b.reason = Some("mkdir /tmp/ovlc-run-zzz999/i17/w/layers: EEXIST".into());
        assert_eq!(compare(&a, &b), Vec::<String>::new());
    }

    #[test]
    fn a_different_step_result_is_named_with_its_line() {
        let mut a = outcome();
        a.steps.push(step("\"x\""));
        let mut b = a.clone();
        b.steps[0] = step("EAGAIN");
        b.status = Status::Fail;
        b.failures.push(Failure {
            line: 3,
            step: "read /a/s".into(),
            expected: "\"x\"".into(),
            actual: "EAGAIN".into(),
        });
        let what = compare(&a, &b);
        assert_eq!(what[0], "status: pass -> fail");
        assert_eq!(what[1], "steps and upper: line 2:     3 read /a/s => \"x\" ->     3 read /a/s => EAGAIN");
        assert!(what[2].starts_with("failures: line 1: (end) -> line 3: read /a/s"), "{what:?}");
        let d = disagreements(&[a], &[b], 2);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].line().starts_with("basics/x on host, round 2 vs round 1: status: pass -> fail; "),
            "{}",
            d[0].line()
        );
    }

    #[test]
    fn upper_and_merged_trees_are_compared() {
        let mut a = outcome();
        a.upper = Some("/f file 0644 0:0 \"1\"\n".into());
        a.merged = Some("/g file\n".into());
        let mut b = a.clone();
        b.upper = Some("/f file 0644 0:0 \"2\"\n".into());
        b.merged = None;
        let what = compare(&a, &b);
        assert_eq!(what.len(), 2, "{what:?}");
        assert!(what[0].starts_with("steps and upper: line 3:"), "{what:?}");
        assert_eq!(what[1], "merged: line 1: /g file -> (end)");
    }
}
