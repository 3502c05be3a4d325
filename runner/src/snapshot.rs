//! Snapshots of upper trees (with the step results), one per instance and
//! target, stored as insta snapshot files: `snapshots/<target>/<scenario id>.snap`.
//! `ovlc run` checks or updates them; `cargo test` asserts them with insta, so
//! `cargo insta review` works on what either leaves pending (`.snap.new`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Failure, Outcome, SnapshotState, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Compare with the stored snapshot; a difference or a missing snapshot fails.
    Check,
    /// Write every snapshot anew.
    Update,
    /// Neither compare nor write.
    Ignore,
}

/// Where the snapshot of an instance on a target lives.
pub fn path_for(root: &Path, target: &str, instance_id: &str) -> PathBuf {
    let mut p = root.join(target.replace(['/', ':'], "_"));
    let parts: Vec<&str> = instance_id.split('/').collect();
    for d in &parts[..parts.len().saturating_sub(1)] {
        p.push(d);
    }
    p.push(format!("{}.snap", parts.last().copied().unwrap_or("unnamed")));
    p
}

/// The snapshot's body (after the insta header), if the file exists.
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(body(&text).to_string())
}

fn body(text: &str) -> &str {
    if let Some(rest) = text.strip_prefix("---\n") {
        if let Some(i) = rest.find("\n---\n") {
            return &rest[i + 5..];
        }
    }
    text
}

/// Writes a snapshot file in insta's format (`new` writes `PATH.new`, pending review).
pub fn write(path: &Path, instance_id: &str, target: &str, content: &str, pending: bool) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let text = format!(
        "---\nsource: runner/tests/host_targets.rs\nexpression: \"{} on {}\"\n---\n{}\n",
        instance_id.replace('"', "'"),
        target,
        content.trim_end()
    );
    let new = PathBuf::from(format!("{}.new", path.display()));
    if pending {
        return std::fs::write(new, text);
    }
    std::fs::write(path, text)?;
    // An accepted snapshot settles whatever was pending for it.
    match std::fs::remove_file(&new) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `Some(diff)` when the stored body differs from `content` (trailing white space aside).
pub fn compare(stored: &str, content: &str) -> Option<String> {
    if stored.trim_end() == content.trim_end() {
        None
    } else {
        Some(crate::tree::diff(stored.trim_end(), content.trim_end()))
    }
}

/// What the snapshot policy makes of one outcome's snapshot text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub state: SnapshotState,
    /// Write the text: as the snapshot (`Some(false)`), or pending review
    /// beside it (`Some(true)`).
    pub write: Option<bool>,
    /// The difference from the stored snapshot, when it fails the outcome.
    pub diff: Option<String>,
}

/// Judges a snapshot text against the stored one (`None`: no snapshot stored).
/// `Ignore` judges nothing.
pub fn judge(mode: SnapshotMode, stored: Option<&str>, text: &str) -> Option<Judgement> {
    let same = stored.is_some_and(|s| compare(s, text).is_none());
    match mode {
        SnapshotMode::Ignore => None,
        SnapshotMode::Update => Some(Judgement {
            state: if same { SnapshotState::Match } else { SnapshotState::Updated },
            write: Some(false),
            diff: None,
        }),
        SnapshotMode::Check => Some(match stored {
            None => Judgement { state: SnapshotState::New, write: Some(true), diff: None },
            Some(_) if same => Judgement { state: SnapshotState::Match, write: None, diff: None },
            Some(s) => Judgement { state: SnapshotState::Changed, write: Some(true), diff: compare(s, text) },
        }),
    }
}

/// Checks, updates or ignores the snapshot of one outcome (under `root`);
/// only passing and failing outcomes have one. A new or changed snapshot is
/// written pending review and fails the outcome.
pub fn apply(o: &mut Outcome, mode: SnapshotMode, root: &Path) {
    if !matches!(o.status, Status::Pass | Status::Fail) {
        return;
    }
    let path = path_for(root, &o.target, &o.id);
    let text = o.snapshot_text();
    let Some(j) = judge(mode, read(&path).as_deref(), &text) else { return };
    if let Some(pending) = j.write {
        if let Err(e) = write(&path, &o.id, &o.target, &text, pending) {
            if !pending {
                o.status = Status::Error;
                o.reason = Some(format!("writing {}: {e}", path.display()));
                return;
            }
        }
    }
    o.snapshot = Some(j.state);
    let (expected, actual) = match j.state {
        SnapshotState::New => {
            ("a stored snapshot", "none: review the new one (cargo insta review) or run with --snapshots update")
        }
        SnapshotState::Changed => {
            ("the stored upper tree and step results", "they differ (diff below; review with cargo insta review)")
        }
        SnapshotState::Match | SnapshotState::Updated => return,
    };
    o.status = Status::Fail;
    o.snapshot_diff = j.diff;
    o.failures.push(Failure {
        line: 0,
        step: format!("snapshot {}", path.display()),
        expected: expected.into(),
        actual: actual.into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_snapshot_removes_the_pending_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("a/x.snap");
        write(&p, "x", "host", "steps:\n", true).unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join("a/x.snap.new").exists());
        write(&p, "x", "host", "steps:\n", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.exists() && !dir.path().join("a/x.snap.new").exists());
    }

    #[test]
    fn the_policy_decides_state_writes_and_failures() {
        let j = |mode, stored: Option<&str>| judge(mode, stored, "steps:\nupper:\n/ dir\n");
        assert_eq!(j(SnapshotMode::Ignore, None), None);
        let new = j(SnapshotMode::Check, None).unwrap();
        assert_eq!((new.state, new.write), (SnapshotState::New, Some(true)));
        let same = j(SnapshotMode::Check, Some("steps:\nupper:\n/ dir\n\n")).unwrap();
        assert_eq!((same.state, same.write), (SnapshotState::Match, None), "trailing white space aside");
        let changed = j(SnapshotMode::Check, Some("steps:\nupper:\n/ file\n")).unwrap();
        assert_eq!((changed.state, changed.write), (SnapshotState::Changed, Some(true)));
        assert!(changed.diff.is_some_and(|d| d.contains("/ file") && d.contains("/ dir")));
        assert_eq!(j(SnapshotMode::Update, None).unwrap().state, SnapshotState::Updated);
        let kept = j(SnapshotMode::Update, Some("steps:\nupper:\n/ dir\n")).unwrap();
        assert_eq!((kept.state, kept.write), (SnapshotState::Match, Some(false)));
    }

    #[test]
    fn paths_follow_target_and_id() {
        let p = path_for(Path::new("snapshots"), "vm:6.1/rootless+ext4", "lab/copy-up[redirect_dir=on]");
        assert_eq!(p, PathBuf::from("snapshots/vm_6.1_rootless+ext4/lab/copy-up[redirect_dir=on].snap"));
        assert_eq!(body("---\nsource: x\n---\nsteps:\n"), "steps:\n");
        assert_eq!(body("no header"), "no header");
    }
}
