//! What `ovlc run` prints: one line per instance, the failures in detail,
//! the coverage per area and target.

use crate::model::{area, Outcome, Status};

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
}
