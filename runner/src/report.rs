//! What `ovlc run` prints: one line per instance, the failures in detail,
//! and a summary as the last line; or the whole run as JSON.

use serde::Serialize;

use crate::exec::{Outcome, Status};

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
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
    pub fn of(outcomes: &[Outcome]) -> Summary {
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
        for (n, what) in [(self.crashed, "crashed"), (self.timed_out, "timed out"), (self.errors, "errors")] {
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
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub version: u32,
    pub kernel: String,
    pub targets: Vec<String>,
    pub summary: Summary,
    pub results: &'a [Outcome],
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
